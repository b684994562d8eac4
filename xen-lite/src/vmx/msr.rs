//! MSR virtualisation: what the guest's `rdmsr` and `wrmsr` reach.
//!
//! The primary controls use no MSR bitmap, so every `rdmsr` and `wrmsr` of the guest exits and
//! comes here. Three kinds of MSR are told apart:
//!
//! - EFER, FS.base and GS.base are guest state in the VMCS, loaded by every entry and saved by
//!   every exit: they are read and written there (EFER with only SCE and NXE free to change);
//! - the `syscall` MSRs (STAR, LSTAR, CSTAR, FMASK) and KERNEL_GS_BASE, which the CPU does not
//!   switch: each domain keeps its own in its vCPU ([`SyscallMsrs`]), [`load`] puts them in the
//!   real MSRs whenever the domain is scheduled in, and a `wrmsr` writes through at once (the
//!   domain writing is the one running), so the guest's `syscall` itself never exits;
//! - any other MSR is not virtualised: the access is refused, and the run loop kills the domain.
//!
//! Every address an MSR takes must be canonical, since a `wrmsr` of a non-canonical one would
//! fault in xen-lite. See: Intel SDM Vol. 3C, revision 086, 25.4.1 (guest register state),
//! 25.6.9 (MSR bitmaps), 26.1.3 (RDMSR and WRMSR exit without them).

use x86::msr::{
    IA32_CSTAR, IA32_EFER, IA32_FMASK, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GSBASE, IA32_LSTAR,
    IA32_STAR,
};
use x86::vmx::vmcs::guest;

use hypercall_abi::layout::is_canonical;

use super::vmcs;
use crate::instructions;

/// The `syscall` MSRs of a domain, which the CPU does not switch: xen-lite loads them into the
/// real MSRs whenever the domain is scheduled in (the guest uses them without any exit).
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallMsrs {
    star: u64,
    lstar: u64,
    cstar: u64,
    fmask: u64,
    kernel_gs_base: u64,
}

/// Loads a domain's `syscall` MSRs into the real ones, as it is scheduled in.
pub fn load(m: &SyscallMsrs) {
    // SAFETY: these MSRs exist on every x86-64 CPU; every value was checked canonical when
    // the guest wrote it, and xen-lite itself never executes `syscall` or `swapgs`.
    unsafe {
        instructions::wrmsr(IA32_STAR, m.star);
        instructions::wrmsr(IA32_LSTAR, m.lstar);
        instructions::wrmsr(IA32_CSTAR, m.cstar);
        instructions::wrmsr(IA32_FMASK, m.fmask);
        instructions::wrmsr(IA32_KERNEL_GSBASE, m.kernel_gs_base);
    }
}

/// `rdmsr` of `msr` by the guest: its value, or `None` for an MSR xen-lite does not virtualise.
pub fn read(m: &SyscallMsrs, msr: u32) -> Option<u64> {
    Some(match msr {
        IA32_EFER => vmcs::read(guest::IA32_EFER_FULL),
        IA32_STAR => m.star,
        IA32_LSTAR => m.lstar,
        IA32_CSTAR => m.cstar,
        IA32_FMASK => m.fmask,
        IA32_FS_BASE => vmcs::read(guest::FS_BASE),
        IA32_GS_BASE => vmcs::read(guest::GS_BASE),
        IA32_KERNEL_GSBASE => m.kernel_gs_base,
        _ => return None,
    })
}

/// `wrmsr` of `value` to `msr` by the guest; `Err` says why it is refused.
pub fn write(msrs: &mut SyscallMsrs, msr: u32, value: u64) -> Result<(), &'static str> {
    const EFER_SCE: u64 = 1;
    let address =
        |value: u64| if is_canonical(value) { Ok(value) } else { Err("non-canonical address") };
    match msr {
        IA32_EFER => {
            let current = vmcs::read(guest::IA32_EFER_FULL);
            if (value ^ current) & !(EFER_SCE | vmcs::EFER_NXE) != 0 {
                return Err("only EFER.SCE and EFER.NXE may change under xen-lite");
            }
            vmcs::write(guest::IA32_EFER_FULL, value);
            return Ok(());
        }
        IA32_FS_BASE => {
            vmcs::write(guest::FS_BASE, address(value)?);
            return Ok(());
        }
        IA32_GS_BASE => {
            vmcs::write(guest::GS_BASE, address(value)?);
            return Ok(());
        }
        IA32_STAR => msrs.star = value,
        IA32_LSTAR => msrs.lstar = address(value)?,
        IA32_CSTAR => msrs.cstar = address(value)?,
        IA32_FMASK => msrs.fmask = value & 0xffff_ffff,
        IA32_KERNEL_GSBASE => msrs.kernel_gs_base = address(value)?,
        _ => return Err("xen-lite does not virtualise it"),
    }
    // The vCPU is the one running: its MSRs are the real ones now.
    let value = match msr {
        IA32_FMASK => value & 0xffff_ffff,
        _ => value,
    };
    // SAFETY: a `syscall` MSR, with a canonical address where it holds one; xen-lite itself
    // never executes `syscall` or `swapgs`.
    unsafe { instructions::wrmsr(msr, value) };
    Ok(())
}
