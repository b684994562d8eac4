//! The invariant auditor's checks for `pv` domains (`audit=on`, driven by
//! `crate::domain::audit`): after every entry, xen-lite checks the protection invariants of
//! DESIGN §4 over every domain, instead of trusting that each handler kept them. A violation is a bug in xen-lite, so it is fatal, with one line naming
//! the invariant, the domain and the frame. Xen's `audit_domains` and seL4's proved invariants
//! are the models: an auditor finds the next escape without anyone having imagined it.
//!
//! What is checked, for each live domain:
//!
//! | invariant | check |
//! |---|---|
//! | 1: nothing of xen-lite or another domain reachable | every present entry of every table the domain can run on (every frame typed L1-L4; under shadow paging, the shadow tree) names a frame of the domain (or, in the shadow's upper levels, a shadow table); the level-4 slots reserved for xen-lite hold the switcher's entry or nothing |
//! | 2: page tables typed and validated, never writable | an entry of a level-N table names a frame typed level N-1 with a count; a writable L1 entry names a frame typed `Writable`, never a table |
//! | 5: frames xen-lite writes typed as such | the shared-info frame holds its `Writable` reference |
//! | 6: no other domain's data on guest-visible stacks | the IST pages are zero (their frames are moved off and wiped on arrival), the entry stack is zero below its frame slot, and after a switch the `syscall` scratch words are zero (`switcher::audit_stacks`) |
//!
//! The table checks are pure ([`check_tables`]) and host-tested against each rule.

use core::fmt;
use core::ops::Range;

use hypercall_abi::page_table::{address, ACCESSED, ENTRIES, PRESENT, WRITABLE};

use super::page_types::{PageInfo, PageType, TableMemory};

/// A broken invariant, with the values that show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Invariant 1: a table entry names a frame outside the domain.
    ForeignFrame {
        /// The table's frame (machine frame number).
        table: u64,
        /// The slot.
        slot: usize,
        /// The frame it names.
        target: u64,
    },
    /// Invariant 1: a reserved level-4 slot holds something other than the switcher.
    ReservedSlot {
        /// The L4's frame.
        table: u64,
        /// The slot.
        slot: usize,
        /// What it holds.
        entry: u64,
    },
    /// Invariant 2: an entry names a frame whose type does not match the use.
    Untyped {
        /// The table's frame.
        table: u64,
        /// The slot.
        slot: usize,
        /// The frame it names.
        target: u64,
        /// The type the use needs.
        needs: PageType,
        /// What the frame has.
        has: PageType,
    },
    /// Invariant 2: a superpage entry.
    Superpage {
        /// The table's frame.
        table: u64,
        /// The slot.
        slot: usize,
    },
    /// Invariant 5: the shared-info frame lost its reference.
    SharedInfoUntyped {
        /// The frame.
        frame: u64,
        /// Its record.
        info: PageInfo,
    },
    /// Invariant 6: a guest-visible stack holds a non-zero word where nothing may be.
    StackNotClean {
        /// Which stack.
        stack: &'static str,
        /// The address of the word.
        address: u64,
        /// The word.
        value: u64,
    },
}

impl Violation {
    /// The invariant's number in DESIGN §4.
    pub fn invariant(&self) -> u8 {
        match self {
            Violation::ForeignFrame { .. } | Violation::ReservedSlot { .. } => 1,
            Violation::Untyped { .. } | Violation::Superpage { .. } => 2,
            Violation::SharedInfoUntyped { .. } => 5,
            Violation::StackNotClean { .. } => 6,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::ForeignFrame { table, slot, target } => write!(
                f,
                "table frame {table:#x} slot {slot} names frame {target:#x}, which is not the domain's"
            ),
            Violation::ReservedSlot { table, slot, entry } => write!(
                f,
                "L4 frame {table:#x} holds {entry:#x} in xen-lite's reserved slot {slot}"
            ),
            Violation::Untyped { table, slot, target, needs, has } => write!(
                f,
                "table frame {table:#x} slot {slot} names frame {target:#x} as {needs:?}, but it is {has:?}"
            ),
            Violation::Superpage { table, slot } => {
                write!(f, "table frame {table:#x} slot {slot} is a superpage")
            }
            Violation::SharedInfoUntyped { frame, info } => {
                write!(f, "shared-info frame {frame:#x} is not held writable: {info:?}")
            }
            Violation::StackNotClean { stack, address, value } => {
                write!(f, "{stack} holds {value:#x} at {address:#x}")
            }
        }
    }
}

