//! x86-64 four-level paging, written once for all three crates: the entry bits, the address
//! mask, the index formula and the one walker.
//!
//! xen-lite validates and walks guest tables, builds start-of-day tables, EPT and the switcher's
//! mappings; the guest kernel builds user address spaces; both read tables through something
//! different (a direct map at some offset, a guest's memory checked frame by frame, a host-test
//! array). They all describe a table the same way: the address its parent names (CR3 or an
//! entry's address bits), and all reach an entry through [`Tables::read`].
//!
//! Levels are numbered as the SDM numbers them: 4 is the PML4, 1 the page table.
//! See: Intel SDM Vol. 3A (rev. 084), 4.5 "4-Level Paging and 5-Level Paging", Table 4-15..4-20.

/// Bit 0: the entry maps something.
pub const PRESENT: u64 = 1 << 0;
/// Bit 1: writes allowed (with CR0.WP, in ring 0 too).
pub const WRITABLE: u64 = 1 << 1;
/// Bit 2: user (ring 3) accesses allowed.
pub const USER: u64 = 1 << 2;
/// Bit 5: set by the CPU when the entry is used for a translation.
pub const ACCESSED: u64 = 1 << 5;
/// Bit 6: set by the CPU on a write through a leaf entry.
pub const DIRTY: u64 = 1 << 6;
/// Bit 7 in a level-3 or level-2 entry: it maps a 1 GiB or 2 MiB page rather than a table.
pub const HUGE: u64 = 1 << 7;
/// Bit 8 in a leaf: the translation survives a CR3 load.
pub const GLOBAL: u64 = 1 << 8;
/// Bit 63: instruction fetches not allowed (with EFER.NXE).
pub const NO_EXECUTE: u64 = 1 << 63;
/// Bits 51:12: the physical address of the next table or of the page.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Levels of a walk, 4 (top) to 1.
pub const LEVELS: u32 = 4;

/// The index of `va`'s entry in its level-`level` table: bits `12 + 9 (level - 1)` up, nine of
/// them.
#[inline]
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The address an entry (or a CR3 value) names.
#[inline]
pub const fn address(entry: u64) -> u64 {
    entry & ADDRESS_MASK
}

/// The size of memory one entry at `level` maps (4 KiB at level 1).
#[inline]
pub const fn page_size(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// Where a walker finds tables: each implementer says how a table's address becomes memory it
/// can read.
pub trait Tables {
    /// Entry `index` of the table at `table` (the address its parent names), or `None` when
    /// that table cannot be read (outside the memory the implementer accepts).
    fn read(&self, table: u64, index: usize) -> Option<u64>;

    /// Whether `entry` maps anything: bit 0 here; EPT says so with any of bits 2:0.
    #[inline]
    fn present(&self, entry: u64) -> bool {
        entry & PRESENT != 0
    }
}

/// One entry on a walk: which table, which slot, what it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The table's level (4 to 1).
    pub level: u32,
    /// The table's address.
    pub table: u64,
    /// The slot of `va` in it.
    pub index: usize,
    /// What the slot held.
    pub entry: u64,
}

impl Step {
    /// The address of the slot itself (the table's address plus eight bytes per slot).
    #[inline]
    pub fn slot_address(&self) -> u64 {
        self.table + self.index as u64 * 8
    }

    /// Whether the entry maps a page here (level 1, or a huge page above it).
    #[inline]
    pub fn is_leaf(&self) -> bool {
        self.level == 1 || (self.level <= 3 && self.entry & HUGE != 0)
    }

    /// The physical address `va` reaches through this leaf entry.
    #[inline]
    pub fn translate(&self, va: u64) -> u64 {
        let size = page_size(self.level);
        (address(self.entry) & !(size - 1)) + (va & (size - 1))
    }
}

/// Why a walk stopped before the level it was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The table at `table` (level `level`) could not be read.
    Unreadable {
        /// The level of the unreadable table.
        level: u32,
        /// Its address.
        table: u64,
    },
    /// This entry maps nothing.
    NotPresent(Step),
    /// The caller's test refused this entry (for example, not a user entry).
    Refused(Step),
}

/// Walks from the table at `root` toward `va` and returns the entry at level `down_to`, or the
/// leaf above it (a huge page: see [`Step::is_leaf`]). Every entry on the way must be present.
pub fn walk<T: Tables + ?Sized>(
    tables: &T,
    root: u64,
    va: u64,
    down_to: u32,
) -> Result<Step, Stop> {
    walk_with(tables, root, va, down_to, |_| true)
}

