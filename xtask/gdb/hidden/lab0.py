"""Lab 0's grader: reads the scavenger hunt's answers from the CPU on the student's machine.

Run by `cargo xtask grade --lab 0` (`xtask/src/labs/runner.rs`) as a gdb batch script after the
gdbinit `cargo xtask gdb` writes (so xen_lite.py's helpers are loaded), on the machine of the
student's seed: some `counter` domains, then the one running `tests`. Prints one
`lab0: key = value` line per answer; the grader compares them with the student's answers file.
This file is in a `hidden` directory: handouts leave it out.
"""

import gdb

LIMIT = 5000  # stops per question before giving up (a bystander may stop here many times)


def say(key, value):
    print("lab0: %s = %#x" % (key, value) if value >= 16 else "lab0: %s = %d" % (key, value))


def stop_until(found, what):
    """Continues until `found()` is true at a stop; False if the machine ends first."""
    for _ in range(LIMIT):
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error as error:
            print("lab0: the machine ended before %s (%s)" % (what, error))
            return False
        if found():
            return True
    print("lab0: %d stops and still not %s" % (LIMIT, what))
    return False


def current_domain():
    return read_hypervisor_u64("xen_lite::domain::CURRENT_DOMAIN")


def start_info():
    """The StartInfo the guest kernel's entry received (rdi, by the C calling convention)."""
    kind = gdb.lookup_type("hypercall_abi::start_info::StartInfo")
    return gdb.Value(register("rdi")).cast(kind.pointer()).dereference()


def cmdline(info):
    raw = bytes(int(info["cmdline"][i]) for i in range(64))
    return raw.split(b"\0")[0].decode("utf-8", "replace")


# 1. The studied domain: its kernel's entry, with the StartInfo xen-lite wrote for it.
gdb.execute("hbreak pv_guest::start::rust_start")
studied = {}


def at_tests_entry():
    info = start_info()
    if cmdline(info).split(" ")[0] != "tests":
        return False
    studied["domain"] = int(info["domain_id"])
    studied["nr_pages"] = int(info["nr_pages"])
    return True


if stop_until(at_tests_entry, "the tests domain's kernel entry"):
    say("domain", studied["domain"])
    say("nr_pages", studied["nr_pages"])
    gdb.execute("delete")
    mine = lambda: current_domain() == studied["domain"]

    # 2. Its first hypercall, as xen-lite's dispatcher receives it.
    gdb.execute("break xen_lite::domain::hypercalls::dispatch")
    if stop_until(mine, "its first hypercall"):
        say("first_hypercall", u64(gdb.parse_and_eval("frame").dereference()["rax"]))
    gdb.execute("delete")

    # 3. Its first console write.
    gdb.execute("break do_console_io")
    if stop_until(mine, "its first console_io"):
        say("console_len", u64(gdb.parse_and_eval("len")))
    gdb.execute("delete")

    # 4. Its first bounced system call, at the guest kernel's entry: the frame xen-lite built.
    gdb.execute("hbreak guest_syscall_entry")
    if stop_until(mine, "its first system call"):
        rsp = register("rsp")
        rip = read_u64(rsp)
        say("syscall_cr3", register("cr3"))
        say("user_rip", rip)
        say("user_rflags", read_u64(rsp + 16))
        say("user_rsp", read_u64(rsp + 24))
        say("user_rip_machine", translate(register("cr3"), rip) or 0)
    gdb.execute("delete")

gdb.execute("kill")
