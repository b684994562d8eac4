//! Every privileged instruction xen-lite executes, each wrapped once, here.
//!
//! Students can read this one file to see exactly which ring-0-only operations the hypervisor
//! relies on; a guest kernel in ring 1 would fault on every one of them (that is the point of
//! ring compression). Where the `x86` crate already wraps an instruction we call it rather
//! than write the assembly again, but still only from here.
//!
//! Three exceptions, each written once where it cannot be separated from its neighbours: the
//! switcher's entry and return paths (`entry.rs`: `mov cr3` and `iretq` around the register
//! saves), VMX's VM entry and exit (`vmx/entry.rs`: `vmlaunch`, `vmresume` and the `vmwrite`
//! of the host `rsp`, which must run on the very stack the VM exit returns to), and SVM's
//! world switch (`svm/entry.rs`: `clgi`, `sti`, `vmload`, `vmrun`, `vmsave`, `cli`, `stgi`
//! around the guest's registers).
//!
//! See: Intel SDM Vol. 2 (Instruction Set Reference), revision 086, for each instruction.

use core::arch::asm;

use x86::dtables::DescriptorTablePointer;
use x86::segmentation::SegmentSelector;

/// Reads CR3: the physical address of the current level-4 page table (and PCID bits).
pub fn read_cr3() -> u64 {
    // SAFETY: reading CR3 has no side effect; xen-lite runs in ring 0.
    unsafe { x86::controlregs::cr3() }
}

/// Switches to the address space whose level-4 table is at physical address `l4`.
///
/// # Safety
/// The new tables must map the code executing this call, its stack, and everything the caller
/// touches afterwards, at the same virtual addresses.
pub unsafe fn write_cr3(l4: u64) {
    // SAFETY: the caller guarantees the new address space keeps this code and stack mapped.
    unsafe { x86::controlregs::cr3_write(l4) }
}

/// Sets CR0.WP, so supervisor code (ring 0, and the guest kernel in ring 1) cannot write
/// through read-only mappings. Direct paging depends on it (DESIGN §4, invariant 2).
pub fn enable_write_protect() {
    let wp = x86::controlregs::Cr0::CR0_WRITE_PROTECT.bits() as u64;
    // SAFETY: setting WP only adds protection; xen-lite never writes through read-only mappings.
    unsafe { write_cr0(read_cr0() | wp) };
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    // SAFETY: reading CR0 has no side effect; xen-lite runs in ring 0.
    unsafe { x86::controlregs::cr0().bits() as u64 }
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    // SAFETY: reading CR4 has no side effect; xen-lite runs in ring 0.
    unsafe { x86::controlregs::cr4().bits() as u64 }
}

/// Writes CR0.
///
/// # Safety
/// Every bit changed must be one the running code is prepared for (paging and protection stay
/// on; caching changes only with the caches flushed).
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller vouches for the new value.
    unsafe {
        x86::controlregs::cr0_write(x86::controlregs::Cr0::from_bits_truncate(value as usize))
    }
}

/// Writes CR4.
///
/// # Safety
/// Every bit changed must be one the running code is prepared for (PAE stays on in long mode).
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the new value.
    unsafe {
        x86::controlregs::cr4_write(x86::controlregs::Cr4::from_bits_truncate(value as usize))
    }
}

/// How a VMX instruction ended (Intel SDM Vol. 3C, 31.2 "Conventions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxStatus {
    /// RFLAGS.CF and ZF both clear.
    Succeed,
    /// CF set: the operand was invalid and there is no current VMCS to say why.
    FailInvalid,
    /// ZF set: the reason is in the current VMCS' VM-instruction error field.
    FailValid,
}

impl VmxStatus {
    /// The status the flags after a VMX instruction report (also read by `vmx::entry::enter`).
    pub fn from_flags(carry: u8, zero: u8) -> Self {
        match (carry, zero) {
            (0, 0) => Self::Succeed,
            (0, _) => Self::FailValid,
            _ => Self::FailInvalid,
        }
    }
}

/// Enters VMX root operation with the VMXON region at physical address `region`.
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits, `IA32_FEATURE_CONTROL` must
/// be locked with VMX enabled, and `region` must be a 4-KiB-aligned frame that holds the VMCS
/// revision id and stays reserved until `vmxoff`; otherwise the instruction faults.
pub unsafe fn vmxon(region: u64) -> VmxStatus {
    let (carry, zero): (u8, u8);
    // SAFETY: the caller guarantees the preconditions above. The flags are read in the same
    // block, so nothing the compiler emits can clobber them in between.
    unsafe {
        asm!("vmxon [{region}]", "setc {carry}", "setz {zero}",
             region = in(reg) &region, carry = out(reg_byte) carry, zero = out(reg_byte) zero,
             options(nostack));
    }
    VmxStatus::from_flags(carry, zero)
}

