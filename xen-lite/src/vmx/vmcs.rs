//! One domain's VMCS: its field accessors, creating and loading it, the state xen-lite sets in
//! it, and the guest-state and event fields the run loop asks about between entries.
//!
//! A VMCS has three parts that matter here (SDM Vol. 3C, revision 086, 25.3-25.9):
//!
//! - **guest state**, loaded by every VM entry and saved by every VM exit: control registers,
//!   segment registers with their hidden parts, `rip`, `rsp`, `rflags`, EFER, and whether an
//!   `sti` or `mov ss` shadow blocks interrupts. General registers are *not* in it: `entry.rs`
//!   loads and saves them itself, in a `crate::entry::TrapFrame`;
//! - **host state**, loaded by every VM exit: xen-lite's CR3, segments and tables
//!   ([`HostState`]), and the `rip`/`rsp` where it resumes (`entry.rs`: its exit label, on the
//!   stack of the entry);
//! - **controls**: which guest actions exit (here `hlt`, all I/O, all MSR accesses, host
//!   interrupts), EPT, and the event to inject at the next entry.
//!
//! A VMCS is a 4-KiB frame that starts with the revision id; its layout is the CPU's, so
//! software reaches it only through VMREAD and VMWRITE ([`read`], [`write`]), which act on the
//! *current* VMCS, the one the last VMPTRLD named ([`create`], [`make_current`]).
//! See: SDM Vol. 3C, 25.1-25.2 and 25.11.

use x86::msr::IA32_EFER;
use x86::vmx::vmcs::{control, guest, host, ro};

use super::controls::Controls;
use crate::frame::Frame;
use crate::gdt::{HYPERVISOR_CS, HYPERVISOR_DS, TSS_SELECTOR};
use crate::hvm::VcpuBoot;
use crate::instructions::{self, VmxStatus};
use crate::memory_map::phys_to_virt;

/// Writes a field of the current VMCS; a failure is a bug in xen-lite (a field this CPU lacks,
/// or no current VMCS), reported with the field and the CPU's reason.
pub fn write(field: u32, value: u64) {
    // SAFETY: the backend only calls this in VMX root operation with the domain's VMCS
    // current; the values it writes are checked again by the CPU at the next VM entry.
    let status = unsafe { instructions::vmwrite(field, value) };
    if let failed @ (VmxStatus::FailValid | VmxStatus::FailInvalid) = status {
        panic!("vmwrite of field {field:#x} = {value:#x}: {failed:?} ({})", last_error());
    }
}

/// Reads a field of the current VMCS (a failure is a bug in xen-lite, as for [`write`]).
pub fn read(field: u32) -> u64 {
    // SAFETY: as in `write`; reading has no effect on the guest.
    unsafe { instructions::vmread(field) }
        .unwrap_or_else(|failed| panic!("vmread of field {field:#x}: {failed:?}"))
}

/// The VM-instruction error of the current VMCS, in words.
pub fn last_error() -> &'static str {
    // SAFETY: as in `read`.
    match unsafe { instructions::vmread(ro::VM_INSTRUCTION_ERROR) } {
        Ok(number) => instruction_error(number),
        Err(_) => "no current VMCS",
    }
}

/// The VM-instruction error number in words (what a failed `vmlaunch`, `vmresume`, `vmptrld`
/// or `vmwrite` leaves in the current VMCS). See: SDM Vol. 3C, 31.4.
pub const fn instruction_error(number: u64) -> &'static str {
    match number {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// Access rights of a 64-bit ring-0 code segment: type 11 (execute/read, accessed), S, P, L, G.
const CODE64_RIGHTS: u64 = 0xa09b;
/// Access rights of a ring-0 data segment: type 3 (read/write, accessed), S, P, D/B, G.
const DATA_RIGHTS: u64 = 0xc093;
/// Access rights of a busy 64-bit TSS: type 11, P.
const TSS_RIGHTS: u64 = 0x8b;
/// Access rights bit 16: the segment register is unusable (as after loading a null selector).
const UNUSABLE: u64 = 1 << 16;

/// CR0 of the guest at its first instruction: PE, MP, ET, NE, WP, PG (protected mode with
/// paging, as the `hvm` kernel expects on entry, the same state `native` mode leaves it in).
const GUEST_CR0: u64 = 0x8001_0033;
/// CR4 of the guest as it sees it: PAE (long-mode paging needs it).
const GUEST_CR4: u64 = 0x20;
/// EFER.LME and EFER.LMA: long mode is on from the first instruction.
const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10);
/// EFER.NXE: no-execute bits in page tables are honoured.
pub const EFER_NXE: u64 = 1 << 11;

