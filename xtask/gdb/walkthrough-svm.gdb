# One world switch and one exit under AMD-V, checked: the walkthrough behind the transcript in
# lecture-notes/05-vt-x.md. Run by `cargo xtask gdb --mode svm --walkthrough` (and so by
# `cargo xtask test`); any failed check ends gdb with status 1.

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

# Addresses of labels come from xen_lite.py's `address_of`, which also takes assembly labels.
end

echo \n== 1. Before the world switch: xen-lite is about to run vmrun on dom0's VMCB\n
break svm_vmrun
continue
x/i $pc
xl-vmcb
python
vmcb = running_vmcb()
check(value("$rax") == read_hypervisor_u64("xen_lite::svm::RUNNING_VMCB"), "rax holds the VMCB's machine address, as vmrun wants")
check(u64(vmcb["control"]["intercepts"][1]) & 0b11 == 0b11, "the VMCB intercepts vmrun and vmmcall (vector 4, bits 0 and 1)")
check(u64(vmcb["control"]["np_enable"]) & 1 == 1, "nested paging is on")
guest_rip = u64(vmcb["save"]["rip"])
check(gdb.execute("info symbol %#x" % guest_rip, to_string=True).startswith("_start in section .text of " ) and "pv-guest" in gdb.execute("info symbol %#x" % guest_rip, to_string=True),
      "the guest will start at its kernel's _start (guest-virtual, from the VMCB)")
end
delete

echo \n== 2. vmrun: one stepi later the CPU runs the guest kernel, on the guest's own CR3\n
stepi
info registers rip cs cr3
python
check(value("$pc") == guest_rip, "the instruction after vmrun is the guest's first: rip comes from the VMCB")
check(value("$cr3") == u64(vmcb["save"]["cr3"]), "CR3 is the guest's (a guest-physical address)")
check(value("$cs") & 3 == 0, "the guest kernel runs in ring 0 (of the guest)")
try:
    gdb.execute("x/i $pc")
    print("(QEMU's stub read guest memory here)")
except gdb.error as error:
    print("x/i $pc: %s" % error)
    print("(QEMU's stub walks the guest's tables but skips the nested ones: the xl- commands walk both)")
end
xl-nested-walk $pc
xl-guest-code $pc 2
python
check(guest_machine_address(guest_rip) is not None, "the guest's entry point is mapped through both walks")
end

echo \n== 3. The guest writes to the console: its hypercall stub executes vmmcall\n
hbreak pv_guest::platform::hvm::console_write
python
IMAGE = (0xFFFF840000000000, 0xFFFF848000000000)
for attempt in range(5):
    gdb.execute("continue")
    last = None
    for step in range(400):
        pc = value("$pc")
        if IMAGE[0] <= pc < IMAGE[1]:
            break
        last = pc
        # Quietly: QEMU's timer runs on wall-clock time here, so a step can land on an
        # interrupt and print a line twice, and the transcript must read the same every run.
        # (`to_string` does not take what a stop prints; suppress-cli-notifications does.)
        gdb.execute("set suppress-cli-notifications on")
        try:
            gdb.execute("stepi")
        finally:
            gdb.execute("set suppress-cli-notifications off")
    code = u64(running_vmcb()["control"]["exit_code"])
    if code == 0x81:
        break
    # Another #VMEXIT (the timer's) came first: try the next console write, as quietly.
print("the guest's last instruction, at %#x:" % last)
gdb.execute("xl-guest-code %#x 1" % last)
machine = guest_machine_address(last)
with Physical():
    text = gdb.execute("x/i %#x" % machine, to_string=True)
check("vmmcall" in text, "the guest's last instruction was vmmcall")
end
delete

echo \n== 4. #VMEXIT: the CPU is back in xen-lite, after vmrun, and the VMCB says why\n
x/2i $pc
xl-vmcb
python
check(value("$pc") == address_of("svm_exit_entry"), "the exit resumes at the instruction after vmrun (svm_exit_entry)")
vmcb = running_vmcb()
check(u64(vmcb["control"]["exit_code"]) == 0x81, "the exit code is 0x81, VMEXIT_VMMCALL")
check(u64(vmcb["save"]["rip"]) == last, "the VMCB's guest rip is the vmmcall (xen-lite will skip it)")
check(u64(vmcb["save"]["rax"]) == 18, "the guest's rax, saved in the VMCB, is hypercall 18 (console_io)")
end

echo \n== 5. xen-lite's exit handler: the exit decoded, then the hypercall every mode shares\n
break xen_lite::svm::exits::read
continue
bt 3
# Only the handler from here on: under load QEMU has stopped at another exit's `read` first.
delete 3
break do_console_io
continue
bt 5
info args
python
check(value("command") == 0, "console_io was asked to write (command 0)")
check(value("$cs") & 3 == 0 and IMAGE[0] <= value("$pc") < IMAGE[1], "the handler is xen-lite's code, in ring 0 of the host")
end
echo \nwalkthrough: all checks passed\n
kill
quit 0
