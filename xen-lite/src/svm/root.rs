//! Switching SVM on, the state xen-lite must be in before a single `vmrun`.
//!
//! Where VT-x needs a VMXON region, fixed CR0/CR4 bits and a locked feature-control MSR, AMD-V
//! needs three things (AMD64 APM Vol. 2, revision 3.42, 15.4 and 15.30):
//!
//! 1. the CPU offers SVM (CPUID 8000_0001h ECX bit 2) and, for xen-lite, nested paging
//!    (CPUID 8000_000Ah EDX bit 0), and the firmware has not disabled it (`VM_CR.SVMDIS`,
//!    MSR C001_0114h bit 4);
//! 2. `EFER.SVME` set: from then on `vmrun`, `vmload`, `vmsave`, `stgi`, `clgi` work;
//! 3. a 4-KiB *host save area* whose physical address is in `VM_HSAVE_PA` (MSR C001_0117h):
//!    `vmrun` saves xen-lite's `rip`, `rsp`, `rax`, `rflags`, control registers, EFER, GDTR,
//!    IDTR and CS/SS/DS/ES there, and `#VMEXIT` restores them.
//!
//! `#VMEXIT` restores no more than that list: xen-lite's TR, FS, GS, LDTR and `syscall` MSRs
//! stay the guest's until someone reloads them. [`enable`] therefore also keeps a second VMCB,
//! the *host-state VMCB*, where `vmsave` stores xen-lite's own once; the entry path
//! (`entry.rs`) puts them back with `vmload` after every exit.

use core::fmt;

use crate::frame::Frame;
use crate::instructions::{self, cpuid};
use crate::memory_map::phys_to_virt;

/// `VM_CR`: the firmware's SVM controls.
const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_CR` bit 4: SVM disabled (`EFER.SVME` cannot be set).
const VM_CR_SVMDIS: u64 = 1 << 4;
/// `VM_HSAVE_PA`: the physical address of the host save area.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// CPUID 8000_000Ah EDX bit 0: nested paging.
const CPUID_SVM_NP: u32 = 1 << 0;
/// CPUID 8000_000Ah EDX bit 3: NRIP save (`next_rip` holds the next instruction's address).
const CPUID_SVM_NRIPS: u32 = 1 << 3;

/// What CPUID 8000_000Ah says about this CPU's SVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// SVM revision (EAX 7:0).
    pub revision: u32,
    /// Number of address-space ids (EBX).
    pub asids: u32,
    /// Nested paging.
    pub nested_paging: bool,
    /// NRIP save: an intercept of an instruction records the address after it.
    pub next_rip: bool,
}

/// Reads CPUID 8000_000Ah, if the CPU offers SVM at all.
pub fn features() -> Option<Features> {
    if !crate::cpu::probe().svm {
        return None;
    }
    let [eax, ebx, _, edx] = cpuid(0x8000_000a, 0);
    Some(Features {
        revision: eax & 0xff,
        asids: ebx,
        nested_paging: edx & CPUID_SVM_NP != 0,
        next_rip: edx & CPUID_SVM_NRIPS != 0,
    })
}

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// CPUID 8000_0001h ECX bit 2 is clear.
    NotOffered,
    /// CPUID 8000_000Ah EDX bit 0 is clear.
    NoNestedPaging,
    /// `VM_CR.SVMDIS` is set (its value).
    Disabled(u64),
    /// Fewer than two ASIDs: none left for a guest.
    NoAsids(u32),
    /// No free frame for the host save area or the host-state VMCB.
    NoFrame,
}

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotOffered => {
                f.write_str("this CPU does not offer SVM (CPUID 8000_0001h ECX bit 2 is clear)")
            }
            Self::NoNestedPaging => f.write_str(
                "this CPU's SVM has no nested paging (CPUID 8000_000Ah EDX bit 0 is clear)",
            ),
            Self::Disabled(vm_cr) => {
                write!(f, "VM_CR is {vm_cr:#x}: the firmware disabled SVM (bit 4, SVMDIS)")
            }
            Self::NoAsids(n) => {
                write!(f, "CPUID 8000_000Ah EBX offers {n} ASIDs, none for a guest")
            }
            Self::NoFrame => f.write_str("no free frame for the host save area"),
        }
    }
}

/// SVM switched on: the frames it needs for the rest of the run.
pub struct SvmRoot {
    /// What this CPU's SVM has.
    pub features: Features,
    /// The host-state VMCB: xen-lite's TR, FS, GS, LDTR and `syscall` MSRs, as `vmsave`
    /// stored them.
    pub host_vmcb: Frame,
}

/// A zeroed frame of xen-lite's.
fn zeroed_frame() -> Result<Frame, SvmError> {
    let frame = crate::frame::alloc().ok_or(SvmError::NoFrame)?;
    // SAFETY: a frame just allocated, reached through the physical map; nothing else uses it.
    unsafe { core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, 4096) };
    Ok(frame)
}

/// Switches SVM on for the rest of the run: checks, `EFER.SVME`, `VM_HSAVE_PA`, and the
/// host-state VMCB.
pub fn enable() -> Result<SvmRoot, SvmError> {
    let features = features().ok_or(SvmError::NotOffered)?;
    if !features.nested_paging {
        return Err(SvmError::NoNestedPaging);
    }
    if features.asids < 2 {
        return Err(SvmError::NoAsids(features.asids));
    }
    // SAFETY: VM_CR exists on every CPU that offers SVM.
    let vm_cr = unsafe { instructions::rdmsr(MSR_VM_CR) };
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err(SvmError::Disabled(vm_cr));
    }
    let host_save = zeroed_frame()?;
    let host_vmcb = zeroed_frame()?;
    let efer = x86::msr::IA32_EFER;
    // SAFETY: SVMDIS is clear, so EFER.SVME may be set; it only makes the SVM instructions
    // legal. The host save area is a frame of xen-lite's that nothing else uses, and the CPU
    // owns it from here on.
    unsafe {
        instructions::wrmsr(efer, instructions::rdmsr(efer) | super::vmcb::EFER_SVME);
        instructions::wrmsr(MSR_VM_HSAVE_PA, host_save.addr());
    }
    // SAFETY: SVME is set; `host_vmcb` is a zeroed frame of xen-lite's.
    unsafe { instructions::vmsave(host_vmcb.addr()) };
    Ok(SvmRoot { features, host_vmcb })
}

/// Logs what this CPU's SVM offers (at boot, on a CPU with SVM).
pub fn log_features() {
    if let Some(f) = features() {
        log::info!(
            "svm: revision {}, {} ASIDs, nested paging {}, NRIP save {}",
            f.revision,
            f.asids,
            if f.nested_paging { "yes" } else { "no" },
            if f.next_rip { "yes" } else { "no" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_missing_bit() {
        assert_eq!(
            SvmError::NoNestedPaging.to_string(),
            "this CPU's SVM has no nested paging (CPUID 8000_000Ah EDX bit 0 is clear)"
        );
        assert!(SvmError::Disabled(0x18).to_string().contains("SVMDIS"));
    }
}
