//! The guest's memory as `mode=trap` reaches it: by guest-virtual address, through the guest's
//! own page tables (guest-physical, read through the domain's pmap) as its kernel would with a
//! supervisor access, A and D set as the MMU sets them. Not through the shadow: what the
//! guest's tables refuse is the guest's page fault, whatever the shadow holds now.

use super::vcpu::{Guest, Refusal};
use super::TrapVcpu;
use crate::instructions::{rdmsr, wrmsr};
use crate::memory_map::phys_to_virt;
use crate::shadow::walk::{self, Access, Controls, Walk};
use crate::shadow::{Pmap, PmapMemory};

/// CR0.WP, and EFER.NXE: what the guest's tables allow.
const CR0_WP: u64 = 1 << 16;
const EFER_NXE: u64 = 1 << 11;

/// The guest's memory as its kernel reaches it: its own tables, through the pmap.
pub struct GuestView {
    pmap: Pmap,
    cr3: u64,
    pub controls: Controls,
}

impl GuestView {
    pub fn of(vcpu: &TrapVcpu) -> GuestView {
        let controls = Controls {
            write_protect: vcpu.cpu.cr0 & CR0_WP != 0,
            no_execute: vcpu.cpu.efer & EFER_NXE != 0,
        };
        GuestView { pmap: vcpu.pmap, cr3: vcpu.guest_cr3, controls }
    }

    /// The machine address behind `va` for a supervisor access.
    fn machine(&self, va: u64, write: bool) -> Result<u64, Refusal> {
        let access = Access { write, user: false, fetch: false };
        match walk::walk(&mut PmapMemory(self.pmap), self.controls, self.cr3, va, access) {
            Walk::Allowed(leaf) => {
                let machine =
                    self.pmap.machine(leaf.page).ok_or(Refusal::Beyond { address: va })?;
                Ok(machine + (va & 0xfff))
            }
            Walk::Fault { error_code } => Err(Refusal::PageFault { address: va, error_code }),
            Walk::Beyond(_) => Err(Refusal::Beyond { address: va }),
        }
    }

    /// Copies between the guest's `va..` and xen-lite's `len` bytes at `host`, page by page.
    fn copy(
        &mut self,
        va: u64,
        len: usize,
        write: bool,
        mut each: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), Refusal> {
        let mut done = 0;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let chunk = (len - done).min(4096 - (at & 0xfff) as usize);
            let machine = self.machine(at, write)?;
            each(phys_to_virt(machine) as *mut u8, done, chunk);
            done += chunk;
        }
        Ok(())
    }
}

impl Guest for GuestView {
    fn read(&mut self, va: u64, bytes: &mut [u8]) -> Result<(), Refusal> {
        let out = bytes.as_mut_ptr();
        self.copy(va, bytes.len(), false, |host, done, chunk| {
            // SAFETY: `host` is `chunk` bytes of one of the domain's frames in xen-lite's
            // direct map (the walk found them through the pmap); `out` has `done + chunk` bytes.
            unsafe { core::ptr::copy_nonoverlapping(host, out.add(done), chunk) }
        })
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), Refusal> {
        let from = bytes.as_ptr();
        self.copy(va, bytes.len(), true, |host, done, chunk| {
            // SAFETY: as in `read`; the guest's tables allow a supervisor write there.
            unsafe { core::ptr::copy_nonoverlapping(from.add(done), host, chunk) }
        })
    }

    fn swap_gs_base(&mut self, base: u64) -> u64 {
        // SAFETY: GS_BASE exists on every x86-64 CPU; xen-lite itself never uses GS, and the
        // value is the guest's own (checked canonical where it was set).
        unsafe {
            let old = rdmsr(x86::msr::IA32_GS_BASE);
            wrmsr(x86::msr::IA32_GS_BASE, base);
            old
        }
    }
}
