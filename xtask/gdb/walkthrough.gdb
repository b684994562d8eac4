# Follow one system call, checked: the walkthrough behind lecture-notes/04-follow-one-syscall.md.
# Run by `cargo xtask gdb --walkthrough` (and so by `cargo xtask test`); any failed check ends
# gdb with status 1.

python
import gdb

def check(condition, what):
    if not condition:
        print("walkthrough: FAILED: " + what)
        gdb.execute("kill")
        gdb.execute("quit 1")
    print("walkthrough: ok: " + what)

def value(expression):
    return int(gdb.parse_and_eval(expression)) & ((1 << 64) - 1)
end

echo \n== 1. A hypercall: stop in xen-lite's handler for console_io\n
break do_console_io
continue
info args
xl-hypercall
xl-ring
python
check(value("command") == 0, "console_io was asked to write (command 0)")
check(0 < value("len") <= 4096, "its length is between 1 and 4096 bytes")
check(value("buffer") >= 0xffffffff80000000, "its buffer lies in the guest's direct map")
check(value("$cs") & 3 == 0, "the handler runs in ring 0")
names = hypercall_names()
check([names.get(n) for n in (1, 3, 14)] == ["mmu_update", "stack_switch", "update_va_mapping"],
      "xl-hypercall names hypercalls 1, 3 and 14 from the Hypercall enum, not from Errno's numbers")
import re
compiled = {f.enumval: re.sub(r"(?<!^)(?=[A-Z])", "_", f.name.split("::")[-1]).lower()
            for f in gdb.lookup_type("hypercall_abi::hypercall::Hypercall").fields()}
check(compiled == names and len(names) >= 12,
      "xl-hypercall's name for every one of the %d hypercalls is the compiled Hypercall enum's" % len(names))
end
delete

echo \n== 2. A system call: user code runs `syscall`, xen-lite bounces it to the guest kernel\n
hbreak guest_syscall_entry
continue
xl-ring
xl-domain
xl-frame
python
check(value("$cs") & 3 == 1, "the guest's syscall entry runs in ring 1 (CS RPL 1)")
saved_cs = int.from_bytes(bytes(gdb.selected_inferior().read_memory(value("$rsp") + 8, 8)), "little")
check(saved_cs & 3 == 3, "the frame xen-lite built says ring 3 was interrupted (saved CS RPL 3)")
end
delete

echo \n== 3. Back to user code: the guest kernel's own iretq, no hypervisor on the way\n
python
# The window's last instruction is the iretq (2 bytes) just before this label. The label comes
# from assembly, without a type: evaluate its address as C would.
gdb.execute("set language c")
iretq = value("(unsigned long)&pv_unmask_window_end") - 2
gdb.execute("set language auto")
gdb.execute("hbreak *%#x" % iretq)
for attempt in range(20):
    gdb.execute("continue")
    gdb.execute("x/i $pc")
    gdb.execute("stepi")
    if value("$cs") & 3 == 3:
        break
    print("(that iretq went back to ring %d; waiting for the one to user code)" % (value("$cs") & 3))
check(value("$cs") & 3 == 3, "after the guest's iretq the CPU is in ring 3")
end
xl-ring
x/3i $pc
delete

echo \n== 4. The notes' spelling: xl-break path::item, and an assembly label as an address\n
xl-break pv-guest/src/syscall.rs::dispatch
continue
python
check(gdb.selected_frame().name().endswith("syscall::dispatch"), "xl-break pv-guest/src/syscall.rs::dispatch stops in the guest's dispatch (a hardware breakpoint)")
end
delete
xl-break xen-lite/src/domain/hypercalls.rs::do_console_io
continue
python
check(gdb.selected_frame().name().endswith("do_console_io"), "xl-break xen-lite/src/domain/hypercalls.rs::do_console_io stops in xen-lite's handler")
gdb.execute("set language c")
label = value("(unsigned long)&syscall_entry")
gdb.execute("set language auto")
check(address_of("syscall_entry") == label, "xl-walk and xl-frame take an assembly label (syscall_entry) as an address")
check(full_name("do_console_io") == ("xen_lite::domain::hypercalls::do_console_io", False), "xl-break do_console_io finds the one function of that name")
end
xl-break xen-lite/src/pv/events.rs::check_timer
python
# `break` alone reports core's option.rs here: an Option helper is inlined at the prologue's end.
shown = gdb.execute("info breakpoints $bpnum", to_string=True)
check(" at xen-lite/src/pv/events.rs:" in shown, "xl-break reports the item's own file, not that of a helper inlined at its start")
end
delete $bpnum
xl-break xen-lite/src/shadow/walk.rs::decide
python
shown = gdb.execute("info breakpoints $bpnum", to_string=True)
check(" at xen-lite/src/shadow/walk.rs:" in shown, "xl-break breaks at a function inlined everywhere (shadow::walk::decide), at its inlined copies")
end
delete $bpnum
xl-walk syscall_entry
python
check(translate(value("$cr3"), address_of("syscall_entry")) is not None, "the switcher's syscall entry is mapped in xen-lite's tables")
end
xl-console 3
python
shown = gdb.execute("xl-console 50", to_string=True)
check("[dom0] " in shown, "xl-console shows the machine's console, the guest's lines among it")
end
echo \nwalkthrough: all checks passed\n
kill
quit 0
