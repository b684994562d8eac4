"""gdb commands that teach xen-lite: loaded by the gdbinit that `cargo xtask gdb` writes.

    xl-ring             which ring the CPU is in, and why (CS and CR3)
    xl-domain           the running domain and vCPU
    xl-frame [ADDR] [error]
                        an interrupt or bounce frame, slot by slot (default: at $rsp)
    xl-hypercall        the hypercall being handled, by name with its arguments
    xl-walk VA [CR3]    the page-table walk for VA (default: the current CR3)

They read xen-lite's own variables by name from its debug information; the page-table walk
reads physical memory through QEMU's gdb stub (Qqemu.PhyMemMode).
"""

import os
import re

import gdb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK64 = (1 << 64) - 1
ADDRESS = 0x000F_FFFF_FFFF_F000


def u64(value):
    return int(value) & MASK64


def register(name):
    return u64(gdb.parse_and_eval("$" + name))


def symbol_address(name):
    symbol = gdb.lookup_static_symbol(name) or gdb.lookup_global_symbol(name)
    if symbol is None:
        raise gdb.GdbError("no symbol %s: is xen-lite's symbol file loaded?" % name)
    return u64(symbol.value().address)


def read_u64(address):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(address, 8)), "little")


class Physical:
    """Inside `with Physical():` memory reads use physical addresses (QEMU only)."""

    def __enter__(self):
        gdb.execute("maintenance packet Qqemu.PhyMemMode:1", to_string=True)

    def __exit__(self, *exception):
        gdb.execute("maintenance packet Qqemu.PhyMemMode:0", to_string=True)


def walk(cr3, va):
    """Yields (level, index, table address, entry) down the tables; physical reads."""
    table = cr3 & ADDRESS
    with Physical():
        for level in (4, 3, 2, 1):
            index = (va >> (12 + 9 * (level - 1))) & 0x1FF
            entry = read_u64(table + index * 8)
            yield level, index, table, entry
            if not entry & 1 or (level in (3, 2) and entry & 0x80):
                return
            table = entry & ADDRESS


def translate(cr3, va):
    """The physical address of `va` under `cr3`, or None."""
    for level, _, _, entry in walk(cr3, va):
        if not entry & 1:
            return None
        if level == 1 or (level in (3, 2) and entry & 0x80):
            size = 1 << (12 + 9 * (level - 1))
            return (entry & ADDRESS & ~(size - 1)) + (va & (size - 1))
    return None


def hypervisor_cr3():
    # This variable sits on a switcher page, mapped in every address space.
    return read_u64(symbol_address("xen_lite::switcher::HYPERVISOR_CR3"))


def read_hypervisor_u64(name):
    """A 64-bit variable of xen-lite, wherever the CPU is (through xen-lite's own tables)."""
    address = symbol_address(name)
    if register("cr3") & ADDRESS == hypervisor_cr3() & ADDRESS:
        return read_u64(address)
    physical = translate(hypervisor_cr3(), address)
    with Physical():
        return read_u64(physical)


def hypercall_names():
    """Number -> name, read from the ABI's source (the one place hypercalls are listed)."""
    text = open(os.path.join(ROOT, "hypercall-abi", "src", "hypercall.rs")).read()
    # Only the `Hypercall` enum's variants: the file's other enums (`Errno`: EPERM = 1, ESRCH = 3,
    # EFAULT = 14) reuse the same numbers.
    body = re.search(r"pub enum Hypercall \{(.*?)\n\}", text, re.S)
    numbers = dict(re.findall(r"^\s+(\w+) = (\d+),", body.group(1) if body else "", re.M))
    names = dict(re.findall(r'Hypercall::(\w+) => "(\w+)"', text))
    return {int(number): names.get(variant, variant) for variant, number in numbers.items()}


RINGS = {
    0: "ring 0: xen-lite (or, in native mode, the guest kernel)",
    1: "ring 1: the pv guest kernel",
    2: "ring 2: unused",
    3: "ring 3: user code",
}


def selector(value):
    return "%#x (index %d, RPL %d)" % (value, value >> 3, value & 3)


