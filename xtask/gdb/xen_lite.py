"""gdb commands that teach xen-lite: loaded by the gdbinit that `cargo xtask gdb` writes.

    xl-ring             which ring the CPU is in, and why (CS and CR3)
    xl-domain           the running domain and vCPU
    xl-frame [ADDR] [error]
                        an interrupt or bounce frame, slot by slot (default: at $rsp)
    xl-hypercall        the hypercall being handled, by name with its arguments
    xl-walk VA [CR3]    the page-table walk for VA (default: the current CR3)
    xl-console [N]      the last N (default 20) lines of the machine's console
    xl-break path::item a breakpoint at an item as the notes spell it
                        (xl-break xen-lite/src/pv/mod.rs::guest_syscall; a guest item gets hbreak;
                        at the item's own lines when gdb's would be an inlined helper's, or none)
    xl-shadow-walk VA [DOM]
                        pv with paging=shadow: VA's walk through the guest's own tables
                        (guest-physical, read through the domain's pmap) beside its walk
                        through the shadow the MMU runs on, and what the next access does

svm mode (the hvm guest under AMD-V with nested paging):

    xl-vmcb [PA]        a VMCB's exit fields, intercepts, event and guest state (default: the
                        one xen-lite entered last)
    xl-npt GPA          the nested page-table walk: guest-physical to machine
    xl-nested-walk VA   the two-dimensional walk: the guest's own tables (guest-physical) and,
                        for each of their addresses, the nested tables (machine)
    xl-guest-code VA [N]  N guest instructions at VA, read through both walks

They read xen-lite's own variables by name from its debug information; the page-table walks
read physical memory through QEMU's gdb stub (Qqemu.PhyMemMode). In an svm guest, QEMU 7.2's
stub translates a virtual address with the guest's own tables and then takes the guest-physical
result for a machine address, without the nested tables: `x` and `print` of guest memory show
the wrong bytes there (and a software breakpoint would be written into the wrong frame: use
`hbreak`). The svm commands walk both sets of tables themselves.
"""

import contextlib
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
    try:
        return u64(symbol.value().address)
    except gdb.MemoryError:
        # A Rust value whose layout depends on its contents (an enum inside) is read to be
        # described; outside xen-lite it cannot be. C's `&` only computes the address.
        language = gdb.parameter("language")
        gdb.execute("set language c")
        try:
            return u64(gdb.parse_and_eval("(unsigned long)&'%s'" % symbol.linkage_name))
        finally:
            gdb.execute("set language %s" % language)


def address_of(text):
    """The address `text` names: an expression in gdb's language (Rust here), or a symbol Rust
    cannot name (an assembly label such as `syscall_entry`, a mangled name), or a number."""
    try:
        return u64(gdb.parse_and_eval(text))
    except gdb.error as rust_error:
        language = gdb.parameter("language")
        gdb.execute("set language c")
        try:
            for form in ("(unsigned long)&'%s'", "(unsigned long)(%s)"):
                try:
                    return u64(gdb.parse_and_eval(form % text))
                except gdb.error:
                    pass
        finally:
            gdb.execute("set language %s" % language)
        raise gdb.GdbError("%s: %s" % (text, rust_error))


def read_u64(address):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(address, 8)), "little")


class Physical:
    """Inside `with Physical():` memory reads use physical addresses (QEMU only)."""

    def __enter__(self):
        gdb.execute("maintenance packet Qqemu.PhyMemMode:1", to_string=True)

    def __exit__(self, *exception):
        gdb.execute("maintenance packet Qqemu.PhyMemMode:0", to_string=True)


