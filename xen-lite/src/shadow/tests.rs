//! Host tests of the shadow tables: the fill, the TLB rules, A and D, recycling.

use std::collections::HashMap;

use hypercall_abi::page_table::{ACCESSED, DIRTY, ENTRIES, PRESENT, WRITABLE};

use super::walk::{error, Controls, GuestMemory};
use super::*;

/// Shadow tables in a map, at most `limit` of them at once.
struct Tables {
    tables: HashMap<u64, [u64; ENTRIES]>,
    next: u64,
    limit: usize,
}

impl TableMemory for Tables {
    fn new_table(&mut self) -> Option<u64> {
        if self.tables.len() == self.limit {
            return None;
        }
        self.next += 4096;
        self.tables.insert(self.next, [0; ENTRIES]);
        Some(self.next)
    }
    fn entry(&self, table: u64, slot: usize) -> u64 {
        self.tables[&table][slot]
    }
    fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
        self.tables.get_mut(&table).unwrap()[slot] = value;
    }
}

fn recycle(tables: &mut Tables) {
    tables.tables.clear();
}

/// A guest of 64 pages at machine 0x100_0000 whose words live in a map.
struct Guest(HashMap<u64, u64>);

impl GuestMemory for Guest {
    fn read(&self, gpa: u64) -> Option<u64> {
        (gpa < PMAP.pages * 4096).then(|| self.0.get(&gpa).copied().unwrap_or(0))
    }
    fn write(&mut self, gpa: u64, value: u64) {
        self.0.insert(gpa, value);
    }
}

const PMAP: Pmap = Pmap { base: 0x100_0000, pages: 64 };
const CONTROLS: Controls = Controls { write_protect: true, no_execute: true };
const RW: u64 = PRESENT | WRITABLE;

/// Guest tables at gfns 1-4 mapping va 0x40_0000 + n pages to gfn 16 + n (n < 8), writable.
fn guest() -> Guest {
    let mut words = HashMap::from([(0x1000, 0x2000 | RW), (0x2000, 0x3000 | RW)]);
    words.insert(0x3010, 0x4000 | RW);
    for n in 0..8 {
        words.insert(0x4000 + n * 8, (16 + n) * 4096 | RW);
    }
    Guest(words)
}

fn shadow(limit: usize) -> Shadow<Tables> {
    let tables = Tables { tables: HashMap::new(), next: 0, limit };
    Shadow::new(tables, recycle, 0x1000, HostSlots::default()).unwrap()
}

impl Shadow<Tables> {
    fn fault(&mut self, guest: &mut Guest, va: u64, code: u64) -> Fault {
        self.page_fault_in(guest, PMAP, CONTROLS, va, code)
    }

    /// The shadow's level-1 entry for `va`, if its tables reach one.
    fn leaf(&self, va: u64) -> Option<u64> {
        let mut table = self.root;
        for level in (2..=4).rev() {
            let entry = self.memory.entry(table, page_table::index(va, level));
            if entry & PRESENT == 0 {
                return None;
            }
            table = page_table::address(entry);
        }
        Some(self.memory.entry(table, page_table::index(va, 1)))
    }
}

#[test]
fn a_first_read_is_a_hidden_fault_mapping_the_machine_page_read_only_until_dirty() {
    let (mut s, mut g) = (shadow(16), guest());
    assert_eq!(s.fault(&mut g, 0x40_1000, 0), Fault::Hidden);
    assert_eq!(s.leaf(0x40_1000), Some(PMAP.base + 17 * 4096 | PRESENT));
    assert_eq!(g.0[&0x4008] & (ACCESSED | DIRTY), ACCESSED);
    // The write that follows faults on the read-only shadow entry: hidden again, D set.
    assert_eq!(s.fault(&mut g, 0x40_1000, error::PRESENT | error::WRITE), Fault::Hidden);
    assert_eq!(s.leaf(0x40_1000), Some(PMAP.base + 17 * 4096 | RW));
    assert_eq!(g.0[&0x4008] & DIRTY, DIRTY);
    assert_eq!(s.counters.hidden_faults, 2);
    assert_eq!(s.counters.tables_built, 4, "root, L3, L2, L1");
}

