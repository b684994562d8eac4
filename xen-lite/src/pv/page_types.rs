//! Direct paging: the rules that let a `pv` guest write machine addresses into its own page
//! tables without ever gaining access to memory that is not its own (DESIGN §4, invariant 2).
//!
//! Xen's answer, which xen-lite follows: every frame of the domain has a *type* and counts.
//!
//! | type       | meaning                                              | taken by                 |
//! |------------|------------------------------------------------------|--------------------------|
//! | `None`     | plain memory, maybe mapped read-only                 | —                        |
//! | `Writable` | mapped writable somewhere (count = such mappings)    | an L1 entry with RW set  |
//! | `L1`..`L4` | used as a page table of that level (count = uses)    | a higher-level entry, a pin, CR3 |
//!
//! The rules, each checked here and unit-tested below:
//!
//! 1. An entry may only name a frame the domain owns (`NotOwned`): never xen-lite's, never
//!    another domain's.
//! 2. Types are mutually exclusive while their count is non-zero (`TypeConflict`): a frame in use
//!    as a page table can never be mapped writable, and a frame mapped writable can never become
//!    a page table. Read-only mappings of page tables are fine.
//! 3. A frame becomes a table of level N only after every present entry in it has been validated
//!    for level N, recursively (an L4 entry takes an L3-typed reference, and so on down to L1
//!    entries, which take `Writable` or plain references to data frames). When its count drops
//!    to zero, those references are dropped again.
//! 4. No superpages (`Superpage`), and level-4 slots in xen-lite's reserved range belong to
//!    xen-lite (`ReservedSlot`): a frame that becomes an L4 gets xen-lite's entries there,
//!    whatever it held before.
//! 5. Only a frame that is already a page table can be written through `update_entry`
//!    (`NotATable`), and the new entry is validated before the old one is released.
//! 6. A frame xen-lite itself writes for the guest (its `SharedInfo`) carries a `Writable`
//!    reference xen-lite holds for the domain's whole life (`Domain::new`), so by rule 2 it can
//!    never become a page table, however the guest maps or unmaps it.
//!
//! The code is pure: it reads and writes tables through [`TableMemory`], so the host tests
//! run it over plain arrays.

use core::ops::Range;

use hypercall_abi::hypercall::Errno;
use hypercall_abi::page_table::{address, ENTRIES, HUGE, PRESENT, WRITABLE};

/// What a frame is used as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageType {
    /// Nothing in particular.
    #[default]
    None,
    /// Mapped writable.
    Writable,
    /// A level-1 page table (maps 4 KiB pages).
    L1,
    /// A level-2 page table.
    L2,
    /// A level-3 page table.
    L3,
    /// A level-4 page table (what CR3 points at).
    L4,
}

impl PageType {
    /// The type of a page-table level 1-4.
    pub fn table(level: u8) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }

    /// The level of a page-table type.
    pub fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            PageType::None | PageType::Writable => None,
        }
    }
}

/// Per-frame bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// Current type (meaningful while `type_count > 0`).
    pub page_type: PageType,
    /// References that need the type.
    pub type_count: u32,
    /// Plain (read-only mapping) references.
    pub ref_count: u32,
    /// Pinned as a page table by the guest.
    pub pinned: bool,
}

/// A broken rule, with the values that show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// The machine frame is not the domain's.
    NotOwned {
        /// The frame number.
        frame: u64,
    },
    /// The frame is in use with another type.
    TypeConflict {
        /// The frame number.
        frame: u64,
        /// Its current type.
        has: PageType,
        /// The type asked for.
        wanted: PageType,
    },
    /// A large-page entry.
    Superpage {
        /// The entry.
        entry: u64,
    },
    /// A level-4 slot reserved for xen-lite.
    ReservedSlot {
        /// The slot.
        slot: usize,
    },
    /// The frame written to is not a page table in use.
    NotATable {
        /// The frame number.
        frame: u64,
    },
    /// Pinning a frame that is already pinned.
    AlreadyPinned {
        /// The frame number.
        frame: u64,
    },
    /// `update_va_mapping` for an address with no level-1 table (or in xen-lite's range).
    NotMapped {
        /// The address.
        va: u64,
    },
    /// Unpinning a frame that is not pinned.
    NotPinned {
        /// The frame number.
        frame: u64,
    },
}