/// [`walk`], with `accept` asked about every present entry on the way (the last one included);
/// a refusal stops the walk there.
pub fn walk_with<T: Tables + ?Sized>(
    tables: &T,
    root: u64,
    va: u64,
    down_to: u32,
    mut accept: impl FnMut(&Step) -> bool,
) -> Result<Step, Stop> {
    let mut table = address(root);
    let mut level = LEVELS;
    loop {
        let index = index(va, level);
        let entry = tables.read(table, index).ok_or(Stop::Unreadable { level, table })?;
        let step = Step { level, table, index, entry };
        if !tables.present(entry) {
            return Err(Stop::NotPresent(step));
        }
        if !accept(&step) {
            return Err(Stop::Refused(step));
        }
        if level <= down_to || step.is_leaf() {
            return Ok(step);
        }
        table = address(entry);
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;

    use super::*;

    /// Tables in a map from address to 512 entries.
    #[derive(Default)]
    struct Memory(BTreeMap<u64, [u64; ENTRIES]>);

    impl Memory {
        fn set(&mut self, table: u64, index: usize, entry: u64) {
            self.0.entry(table).or_insert([0; ENTRIES])[index] = entry;
        }
    }

    impl Tables for Memory {
        fn read(&self, table: u64, index: usize) -> Option<u64> {
            self.0.get(&table).map(|t| t[index])
        }
    }

    const VA: u64 = 0x0000_7f12_3456_7abc;

    /// A four-level chain for `VA`: tables at 0x1000 (L4) .. 0x4000 (L1), the page at 0x9000.
    fn chain(flags: u64) -> Memory {
        let mut memory = Memory::default();
        memory.set(0x1000, index(VA, 4), 0x2000 | flags);
        memory.set(0x2000, index(VA, 3), 0x3000 | flags);
        memory.set(0x3000, index(VA, 2), 0x4000 | flags);
        memory.set(0x4000, index(VA, 1), 0x9000 | flags);
        memory
    }

    #[test]
    fn the_index_takes_nine_bits_per_level() {
        assert_eq!(index(VA, 1), ((VA >> 12) & 0x1ff) as usize);
        assert_eq!(index(VA, 4), ((VA >> 39) & 0x1ff) as usize);
        assert_eq!(index(0xffff_ffff_ffff_ffff, 3), 511);
        assert_eq!(page_size(2), 2 << 20);
        assert_eq!(address(0x8000_0000_1234_5067), 0x1234_5000);
    }

    #[test]
    fn a_full_walk_reaches_the_page() {
        let memory = chain(PRESENT | WRITABLE);
        let leaf = walk(&memory, 0x1000 | 0x18, VA, 1).expect("mapped");
        assert_eq!((leaf.level, leaf.table, leaf.index), (1, 0x4000, index(VA, 1)));
        assert_eq!(leaf.slot_address(), 0x4000 + index(VA, 1) as u64 * 8);
        assert_eq!(leaf.translate(VA), 0x9abc);
    }

    #[test]
    fn a_walk_can_stop_above_the_leaf() {
        let memory = chain(PRESENT);
        let l2 = walk(&memory, 0x1000, VA, 2).expect("mapped");
        assert_eq!((l2.level, l2.entry), (2, 0x4000 | PRESENT));
    }

    #[test]
    fn huge_pages_end_the_walk() {
        let mut memory = chain(PRESENT);
        memory.set(0x3000, index(VA, 2), 0x4020_0000 | PRESENT | HUGE);
        let leaf = walk(&memory, 0x1000, VA, 1).expect("mapped");
        assert!(leaf.is_leaf());
        assert_eq!(leaf.translate(VA), 0x4020_0000 + (VA & 0x1f_ffff));
    }

    #[test]
    fn a_missing_entry_or_table_stops_the_walk() {
        let mut memory = chain(PRESENT);
        memory.set(0x2000, index(VA, 3), 0x3000);
        assert!(matches!(
            walk(&memory, 0x1000, VA, 1),
            Err(Stop::NotPresent(Step { level: 3, .. }))
        ));
        memory.set(0x2000, index(VA, 3), 0x7000 | PRESENT);
        assert_eq!(walk(&memory, 0x1000, VA, 1), Err(Stop::Unreadable { level: 2, table: 0x7000 }));
    }

    #[test]
    fn the_caller_can_refuse_an_entry() {
        let mut memory = chain(PRESENT | USER);
        memory.set(0x3000, index(VA, 2), 0x4000 | PRESENT);
        let user = |step: &Step| step.entry & USER != 0;
        assert!(matches!(
            walk_with(&memory, 0x1000, VA, 1, user),
            Err(Stop::Refused(Step { level: 2, .. }))
        ));
    }

    #[test]
    fn ept_style_presence_is_the_implementers_choice() {
        struct Ept(Memory);
        impl Tables for Ept {
            fn read(&self, table: u64, index: usize) -> Option<u64> {
                self.0.read(table, index)
            }
            #[inline]
            fn present(&self, entry: u64) -> bool {
                entry & 0b111 != 0
            }
        }
        let ept = Ept(chain(0b100));
        assert_eq!(walk(&ept, 0x1000, VA, 1).map(|s| s.translate(VA)), Ok(0x9abc));
        assert!(walk(&chain(0b100), 0x1000, VA, 1).is_err());
    }
}