#[test]
fn what_the_guest_refuses_is_its_own_fault() {
    let (mut s, mut g) = (shadow(16), guest());
    assert_eq!(s.fault(&mut g, 0x40_1000, error::USER), Fault::True { error_code: 5 });
    assert_eq!(s.fault(&mut g, 0x80_0000, 0), Fault::True { error_code: 0 });
    assert_eq!(s.leaf(0x40_1000), None, "nothing was filled");
    assert_eq!(s.counters.true_faults, 2);
}

#[test]
fn a_changed_pte_stays_stale_until_invlpg_as_on_hardware() {
    let (mut s, mut g) = (shadow(16), guest());
    assert_eq!(s.fault(&mut g, 0x40_2000, error::WRITE), Fault::Hidden);
    // The guest points the page at gfn 40 and does not invlpg: the shadow keeps gfn 18.
    g.0.insert(0x4010, 40 * 4096 | RW);
    assert_eq!(s.leaf(0x40_2000).map(page_table::address), Some(PMAP.base + 18 * 4096));
    s.invalidate_page(0x40_2000);
    assert_eq!(s.leaf(0x40_2000), Some(0));
    assert_eq!(s.fault(&mut g, 0x40_2000, 0), Fault::Hidden);
    assert_eq!(s.leaf(0x40_2000).map(page_table::address), Some(PMAP.base + 40 * 4096));
    // A CR3 load drops everything.
    s.load_cr3(0x1000);
    assert_eq!(s.leaf(0x40_2000), None);
    assert_eq!(s.counters.invalidations, 2);
}

#[test]
fn running_out_of_pool_recycles_and_the_fill_still_finishes() {
    // Room for one walk only (root, L3, L2, L1): a page under a second L2 entry needs another.
    let (mut s, mut g) = (shadow(4), guest());
    g.0.insert(0x3018, 0x5000 | RW); // 0x60_0000: a second L1 table at gfn 5
    g.0.insert(0x5000, 20 * 4096 | RW);
    assert_eq!(s.fault(&mut g, 0x40_0000, 0), Fault::Hidden);
    assert_eq!(s.fault(&mut g, 0x60_0000, 0), Fault::Hidden);
    assert_eq!(s.counters.recycled, 1);
    assert_eq!(s.leaf(0x60_0000).map(page_table::address), Some(PMAP.base + 20 * 4096));
    assert_eq!(s.leaf(0x40_0000), None, "the first page's shadow went with the recycle");
    assert_eq!(s.fault(&mut g, 0x40_0000, 0), Fault::Hidden, "and is filled again on demand");
}

#[test]
fn a_fault_the_shadow_already_allows_is_the_guests() {
    // The CPU refused an access the shadow entry allows (SMEP, say): not hidden, or it would
    // fault for ever.
    let (mut s, mut g) = (shadow(16), guest());
    assert_eq!(s.fault(&mut g, 0x40_0000, error::WRITE), Fault::Hidden);
    let code = error::PRESENT | error::FETCH;
    assert_eq!(s.fault(&mut g, 0x40_0000, code), Fault::True { error_code: code });
}

#[test]
fn an_entry_beyond_memory_is_not_followed_into_the_shadow() {
    let (mut s, mut g) = (shadow(16), guest());
    g.0.insert(0x4000, 4096 * 4096 | RW);
    assert!(matches!(s.fault(&mut g, 0x40_0000, 0), Fault::Beyond(_)));
    assert_eq!(s.leaf(0x40_0000), None);
}

#[test]
fn every_shadow_leaf_names_a_machine_page_of_the_domain() {
    let (mut s, mut g) = (shadow(64), guest());
    for n in 0..8 {
        assert_eq!(s.fault(&mut g, 0x40_0000 + n * 4096, error::WRITE), Fault::Hidden);
        let machine = page_table::address(s.leaf(0x40_0000 + n * 4096).unwrap());
        assert!((PMAP.base..PMAP.base + PMAP.pages * 4096).contains(&machine));
    }
}