impl MmError {
    /// The errno a hypercall returns for this error.
    pub fn errno(self) -> Errno {
        match self {
            MmError::NotOwned { .. } | MmError::ReservedSlot { .. } => Errno::EPERM,
            MmError::TypeConflict { .. } => Errno::EBUSY,
            MmError::Superpage { .. }
            | MmError::NotATable { .. }
            | MmError::NotMapped { .. }
            | MmError::AlreadyPinned { .. }
            | MmError::NotPinned { .. } => Errno::EINVAL,
        }
    }
}

/// Access to the contents of the domain's frames (by index from its first frame).
pub trait TableMemory {
    /// Entry `slot` of the table in frame `index`.
    fn entry(&self, index: u64, slot: usize) -> u64;
    /// Writes entry `slot` of the table in frame `index`.
    fn set_entry(&mut self, index: u64, slot: usize, value: u64);
}

/// The type and reference state of one domain's frames.
pub struct FrameTable<'a, M> {
    /// One record per frame of the domain.
    pub pages: &'a mut [PageInfo],
    /// Machine frame number of the domain's first frame.
    pub base: u64,
    /// The frames' contents.
    pub memory: M,
    /// Level-4 slots that belong to xen-lite.
    pub reserved_l4: Range<usize>,
    /// The one of them that maps the switcher, and its entry (rule 4: written into every frame
    /// the moment it becomes an L4).
    pub switcher: (usize, u64),
}