def steps(cr3, va, table_address=lambda table: table):
    """(level, index, table, entry) down the tables from `cr3`, reading memory as it is set up
    (physical inside `with Physical():`). `table_address` turns a table's address as the
    entries give it into one to read at (the nested walk's second dimension); None stops."""
    table = cr3 & ADDRESS
    for level in (4, 3, 2, 1):
        index = (va >> (12 + 9 * (level - 1))) & 0x1FF
        where = table_address(table)
        if where is None:
            return
        entry = read_u64(where + index * 8)
        yield level, index, table, entry
        if not entry & 1 or (level in (3, 2) and entry & 0x80):
            return
        table = entry & ADDRESS


def leaf_address(level, entry, va):
    """The address a present leaf entry at `level` maps `va` to."""
    size = 1 << (12 + 9 * (level - 1))
    return (entry & ADDRESS & ~(size - 1)) + (va & (size - 1))


def end_of(walked, va):
    """The address at the end of a walk, or None."""
    for level, _, _, entry in walked:
        if not entry & 1:
            return None
        if level == 1 or (level in (3, 2) and entry & 0x80):
            return leaf_address(level, entry, va)
    return None


def walk(cr3, va):
    """The walk of `va` from `cr3`, read physically, as a list of `steps`."""
    with Physical():
        return list(steps(cr3, va))


def translate(cr3, va):
    """The physical address of `va` under `cr3`, or None."""
    return end_of(walk(cr3, va), va)


# The top 2 GiB, where the guest kernel is linked (hypercall_abi::layout::GUEST_KERNEL_BASE).
GUEST_KERNEL_AREA = 0xFFFF_FFFF_8000_0000
# Where xen-lite's image is loaded (xen-lite/src/memory_map.rs, IMAGE_BASE) and how far it may
# reach: a `pc` in this range is xen-lite's code.
IMAGE_BASE = 0xFFFF_8400_0000_0000
IMAGE_END = 0xFFFF_8480_0000_0000
# xen-lite's CR3, as last seen while the CPU ran xen-lite (an svm guest maps nothing of it).
SEEN = {"cr3": None}


def in_xen_lite():
    inside = IMAGE_BASE <= register("pc") < IMAGE_END
    if inside:
        SEEN["cr3"] = register("cr3")
    return inside


def remember_cr3(event):
    """At every stop inside xen-lite, note its CR3 (for reading xen-lite from an svm guest)."""
    try:
        in_xen_lite()
    except gdb.error:
        pass


gdb.events.stop.connect(remember_cr3)


def hypervisor_cr3():
    if in_xen_lite() or SEEN["cr3"] is None:
        # This variable sits on a switcher page, mapped in every pv address space too.
        return read_u64(symbol_address("xen_lite::switcher::HYPERVISOR_CR3"))
    return SEEN["cr3"]


def on_hypervisor_tables():
    """Whether xen-lite's memory is readable as it is (the CPU runs on xen-lite's own tables)."""
    return in_xen_lite() or register("cr3") & ADDRESS == hypervisor_cr3() & ADDRESS


def read_hypervisor_u64(name):
    """A 64-bit variable of xen-lite, wherever the CPU is (through xen-lite's own tables)."""
    address = symbol_address(name)
    if on_hypervisor_tables():
        return read_u64(address)
    physical = translate(hypervisor_cr3(), address)
    with Physical():
        return read_u64(physical)


@contextlib.contextmanager
def hypervisor_object(address, value_type):
    """`with hypervisor_object(address, type) as value:` xen-lite's object at `address`, to be
    read inside the `with`. Outside xen-lite it is read physically, which needs its pages to be
    physically contiguous (as xen-lite's image is loaded); that is checked."""
    pointer = value_type.pointer()
    if on_hypervisor_tables():
        yield gdb.Value(address).cast(pointer).dereference()
        return
    physical = translate(hypervisor_cr3(), address)
    for page in range((address & ~0xFFF) + 0x1000, address + value_type.sizeof, 0x1000):
        if translate(hypervisor_cr3(), page) != physical + (page - address):
            raise gdb.GdbError("xen-lite's %#x is not physically contiguous: stop inside xen-lite "
                               "(break xen_lite::pv::shadow::page_fault) and try again" % address)
    with Physical():
        yield gdb.Value(physical).cast(pointer).dereference()


