//! Where shadow tables live: a bounded pool of xen-lite's frames per virtual CPU, never mapped
//! into any guest.
//!
//! The pool is filled once, when the vCPU is created, so a guest can never make xen-lite
//! allocate more for it. Tables are handed out in order ([`Pool::new_table`] zeroes each as it
//! goes) and given back all at once ([`Pool::recycle`]): shadows are a cache of the guest's
//! tables, so dropping every one is always correct, only slower (the next accesses fault again
//! and refill). That is the recycling policy when the pool runs out, and also what a CR3 load
//! does, which on the real MMU flushes the TLB.

use crate::hvm::nested::TableMemory;
use crate::memory_map::phys_to_virt;

/// The most shadow tables one vCPU may hold.
pub const MAX_TABLES: usize = 256;
/// The fewest: one instruction may need a code page, a data page in another level-4 slot, a
/// stack and the event-delivery tables at once (7 tables in two slots, 4 more for a third and
/// a crossing); below its working set, a recycle would drop what the retried instruction needs
/// and it would fault for ever.
pub const MIN_TABLES: usize = 16;

/// A vCPU's shadow tables: `len` frames of xen-lite's, the first `used` of them in use.
pub struct Pool {
    frames: [u64; MAX_TABLES],
    len: usize,
    used: usize,
}

impl Pool {
    /// A pool of `count` frames from xen-lite's allocator (from [`MIN_TABLES`] to
    /// [`MAX_TABLES`]).
    pub fn allocate(count: usize) -> Result<Pool, &'static str> {
        let mut pool = Pool { frames: [0; MAX_TABLES], len: 0, used: 0 };
        for slot in pool.frames.iter_mut().take(count.clamp(MIN_TABLES, MAX_TABLES)) {
            *slot = crate::frame::alloc().ok_or("no free frames for its shadow tables")?.addr();
            pool.len += 1;
        }
        Ok(pool)
    }

    /// Whether the table at machine address `table` is one of this pool's in use (the auditor).
    pub fn holds(&self, table: u64) -> bool {
        self.frames[..self.used].contains(&table)
    }

    /// Gives every table back (their contents are dropped as each is handed out again).
    pub fn recycle(&mut self) {
        self.used = 0;
    }
}

impl TableMemory for Pool {
    fn new_table(&mut self) -> Option<u64> {
        let table = *self.frames[..self.len].get(self.used)?;
        self.used += 1;
        // SAFETY: a frame of this pool, allocated for shadow tables alone and reached only
        // through the physical map; no CPU walks it before the entry naming it is written.
        unsafe { core::ptr::write_bytes(phys_to_virt(table) as *mut u8, 0, 4096) };
        Some(table)
    }

    fn entry(&self, table: u64, slot: usize) -> u64 {
        // SAFETY: `table` is a frame of this pool, in the direct map; `slot` < 512.
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *const u64).read_volatile() }
    }

    fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
        // SAFETY: as in `entry`; the entry names a shadow table of this pool or one of the
        // domain's own frames, never xen-lite's (`Shadow::page_fault`).
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *mut u64).write_volatile(value) }
    }
}
