//! The counters xen-lite keeps per domain ([`Stats`]), which the `stats` hypercall copies out
//! (and the `hvstats` system call passes on to user programs): the bench and the tests read
//! what a workload cost from them.

use core::mem::size_of;

use crate::record::{word, Record};

/// Counters xen-lite keeps per domain, copied out by `stats`. Written by xen-lite only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Stats {
    /// Hypercalls by number (index = number, up to 63).
    pub hypercalls: [u64; 64],
    /// Exceptions bounced to the guest, by vector.
    pub bounces: [u64; 32],
    /// Event upcalls delivered (bounces to the event callback).
    pub events_delivered: u64,
    /// Entries into xen-lite from this domain: hypercalls by `int 0x82` (a `vmx` domain's
    /// hypercalls are its VMCALL exits, in `vm_exits`).
    pub entries_hypercall: u64,
    /// Entries into xen-lite from this domain: exceptions.
    pub entries_exception: u64,
    /// Entries into xen-lite while this domain ran: interrupts (timer).
    pub entries_interrupt: u64,
    /// Times this domain was scheduled in.
    pub schedules: u64,
    /// CR3 writes xen-lite made to switch to this domain.
    pub cr3_writes: u64,
    /// Page-table updates (`mmu_update`, `update_va_mapping`, `mmuext_op`) refused.
    pub mmu_rejected: u64,
    /// Entries into xen-lite from this domain: `syscall` from user code (bounced to the guest
    /// kernel). The `int 0x80` fast trap never enters xen-lite, so it has no counter here.
    pub entries_syscall: u64,
    /// VM exits of a `vmx` domain by basic exit reason (`crate::vm_exit`; index = reason).
    pub vm_exits: [u64; VM_EXIT_SLOTS],
    /// Shadow paging (`npt=off`, `ept=off`): page faults fixed in the shadow without the guest
    /// knowing.
    pub shadow_hidden_faults: u64,
    /// Shadow paging: page faults delivered to the guest (its own tables refused the access).
    pub shadow_true_faults: u64,
    /// Shadow paging: shadow tables filled.
    pub shadow_tables_built: u64,
    /// Shadow paging: times every shadow table was dropped because the pool ran out.
    pub shadow_recycled: u64,
    /// Shadow paging: `invlpg`s, CR3 loads and flushes the shadow followed.
    pub shadow_invalidations: u64,
}

/// Slots in [`Stats::vm_exits`]: one per VMX basic exit reason, 0-79.
pub const VM_EXIT_SLOTS: usize = 80;

const _: () = assert!(size_of::<Stats>() == (64 + 32 + 8 + VM_EXIT_SLOTS + 5) * 8);

impl Record for Stats {
    type Bytes = [u8; Stats::WORDS * 8];
    const ZERO: Self::Bytes = [0; Stats::WORDS * 8];

    #[inline]
    fn decode(bytes: &Self::Bytes) -> Self {
        Stats::from_words(&core::array::from_fn(|i| word(bytes, i * 8)))
    }

    #[inline]
    fn encode(&self) -> Self::Bytes {
        let mut out = Self::ZERO;
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

impl Stats {
    /// All zero.
    pub const fn new() -> Stats {
        Stats {
            hypercalls: [0; 64],
            bounces: [0; 32],
            events_delivered: 0,
            entries_hypercall: 0,
            entries_exception: 0,
            entries_interrupt: 0,
            schedules: 0,
            cr3_writes: 0,
            mmu_rejected: 0,
            entries_syscall: 0,
            vm_exits: [0; VM_EXIT_SLOTS],
            shadow_hidden_faults: 0,
            shadow_true_faults: 0,
            shadow_tables_built: 0,
            shadow_recycled: 0,
            shadow_invalidations: 0,
        }
    }
}

impl Stats {
    /// Number of 64-bit words in the structure.
    pub const WORDS: usize = size_of::<Stats>() / 8;

    /// The counters in layout order, for copying to a guest as little-endian bytes.
    pub fn to_words(&self) -> [u64; Stats::WORDS] {
        let mut words = [0; Stats::WORDS];
        let tail = [
            self.events_delivered,
            self.entries_hypercall,
            self.entries_exception,
            self.entries_interrupt,
            self.schedules,
            self.cr3_writes,
            self.mmu_rejected,
            self.entries_syscall,
        ];
        let all = self.hypercalls.iter().chain(self.bounces.iter()).chain(tail.iter());
        let shadow = [
            self.shadow_hidden_faults,
            self.shadow_true_faults,
            self.shadow_tables_built,
            self.shadow_recycled,
            self.shadow_invalidations,
        ];
        let all = all.chain(self.vm_exits.iter()).chain(shadow.iter());
        for (slot, value) in words.iter_mut().zip(all) {
            *slot = *value;
        }
        words
    }

    /// Rebuilds the structure from [`Stats::to_words`] (the guest's side).
    pub fn from_words(words: &[u64; Stats::WORDS]) -> Stats {
        let mut stats = Stats::new();
        stats.hypercalls.copy_from_slice(&words[..64]);
        stats.bounces.copy_from_slice(&words[64..96]);
        [
            stats.events_delivered,
            stats.entries_hypercall,
            stats.entries_exception,
            stats.entries_interrupt,
            stats.schedules,
            stats.cr3_writes,
            stats.mmu_rejected,
            stats.entries_syscall,
        ] = [
            words[96], words[97], words[98], words[99], words[100], words[101], words[102],
            words[103],
        ];
        stats.vm_exits.copy_from_slice(&words[104..104 + VM_EXIT_SLOTS]);
        let shadow = 104 + VM_EXIT_SLOTS;
        [
            stats.shadow_hidden_faults,
            stats.shadow_true_faults,
            stats.shadow_tables_built,
            stats.shadow_recycled,
            stats.shadow_invalidations,
        ] = [
            words[shadow],
            words[shadow + 1],
            words[shadow + 2],
            words[shadow + 3],
            words[shadow + 4],
        ];
        stats
    }

    /// VM exits of every reason together.
    pub fn vm_exits_total(&self) -> u64 {
        self.vm_exits.iter().sum()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}