def offset_of(value_type, path):
    """(byte offset, type) of the field at `path` (names, outermost first) in `value_type`."""
    offset = 0
    for name in path:
        field = next(f for f in value_type.strip_typedefs().fields() if f.name == name)
        offset, value_type = offset + field.bitpos // 8, field.type
    return offset, value_type


def some(option):
    """The value inside a Rust `Option` read from memory (gdb resolves its variant from the
    bytes), or None for `None`."""
    if "Some" not in [field.name for field in option.type.fields()]:
        return None
    return option["Some"]["__0"]


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
        address = address_of(words[0]) if words else register("rsp")
        slots = (["error code"] if error else []) + ["RIP", "CS", "RFLAGS", "RSP", "SS"]
        for offset, name in enumerate(slots):
            value = read_u64(address + 8 * offset)
            note = ""
            if name == "CS":
                note = "  %s: the frame's context is in %s" % (selector(value), RINGS[value & 3])
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
        va = address_of(words[0])
        cr3 = address_of(words[1]) if len(words) > 1 else register("cr3")
        print("walk of %#x from CR3 %#x" % (va, cr3))
        print_walk(walk(cr3, va))
        physical = translate(cr3, va)
        print("  -> %s" % ("physical %#x" % physical if physical is not None else "not mapped"))


def shadow_of(argument=None):
    """(id, guest's CR3, shadow root, pmap base, pmap pages) of pv domain `argument` (default:
    the running one) under paging=shadow, from xen-lite's domain table."""
    current = read_hypervisor_u64("xen_lite::domain::CURRENT_DOMAIN")
    index = int(gdb.parse_and_eval(argument)) if argument else current
    if index == MASK64:
        raise gdb.GdbError("no domain runs (xen-lite is idle): name one, as in xl-shadow-walk VA 0")
    mutex = gdb.lookup_type("spin::mutex::Mutex<xen_lite::domain::Domains, spin::relax::Spin>")
    table, table_type = offset_of(mutex, ["inner", "data", "value", "domains"])
    low, high = table_type.range()
    if not low <= index <= high:
        raise gdb.GdbError("there is no dom%d (xen-lite has %d slots)" % (index, high + 1))
    slot_type = table_type.target()
    address = symbol_address("xen_lite::domain::DOMAINS") + table + index * slot_type.sizeof
    # Only that domain's slot is read: the whole table is tens of kilobytes.
    with hypervisor_object(address, slot_type) as slot:
        domain = some(slot)
        if domain is None:
            raise gdb.GdbError("there is no dom%d" % index)
        pv = some(domain["pv"])
        shadow = some(pv["shadow"]) if pv is not None else None
        if shadow is None:
            raise gdb.GdbError("dom%d is not shadowed: boot with -- paging=shadow (pv mode)" % index)
        tables, pmap = shadow["tables"], shadow["pmap"]
        return (index, u64(tables["guest_cr3"]), u64(tables["root"]), u64(pmap["base"]),
                u64(pmap["pages"]))


def flag_names(entry, accessed=False):
    """A page-table entry's flags by name (with A and D when `accessed`), or `not present`."""
    bits = ((0, "P"), (1, "W"), (2, "U")) + (((5, "A"), (6, "D")) if accessed else ()) + ((7, "PS"), (63, "NX"))
    return " ".join(name for bit, name in bits if entry >> bit & 1) or "not present"


def describe(walked):
    """One column's lines for a walk: each level's entry, with its flags."""
    lines = []
    for level, index, _, entry in walked:
        lines.append("L%d[%3d] %#018x %s" % (level, index, entry, flag_names(entry, accessed=True)))
    return lines


