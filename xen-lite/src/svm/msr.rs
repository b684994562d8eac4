//! MSR and I/O virtualisation: the permission maps every domain shares, and what the guest's
//! `rdmsr` and `wrmsr` reach.
//!
//! Both maps are bitmaps in physical memory that the CPU consults before an `in`/`out` or an
//! `rdmsr`/`wrmsr` (AMD64 APM Vol. 2, revision 3.42, 15.10 and 15.11): the I/O permission map
//! (12 KiB) has one bit per port, the MSR permission map (8 KiB) two bits per MSR (read,
//! write) for the three MSR ranges it covers; a set bit intercepts. xen-lite sets every bit,
//! so every port and every MSR access exits, as VMX's "unconditional I/O exiting" and "no MSR
//! bitmap" do (`crate::vmx::msr`), and comes here or to the virtual PIC and PIT.
//!
//! Three kinds of MSR are told apart, as under VMX:
//!
//! - EFER, whose SVME bit `vmrun` requires and the guest never sees, with only SCE and NXE free
//!   to change;
//! - FS.base, GS.base, KERNEL_GS_BASE and the `syscall` MSRs (STAR, LSTAR, CSTAR, SFMASK):
//!   guest state in the VMCB, which `vmload` puts into the real registers before each run and
//!   `vmsave` takes back after it (`entry.rs`), so the guest's `syscall` never exits and a
//!   write here only changes the VMCB;
//! - any other MSR is not virtualised: the access is refused, and the run loop kills the domain.
//!
//! Every address an MSR takes must be canonical, since `vmload` of a non-canonical one would
//! fault in xen-lite.

use x86::msr::{
    IA32_CSTAR, IA32_EFER, IA32_FMASK, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GSBASE, IA32_LSTAR,
    IA32_STAR,
};

use hypercall_abi::layout::{is_canonical, PAGE_SIZE};

use super::vmcb::{Vmcb, EFER_NXE, EFER_SVME};
use crate::memory_map::phys_to_virt;

/// Frames of the I/O permission map: 64 K ports, one bit each, and the page the last port's
/// multi-byte accesses reach into.
const IOPM_PAGES: u64 = 3;
/// Frames of the MSR permission map.
const MSRPM_PAGES: u64 = 2;

/// The two permission maps, every bit set: physical addresses of the I/O and MSR maps.
pub fn intercept_everything() -> Result<(u64, u64), &'static str> {
    let map = |pages: u64| -> Result<u64, &'static str> {
        let first = crate::frame::alloc_contiguous(pages).ok_or("no free frames for its maps")?;
        // SAFETY: frames just allocated for the map, contiguous, reached through the physical
        // map; the CPU only reads them.
        unsafe {
            core::ptr::write_bytes(
                phys_to_virt(first.addr()) as *mut u8,
                0xff,
                (pages * PAGE_SIZE) as usize,
            )
        };
        Ok(first.addr())
    };
    Ok((map(IOPM_PAGES)?, map(MSRPM_PAGES)?))
}

/// `rdmsr` of `msr` by the guest of `vmcb`: its value, or `None` for an MSR xen-lite does not
/// virtualise.
pub fn read(vmcb: &Vmcb, msr: u32) -> Option<u64> {
    let s = &vmcb.save;
    Some(match msr {
        IA32_EFER => s.efer & !EFER_SVME,
        IA32_STAR => s.star,
        IA32_LSTAR => s.lstar,
        IA32_CSTAR => s.cstar,
        IA32_FMASK => s.sfmask,
        IA32_FS_BASE => s.fs.base,
        IA32_GS_BASE => s.gs.base,
        IA32_KERNEL_GSBASE => s.kernel_gs_base,
        _ => return None,
    })
}

/// `wrmsr` of `value` to `msr` by the guest of `vmcb`; `Err` says why it is refused.
pub fn write(vmcb: &mut Vmcb, msr: u32, value: u64) -> Result<(), &'static str> {
    const EFER_SCE: u64 = 1;
    let address =
        |value: u64| if is_canonical(value) { Ok(value) } else { Err("non-canonical address") };
    let s = &mut vmcb.save;
    match msr {
        IA32_EFER => {
            let current = s.efer & !EFER_SVME;
            if (value ^ current) & !(EFER_SCE | EFER_NXE) != 0 {
                return Err("only EFER.SCE and EFER.NXE may change under xen-lite");
            }
            s.efer = value | EFER_SVME;
        }
        IA32_STAR => s.star = value,
        IA32_LSTAR => s.lstar = address(value)?,
        IA32_CSTAR => s.cstar = address(value)?,
        IA32_FMASK => s.sfmask = value & 0xffff_ffff,
        IA32_FS_BASE => s.fs.base = address(value)?,
        IA32_GS_BASE => s.gs.base = address(value)?,
        IA32_KERNEL_GSBASE => s.kernel_gs_base = address(value)?,
        _ => return Err("xen-lite does not virtualise it"),
    }
    Ok(())
}