class Ring(gdb.Command):
    """Which ring the CPU is in, and why: the RPL of CS is the current privilege level."""

    def __init__(self):
        super().__init__("xl-ring", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        cs, cr3 = register("cs"), register("cr3")
        own = cr3 & ADDRESS == hypervisor_cr3() & ADDRESS
        print("CPU in %s" % RINGS[cs & 3])
        print("  CS %s: the low two bits of the code selector are the current ring" % selector(cs))
        print("  CR3 %#x: %s" % (cr3, "xen-lite's own tables" if own else "a guest's tables (only the switcher of xen-lite is mapped)"))


class Domain(gdb.Command):
    """The running domain and vCPU."""

    def __init__(self):
        super().__init__("xl-domain", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        current = read_hypervisor_u64("xen_lite::domain::CURRENT_DOMAIN")
        if current == MASK64:
            print("no domain: xen-lite is idle, or pv mode has not started")
        else:
            print("dom%d, vCPU 0 (one vCPU per domain); CPU in %s" % (current, RINGS[register("cs") & 3]))


class Frame(gdb.Command):
    """xl-frame [ADDR] [error]: decode an interrupt or bounce frame at ADDR (default $rsp).

    Add `error` when the vector pushes an error code (#DF #TS #NP #SS #GP #PF #AC)."""

    def __init__(self):
        super().__init__("xl-frame", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        error = "error" in words
        words = [w for w in words if w != "error"]
        address = u64(gdb.parse_and_eval(words[0])) if words else register("rsp")
        slots = (["error code"] if error else []) + ["RIP", "CS", "RFLAGS", "RSP", "SS"]
        for offset, name in enumerate(slots):
            value = read_u64(address + 8 * offset)
            note = ""
            if name == "CS":
                note = "  %s: it interrupted %s" % (selector(value), RINGS[value & 3])
            elif name == "SS":
                note = "  %s" % selector(value)
            elif name == "RFLAGS":
                note = "  IF=%d (in a bounce frame: the guest's virtual IF)" % ((value >> 9) & 1)
            print("  +%-3d %-10s %#018x%s" % (8 * offset, name, value, note))


class Hypercall(gdb.Command):
    """The hypercall xen-lite is handling: number, name and arguments from the entry frame."""

    def __init__(self):
        super().__init__("xl-hypercall", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        if register("cr3") & ADDRESS != hypervisor_cr3() & ADDRESS:
            raise gdb.GdbError("not inside xen-lite: stop in a handler first (break do_console_io)")
        address = read_u64(symbol_address("xen_lite::switcher::ENTRY_FRAME"))
        frame_type = gdb.lookup_type("hypercall_abi::frame::TrapFrame")
        frame = gdb.Value(address).cast(frame_type.pointer()).dereference()
        if u64(frame["vector"]) != 0x82:
            print("the entry frame is vector %#x, not a hypercall" % u64(frame["vector"]))
            return
        number = u64(frame["rax"])
        name = hypercall_names().get(number, "unknown (the dispatcher answers -ENOSYS)")
        arguments = ", ".join("%s=%#x" % (r, u64(frame[r])) for r in ("rdi", "rsi", "rdx", "r10", "r8"))
        print("hypercall %d %s(%s) from rip %#x, CS %s" % (number, name, arguments, u64(frame["rip"]), selector(u64(frame["cs"]))))


class Walk(gdb.Command):
    """xl-walk VA [CR3]: the page-table walk for VA, level by level."""

    def __init__(self):
        super().__init__("xl-walk", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            raise gdb.GdbError("usage: xl-walk VA [CR3]")
        va = u64(gdb.parse_and_eval(words[0]))
        cr3 = u64(gdb.parse_and_eval(words[1])) if len(words) > 1 else register("cr3")
        print("walk of %#x from CR3 %#x" % (va, cr3))
        for level, index, table, entry in walk(cr3, va):
            flags = [name for bit, name in ((0, "P"), (1, "W"), (2, "U"), (7, "PS"), (63, "NX")) if entry >> bit & 1]
            print("  L%d[%3d] at %#x = %#018x  %s" % (level, index, table + 8 * index, entry, " ".join(flags) or "not present"))
        physical = translate(cr3, va)
        print("  -> %s" % ("physical %#x" % physical if physical is not None else "not mapped"))


for command in (Ring, Domain, Frame, Hypercall, Walk):
    command()
