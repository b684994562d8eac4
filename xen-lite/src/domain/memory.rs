//! The one checked way xen-lite touches a domain's memory (DESIGN §4, invariant 3).
//!
//! Every guest pointer a hypercall receives, and every guest stack a bounce writes to, goes
//! through [`guest_offset`]: the range must lie wholly inside the domain's start-of-day direct
//! map (`hypercall_abi::layout::GUEST_DIRECT_MAP`), with no arithmetic overflow. Anything else
//! is `EFAULT`. Only then is it copied, through xen-lite's own map of the domain's frames, never
//! by dereferencing the guest's address. Records are copied in whole and decoded
//! ([`Domain::read`]: `let info: TrapInfo = domain.read(at)?`), so a handler validates a copy
//! the guest can no longer change; results go out the same way ([`Domain::write`]).

use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::{GUEST_DIRECT_MAP, PAGE_SIZE};
use hypercall_abi::record::Record;

use super::Domain;

/// Byte offset into the domain's memory of the guest range `[va, va + len)`, if all of it is
/// the domain's.
#[inline]
pub fn guest_offset(va: u64, len: u64, nr_pages: u64) -> Result<u64, Errno> {
    let offset = va.checked_sub(GUEST_DIRECT_MAP).ok_or(Errno::EFAULT)?;
    let end = offset.checked_add(len).ok_or(Errno::EFAULT)?;
    if end <= nr_pages * PAGE_SIZE {
        Ok(offset)
    } else {
        Err(Errno::EFAULT)
    }
}

impl Domain {
    /// Copies `out.len()` bytes from guest address `va`.
    #[inline]
    pub fn copy_from_guest(&self, va: u64, out: &mut [u8]) -> Result<(), Errno> {
        let offset = guest_offset(va, out.len() as u64, self.nr_pages)?;
        // SAFETY: `guest_offset` proved the range lies in this domain's frames, which xen-lite
        // maps in its direct map; the guest is not running, so nothing writes them meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.host_address(offset) as *const u8,
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` to guest address `va`. xen-lite writes through its own map of the
    /// domain's frames, which ignores the guest's page-table permissions, so for a `pv` domain
    /// it refuses any frame that is a page table: otherwise a guest could aim a bounce frame or
    /// a hypercall's output at its own (validated, read-only) page tables and write entries
    /// nobody checked.
    #[inline]
    pub fn copy_to_guest(&self, va: u64, data: &[u8]) -> Result<(), Errno> {
        let offset = guest_offset(va, data.len() as u64, self.nr_pages)?;
        if let (Some(pv), false) = (&self.pv, data.is_empty()) {
            let (first, last) = (offset / PAGE_SIZE, (offset + data.len() as u64 - 1) / PAGE_SIZE);
            if (first..=last).any(|gfn| pv.is_page_table(gfn)) {
                return Err(Errno::EFAULT);
            }
        }
        // SAFETY: as in `copy_from_guest`; the bytes written belong to this domain alone.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.host_address(offset) as *mut u8,
                data.len(),
            )
        };
        Ok(())
    }

    /// The record at guest address `va`, copied in.
    pub fn read<R: Record>(&self, va: u64) -> Result<R, Errno> {
        let mut bytes = R::ZERO;
        self.copy_from_guest(va, bytes.as_mut())?;
        Ok(R::decode(&bytes))
    }

    /// Copies `record` out to guest address `va` (with [`Domain::copy_to_guest`]'s checks).
    pub fn write<R: Record>(&self, va: u64, record: &R) -> Result<(), Errno> {
        self.copy_to_guest(va, record.encode().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::layout::{HYPERVISOR_START, USER_END};

    const PAGES: u64 = 16;

    #[test]
    fn ranges_inside_the_domain_are_accepted() {
        assert_eq!(guest_offset(GUEST_DIRECT_MAP, 1, PAGES), Ok(0));
        assert_eq!(guest_offset(GUEST_DIRECT_MAP + 5, 10, PAGES), Ok(5));
        assert_eq!(
            guest_offset(GUEST_DIRECT_MAP + PAGES * 4096 - 8, 8, PAGES),
            Ok(PAGES * 4096 - 8)
        );
        assert_eq!(guest_offset(GUEST_DIRECT_MAP + 100, 0, PAGES), Ok(100));
    }

    #[test]
    fn ridiculous_pointers_are_efault() {
        for (va, len) in [
            (GUEST_DIRECT_MAP - 1, 1),                // just below
            (GUEST_DIRECT_MAP + PAGES * 4096 - 4, 8), // runs off the end
            (GUEST_DIRECT_MAP + PAGES * 4096, 1),     // just past
            (HYPERVISOR_START, 8),                    // into xen-lite
            (0, 8),                                   // null
            (USER_END - 8, 8),                        // user space (not in the direct map)
            (u64::MAX - 3, 8),                        // wraps around
            (GUEST_DIRECT_MAP, u64::MAX),             // length wraps
        ] {
            assert_eq!(guest_offset(va, len, PAGES), Err(Errno::EFAULT), "{va:#x}+{len:#x}");
        }
    }
}
