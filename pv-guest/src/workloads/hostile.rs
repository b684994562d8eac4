//! Workloads that break the rules on purpose: each must end with xen-lite killing only this
//! domain, naming what it did. In `native` mode they simply execute, which is the point of
//! comparison.

use core::arch::asm;

use hypercall_abi::hypercall::{Errno, Hypercall};

use crate::args::Instruction;
use crate::{platform, println};

/// Executes one privileged instruction. Native: it runs. `pv` (ring 1): #GP, and xen-lite kills
/// the domain naming the instruction.
pub fn privileged(instruction: Instruction) -> Result<(), Errno> {
    println!("privileged: executing {instruction:?}");
    // SAFETY: deliberately sensitive. In ring 1 none of these executes. In ring 0 (native)
    // `cli` and `out 0x80` (the POST port) are harmless; `mov cr3` reloads the current value;
    // `lgdt` reloads the current GDTR; `wrmsr` writes IA32_TSC_AUX (only read by `rdtscp`).
    // `hlt` with interrupts off would stop a native kernel forever, so it is not offered there
    // (the `hvm` platform keeps IF clear); the test runs it only in `pv`.
    unsafe {
        match instruction {
            Instruction::Cli => asm!("cli"),
            Instruction::Hlt => asm!("hlt"),
            Instruction::MovCr3 => asm!("mov rax, cr3", "mov cr3, rax", out("rax") _),
            Instruction::Lgdt => asm!("sub rsp, 16", "sgdt [rsp]", "lgdt [rsp]", "add rsp, 16"),
            Instruction::Wrmsr => asm!("wrmsr", in("ecx") 0xc000_0103u32, in("eax") 0, in("edx") 0),
            Instruction::Out => asm!("out 0x80, al", in("al") 0u8),
        }
    }
    println!("privileged: {instruction:?} executed without trapping");
    Ok(())
}

/// Clears the trap table, then raises #BP: with no handler to bounce to, xen-lite must kill.
pub fn no_handler() -> Result<(), Errno> {
    let result = platform::hypercall(Hypercall::SetTrapTable as u64, [0; 5]);
    println!("no-handler: trap table cleared ({result:#x}); raising #BP");
    // SAFETY: deliberately raises #BP with no handler registered.
    unsafe { asm!("int3") };
    println!("no-handler: #BP returned?");
    Ok(())
}

/// Points its stack into its own (read-only, validated) L4 and raises #UD: xen-lite writes the
/// bounce frame through its own map, so it must refuse the page table and kill, never write it.
pub fn stack_on_page_table(info: &hypercall_abi::StartInfo) -> Result<(), Errno> {
    let target = info.pt_base + 0x800;
    println!("stack-on-page-table: raising #UD with rsp = {target:#x} (inside its L4)");
    // SAFETY: deliberately faults with the stack in a page table; control never returns.
    unsafe { asm!("mov rsp, {}", "ud2", in(reg) target, options(noreturn)) }
}

/// Registers, as the stack for bounces from ring 3, the top of its own L4 (validated, so
/// mapped read-only). The next user `syscall` reaches xen-lite's fast path, whose push onto
/// that stack faults in ring 0: xen-lite must survive that, replay the call through the slow
/// path, and kill only this domain. (`hvm`: `ENOSYS`, and the program runs normally.)
pub fn syscall_stack_on_page_table(info: &hypercall_abi::StartInfo) {
    use hypercall_abi::layout::selectors::FLAT_RING1_DS;
    let top = info.pt_base + 0x1000;
    let result = platform::hypercall(
        Hypercall::StackSwitch as u64,
        [u64::from(FLAT_RING1_DS), top, 0, 0, 0],
    );
    println!(
        "syscall-stack-on-page-table: stack_switch to {top:#x} (the top of its L4): {result:#x}"
    );
}

/// With handlers installed (at start of day), raises #UD on a stack pointer outside the domain: xen-lite cannot
/// write the bounce frame and must kill.
pub fn bad_stack() -> Result<(), Errno> {
    println!("bad-stack: raising #UD with rsp = 0x1000 (not the domain's memory)");
    // SAFETY: deliberately faults with a stack no handler can run on; control never returns.
    unsafe { asm!("mov rsp, 0x1000", "ud2", options(noreturn)) }
}

/// Points a page of the kernel's direct map at the first frame *past* the domain's memory and
/// reads it. `pv`: xen-lite refuses the mapping (the frame is not the domain's). `vmx`: the
/// guest owns its page tables, so the mapping is made, but the guest-physical address is not
/// in the domain's EPT: the read exits with an EPT violation and xen-lite kills the domain.
/// `native`: nothing stands in the way, and the kernel reads memory that is not its own.
pub fn beyond_memory(info: &hypercall_abi::StartInfo) -> Result<(), Errno> {
    use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE};
    use hypercall_abi::page_table::{PRESENT, WRITABLE};
    let gfn = crate::frames::alloc().ok_or(Errno::ENOMEM)?;
    let va = gfn_to_va(gfn);
    let beyond = info.pte_base + info.nr_pages * PAGE_SIZE;
    println!("beyond-memory: mapping {va:#x} to frame {beyond:#x}, one past the domain's memory");
    if let Err(errno) = platform::update_va_mapping(va, beyond | PRESENT | WRITABLE) {
        println!("beyond-memory: the mapping was refused ({errno:?})");
        crate::frames::free(gfn);
        return Err(errno);
    }
    // SAFETY: deliberately reads a page outside the domain; under a hypervisor this never
    // returns.
    let value = unsafe { (va as *const u64).read_volatile() };
    println!("beyond-memory: read {value:#x} from memory that is not this domain's");
    Ok(())
}

/// Loads an IDT with limit 0 and raises #BP: #BP cannot be delivered (#GP), nor can the #GP
/// (#DF), nor the #DF: a triple fault. Under VMX that is a VM exit and xen-lite kills the
/// domain; a real machine resets; in ring 1 `lidt` itself is refused.
pub fn triple_fault() -> Result<(), Errno> {
    println!("triple-fault: loading an empty IDT, then raising #BP");
    let empty = [0u8; 10]; // limit 0, base 0
                           // SAFETY: deliberately destroys the kernel's ability to take any exception.
    unsafe { asm!("lidt [{}]", "int3", in(reg) empty.as_ptr()) };
    println!("triple-fault: still running?");
    Ok(())
}