/// What every VMCS's host-state area holds: xen-lite as it is at boot.
pub struct HostState {
    /// CR0 and CR4 with the VMX fixed bits; CR3 = xen-lite's own tables.
    pub cr0: u64,
    /// xen-lite's CR3.
    pub cr3: u64,
    /// CR4 including VMXE.
    pub cr4: u64,
    /// EFER, loaded back on every exit.
    pub efer: u64,
    /// Base of xen-lite's GDT.
    pub gdt: u64,
    /// Base of xen-lite's IDT.
    pub idt: u64,
    /// Base of xen-lite's TSS.
    pub tss: u64,
}

impl HostState {
    /// xen-lite as it is now, with `cr0` and `cr4` as VMX root operation set them.
    pub fn of_xen_lite(cr0: u64, cr4: u64) -> HostState {
        let (gdt, tss) = crate::gdt::bases();
        // SAFETY: EFER exists on every x86-64 CPU.
        let efer = unsafe { instructions::rdmsr(IA32_EFER) };
        HostState {
            cr0,
            cr3: crate::switcher::hypervisor_cr3(),
            cr4,
            efer,
            gdt,
            idt: crate::idt::base(),
            tss,
        }
    }
}

/// A new VMCS for this CPU's `revision` id, cleared and made current (VMCLEAR, VMPTRLD).
pub fn create(revision: u32) -> Result<Frame, &'static str> {
    let vmcs = crate::frame::alloc().ok_or("no free frame for its VMCS")?;
    // SAFETY: a frame just allocated for the VMCS; the revision id goes in its first four
    // bytes, the rest belongs to the CPU.
    unsafe {
        let base = phys_to_virt(vmcs.addr()) as *mut u8;
        core::ptr::write_bytes(base, 0, 4096);
        (base as *mut u32).write(revision);
    }
    // SAFETY: in VMX root operation; the frame is a fresh VMCS region.
    let cleared = unsafe { instructions::vmclear(vmcs.addr()) };
    // SAFETY: as above; the VMCS was just cleared.
    let loaded = unsafe { instructions::vmptrld(vmcs.addr()) };
    if cleared != VmxStatus::Succeed || loaded != VmxStatus::Succeed {
        return Err("VMCLEAR or VMPTRLD of its VMCS failed");
    }
    Ok(vmcs)
}

/// Makes `vmcs`, set up by [`setup`], the current VMCS again (VMPTRLD, on a domain switch).
pub fn make_current(vmcs: Frame) {
    // SAFETY: in VMX root operation; the frame is a VMCS that `create` made and `setup` filled.
    let status = unsafe { instructions::vmptrld(vmcs.addr()) };
    assert!(status == VmxStatus::Succeed, "VMPTRLD of a set-up VMCS failed: {status:?}");
}

