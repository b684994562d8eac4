//! The guest's side of shadow paging, pure: walking the guest's own four-level tables (written
//! in guest-physical addresses) as the MMU would, deciding whether an access is allowed, and
//! what the one shadow entry that lets it through holds.
//!
//! [`walk`] follows the hardware's rules (Intel SDM Vol. 3A, revision 086, 4.5 and 4.6; AMD64
//! APM Vol. 2, 5.3 and 5.6), numbered as the kill and fault reasons name them:
//!
//! 1. an entry without P ends the walk: a *true* page fault, error code P = 0;
//! 2. reserved bits are a true page fault with RSVD set: PS in a level-4 entry, NX when the
//!    guest's EFER.NXE is clear, a large page's address bits below its size;
//! 3. the rights are the intersection of every level: writable only if every entry is, user only
//!    if every entry is, executable only if no entry has NX; a user access to a supervisor page,
//!    a write to a read-only one (from user code, or with CR0.WP), or a fetch from an NX one is a
//!    true page fault with P = 1;
//! 4. an entry that points beyond the domain's memory (a table or a page past `nr_pages`) is not
//!    a fault at all: no real machine has memory there for the guest, and xen-lite kills the
//!    domain, naming the entry (as EPT and NPT kill a guest-physical access beyond memory);
//! 5. an allowed access sets A in every entry it went through and, for a write, D in the leaf,
//!    as the MMU does.
//!
//! Large pages (PS at level 3 or 2) are walked like any other leaf: the shadow always maps the
//! one 4-KiB page the access touched, so a large guest page becomes many small shadow ones.

use hypercall_abi::page_table::{
    self, ACCESSED, ADDRESS_MASK, DIRTY, HUGE, NO_EXECUTE, PRESENT, USER, WRITABLE,
};
/// Bits 3 and 4: write-through and cache-disable, copied to the shadow leaf.
const CACHE_BITS: u64 = 0b11 << 3;

/// Page-fault error-code bits (the exception's, and what xen-lite injects).
pub mod error {
    /// The page was present (a protection fault).
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access came from user mode.
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in some entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
}

/// What is being accessed, as the page-fault error code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// From ring 3.
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// The access a page-fault error code describes.
    pub fn from_error_code(code: u64) -> Access {
        Access {
            write: code & error::WRITE != 0,
            user: code & error::USER != 0,
            fetch: code & error::FETCH != 0,
        }
    }

    fn error_code(self) -> u64 {
        let bit = |on: bool, bit: u64| if on { bit } else { 0 };
        bit(self.write, error::WRITE) | bit(self.user, error::USER) | bit(self.fetch, error::FETCH)
    }
}

/// The guest's paging controls that change what a walk allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// CR0.WP: supervisor writes honour read-only pages.
    pub write_protect: bool,
    /// EFER.NXE: bit 63 means no-execute (else it is reserved).
    pub no_execute: bool,
}

/// The guest's memory, by guest-physical address: `None` past its end.
pub trait GuestMemory {
    /// The 64-bit word at guest-physical `gpa` (8-aligned).
    fn read(&self, gpa: u64) -> Option<u64>;
    /// Writes it (only ever to set A and D).
    fn write(&mut self, gpa: u64, value: u64);
}

/// Why a walk kills the domain (rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeyondMemory {
    /// The level of the entry (4 to 1).
    pub level: u32,
    /// Where the entry is (guest-physical).
    pub at: u64,
    /// The entry.
    pub entry: u64,
}

/// The outcome of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The access is allowed: the 4-KiB guest-physical page, and what the shadow entry for it
    /// may allow.
    Allowed(Leaf),
    /// The guest's own tables refuse it: the page fault the hardware would raise, with this
    /// error code.
    Fault { error_code: u64 },
    /// An entry points beyond the domain's memory.
    Beyond(BeyondMemory),
}

/// What an allowed access found: the page, and the rights of the whole walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The guest-physical address of the 4-KiB page.
    pub page: u64,
    /// Every level writable, and the leaf dirty (so a write needs no fault to set D).
    pub writable: bool,
    /// Every level user.
    pub user: bool,
    /// Some level NX (with EFER.NXE).
    pub no_execute: bool,
    /// The leaf's write-through and cache-disable bits.
    pub cache: u64,
}