/// What a domain's tables may hold in xen-lite's reserved level-4 slots: the switcher's entry
/// in its slot, nothing elsewhere.
pub struct Reserved {
    /// The reserved level-4 slots.
    pub slots: Range<usize>,
    /// The switcher's slot and the entry every guest L4 holds there.
    pub switcher: (usize, u64),
}

impl Reserved {
    /// Checks level-4 entry `slot` of the table in frame `table`, if the slot is reserved:
    /// `Ok(true)` if it is (and holds the switcher's entry or nothing), `Ok(false)` if it is the
    /// guest's.
    fn check(&self, table: u64, slot: usize, entry: u64) -> Result<bool, Violation> {
        if !self.slots.contains(&slot) {
            return Ok(false);
        }
        let allowed = if slot == self.switcher.0 { self.switcher.1 } else { 0 };
        // The CPU sets the accessed bit of the entries it walks.
        if entry & !ACCESSED != allowed && entry != 0 {
            return Err(Violation::ReservedSlot { table, slot, entry });
        }
        Ok(true)
    }
}

/// Audits one live domain (`crate::domain::audit`): for a `pv` domain its shared-info frame,
/// and with `walk` every table it can run on (its shadow, under `paging=shadow`). An hvm
/// domain has nothing here to check.
pub fn check_domain(domain: &crate::domain::Domain, walk: bool) -> Result<(), Violation> {
    let Some(pv) = &domain.pv else { return Ok(()) };
    let (pages, base, shared) = (pv.page_info(), domain.memory.0, domain.shared_info_gfn);
    if !walk {
        return check_shared_info(pages, base, shared);
    }
    let reserved = Reserved {
        slots: crate::memory_map::HYPERVISOR_L4_SLOTS,
        switcher: super::switcher_slot(),
    };
    if let Some(shadow) = &pv.shadow {
        let pool = shadow.tables.memory();
        let domain_frames = base..base + pages.len() as u64;
        check_shadow(pool, shadow.tables.root(), |t| pool.holds(t), domain_frames, &reserved)?;
    }
    check_tables(pages, base, &domain.tables(), &reserved, shared)
}

/// Checks a shadow tree (invariant 1): from `root`, every upper entry names a shadow table
/// (`is_shadow_table`, by machine address), every leaf a frame in `domain_frames` (machine
/// frame numbers), and the reserved level-4 slots hold the switcher's entry or nothing.
pub fn check_shadow(
    memory: &impl crate::hvm::nested::TableMemory,
    root: u64,
    is_shadow_table: impl Fn(u64) -> bool,
    domain_frames: Range<u64>,
    reserved: &Reserved,
) -> Result<(), Violation> {
    fn walk(
        memory: &impl crate::hvm::nested::TableMemory,
        table: u64,
        level: u8,
        check: &dyn Fn(u64, usize, u8, u64) -> Result<bool, Violation>,
    ) -> Result<(), Violation> {
        for slot in 0..ENTRIES {
            let entry = memory.entry(table, slot);
            if check(table, slot, level, entry)? {
                walk(memory, address(entry), level - 1, check)?;
            }
        }
        Ok(())
    }
    // Whether to descend into the entry, or the violation it is.
    let check = |table: u64, slot: usize, level: u8, entry: u64| {
        let frame = table >> 12;
        if level == 4 && reserved.check(frame, slot, entry)? {
            return Ok(false);
        }
        if entry & PRESENT == 0 {
            return Ok(false);
        }
        let target = address(entry);
        let fine = if level > 1 {
            is_shadow_table(target)
        } else {
            domain_frames.contains(&(target >> 12))
        };
        if !fine {
            return Err(Violation::ForeignFrame { table: frame, slot, target: target >> 12 });
        }
        Ok(level > 1)
    };
    walk(memory, root, 4, &check)
}