/// Fills the current (just cleared and loaded) VMCS for a domain starting as `boot` says.
/// With `eptp`, the guest's memory is behind EPT; without, the guest runs on the shadow root of
/// `boot.shadow_root` (`crate::shadow`), and CR3 loads and stores, `invlpg` and page faults exit.
/// Returns the primary controls this VMCS uses (the interrupt window adds to them).
pub fn setup(boot: &VcpuBoot, controls: &Controls, host: &HostState, eptp: Option<u64>) -> u32 {
    use x86::vmx::vmcs::control::{PrimaryControls, SecondaryControls};
    let (primary, secondary) = match eptp {
        Some(_) => (controls.primary, controls.secondary),
        None => (
            controls.primary
                | (PrimaryControls::CR3_LOAD_EXITING
                    | PrimaryControls::CR3_STORE_EXITING
                    | PrimaryControls::INVLPG_EXITING)
                    .bits(),
            controls.secondary & !SecondaryControls::ENABLE_EPT.bits(),
        ),
    };
    // Controls: what exits, and EPT.
    write(control::PINBASED_EXEC_CONTROLS, u64::from(controls.pin));
    write(control::PRIMARY_PROCBASED_EXEC_CONTROLS, u64::from(primary));
    write(control::SECONDARY_PROCBASED_EXEC_CONTROLS, u64::from(secondary));
    write(control::VMEXIT_CONTROLS, u64::from(controls.exit));
    write(control::VMENTRY_CONTROLS, u64::from(controls.entry));
    // The guest handles all its own exceptions, but for #PF on shadow page tables (every #PF
    // exits: the error-code mask and match below are 0).
    write(control::EXCEPTION_BITMAP, if eptp.is_some() { 0 } else { 1 << 14 });
    write(control::PAGE_FAULT_ERR_CODE_MASK, 0);
    write(control::PAGE_FAULT_ERR_CODE_MATCH, 0);
    write(control::CR3_TARGET_COUNT, 0);
    write(control::VMEXIT_MSR_STORE_COUNT, 0);
    write(control::VMEXIT_MSR_LOAD_COUNT, 0);
    write(control::VMENTRY_MSR_LOAD_COUNT, 0);
    write(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
    // The guest may not clear the bits VMX needs (CR0.PE/NE/PG, CR4.VMXE): those are owned by
    // xen-lite (mask), and the guest reads them as the shadow says, without VMXE.
    write(control::CR0_GUEST_HOST_MASK, controls.cr0_fixed0);
    write(control::CR0_READ_SHADOW, GUEST_CR0);
    write(control::CR4_GUEST_HOST_MASK, controls.cr4_fixed0);
    write(control::CR4_READ_SHADOW, GUEST_CR4);
    if let Some(eptp) = eptp {
        write(control::EPTP_FULL, eptp);
    }

    // Host state: where a VM exit lands.
    write(host::CR0, host.cr0);
    write(host::CR3, host.cr3);
    write(host::CR4, host.cr4);
    write(host::IA32_EFER_FULL, host.efer);
    write(host::CS_SELECTOR, u64::from(HYPERVISOR_CS.bits()));
    for field in [host::SS_SELECTOR, host::DS_SELECTOR, host::ES_SELECTOR] {
        write(field, u64::from(HYPERVISOR_DS.bits()));
    }
    write(host::FS_SELECTOR, 0);
    write(host::GS_SELECTOR, 0);
    write(host::TR_SELECTOR, u64::from(TSS_SELECTOR.bits()));
    write(host::FS_BASE, 0);
    write(host::GS_BASE, 0);
    write(host::TR_BASE, host.tss);
    write(host::GDTR_BASE, host.gdt);
    write(host::IDTR_BASE, host.idt);
    write(host::IA32_SYSENTER_CS, 0);
    write(host::IA32_SYSENTER_ESP, 0);
    write(host::IA32_SYSENTER_EIP, 0);
    write(host::RIP, super::entry::host_rip());
    // host::RSP is written by `enter`, right before each entry.

    // Guest state: the kernel's first instruction, in 64-bit ring 0 with paging on.
    write(guest::CR0, GUEST_CR0 | controls.cr0_fixed0);
    write(guest::CR3, boot.shadow_root.unwrap_or(boot.cr3));
    write(guest::CR4, GUEST_CR4 | controls.cr4_fixed0);
    write(guest::DR7, 0x400);
    write(guest::RIP, boot.entry);
    write(guest::RSP, boot.stack_top);
    write(guest::RFLAGS, 0x2); // interrupts off until the kernel has its IDT
    write(guest::IA32_EFER_FULL, EFER_LONG_MODE | (host.efer & EFER_NXE));
    write(guest::IA32_DEBUGCTL_FULL, 0);
    write(guest::LINK_PTR_FULL, u64::MAX); // no shadow VMCS
    write(guest::INTERRUPTIBILITY_STATE, 0);
    write(guest::ACTIVITY_STATE, 0); // active
    write(guest::PENDING_DBG_EXCEPTIONS, 0);
    write(guest::IA32_SYSENTER_CS, 0);
    write(guest::IA32_SYSENTER_ESP, 0);
    write(guest::IA32_SYSENTER_EIP, 0);
    // Segments. The selectors are the ones the kernel's own GDT will use, but the CPU takes
    // base, limit and rights from here, so the kernel runs before it has a GDT at all; its
    // first act is to load one (`pv-guest/src/platform/hvm.rs`).
    let segment = |selector: u32, base: u32, limit: u32, rights: u32, value: u16, ar: u64| {
        write(selector, u64::from(value));
        write(base, 0);
        write(limit, if ar & UNUSABLE != 0 { 0 } else { 0xffff_ffff });
        write(rights, ar);
    };
    segment(
        guest::CS_SELECTOR,
        guest::CS_BASE,
        guest::CS_LIMIT,
        guest::CS_ACCESS_RIGHTS,
        0x08,
        CODE64_RIGHTS,
    );
    segment(
        guest::SS_SELECTOR,
        guest::SS_BASE,
        guest::SS_LIMIT,
        guest::SS_ACCESS_RIGHTS,
        0x10,
        DATA_RIGHTS,
    );
    segment(
        guest::DS_SELECTOR,
        guest::DS_BASE,
        guest::DS_LIMIT,
        guest::DS_ACCESS_RIGHTS,
        0x10,
        DATA_RIGHTS,
    );
    segment(
        guest::ES_SELECTOR,
        guest::ES_BASE,
        guest::ES_LIMIT,
        guest::ES_ACCESS_RIGHTS,
        0x10,
        DATA_RIGHTS,
    );
    segment(
        guest::FS_SELECTOR,
        guest::FS_BASE,
        guest::FS_LIMIT,
        guest::FS_ACCESS_RIGHTS,
        0,
        UNUSABLE,
    );
    segment(
        guest::GS_SELECTOR,
        guest::GS_BASE,
        guest::GS_LIMIT,
        guest::GS_ACCESS_RIGHTS,
        0,
        UNUSABLE,
    );
    segment(
        guest::LDTR_SELECTOR,
        guest::LDTR_BASE,
        guest::LDTR_LIMIT,
        guest::LDTR_ACCESS_RIGHTS,
        0,
        UNUSABLE,
    );
    // TR must be usable: a placeholder busy TSS until the kernel loads its own.
    write(guest::TR_SELECTOR, 0);
    write(guest::TR_BASE, 0);
    write(guest::TR_LIMIT, 0x67);
    write(guest::TR_ACCESS_RIGHTS, TSS_RIGHTS);
    write(guest::GDTR_BASE, 0);
    write(guest::GDTR_LIMIT, 0);
    write(guest::IDTR_BASE, 0);
    write(guest::IDTR_LIMIT, 0);
    primary
}

/// Moves the guest past the instruction that caused the last exit.
pub fn skip_instruction() {
    let rip = read(guest::RIP) + read(ro::VMEXIT_INSTRUCTION_LEN);
    write(guest::RIP, rip);
    // The `sti` or `mov ss` shadow covered only the instruction just skipped.
    let state = read(guest::INTERRUPTIBILITY_STATE);
    if state & 3 != 0 {
        write(guest::INTERRUPTIBILITY_STATE, state & !3);
    }
}

/// Whether the guest's own state lets an external interrupt in: IF set, no `sti`/`mov ss`
/// shadow.
pub fn interrupts_open() -> bool {
    read(guest::RFLAGS) & (1 << 9) != 0 && read(guest::INTERRUPTIBILITY_STATE) & 3 == 0
}

/// Sets up external interrupt `vector` for delivery at the next entry.
pub fn inject_interrupt(vector: u8) {
    // Valid (bit 31), type 0 (external interrupt), the vector.
    write(control::VMENTRY_INTERRUPTION_INFO_FIELD, (1 << 31) | u64::from(vector));
}

/// Sets up a page fault with `error_code` for delivery at the next entry: valid (bit 31), type
/// 3 (hardware exception), deliver an error code (bit 11), vector 14.
pub fn inject_page_fault(error_code: u64) {
    write(control::VMENTRY_INTERRUPTION_INFO_FIELD, (1 << 31) | (3 << 8) | (1 << 11) | 14);
    write(control::VMENTRY_EXCEPTION_ERR_CODE, error_code);
}

/// Writes the primary controls `primary`, with interrupt-window exiting added when `on`.
pub fn set_interrupt_window(primary: u32, on: bool) {
    use x86::vmx::vmcs::control::PrimaryControls;
    let window = if on { PrimaryControls::INTERRUPT_WINDOW_EXITING.bits() } else { 0 };
    write(control::PRIMARY_PROCBASED_EXEC_CONTROLS, u64::from(primary | window));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_words() {
        assert_eq!(instruction_error(7), "VM entry with invalid control field(s)");
        assert_eq!(instruction_error(8), "VM entry with invalid host-state field(s)");
        assert_eq!(instruction_error(99), "unknown VM-instruction error");
    }
}