/// The rights of a walk so far: the intersection of every level's (rule 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// Every level so far has W.
    pub writable: bool,
    /// Every level so far has U.
    pub user: bool,
    /// Some level so far has NX (with EFER.NXE).
    pub no_execute: bool,
}

/// Walks the guest's tables from `cr3` (guest-physical) for an `access` to `va`, as the MMU
/// would, with the module's numbered rules; for an allowed access sets A and D.
pub fn walk(
    memory: &mut impl GuestMemory,
    controls: Controls,
    cr3: u64,
    va: u64,
    access: Access,
) -> Walk {
    let fault = |bits: u64| Walk::Fault { error_code: bits | access.error_code() };
    let mut table = cr3 & ADDRESS_MASK;
    let mut rights = Rights { writable: true, user: true, no_execute: false };
    let mut visited = [0u64; 4];
    for (depth, level) in (1..=4).rev().enumerate() {
        let at = table + page_table::index(va, level) as u64 * 8;
        let Some(entry) = memory.read(at) else {
            return Walk::Beyond(BeyondMemory { level: level + 1, at: cr3, entry: table });
        };
        if entry & PRESENT == 0 {
            return fault(0); // rule 1
        }
        let large = level > 1 && entry & HUGE != 0;
        let reserved = (level == 4 && entry & HUGE != 0)
            || (!controls.no_execute && entry & NO_EXECUTE != 0)
            || (large
                && level < 4
                && entry & ADDRESS_MASK & (page_table::page_size(level) - 1) & !0x1000 != 0);
        if reserved {
            return fault(error::PRESENT | error::RESERVED); // rule 2
        }
        rights.writable &= entry & WRITABLE != 0;
        rights.user &= entry & USER != 0;
        rights.no_execute |= controls.no_execute && entry & NO_EXECUTE != 0;
        visited[depth] = at;
        if level == 1 || large {
            let base = page_table::address(entry) & !(page_table::page_size(level) - 1);
            let page = base + (va & (page_table::page_size(level) - 1) & !0xfff);
            if memory.read(page).is_none() {
                return Walk::Beyond(BeyondMemory { level, at, entry }); // rule 4
            }
            return decide(memory, controls, access, rights, &visited[..=depth], entry, page);
        }
        table = page_table::address(entry);
        if memory.read(table).is_none() {
            return Walk::Beyond(BeyondMemory { level, at, entry }); // rule 4
        }
    }
    unreachable!("a level-1 entry always ends the walk")
}

/// The end of a walk that reached a present leaf `entry` for guest-physical `page`, with the
/// `rights` of every level and the guest-physical addresses of the entries it went through
/// (`visited`, the leaf's last): rule 3, then rule 5. Either the guest's own page fault, or
/// the access is allowed: A set in every visited entry, D in the leaf for a write, and the
/// [`Leaf`] the shadow entry is made from.
fn decide(
    memory: &mut impl GuestMemory,
    controls: Controls,
    access: Access,
    rights: Rights,
    visited: &[u64],
    entry: u64,
    page: u64,
) -> Walk {
    // LAB 5.2 BEGIN: decide whether the guest's own MMU would allow `access` (rule 3: a true fault, `Walk::Fault` with P = 1 and the access's bits, if not); if it would, set A (and, for a write, D) as rule 5 says and return the `Leaf`
    // Hint: a supervisor write to a read-only page faults only with CR0.WP (`controls.write_protect`); a user write to one always does.
    // Hint: `Access::error_code` gives the write, user and fetch bits; add `error::PRESENT`.
    // Hint: the leaf is the last address in `visited`; write an entry only if a bit changes (as the MMU does).
    // Hint: `Leaf::writable` must stay false until the guest's leaf is dirty, or the first write would set D in the shadow and never in the guest's entry.
    let denied = (access.user && !rights.user)
        || (access.write && !rights.writable && (access.user || controls.write_protect))
        || (access.fetch && rights.no_execute);
    if denied {
        return Walk::Fault { error_code: error::PRESENT | access.error_code() };
        // rule 3
    }
    // Rule 5: A on the way, D in the leaf for a write.
    let leaf_at = visited[visited.len() - 1];
    for &at in visited {
        let old = memory.read(at).unwrap_or(0);
        let set = if at == leaf_at && access.write { ACCESSED | DIRTY } else { ACCESSED };
        if old & set != set {
            memory.write(at, old | set);
        }
    }
    let dirty = access.write || entry & DIRTY != 0;
    Walk::Allowed(Leaf {
        page,
        writable: rights.writable && dirty,
        user: rights.user,
        no_execute: rights.no_execute,
        cache: entry & CACHE_BITS,
    })
    // LAB 5.2 END
}