/// Leaves VMX root operation.
///
/// # Safety
/// Must run in VMX root operation with no guest depending on the current VMCS.
pub unsafe fn vmxoff() -> VmxStatus {
    let (carry, zero): (u8, u8);
    // SAFETY: the caller guarantees we are in VMX root operation.
    unsafe {
        asm!("vmxoff", "setc {carry}", "setz {zero}",
             carry = out(reg_byte) carry, zero = out(reg_byte) zero, options(nostack));
    }
    VmxStatus::from_flags(carry, zero)
}

/// Clears the VMCS at physical address `vmcs`: its launch state becomes "clear" and the CPU
/// writes back anything it cached of it.
///
/// # Safety
/// Must run in VMX root operation; `vmcs` must be a 4-KiB-aligned frame holding the VMCS
/// revision id that nothing else uses.
pub unsafe fn vmclear(vmcs: u64) -> VmxStatus {
    let (carry, zero): (u8, u8);
    // SAFETY: the caller guarantees the preconditions; flags are read in the same block.
    unsafe {
        asm!("vmclear [{vmcs}]", "setc {carry}", "setz {zero}",
             vmcs = in(reg) &vmcs, carry = out(reg_byte) carry, zero = out(reg_byte) zero,
             options(nostack));
    }
    VmxStatus::from_flags(carry, zero)
}

/// Makes the VMCS at physical address `vmcs` the current one (the one `vmread`, `vmwrite`,
/// `vmlaunch` and `vmresume` act on).
///
/// # Safety
/// As [`vmclear`].
pub unsafe fn vmptrld(vmcs: u64) -> VmxStatus {
    let (carry, zero): (u8, u8);
    // SAFETY: the caller guarantees the preconditions; flags are read in the same block.
    unsafe {
        asm!("vmptrld [{vmcs}]", "setc {carry}", "setz {zero}",
             vmcs = in(reg) &vmcs, carry = out(reg_byte) carry, zero = out(reg_byte) zero,
             options(nostack));
    }
    VmxStatus::from_flags(carry, zero)
}

/// Reads field `field` of the current VMCS.
///
/// # Safety
/// Must run in VMX root operation with a current VMCS.
pub unsafe fn vmread(field: u32) -> Result<u64, VmxStatus> {
    let (value, carry, zero): (u64, u8, u8);
    // SAFETY: the caller guarantees a current VMCS; an unsupported field only sets the flags.
    unsafe {
        asm!("vmread {value}, {field}", "setc {carry}", "setz {zero}",
             field = in(reg) u64::from(field), value = out(reg) value,
             carry = out(reg_byte) carry, zero = out(reg_byte) zero, options(nostack));
    }
    match VmxStatus::from_flags(carry, zero) {
        VmxStatus::Succeed => Ok(value),
        failed => Err(failed),
    }
}

/// Writes `value` to field `field` of the current VMCS.
///
/// # Safety
/// Must run in VMX root operation with a current VMCS; the value takes effect at the next VM
/// entry (or, for host-state fields, at the next VM exit), so the caller vouches for it.
pub unsafe fn vmwrite(field: u32, value: u64) -> VmxStatus {
    let (carry, zero): (u8, u8);
    // SAFETY: the caller guarantees a current VMCS and vouches for the value.
    unsafe {
        asm!("vmwrite {field}, {value}", "setc {carry}", "setz {zero}",
             field = in(reg) u64::from(field), value = in(reg) value,
             carry = out(reg_byte) carry, zero = out(reg_byte) zero, options(nostack));
    }
    VmxStatus::from_flags(carry, zero)
}

/// Stores the processor state `vmload` loads (FS, GS, TR and LDTR with their hidden parts,
/// KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK and the SYSENTER MSRs) into the VMCB at physical
/// address `vmcb`.
///
/// # Safety
/// `EFER.SVME` must be set and `vmcb` must be a 4-KiB-aligned frame of xen-lite's that nothing
/// else uses (the instruction overwrites part of it).
pub unsafe fn vmsave(vmcb: u64) {
    // SAFETY: the caller guarantees SVME and the frame.
    unsafe { asm!("vmsave rax", in("rax") vmcb, options(nostack)) };
}

/// Flushes every non-global TLB entry (by reloading CR3 with its own value).
pub fn flush_tlb() {
    // SAFETY: writing CR3 with its current value changes no mapping, only drops cached ones.
    unsafe { write_cr3(read_cr3()) };
}

/// Flushes the TLB entry for virtual address `va`.
pub fn invlpg(va: u64) {
    // SAFETY: `invlpg` only drops a cached translation; any address is allowed.
    unsafe { x86::tlb::flush(va as usize) };
}

