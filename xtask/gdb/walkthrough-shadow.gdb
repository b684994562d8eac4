# The CR3 swap, checked: the walkthrough behind the transcript in lecture-notes/08-memory-virtualisation.md.
# Run by `cargo xtask gdb --walkthrough -- paging=shadow` (and so by `cargo xtask test`); any
# failed check ends gdb with status 1.

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

echo \n== 1. A hidden fault: the guest touches a page its tables map and the shadow does not yet\n
break xen_lite::pv::shadow::page_fault
continue
info args
xl-shadow-walk address
python
fault = value("address")
first = shadow_walk(fault)
check(first["verdict"] == "hidden", "the guest's tables map the address; the shadow has no entry for it yet")
check(first["root"] != first["guest_cr3"], "the CR3 the guest loaded (guest-physical) is not the CR3 the MMU uses (the shadow root)")
end
delete
finish
xl-shadow-walk address
python
check(gdb.parse_and_eval("$") == False, "page_fault returned false: the fault was hidden, the guest never sees it")
filled = shadow_walk(fault)
check(filled["verdict"] == "agrees", "the shadow now maps the address")
check(filled["machine"] == filled["base"] + filled["gpa"], "to the guest-physical address plus the pmap's base: a machine address")
end

echo \n== 2. Back in the guest: ring 1 runs on the shadow, believing it runs on its own tables\n
hbreak guest_syscall_entry
continue
xl-ring
info registers cr3
xl-shadow-walk $pc
xl-walk $pc
python
here = shadow_walk(value("$pc"))
believed = read_u64(symbol_address("pv_guest::platform::pv::CURRENT_ROOT"))
check(value("$cr3") & ADDRESS == here["root"], "the CPU's CR3 holds the shadow root xen-lite keeps for the domain")
check(believed == here["guest_cr3"], "the guest kernel's own record of its CR3 is the guest-physical root xen-lite shadows")
check(translate(value("$cr3"), value("$pc")) == here["machine"], "the MMU's walk (xl-walk, from the real CR3) ends where the shadow column does")
check(here["verdict"] == "agrees", "and where the guest's tables, through the pmap, say")
end
delete

echo \n== 3. What the guest's tables do not map stays unmapped: a true fault, the guest's own\n
xl-shadow-walk 0
python
check(shadow_walk(0)["verdict"] == "true", "page 0 is not mapped by the guest: an access would be bounced to its #PF handler")
end
kill