impl Leaf {
    /// The shadow level-1 entry for this page at machine address `machine`: present, and only
    /// the rights the guest's walk allows (writable only once the guest's leaf is dirty, so the
    /// first write faults and sets D, as it would on the real MMU).
    pub fn shadow_entry(&self, machine: u64) -> u64 {
        // LAB 5.1 BEGIN: build the shadow level-1 entry for this leaf at machine address `machine`: present, the leaf's cache bits, and exactly the rights the walk allows
        // Hint: W only if `self.writable` (a clean page stays read-only in the shadow), U only if `self.user`, NX if `self.no_execute`.
        // Hint: never A or D: the MMU sets those in the shadow entry, and nobody reads them there (rule 5 sets the guest's).
        let mut entry = machine | PRESENT | self.cache;
        if self.writable {
            entry |= WRITABLE;
        }
        if self.user {
            entry |= USER;
        }
        if self.no_execute {
            entry |= NO_EXECUTE;
        }
        entry
        // LAB 5.1 END
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A guest of `pages` frames whose words live in a map (absent words read 0).
    struct Guest {
        pages: u64,
        words: HashMap<u64, u64>,
    }

    impl GuestMemory for Guest {
        fn read(&self, gpa: u64) -> Option<u64> {
            (gpa < self.pages * 4096).then(|| self.words.get(&gpa).copied().unwrap_or(0))
        }
        fn write(&mut self, gpa: u64, value: u64) {
            self.words.insert(gpa, value);
        }
    }

    const KERNEL: Controls = Controls { write_protect: true, no_execute: true };
    const READ: Access = Access { write: false, user: false, fetch: false };
    const WRITE: Access = Access { write: true, user: false, fetch: false };
    const USER_READ: Access = Access { write: false, user: true, fetch: false };

    /// Tables at gfn 1 (L4), 2 (L3), 3 (L2), 4 (L1) mapping va 0x40_0000 + n pages to gfn 16 + n,
    /// with `leaf` flags on the level-1 entries and `upper` on the others.
    fn guest(upper: u64, leaf: u64) -> Guest {
        let mut words = HashMap::new();
        words.insert(0x1000, 0x2000 | upper);
        words.insert(0x2000, 0x3000 | upper);
        words.insert(0x3000 + 2 * 8, 0x4000 | upper); // L2 index 2: 0x40_0000
        for n in 0..4 {
            words.insert(0x4000 + n * 8, (16 + n) * 4096 | leaf);
        }
        Guest { pages: 64, words }
    }

    #[test]
    fn an_allowed_read_finds_the_page_and_sets_accessed_not_dirty() {
        let mut g = guest(PRESENT | WRITABLE | USER, PRESENT | WRITABLE | USER);
        let walked = walk(&mut g, KERNEL, 0x1000, 0x40_1234, READ);
        let Walk::Allowed(leaf) = walked else { panic!("{walked:?}") };
        assert_eq!(leaf.page, 17 * 4096);
        assert!(leaf.user && !leaf.writable, "not dirty yet: read-only in the shadow");
        assert_eq!(g.words[&0x4008] & (ACCESSED | DIRTY), ACCESSED);
        assert_eq!(g.words[&0x1000] & ACCESSED, ACCESSED);
        assert_eq!(leaf.shadow_entry(0x7_7000), 0x7_7000 | PRESENT | USER);
    }

    #[test]
    fn the_shadow_entry_carries_the_walks_rights_and_nothing_else() {
        let leaf = |writable, user, no_execute, cache| Leaf {
            page: 0x5000,
            writable,
            user,
            no_execute,
            cache,
        };
        let machine = 0x1234_5000;
        assert_eq!(leaf(false, false, false, 0).shadow_entry(machine), machine | PRESENT);
        assert_eq!(leaf(true, false, false, 0).shadow_entry(machine), machine | PRESENT | WRITABLE);
        assert_eq!(
            leaf(false, true, false, 1 << 3).shadow_entry(machine),
            machine | PRESENT | USER | 1 << 3,
            "a user page, write-through"
        );
        assert_eq!(
            leaf(true, true, true, CACHE_BITS).shadow_entry(machine),
            machine | PRESENT | WRITABLE | USER | NO_EXECUTE | CACHE_BITS
        );
        // The machine address, never the guest-physical page.
        assert_eq!(page_table::address(leaf(true, true, false, 0).shadow_entry(machine)), machine);
    }

    // LAB HIDDEN BEGIN
    #[test]
    fn hidden_shadow_entries_hold_the_frame_present_and_exactly_the_rights() {
        for bits in 0..64u64 {
            let (writable, user, no_execute) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let cache = (bits >> 3 & 0b11) << 3;
            let machine = 0x7fe_d000 + (bits << 12);
            let entry =
                Leaf { page: 0x3000, writable, user, no_execute, cache }.shadow_entry(machine);
            let want = machine
                | PRESENT
                | cache
                | if writable { WRITABLE } else { 0 }
                | if user { USER } else { 0 }
                | if no_execute { NO_EXECUTE } else { 0 };
            assert_eq!(
                entry, want,
                "writable {writable} user {user} nx {no_execute} cache {cache:#x}"
            );
        }
    }

    #[test]
    fn hidden_decide_follows_the_mmu_for_every_access_right_and_control() {
        let visited = [0x1000, 0x2000, 0x3010, 0x4008];
        for bits in 0..256u64 {
            let access = Access { write: bits & 1 != 0, user: bits & 2 != 0, fetch: bits & 4 != 0 };
            let rights = Rights {
                writable: bits & 8 != 0,
                user: bits & 16 != 0,
                no_execute: bits & 32 != 0,
            };
            let controls = Controls { write_protect: bits & 64 != 0, no_execute: true };
            let was_dirty = bits & 128 != 0;
            let leaf_entry = 17 * 4096 | PRESENT | if was_dirty { DIRTY } else { 0 };
            let mut g = Guest { pages: 64, words: HashMap::new() };
            for &at in &visited[..3] {
                g.words.insert(at, 0x5000 | PRESENT);
            }
            g.words.insert(visited[3], leaf_entry);
            let before = g.words.clone();
            let refused = (access.user && !rights.user)
                || (access.write && !rights.writable && (access.user || controls.write_protect))
                || (access.fetch && rights.no_execute);
            let got = decide(&mut g, controls, access, rights, &visited, leaf_entry, 17 * 4096);
            let case =
                format!("{access:?} {rights:?} wp {} dirty {was_dirty}", controls.write_protect);
            if refused {
                assert_eq!(
                    got,
                    Walk::Fault { error_code: error::PRESENT | access.error_code() },
                    "{case}"
                );
                assert_eq!(g.words, before, "a refused access marks nothing: {case}");
                continue;
            }
            let Walk::Allowed(leaf) = got else { panic!("{case}: {got:?}") };
            assert_eq!(leaf.page, 17 * 4096, "{case}");
            assert_eq!(leaf.writable, rights.writable && (access.write || was_dirty), "{case}");
            assert_eq!((leaf.user, leaf.no_execute), (rights.user, rights.no_execute), "{case}");
            for &at in &visited[..3] {
                assert_eq!(
                    g.words[&at],
                    0x5000 | PRESENT | ACCESSED,
                    "A, never D, above the leaf: {case}"
                );
            }
            let dirty = if access.write || was_dirty { DIRTY } else { 0 };
            assert_eq!(g.words[&visited[3]], 17 * 4096 | PRESENT | ACCESSED | dirty, "{case}");
        }
    }
    // LAB HIDDEN END

    #[test]
    fn a_write_sets_dirty_and_makes_the_shadow_writable() {
        let mut g = guest(PRESENT | WRITABLE, PRESENT | WRITABLE);
        let Walk::Allowed(leaf) = walk(&mut g, KERNEL, 0x1000, 0x40_0000, WRITE) else { panic!() };
        assert!(leaf.writable && !leaf.user);
        assert_eq!(g.words[&0x4000] & (ACCESSED | DIRTY), ACCESSED | DIRTY);
    }

    #[test]
    fn not_present_and_protection_are_true_faults_with_the_hardware_error_code() {
        let mut g = guest(PRESENT | WRITABLE | USER, PRESENT | USER);
        // Nothing at 0x80_0000 (L2 index 4).
        assert_eq!(walk(&mut g, KERNEL, 0x1000, 0x80_0000, READ), Walk::Fault { error_code: 0 });
        // A supervisor write to a read-only page with CR0.WP.
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, WRITE),
            Walk::Fault { error_code: error::PRESENT | error::WRITE }
        );
        // Without CR0.WP the supervisor may write it.
        let no_wp = Controls { write_protect: false, ..KERNEL };
        assert!(matches!(walk(&mut g, no_wp, 0x1000, 0x40_0000, WRITE), Walk::Allowed(_)));
        // A user read of a page one upper level keeps supervisor-only.
        let mut g = guest(PRESENT | WRITABLE, PRESENT | WRITABLE | USER);
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, USER_READ),
            Walk::Fault { error_code: error::PRESENT | error::USER }
        );
        // Nothing was marked accessed by the refused walks' leaves.
        assert_eq!(g.words[&0x4000] & ACCESSED, 0);
    }

    #[test]
    fn reserved_bits_fault_with_rsvd() {
        let mut g = guest(PRESENT | WRITABLE, PRESENT | WRITABLE | NO_EXECUTE);
        let no_nxe = Controls { no_execute: false, ..KERNEL };
        assert_eq!(
            walk(&mut g, no_nxe, 0x1000, 0x40_0000, READ),
            Walk::Fault { error_code: error::PRESENT | error::RESERVED }
        );
        let fetch = Access { fetch: true, ..READ };
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, fetch),
            Walk::Fault { error_code: error::PRESENT | error::FETCH }
        );
        g.words.insert(0x1000, 0x2000 | PRESENT | HUGE);
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, READ),
            Walk::Fault { error_code: error::PRESENT | error::RESERVED }
        );
    }

    #[test]
    fn a_large_page_maps_the_one_small_page_touched() {
        let mut g = guest(PRESENT | WRITABLE, PRESENT);
        // L2 index 1 (0x20_0000): a 2-MiB page at guest-physical 0 (the guest has 64 pages, so
        // the touched page must lie in them).
        g.words.insert(0x3008, PRESENT | WRITABLE | HUGE | DIRTY);
        let Walk::Allowed(leaf) = walk(&mut g, KERNEL, 0x1000, 0x20_5678, READ) else { panic!() };
        assert_eq!(leaf.page, 0x5000);
        assert!(leaf.writable, "dirty already");
        // A 2-MiB page whose low address bits are set is reserved.
        g.words.insert(0x3008, 0x1000 * 2 | PRESENT | HUGE);
        assert!(matches!(walk(&mut g, KERNEL, 0x1000, 0x20_0000, READ), Walk::Fault { .. }));
    }

    #[test]
    fn an_entry_beyond_the_domain_is_reported_not_followed() {
        let mut g = guest(PRESENT | WRITABLE, PRESENT | WRITABLE);
        g.words.insert(0x4000, 1000 * 4096 | PRESENT); // gfn 1000 of a 64-page guest
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, READ),
            Walk::Beyond(BeyondMemory { level: 1, at: 0x4000, entry: 1000 * 4096 | PRESENT })
        );
        g.words.insert(0x3010, 5000 * 4096 | PRESENT); // an L2 entry naming a table past the end
        assert_eq!(
            walk(&mut g, KERNEL, 0x1000, 0x40_0000, READ),
            Walk::Beyond(BeyondMemory { level: 2, at: 0x3010, entry: 5000 * 4096 | PRESENT })
        );
        assert_eq!(g.words.get(&0x3010).map(|e| e & ACCESSED), Some(0), "not marked accessed");
    }
}
