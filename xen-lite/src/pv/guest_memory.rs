//! The one checked way xen-lite touches a `pv` domain's memory (DESIGN §4, invariant 3).
//!
//! Every guest pointer a hypercall receives, and every guest stack a bounce writes to, goes
//! through [`guest_offset`]: the range must lie wholly inside the domain's start-of-day direct
//! map (`hypercall_abi::layout::GUEST_DIRECT_MAP`), with no arithmetic overflow. Anything else
//! is `EFAULT`. Only then is it copied, through xen-lite's own map of the domain's frames, never
//! by dereferencing the guest's address. (Once guests manage their own page tables, this
//! becomes a checked page-table walk; the rule stays the same.)

use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::{GUEST_DIRECT_MAP, PAGE_SIZE};

/// Byte offset into the domain's memory of the guest range `[va, va + len)`, if all of it is
/// the domain's.
pub fn guest_offset(va: u64, len: u64, nr_pages: u64) -> Result<u64, Errno> {
    let offset = va.checked_sub(GUEST_DIRECT_MAP).ok_or(Errno::EFAULT)?;
    let end = offset.checked_add(len).ok_or(Errno::EFAULT)?;
    if end <= nr_pages * PAGE_SIZE {
        Ok(offset)
    } else {
        Err(Errno::EFAULT)
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