/// Reads CR2: the linear address of the most recent page fault.
pub fn read_cr2() -> u64 {
    // SAFETY: reading CR2 has no side effect.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// Writes CR2, which no VM entry loads: the fault address a guest's injected page fault shows.
pub fn write_cr2(address: u64) {
    // SAFETY: CR2 is only ever read by page-fault handlers; xen-lite's own read it at entry,
    // before anything could change it again.
    unsafe { x86::controlregs::cr2_write(address) };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; CR4.TSD is clear, so ring 0 may always use it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads model-specific register `msr`.
///
/// # Safety
/// `msr` must exist on this CPU (check CPUID first), or the read raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { x86::msr::rdmsr(msr) }
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// `msr` must exist, and the value must be one the rest of xen-lite is prepared for.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the register and the value.
    unsafe { x86::msr::wrmsr(msr, value) }
}

/// Executes CPUID for `leaf`/`subleaf`; returns `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = x86::cpuid::native_cpuid::cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Loads the global descriptor table register.
///
/// # Safety
/// `gdt` must stay valid and unchanged in the slots in use for as long as it is loaded.
pub unsafe fn lgdt<T>(gdt: &DescriptorTablePointer<T>) {
    // SAFETY: the caller guarantees the table outlives its use.
    unsafe { x86::dtables::lgdt(gdt) }
}

/// Loads the interrupt descriptor table register.
///
/// # Safety
/// `idt` must stay valid for as long as it is loaded and every present gate must point to a
/// handler that can run at that moment.
pub unsafe fn lidt<T>(idt: &DescriptorTablePointer<T>) {
    // SAFETY: the caller guarantees the table and its handlers are valid.
    unsafe { x86::dtables::lidt(idt) }
}

/// Loads the task register with a TSS selector.
///
/// # Safety
/// `selector` must name an available 64-bit TSS descriptor in the loaded GDT.
pub unsafe fn ltr(selector: SegmentSelector) {
    // SAFETY: the caller guarantees the descriptor is an available TSS.
    unsafe { x86::task::load_tr(selector) }
}

/// Loads the LDT register with the null selector: no LDT. Every selector with TI set then
/// faults (#GP) instead of reading descriptors from whatever LDTR the firmware left: after a
/// reset LDTR has base 0 and limit 0xffff, so a guest that maps linear page 0 would supply its
/// own descriptors, a call gate into ring 0 among them.
pub fn clear_ldtr() {
    // SAFETY: a null LDTR is always valid; xen-lite never uses an LDT.
    unsafe { x86::dtables::load_ldtr(SegmentSelector::from_raw(0)) }
}

/// Reloads CS with `code` (through a far return) and DS, ES, SS with `data`; clears FS and GS.
///
/// # Safety
/// Both selectors must name ring-0 descriptors of the loaded GDT: 64-bit code and writable data.
pub unsafe fn load_segments(code: SegmentSelector, data: SegmentSelector) {
    // SAFETY: the caller guarantees valid selectors; the far return lands on the next label.
    unsafe {
        asm!(
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "mov fs, {null:x}",
            "mov gs, {null:x}",
            code = in(reg) u64::from(code.bits()),
            data = in(reg) data.bits(),
            null = in(reg) 0u16,
            tmp = out(reg) _,
        );
    }
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Writing to a device register can have any effect the device defines; the caller must know
/// what the port does.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device effect.
    unsafe { x86::io::outb(port, value) }
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the device effect.
    unsafe { x86::io::outl(port, value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading some device registers has side effects (it may acknowledge or consume data).
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the device effect.
    unsafe { x86::io::inb(port) }
}

/// Enables interrupts and halts until the next one: the idle loop's only instruction pair.
/// `sti` takes effect after the following instruction, so no interrupt can slip in between
/// and leave the CPU halted with work pending.
pub fn wait_for_interrupt() {
    // SAFETY: enabling interrupts is safe here because only the idle context calls this, and
    // every interrupt it can take has a handler.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Lets interrupts that are already pending in: `sti; nop; cli`. The one-instruction `sti`
/// shadow covers the `nop`, so they are taken right after it, then interrupts are off again.
pub fn take_pending_interrupts() {
    // SAFETY: as `wait_for_interrupt`: every interrupt that can arrive has a handler, and the
    // caller (the hvm run loop) holds nothing an interrupt handler needs.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Disables interrupts and halts, forever: the last thing a dying CPU does.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; nothing is left to run on it.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// The Bochs *magic breakpoint*: `xchg bx, bx` with `eax = status`.
///
/// With `magic_break: enabled=1` Bochs stops in its debugger, which our `-rc` script answers
/// with `r` (print registers, so the xtask can read `eax`) and `q`. Elsewhere it is a no-op.
pub fn bochs_magic_break(status: u32) {
    // SAFETY: `xchg bx, bx` only exchanges a register with itself.
    unsafe { asm!("xchg bx, bx", in("eax") status, options(nomem, nostack)) };
}