#[test]
fn host_slots_hold_the_switcher_in_every_root_and_the_guest_never_reaches_them() {
    const SWITCHER: (usize, u64) = (260, 0xabc_d003);
    let tables = Tables { tables: HashMap::new(), next: 0, limit: 4 };
    let host = HostSlots { slots: 256..272, entry: Some(SWITCHER) };
    let mut s = Shadow::new(tables, recycle, 0x1000, host).unwrap();
    let mut g = guest();
    // The guest maps the same 0x40_0000 page in slot 260 of its own L4: never followed.
    g.0.insert(0x1000 + 260 * 8, 0x2000 | RW);
    let va = 0xffff_8200_0040_0000; // level-4 slot 260
    assert_eq!(page_table::index(va, 4), 260);
    assert_eq!(s.fault(&mut g, va, error::WRITE), Fault::True { error_code: error::WRITE });
    s.invalidate_page(va);
    assert_eq!(s.memory.entry(s.root, 260), SWITCHER.1, "the invlpg changed nothing of it");
    // Recycling and CR3 loads give each new root the entry again.
    assert_eq!(s.fault(&mut g, 0x40_0000, 0), Fault::Hidden);
    assert_eq!(s.fault(&mut g, 0x40_1000, 0), Fault::Hidden);
    s.load_cr3(0x1000);
    assert_eq!(s.memory.entry(s.root, 260), SWITCHER.1);
    assert_eq!(s.counters.true_faults, 1);
}

#[test]
fn the_pmap_maps_each_guest_page_and_nothing_past_the_end() {
    assert_eq!(PMAP.machine(0), Some(0x100_0000));
    assert_eq!(PMAP.machine(17 * 4096 + 0x28), Some(0x100_0000 + 17 * 4096 + 0x28));
    assert_eq!(PMAP.machine(64 * 4096 - 8), Some(0x100_0000 + 64 * 4096 - 8), "the last word");
    assert_eq!(PMAP.machine(64 * 4096), None, "one page past the end");
    assert_eq!(PMAP.machine(0x100_0000), None, "a machine address is not a guest-physical one");
    assert_eq!(PMAP.machine(u64::MAX & !7), None);
}

// LAB HIDDEN BEGIN
#[test]
fn hidden_every_fault_is_counted_once_and_a_kill_is_not_counted() {
    let (mut s, mut g) = (shadow(16), guest());
    g.0.insert(0x4038, 4096 * 4096 | RW); // page 7 names memory beyond the domain
    let faults = [
        (0x40_0000, 0, Fault::Hidden),
        (0x40_0000, error::PRESENT | error::WRITE, Fault::Hidden),
        (0x40_1000, error::USER, Fault::True { error_code: error::PRESENT | error::USER }),
        (
            0x40_7000,
            0,
            Fault::Beyond(walk::BeyondMemory { level: 1, at: 0x4038, entry: 4096 * 4096 | RW }),
        ),
        (0x80_0000, error::WRITE, Fault::True { error_code: error::WRITE }),
        (0x40_2000, error::FETCH, Fault::Hidden),
    ];
    for (n, &(va, code, want)) in faults.iter().enumerate() {
        assert_eq!(s.fault(&mut g, va, code), want, "fault {n} at {va:#x}");
    }
    assert_eq!((s.counters.hidden_faults, s.counters.true_faults), (3, 2));
    assert_eq!(s.leaf(0x40_7000), Some(0), "nothing was filled for the kill");
    assert_eq!(s.leaf(0x40_0000), Some(PMAP.base + 16 * 4096 | RW));
    assert_eq!(
        s.leaf(0x40_2000),
        Some(PMAP.base + 18 * 4096 | PRESENT),
        "a fetch: read-only, clean"
    );
}
// LAB HIDDEN END