impl<M: TableMemory> FrameTable<'_, M> {
    /// The index of machine frame `frame`, if the domain owns it.
    pub fn index(&self, frame: u64) -> Result<u64, MmError> {
        frame
            .checked_sub(self.base)
            .filter(|&index| index < self.pages.len() as u64)
            .ok_or(MmError::NotOwned { frame })
    }

    fn frame(&self, index: u64) -> u64 {
        self.base + index
    }

    fn info(&mut self, index: u64) -> &mut PageInfo {
        &mut self.pages[index as usize]
    }

    /// Takes a reference of type `wanted` on frame `index`, validating it if it becomes a
    /// page table now.
    pub fn get_type(&mut self, index: u64, wanted: PageType) -> Result<(), MmError> {
        // LAB 3.1 BEGIN: take a reference of type `wanted` on frame `index`: a second reference of the same type only counts, a different type is a conflict, and the first reference of a table type validates the table
        // Hint: claim the type before validating, so a table that names itself at another level is a conflict rather than a silent retype.
        // Hint: a failed validation must leave the frame exactly as it was (`validate` undoes its own references).
        // Hint: a frame that becomes an L4 gets xen-lite's reserved slots (`install_reserved`).
        let frame = self.frame(index);
        let info = *self.info(index);
        if info.type_count > 0 {
            if info.page_type != wanted {
                return Err(MmError::TypeConflict { frame, has: info.page_type, wanted });
            }
            self.info(index).type_count += 1;
            return Ok(());
        }
        // Claim the type first, so a table that (directly or not) refers to itself with
        // another type is a conflict rather than a silent retype.
        *self.info(index) = PageInfo { page_type: wanted, type_count: 1, ..info };
        if let Some(level) = wanted.level() {
            if let Err(error) = self.validate(index, level) {
                *self.info(index) = info;
                return Err(error);
            }
        }
        if wanted == PageType::L4 {
            self.install_reserved(index);
        }
        Ok(())
        // LAB 3.1 END
    }

    /// Writes xen-lite's level-4 slots into a frame that has just become an L4 (so the guest has
    /// no writable mapping of it): the switcher must be mapped wherever a trap can arrive, and
    /// nothing else of xen-lite may be. Whatever the frame held there before (it may have been
    /// another level's table, whose slots of that number were the guest's) is gone.
    fn install_reserved(&mut self, index: u64) {
        for slot in self.reserved_l4.clone() {
            let entry = if slot == self.switcher.0 { self.switcher.1 } else { 0 };
            self.memory.set_entry(index, slot, entry);
        }
    }

    /// Drops a typed reference; the last one of a table releases the table's own references.
    pub fn put_type(&mut self, index: u64) {
        let info = self.info(index);
        info.type_count -= 1;
        if info.type_count == 0 {
            if let Some(level) = info.page_type.level() {
                self.release_all(index, level, ENTRIES);
            }
            self.info(index).page_type = PageType::None;
        }
    }

    /// The slots of a level-`level` table the guest controls.
    fn guest_slot(&self, level: u8, slot: usize) -> bool {
        level != 4 || !self.reserved_l4.contains(&slot)
    }

    /// Validates every guest-controlled present entry; undoes the ones done on failure.
    fn validate(&mut self, index: u64, level: u8) -> Result<(), MmError> {
        for slot in 0..ENTRIES {
            if !self.guest_slot(level, slot) {
                continue;
            }
            let entry = self.memory.entry(index, slot);
            if let Err(error) = self.take_entry(level, entry) {
                self.release_all(index, level, slot);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Releases the references held by the first `count` entries of a table.
    fn release_all(&mut self, index: u64, level: u8, count: usize) {
        for slot in 0..count {
            if self.guest_slot(level, slot) {
                let entry = self.memory.entry(index, slot);
                self.drop_entry(level, entry);
            }
        }
    }

    /// Takes the references a present entry at `level` needs.
    fn take_entry(&mut self, level: u8, entry: u64) -> Result<(), MmError> {
        // LAB 3.2 BEGIN: take the references a present entry of a level-`level` table needs: a table entry types its target as the next level down, a writable leaf types its target Writable, a read-only leaf only counts a reference
        // Hint: a non-present entry needs nothing; a superpage (HUGE above level 1) is refused; a frame outside the domain is refused by `self.index`.
        if entry & PRESENT == 0 {
            return Ok(());
        }
        if level > 1 && entry & HUGE != 0 {
            return Err(MmError::Superpage { entry });
        }
        let target = self.index(address(entry) >> 12)?;
        match PageType::table(level - 1) {
            Some(table) => self.get_type(target, table),
            None if entry & WRITABLE != 0 => self.get_type(target, PageType::Writable),
            None => {
                self.info(target).ref_count += 1;
                Ok(())
            }
        }
        // LAB 3.2 END
    }

    /// Releases what [`Self::take_entry`] took.
    fn drop_entry(&mut self, level: u8, entry: u64) {
        if entry & PRESENT == 0 {
            return;
        }
        let Ok(target) = self.index(address(entry) >> 12) else { return };
        if level == 1 && entry & WRITABLE == 0 {
            self.info(target).ref_count -= 1;
        } else {
            self.put_type(target);
        }
    }

    /// Writes `value` into slot `slot` of the page table in frame `index`: validates the new
    /// entry, then releases the old one.
    pub fn update_entry(&mut self, index: u64, slot: usize, value: u64) -> Result<(), MmError> {
        // LAB 3.3 BEGIN: write `value` into slot `slot` of the page table in frame `index`, keeping every reference count right
        // Hint: only a frame typed as a table (with a count) can be updated, and never in xen-lite's reserved L4 slots.
        // Hint: validate the new entry before releasing the old one: the other order can free a table the new entry still needs.
        let info = *self.info(index);
        let level = info
            .page_type
            .level()
            .filter(|_| info.type_count > 0)
            .ok_or(MmError::NotATable { frame: self.frame(index) })?;
        if !self.guest_slot(level, slot) {
            return Err(MmError::ReservedSlot { slot });
        }
        self.take_entry(level, value)?;
        let old = self.memory.entry(index, slot);
        self.drop_entry(level, old);
        self.memory.set_entry(index, slot, value);
        Ok(())
        // LAB 3.3 END
    }

    /// Pins frame `index` as a table of `table` type.
    pub fn pin(&mut self, index: u64, table: PageType) -> Result<(), MmError> {
        if self.info(index).pinned {
            return Err(MmError::AlreadyPinned { frame: self.frame(index) });
        }
        self.get_type(index, table)?;
        self.info(index).pinned = true;
        Ok(())
    }

    /// Unpins frame `index`.
    pub fn unpin(&mut self, index: u64) -> Result<(), MmError> {
        if !self.info(index).pinned {
            return Err(MmError::NotPinned { frame: self.frame(index) });
        }
        self.info(index).pinned = false;
        self.put_type(index);
        Ok(())
    }
}

/// Frames as plain arrays, for the host tests of these rules and of what checks them.
#[cfg(test)]
pub struct FakeTables(pub Vec<[u64; ENTRIES]>);

#[cfg(test)]
impl FakeTables {
    /// The frame table of these frames, numbered from machine frame `base`, with the host
    /// tests' reserved level-4 slots 256..272 and the switcher's `(slot, entry)` among them.
    pub fn table(
        self,
        pages: &mut [PageInfo],
        base: u64,
        switcher: (usize, u64),
    ) -> FrameTable<'_, Self> {
        FrameTable { pages, base, memory: self, reserved_l4: 256..272, switcher }
    }
}

#[cfg(test)]
impl TableMemory for FakeTables {
    fn entry(&self, index: u64, slot: usize) -> u64 {
        self.0[index as usize][slot]
    }
    fn set_entry(&mut self, index: u64, slot: usize, value: u64) {
        self.0[index as usize][slot] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight frames of memory, machine frames 100..108.
    use super::FakeTables as Fake;

    const BASE: u64 = 100;
    const RW: u64 = PRESENT | WRITABLE;

    fn entry(index: u64, flags: u64) -> u64 {
        ((BASE + index) << 12) | flags
    }

    /// Frames: 0 = L4, 1 = L3, 2 = L2, 3 = L1, 4.. = data. The L1 maps 4 RW, 5 RO and the
    /// L4 itself RO.
    fn tree(pages: &mut [PageInfo]) -> FrameTable<'_, Fake> {
        let mut memory = Fake(vec![[0; ENTRIES]; 8]);
        memory.0[0][1] = entry(1, RW);
        memory.0[1][2] = entry(2, RW);
        memory.0[2][3] = entry(3, RW);
        memory.0[3][0] = entry(4, RW);
        memory.0[3][1] = entry(5, PRESENT);
        memory.0[3][2] = entry(0, PRESENT);
        FrameTable { pages, base: BASE, memory, reserved_l4: 256..272, switcher: (260, 0x9_9003) }
    }

    #[test]
    fn pinning_an_l4_validates_the_whole_tree() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        let types: Vec<_> =
            table.pages.iter().map(|p| (p.page_type, p.type_count, p.ref_count)).collect();
        assert_eq!(
            types[..6],
            [
                (PageType::L4, 1, 1), // pinned, and mapped read-only by the L1
                (PageType::L3, 1, 0),
                (PageType::L2, 1, 0),
                (PageType::L1, 1, 0),
                (PageType::Writable, 1, 0),
                (PageType::None, 0, 1),
            ]
        );
        assert_eq!(table.pin(0, PageType::L4), Err(MmError::AlreadyPinned { frame: BASE }));
        table.unpin(0).unwrap();
        assert!(table.pages.iter().all(|p| p.type_count == 0 && p.ref_count == 0), "all released");
        assert_eq!(table.unpin(0), Err(MmError::NotPinned { frame: BASE }));
    }

    #[test]
    fn a_page_table_can_never_be_mapped_writable() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        let error = table.update_entry(3, 7, entry(2, RW)).unwrap_err();
        assert_eq!(
            error,
            MmError::TypeConflict {
                frame: BASE + 2,
                has: PageType::L2,
                wanted: PageType::Writable
            }
        );
        assert_eq!(error.errno(), Errno::EBUSY);
        table.update_entry(3, 7, entry(2, PRESENT)).unwrap();
        assert_eq!(table.pages[2].ref_count, 1, "read-only mappings of tables are fine");
    }

    #[test]
    fn a_writable_frame_can_never_become_a_page_table() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        assert!(matches!(
            table.pin(4, PageType::L1),
            Err(MmError::TypeConflict { has: PageType::Writable, .. })
        ));
        // Drop the writable mapping; now it can.
        table.update_entry(3, 0, 0).unwrap();
        assert_eq!(table.pages[4], PageInfo::default());
        table.pin(4, PageType::L1).unwrap();
    }

    #[test]
    fn frames_of_others_are_refused() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        for foreign in [1u64, BASE - 1, BASE + 8, 0xf_ffff_ffff] {
            let error = table.update_entry(3, 9, (foreign << 12) | PRESENT).unwrap_err();
            assert_eq!(error, MmError::NotOwned { frame: foreign });
            assert_eq!(error.errno(), Errno::EPERM);
        }
        assert_eq!(table.memory.0[3][9], 0, "nothing written");
    }

    #[test]
    fn superpages_reserved_slots_and_data_frames_are_refused() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        assert_eq!(
            table.update_entry(2, 5, entry(6, RW | HUGE)),
            Err(MmError::Superpage { entry: entry(6, RW | HUGE) })
        );
        assert_eq!(
            table.update_entry(0, 256, entry(1, RW)),
            Err(MmError::ReservedSlot { slot: 256 })
        );
        assert_eq!(table.update_entry(4, 0, 0), Err(MmError::NotATable { frame: BASE + 4 }));
        assert_eq!(
            table.update_entry(6, 0, 0),
            Err(MmError::NotATable { frame: BASE + 6 }),
            "unused frame"
        );
    }

    #[test]
    fn a_failed_validation_leaves_no_references_behind() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        // A second L1 in frame 6: a good entry, then one naming a foreign frame.
        table.memory.0[6][0] = entry(5, RW);
        table.memory.0[6][1] = (3u64 << 12) | PRESENT;
        assert_eq!(table.pin(6, PageType::L1), Err(MmError::NotOwned { frame: 3 }));
        assert!(table.pages.iter().all(|p| *p == PageInfo::default()), "{:?}", table.pages);
    }

    #[test]
    fn a_table_that_names_itself_at_another_level_is_a_conflict() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.memory.0[0][5] = entry(0, RW); // the L4 as its own L3: a recursive mapping
        assert!(matches!(
            table.pin(0, PageType::L4),
            Err(MmError::TypeConflict { has: PageType::L4, wanted: PageType::L3, .. })
        ));
        assert!(table.pages.iter().all(|p| *p == PageInfo::default()));
    }

    #[test]
    fn a_frame_xen_lite_holds_writable_can_never_become_a_page_table() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.get_type(6, PageType::Writable).unwrap(); // xen-lite's own reference
        table.pin(0, PageType::L4).unwrap();
        // Every word of frame 6 looks like a harmless entry, and nothing maps it: still refused.
        table.memory.0[6] = [0; ENTRIES];
        for level in 1..=4 {
            let wanted = PageType::table(level).unwrap();
            let conflict =
                Err(MmError::TypeConflict { frame: BASE + 6, has: PageType::Writable, wanted });
            assert_eq!(table.pin(6, wanted), conflict, "pinned as {wanted:?}");
        }
        // Nor can an entry of a live table name it as the next level down.
        let as_l1 = table.update_entry(2, 9, entry(6, PRESENT)).unwrap_err();
        let as_l3 = table.update_entry(0, 9, entry(6, PRESENT)).unwrap_err();
        assert!(matches!(as_l1, MmError::TypeConflict { wanted: PageType::L1, .. }));
        assert!(matches!(as_l3, MmError::TypeConflict { wanted: PageType::L3, .. }));
        // Mapping it read-only or writable is fine; unmapping leaves xen-lite's reference.
        table.update_entry(3, 9, entry(6, RW)).unwrap();
        table.update_entry(3, 9, 0).unwrap();
        assert_eq!((table.pages[6].page_type, table.pages[6].type_count), (PageType::Writable, 1));
    }

    #[test]
    fn a_frame_that_becomes_an_l4_gets_xen_lites_slots_whatever_it_held() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        // As an L1, slot 256 is the guest's: a mapping of frame 5.
        table.pin(6, PageType::L1).unwrap();
        table.update_entry(6, 256, entry(5, PRESENT)).unwrap();
        table.unpin(6).unwrap();
        table.pin(6, PageType::L4).unwrap();
        assert_eq!(table.memory.0[6][256], 0, "no guest entry left in xen-lite's range");
        assert_eq!(table.memory.0[6][260], 0x9_9003, "the switcher is mapped");
    }

    #[test]
    fn replacing_an_entry_moves_the_references() {
        let mut pages = [PageInfo::default(); 8];
        let mut table = tree(&mut pages);
        table.pin(0, PageType::L4).unwrap();
        table.update_entry(3, 0, entry(6, RW)).unwrap();
        assert_eq!((table.pages[4].type_count, table.pages[6].type_count), (0, 1));
        assert_eq!(table.pages[6].page_type, PageType::Writable);
        assert_eq!(table.memory.0[3][0], entry(6, RW));
    }
}