/// Checks that the shared-info frame holds its `Writable` reference (invariant 5).
pub fn check_shared_info(pages: &[PageInfo], base: u64, gfn: u64) -> Result<(), Violation> {
    let info = pages[gfn as usize];
    if info.page_type != PageType::Writable || info.type_count == 0 {
        return Err(Violation::SharedInfoUntyped { frame: base + gfn, info });
    }
    Ok(())
}

/// Checks every table of one domain (invariants 1 and 2) and its shared-info frame (5).
/// `pages` is its frame table, `base` its first machine frame.
pub fn check_tables(
    pages: &[PageInfo],
    base: u64,
    memory: &impl TableMemory,
    reserved: &Reserved,
    shared_info_gfn: u64,
) -> Result<(), Violation> {
    check_shared_info(pages, base, shared_info_gfn)?;
    let type_of = |index: usize| {
        let info = pages[index];
        if info.type_count > 0 {
            info.page_type
        } else {
            PageType::None
        }
    };
    for (index, info) in pages.iter().enumerate() {
        let Some(level) = info.page_type.level().filter(|_| info.type_count > 0) else { continue };
        let table = base + index as u64;
        for slot in 0..ENTRIES {
            let entry = memory.entry(index as u64, slot);
            if level == 4 && reserved.check(table, slot, entry)? {
                continue;
            }
            if entry & PRESENT == 0 {
                continue;
            }
            if level > 1 && entry & (1 << 7) != 0 {
                return Err(Violation::Superpage { table, slot });
            }
            let target = address(entry) >> 12;
            let Some(target_index) = target.checked_sub(base).filter(|&i| i < pages.len() as u64)
            else {
                return Err(Violation::ForeignFrame { table, slot, target });
            };
            let has = type_of(target_index as usize);
            let needs = match PageType::table(level - 1) {
                Some(table_type) => table_type,
                None if entry & WRITABLE != 0 => PageType::Writable,
                None => continue, // a read-only data mapping: any frame of the domain
            };
            if has != needs {
                return Err(Violation::Untyped { table, slot, target, needs, has });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pv::page_types::FakeTables as Fake;

    const BASE: u64 = 100;
    const RW: u64 = PRESENT | WRITABLE;
    const SWITCHER: (usize, u64) = (260, 0xabc_d003);

    fn entry(index: u64, flags: u64) -> u64 {
        ((BASE + index) << 12) | flags
    }

    fn reserved() -> Reserved {
        Reserved { slots: 256..272, switcher: SWITCHER }
    }

    /// A pinned four-level tree (frames 0-3), data frame 4 mapped writable, frame 7 the shared
    /// page held by xen-lite; validated through the real rules.
    fn valid() -> (Vec<PageInfo>, Fake) {
        let mut memory = Fake(vec![[0; ENTRIES]; 8]);
        memory.0[0][1] = entry(1, RW);
        memory.0[0][SWITCHER.0] = SWITCHER.1 | ACCESSED; // the CPU walked it
        memory.0[1][2] = entry(2, RW);
        memory.0[2][3] = entry(3, RW);
        memory.0[3][0] = entry(4, RW);
        memory.0[3][1] = entry(0, PRESENT);
        memory.0[3][2] = entry(7, RW);
        let mut pages = vec![PageInfo::default(); 8];
        let mut table = memory.table(&mut pages, BASE, SWITCHER);
        table.get_type(7, PageType::Writable).unwrap();
        table.pin(0, PageType::L4).unwrap();
        let memory = table.memory;
        (pages, memory)
    }

    #[test]
    fn what_the_rules_build_passes() {
        let (pages, memory) = valid();
        assert_eq!(check_tables(&pages, BASE, &memory, &reserved(), 7), Ok(()));
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let cases: [(fn(&mut Vec<PageInfo>, &mut Fake), u8); 6] = [
            (|_, m| m.0[3][5] = (5u64 << 12) | RW, 1), // a foreign frame
            (|_, m| m.0[0][257] = entry(1, RW), 1),    // a reserved slot
            (|_, m| m.0[3][6] = entry(2, RW), 2),      // a table mapped writable
            (|_, m| m.0[2][9] = entry(5, RW), 2),      // an L2 entry to an untyped frame
            (|_, m| m.0[2][9] = entry(5, RW | 1 << 7), 2), // a superpage
            (|p, _| p[7] = PageInfo::default(), 5),    // the shared page dropped
        ];
        for (i, (corrupt, invariant)) in cases.into_iter().enumerate() {
            let (mut pages, mut memory) = valid();
            corrupt(&mut pages, &mut memory);
            let error = check_tables(&pages, BASE, &memory, &reserved(), 7).unwrap_err();
            assert_eq!(error.invariant(), invariant, "case {i}: {error}");
        }
    }

    /// Shadow tables by machine address: a root at 0x1000 over tables 0x2000-0x4000, mapping
    /// one page of the domain (machine frames 100-107) and holding the switcher.
    struct Shadows(std::collections::HashMap<u64, [u64; ENTRIES]>);

    impl crate::hvm::nested::TableMemory for Shadows {
        fn new_table(&mut self) -> Option<u64> {
            None
        }
        fn entry(&self, table: u64, slot: usize) -> u64 {
            self.0[&table][slot]
        }
        fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
            self.0.get_mut(&table).unwrap()[slot] = value;
        }
    }

    fn shadows() -> Shadows {
        let mut tables = std::collections::HashMap::new();
        for t in 1..=4u64 {
            tables.insert(t << 12, [0; ENTRIES]);
        }
        let set = |tables: &mut std::collections::HashMap<u64, [u64; ENTRIES]>, t: u64, s, v| {
            tables.get_mut(&(t << 12)).unwrap()[s] = v;
        };
        set(&mut tables, 1, 0, 0x2000 | RW);
        set(&mut tables, 1, SWITCHER.0, SWITCHER.1 | ACCESSED);
        set(&mut tables, 2, 0, 0x3000 | RW);
        set(&mut tables, 3, 2, 0x4000 | RW);
        set(&mut tables, 4, 0, entry(4, RW));
        Shadows(tables)
    }

    fn check(memory: &Shadows) -> Result<(), Violation> {
        let is_table = |t: u64| (0x1000..=0x4000).contains(&t);
        check_shadow(memory, 0x1000, is_table, BASE..BASE + 8, &reserved())
    }

    #[test]
    fn a_shadow_reaching_only_the_domain_and_the_switcher_passes_and_each_escape_is_named() {
        assert_eq!(check(&shadows()), Ok(()));
        let cases: [fn(&mut Shadows); 3] = [
            |m| m.0.get_mut(&0x4000).unwrap()[1] = (5u64 << 12) | RW, // a leaf outside the domain
            |m| m.0.get_mut(&0x3000).unwrap()[3] = entry(4, RW), // an upper entry at a guest frame
            |m| m.0.get_mut(&0x1000).unwrap()[257] = 0x2000 | RW, // a reserved slot
        ];
        for (i, corrupt) in cases.into_iter().enumerate() {
            let mut memory = shadows();
            corrupt(&mut memory);
            assert_eq!(check(&memory).map_err(|v| v.invariant()), Err(1), "case {i}");
        }
    }
}