def break_location(spelling):
    """gdb's location for an item as the notes spell it (`crate-dir/src/a/b.rs::item`, `item`
    maybe `Type::method`), and whether it is guest code: `(location, guest)`."""
    if ".rs::" not in spelling:
        return spelling, False
    path, item = spelling.split(".rs::", 1)
    parts = path.split("/")
    if len(parts) < 3 or "src" not in parts:
        raise gdb.GdbError("%s: expected crate/src/....rs::item, as the notes write it" % spelling)
    crate = parts[0].replace("-", "_")
    modules = parts[parts.index("src") + 1:]
    if modules[-1] in ("mod", "main", "lib"):
        modules = modules[:-1]
    return "::".join([crate] + modules + [item]), crate == "pv_guest"


# The console log of this session (`cargo xtask gdb`'s gdbinit appends its path).
XL_CONSOLE = []


class Console(gdb.Command):
    """xl-console [N]: the last N (default 20) lines the machine printed on its serial console,
    which QEMU writes to the session's serial.log, not into gdb."""

    def __init__(self):
        super().__init__("xl-console", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        count = int(words[0]) if words else 20
        if not XL_CONSOLE:
            raise gdb.GdbError("no console log known: start gdb with `cargo xtask gdb`")
        try:
            lines = open(XL_CONSOLE[-1], errors="replace").read().splitlines()
        except OSError as error:
            raise gdb.GdbError("cannot read %s: %s" % (XL_CONSOLE[-1], error))
        print("(%s, last %d of %d lines)" % (XL_CONSOLE[-1], min(count, len(lines)), len(lines)))
        for line in lines[-count:]:
            print(line)


def full_name(name):
    """`(path, guest)` of the one function whose last path component is `name` (`kernel_main` ->
    `pv_guest::kernel_main`), or `(name, False)` when there is none or more than one."""
    listing = gdb.execute("info functions ::%s$" % re.escape(name), to_string=True)
    found = sorted(set(re.findall(r"\b((?:\w+::)+%s)\(" % re.escape(name), listing)))
    if len(found) == 1:
        return found[0], found[0].startswith("pv_guest::")
    if found:
        raise gdb.GdbError("%s: %d functions have this name: %s; give the whole path" % (
            name, len(found), ", ".join(found)))
    return name, False


def declared_line(path, item):
    """The line of `fn ITEM` (the last word of `item`, a method's too) in the workspace file
    `path`, or None."""
    name = item.split("::")[-1]
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return None
    pattern = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn %s\b" % re.escape(name))
    for number, line in enumerate(lines, 1):
        # A declaration without a body (an assembly label's `fn trap_return() -> !;`) has no code.
        if pattern.search(line) and not line.rstrip().endswith(";"):
            return number
    return None


def entry_of(location):
    """The first instruction of the function gdb calls `location`, or None."""
    symbol = gdb.lookup_global_symbol(location) or gdb.lookup_static_symbol(location)
    if symbol is None or symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
        return None
    return symbol.value().address and u64(symbol.value().address)


def body_lines(path, line):
    """The lines of the function declared at `line` of `path`: from there to its closing brace."""
    depth, opened = 0, False
    for number, text in enumerate(open(path, errors="replace").read().splitlines()[line - 1:], line):
        depth += text.count("{") - text.count("}")
        opened = opened or "{" in text
        if opened and depth <= 0:
            return range(line, number + 1)
    return range(line, line + 1)


def reported_line(text):
    found = re.search(r": file \S+, line (\d+)\.", text)
    return int(found.group(1)) if found else None


def reported_file(text):
    """The file of gdb's `Breakpoint N at ADDR: file F, line L.` message, or None."""
    found = re.search(r": file (\S+), line \d+\.", text)
    return found.group(1) if found else None


class Break(gdb.Command):
    """xl-break path::item: a breakpoint where the notes point, spelled as they spell it
    (`xl-break xen-lite/src/pv/mod.rs::guest_syscall`, `xl-break pv-guest/src/syscall.rs::dispatch`).
    Guest-kernel code gets a hardware breakpoint (`hbreak`); anything else is passed to `break`.
    gdb puts `break NAME` after the prologue, which can be the first instruction of a helper
    inlined there, and then names the helper's file and line; a function inlined everywhere has
    no NAME at all. Either way xl-break breaks at the item's own `fn` line instead
    (`break FILE:LINE`: every inlined copy), so the stop is reported where the notes point."""

    def __init__(self):
        super().__init__("xl-break", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if len(words) != 1:
            raise gdb.GdbError("usage: xl-break path::item (as the notes write it)")
        spelling = words[0]
        location, guest = break_location(spelling)
        if "::" not in location and "*" not in location:
            # A plain name (`kernel_main`): gdb's Rust mode wants the full path; find it. A name
            # no function has is an assembly label: break at its address, hardware in the guest.
            location, guest = full_name(location)
            if "::" not in location:
                address = address_of(location)
                guest = address >= GUEST_KERNEL_AREA
                location = "*%#x" % address
        command = "hbreak" if guest else "break"
        path = spelling.split("::")[0] if ".rs::" in spelling else None
        gdb.execute("set breakpoint pending off")
        try:
            text = gdb.execute("%s %s" % (command, location), to_string=True)
        except gdb.error as error:
            text, failure = None, error
        if path is None or (text is not None and reported_file(text) in (None, path)):
            if text is None:
                raise failure
            print(text, end="")
            return
        line = declared_line(path, spelling.split(".rs::", 1)[1])
        if text is not None:
            if line is None:
                print(text, end="")
                return
            # Not where the notes point: an inlined helper's line. Break at the function's
            # first instruction (its own line, before the prologue), else at its `fn` line.
            gdb.execute("delete %d" % gdb.breakpoints()[-1].number)
            helper = reported_file(text)
            entry = entry_of(location)
            places = (["*%#x" % entry] if entry else []) + ["%s:%d" % (path, line)]
            for place in places:
                again = gdb.execute("%s %s" % (command, place), to_string=True)
                if reported_file(again) == path or place.startswith(path):
                    break
                gdb.execute("delete %d" % gdb.breakpoints()[-1].number)
            print("(%s reported %s, a helper inlined there; at %s instead)" % (command, helper, place))
            print(again, end="")
            return
        if line is not None:
            # Inlined everywhere: break at its `fn` line, every inlined copy. gdb moves a line
            # without code to the next one that has some; past the function's end that is
            # another function, so refuse it.
            again = gdb.execute("%s %s:%d" % (command, path, line), to_string=True)
            where = reported_line(again)
            if where is not None and where not in body_lines(path, line):
                gdb.execute("delete %d" % gdb.breakpoints()[-1].number)
                raise gdb.GdbError("%s is inlined everywhere and has no code of its own at %s:%d "
                                   "(the compiler folded it into its callers)" % (spelling, path, line))
            print("(%s has no out-of-line copy: every inlined copy of %s:%d)" % (location, path, line))
            print(again, end="")
            return
        # An assembly label has no Rust path: the last word alone is its symbol.
        label = location.split("::")[-1]
        if label == location:
            raise failure
        print("%s: %s; trying the label %s" % (location, failure, label))
        gdb.execute("%s *%#x" % (command, address_of(label)))


def shadow_walk(va, argument=None):
    """VA's walk in pv domain `argument` (default: the running one) under paging=shadow, both
    ways: a dict of the domain, both CR3s, both walks, their ends, and `verdict`, one of
    "true" (the guest's tables refuse it), "beyond" (they name memory past the domain's end),
    "hidden" (the shadow lacks it), "agrees" and "stale" (the shadow still holds an entry the
    guest has changed and not invalidated)."""
    index, guest_cr3, root, base, pages = shadow_of(argument)
    machine_of = lambda gpa: base + gpa if gpa < pages * 4096 else None
    with Physical():
        guest = list(steps(guest_cr3, va, machine_of))
        shadow = list(steps(root, va))
    gpa, machine = end_of(guest, va), end_of(shadow, va)
    expected = machine_of(gpa) if gpa is not None else None
    if machine is not None and machine != expected:
        verdict = "stale"
    elif gpa is None:
        verdict = "true"
    elif expected is None:
        verdict = "beyond"
    else:
        verdict = "agrees" if machine is not None else "hidden"
    return {"domain": index, "guest_cr3": guest_cr3, "root": root, "base": base, "guest": guest,
            "shadow": shadow, "gpa": gpa, "machine": machine, "expected": expected, "verdict": verdict}


VERDICTS = {
    "true": "the guest's tables do not map it: a true fault, delivered to the guest",
    "beyond": "the guest's entry names memory beyond the domain: the next access kills it",
    "hidden": "the shadow lacks it: the next access is a hidden fault, filled from the guest's entry",
    "agrees": "the shadow agrees: guest-physical %(gpa)#x is machine %(machine)#x (pmap base %(base)#x)",
    "stale": "the shadow is stale: it maps machine %(machine)#x where the guest's tables now say "
             "%(expected)s, until the guest invalidates (a TLB behaves so too)",
}


class ShadowWalk(gdb.Command):
    """xl-shadow-walk VA [DOM]: under paging=shadow, VA's walk through the guest's own tables
    (guest-physical addresses, which xen-lite reads through the pmap) beside its walk through
    the shadow (machine addresses: the tables CR3 really holds), and what the next access does."""

    def __init__(self):
        super().__init__("xl-shadow-walk", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            raise gdb.GdbError("usage: xl-shadow-walk VA [DOM]")
        va = address_of(words[0])
        w = shadow_walk(va, words[1] if len(words) > 1 else None)
        print("walk of %#x in dom%d: the guest's tables (guest-physical) | the shadow (machine)" % (va, w["domain"]))
        column = "  %-40s | %s"
        print(column % ("CR3 the guest loaded %#x" % w["guest_cr3"], "CR3 the CPU holds %#x" % w["root"]))
        left, right = describe(w["guest"]), describe(w["shadow"])
        for row in range(max(len(left), len(right))):
            print(column % (left[row] if row < len(left) else "", right[row] if row < len(right) else ""))
        print(column % (
            "-> guest-physical %#x" % w["gpa"] if w["gpa"] is not None else "-> not mapped",
            "-> machine %#x" % w["machine"] if w["machine"] is not None else "-> not mapped"))
        shown = dict(w, expected="%#x" % w["expected"] if w["expected"] is not None else "nothing")
        print("  " + VERDICTS[w["verdict"]] % shown)
        if w["verdict"] == "agrees" and w["guest"][-1][3] & 2 and not w["shadow"][-1][3] & 2:
            print("  (read-only in the shadow until the first write, whose hidden fault sets D in the guest's entry)")


# svm mode.

# The APM's names for intercept vectors 3 and 4 (Vol. 2, Table B-1), bit by bit.
VECTOR_3 = ["INTR", "NMI", "SMI", "INIT", "VINTR", "CR0_SEL_WRITE", "IDTR_READ", "GDTR_READ",
            "LDTR_READ", "TR_READ", "IDTR_WRITE", "GDTR_WRITE", "LDTR_WRITE", "TR_WRITE", "RDTSC",
            "RDPMC", "PUSHF", "POPF", "CPUID", "RSM", "IRET", "INTn", "INVD", "PAUSE", "HLT",
            "INVLPG", "INVLPGA", "IOIO_PROT", "MSR_PROT", "TASK_SWITCH", "FERR_FREEZE", "SHUTDOWN"]
VECTOR_4 = ["VMRUN", "VMMCALL", "VMLOAD", "VMSAVE", "STGI", "CLGI", "SKINIT", "RDTSCP", "ICEBP",
            "WBINVD", "MONITOR", "MWAIT", "MWAIT_CONDITIONAL", "XSETBV", "RDPRU", "EFER_WRITE"]


def svm_exit_names():
    """Exit code -> name, from the ABI's source (hypercall-abi/src/vm_exit.rs, module svm)."""
    text = open(os.path.join(ROOT, "hypercall-abi", "src", "vm_exit.rs")).read()
    codes = dict(re.findall(r"pub const (\w+): u64 = (0x[0-9a-f]+|u64::MAX);", text))
    names = {}
    for name, value in codes.items():
        names[MASK64 if value == "u64::MAX" else int(value, 16)] = name
    return names


def bits(word, names):
    return " ".join(name for bit, name in enumerate(names) if word >> bit & 1) or "none"


def vmcb_at(physical):
    """The VMCB at machine address `physical`, as xen-lite's type describes it, read at once."""
    vmcb_type = gdb.lookup_type("xen_lite::svm::vmcb::Vmcb")
    with Physical():
        value = gdb.Value(physical).cast(vmcb_type.pointer()).dereference()
        value.fetch_lazy()
    return value


class Vmcb(gdb.Command):
    """xl-vmcb [PA]: a VMCB: why the guest last left, what is intercepted, the guest's state."""

    def __init__(self):
        super().__init__("xl-vmcb", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        physical = u64(gdb.parse_and_eval(words[0])) if words else read_hypervisor_u64("xen_lite::svm::RUNNING_VMCB")
        if physical == 0:
            raise gdb.GdbError("no VMCB entered yet: break svm_enter_guest, continue")
        vmcb = vmcb_at(physical)
        c, g = vmcb["control"], vmcb["save"]
        code = u64(c["exit_code"])
        print("VMCB at machine %#x (control area 0x000-0x3ff, state-save area from 0x400)" % physical)
        print("  exit_code     %#x %s   exit_info1 %#x   exit_info2 %#x" % (
            code, svm_exit_names().get(code, "(see APM Appendix C)"), u64(c["exit_info1"]), u64(c["exit_info2"])))
        print("  exit_int_info %#x   event_inj %#x   next_rip %#x" % (
            u64(c["exit_int_info"]), u64(c["event_inj"]), u64(c["next_rip"])))
        print("  intercepts: vector 3 [%s]" % bits(u64(c["intercepts"][0]), VECTOR_3))
        print("              vector 4 [%s]" % bits(u64(c["intercepts"][1]), VECTOR_4))
        print("  asid %d   v_intr %#x (V_IRQ %d, V_INTR_MASKING %d)   np_enable %d   n_cr3 %#x" % (
            u64(c["guest_asid"]), u64(c["v_intr"]), u64(c["v_intr"]) >> 8 & 1, u64(c["v_intr"]) >> 24 & 1,
            u64(c["np_enable"]) & 1, u64(c["n_cr3"])))
        print("  iopm %#x   msrpm %#x" % (u64(c["iopm_base_pa"]), u64(c["msrpm_base_pa"])))
        print("  guest: rip %#x  rsp %#x  rax %#x  rflags %#x (IF=%d)  cpl %d" % (
            u64(g["rip"]), u64(g["rsp"]), u64(g["rax"]), u64(g["rflags"]), u64(g["rflags"]) >> 9 & 1, u64(g["cpl"])))
        print("         cr0 %#x  cr3 %#x (guest-physical)  cr4 %#x  efer %#x" % (
            u64(g["cr0"]), u64(g["cr3"]), u64(g["cr4"]), u64(g["efer"])))
        print("         cs %s attrib %#x   ss %s" % (
            selector(u64(g["cs"]["selector"])), u64(g["cs"]["attrib"]), selector(u64(g["ss"]["selector"]))))


def running_vmcb():
    physical = read_hypervisor_u64("xen_lite::svm::RUNNING_VMCB")
    if physical == 0:
        raise gdb.GdbError("no VMCB entered yet: break svm_enter_guest, continue")
    return vmcb_at(physical)


def print_walk(walked, indent="  "):
    for level, index, table, entry in walked:
        print("%sL%d[%3d] at %#x = %#018x  %s" % (indent, level, index, table + 8 * index, entry, flag_names(entry)))


class Npt(gdb.Command):
    """xl-npt GPA [N_CR3]: the nested page-table walk of a guest-physical address."""

    def __init__(self):
        super().__init__("xl-npt", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            raise gdb.GdbError("usage: xl-npt GPA [N_CR3]")
        gpa = u64(gdb.parse_and_eval(words[0]))
        n_cr3 = u64(gdb.parse_and_eval(words[1])) if len(words) > 1 else u64(running_vmcb()["control"]["n_cr3"])
        print("nested walk of guest-physical %#x from n_cr3 %#x" % (gpa, n_cr3))
        print_walk(walk(n_cr3, gpa))
        machine = translate(n_cr3, gpa)
        print("  -> %s" % ("machine %#x" % machine if machine is not None else "not mapped: a nested page fault"))


def guest_walk(va, vmcb):
    """The two-dimensional walk of guest-virtual `va`: (steps of the guest's tables, each with the
    machine address its table was read at; guest-physical result; machine result)."""
    n_cr3, cr3 = u64(vmcb["control"]["n_cr3"]), u64(vmcb["save"]["cr3"])
    with Physical():
        nested = lambda gpa: end_of(steps(n_cr3, gpa), gpa)
        walked = [(level, index, table, nested(table), entry)
                  for level, index, table, entry in steps(cr3, va, nested)]
        gpa = end_of([(lv, i, t, e) for lv, i, t, _, e in walked], va)
        machine = nested(gpa) if gpa is not None else None
    return walked, gpa, machine


class NestedWalk(gdb.Command):
    """xl-nested-walk VA: guest-virtual to guest-physical (the guest's tables, each itself at a
    guest-physical address) to machine (the nested tables)."""

    def __init__(self):
        super().__init__("xl-nested-walk", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            raise gdb.GdbError("usage: xl-nested-walk VA")
        va = address_of(words[0])
        vmcb = running_vmcb()
        walked, gpa, machine = guest_walk(va, vmcb)
        print("walk of guest-virtual %#x from the guest's CR3 %#x (guest-physical)" % (va, u64(vmcb["save"]["cr3"])))
        for level, index, table, machine_table, entry in walked:
            print("  L%d[%3d]: table at guest-physical %#x = machine %#x (a nested walk); entry %#018x" % (
                level, index, table, machine_table, entry))
        if gpa is None:
            print("  -> not mapped by the guest's tables: a #PF for the guest itself")
        else:
            print("  -> guest-physical %#x -> machine %#x" % (gpa, machine) if machine is not None
                  else "  -> guest-physical %#x: not in the nested tables (a nested page fault)" % gpa)


def guest_machine_address(va):
    return guest_walk(va, running_vmcb())[2]


class GuestCode(gdb.Command):
    """xl-guest-code VA [N]: disassemble N (default 3) guest instructions at guest-virtual VA,
    read through the guest's tables and the nested ones (QEMU's stub cannot, in an svm guest)."""

    def __init__(self):
        super().__init__("xl-guest-code", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            raise gdb.GdbError("usage: xl-guest-code VA [N]")
        va = address_of(words[0])
        count = int(words[1]) if len(words) > 1 else 3
        machine = guest_machine_address(va)
        if machine is None:
            raise gdb.GdbError("guest-virtual %#x is not mapped" % va)
        print("guest-virtual %#x is machine %#x:" % (va, machine))
        with Physical():
            print(gdb.execute("x/%di %#x" % (count, machine), to_string=True).rstrip())


for command in (Ring, Domain, Frame, Hypercall, Walk, Console, Break, ShadowWalk, Vmcb, Npt, NestedWalk, GuestCode):
    command()
