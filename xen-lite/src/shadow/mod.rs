//! Shadow paging, lguest's "virtual TLB" style: the guest believes it loads its own page tables
//! into CR3; xen-lite loads tables of its own instead, filled on demand from the guest's.
//!
//! The guest writes its four-level tables freely, in its own memory, in guest-physical terms.
//! xen-lite keeps one *shadow* set per virtual CPU (in frames of a bounded [`pool`], never mapped
//! into any guest) whose entries hold machine addresses, and runs the guest on those. They start
//! empty, so every first access to a page faults into xen-lite, which walks the guest's tables
//! ([`walk`]) and decides:
//!
//! - a **hidden fault**: the guest's tables allow the access, the shadow simply lacked it (or
//!   held it read-only until the guest's leaf was dirty). xen-lite adds the one shadow entry,
//!   sets A (and D) in the guest's entries as the MMU would, and retries the instruction; the
//!   guest never knows;
//! - a **true fault**: the guest's tables refuse it; the guest gets the page fault its own MMU
//!   would have raised, with the same error code and CR2;
//! - an entry naming memory past the domain's end: the domain is killed, with the entry.
//!
//! Like a TLB, a shadow entry outlives a change to the guest entry it came from: the change
//! becomes visible where the hardware's rules say, at an `invlpg` of the page
//! ([`Shadow::invalidate_page`]), a CR3 load or a global flush ([`Shadow::load_cr3`],
//! [`Shadow::flush`]). So a guest that edits a PTE and forgets the `invlpg` sees the old
//! translation, exactly as on hardware. The pmap ([`Pmap`], Disco's name; Xen's p2m) turns each
//! guest-physical page into the machine page behind it.
//!
//! Recycling: a CR3 load drops every shadow table (the real MMU flushes the TLB then, so nothing
//! is lost but speed), and so does running out of pool: the fill starts again with an empty
//! shadow, and the count of recycles says how often. See: lguest `drivers/lguest/page_tables.c`
//! (Linux before 4.14); Intel SDM Vol. 3A, revision 086, 4.10 (TLBs and their invalidation).

pub mod pool;
pub mod walk;

use hypercall_abi::page_table::{self, PRESENT, USER, WRITABLE};

use crate::hvm::nested::TableMemory;
use crate::memory_map::phys_to_virt;
use walk::{Access, BeyondMemory, Controls, GuestMemory, Walk};

/// A domain's physical-to-machine map: guest-physical pages `0..pages` are the machine pages
/// from `base` on (xen-lite gives each domain one contiguous run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pmap {
    /// Machine address of guest-physical 0.
    pub base: u64,
    /// Pages of guest-physical memory.
    pub pages: u64,
}

impl Pmap {
    /// The machine address of guest-physical `gpa`, if the domain has it.
    pub fn machine(&self, gpa: u64) -> Option<u64> {
        (gpa < self.pages * 4096).then(|| self.base + gpa)
    }
}

/// The guest's memory through its pmap and xen-lite's direct map.
struct PmapMemory(Pmap);

impl GuestMemory for PmapMemory {
    fn read(&self, gpa: u64) -> Option<u64> {
        let machine = self.0.machine(gpa & !7)?;
        // SAFETY: one of the domain's own frames, in the direct map; reading it changes nothing.
        Some(unsafe { (phys_to_virt(machine) as *const u64).read_volatile() })
    }

    fn write(&mut self, gpa: u64, value: u64) {
        if let Some(machine) = self.0.machine(gpa & !7) {
            // SAFETY: as in `read`; only A and D are ever set this way, as the MMU would.
            unsafe { (phys_to_virt(machine) as *mut u64).write_volatile(value) };
        }
    }
}

/// What shadow paging did for one vCPU (the `shadow` counters of `Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Faults fixed in the shadow without the guest knowing.
    pub hidden_faults: u64,
    /// Faults delivered to the guest.
    pub true_faults: u64,
    /// Shadow tables filled (zeroed and linked in).
    pub tables_built: u64,
    /// Times every shadow table was dropped because the pool ran out.
    pub recycled: u64,
    /// `invlpg`s, CR3 loads and flushes.
    pub invalidations: u64,
}

/// What a page fault turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fixed in the shadow: retry the instruction.
    Hidden,
    /// The guest's own: deliver a page fault with this error code.
    True { error_code: u64 },
    /// An entry points beyond the domain's memory: kill it.
    Beyond(BeyondMemory),
}

/// One vCPU's shadow tables over `M` (the pool in xen-lite, a map in the host tests).
pub struct Shadow<M: TableMemory> {
    memory: M,
    /// The shadow level-4 table, what the real CR3 holds while the guest runs.
    root: u64,
    /// What the guest last loaded into CR3 (guest-physical), what it reads back.
    guest_cr3: u64,
    /// Gives every table of `memory` back (the pool's `recycle`).
    recycle: fn(&mut M),
    /// The counters.
    pub counters: Counters,
}

impl<M: TableMemory> Shadow<M> {
    /// Shadow tables in `memory` for a guest whose CR3 is `guest_cr3`; `recycle` gives every
    /// table of `memory` back. `None` if `memory` cannot hold even a root.
    pub fn new(mut memory: M, recycle: fn(&mut M), guest_cr3: u64) -> Option<Shadow<M>> {
        let root = memory.new_table()?;
        let counters = Counters { tables_built: 1, ..Counters::default() };
        Some(Shadow { memory, root, guest_cr3, recycle, counters })
    }

    /// The machine address of the shadow root: the CR3 the guest really runs on.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The CR3 the guest believes it has.
    pub fn guest_cr3(&self) -> u64 {
        self.guest_cr3
    }

    /// The guest loads `cr3`: every shadow entry goes, as every TLB entry would.
    pub fn load_cr3(&mut self, cr3: u64) {
        self.guest_cr3 = cr3;
        self.flush();
    }

    /// Drops every shadow table and starts an empty root (a global TLB flush).
    pub fn flush(&mut self) {
        self.counters.invalidations += 1;
        self.drop_all();
    }

    fn drop_all(&mut self) {
        (self.recycle)(&mut self.memory);
        self.root = self.memory.new_table().expect("a recycled pool holds a root");
        self.counters.tables_built += 1;
    }

    /// `invlpg va`: the shadow entry for `va` goes (its tables stay: they hold no rights).
    pub fn invalidate_page(&mut self, va: u64) {
        self.counters.invalidations += 1;
        let mut table = self.root;
        for level in (2..=4).rev() {
            let entry = self.memory.entry(table, page_table::index(va, level));
            if entry & PRESENT == 0 {
                return;
            }
            table = page_table::address(entry);
        }
        self.memory.set_entry(table, page_table::index(va, 1), 0);
    }

    /// A page fault at `va` with the hardware's `error_code`, while the guest runs on this
    /// shadow with `controls`: a hidden fault is fixed before this returns.
    pub fn page_fault(
        &mut self,
        pmap: Pmap,
        controls: Controls,
        va: u64,
        error_code: u64,
    ) -> Fault {
        self.page_fault_in(&mut PmapMemory(pmap), pmap, controls, va, error_code)
    }

    /// [`Shadow::page_fault`] with the guest's memory given (the host tests' map).
    fn page_fault_in(
        &mut self,
        guest: &mut impl GuestMemory,
        pmap: Pmap,
        controls: Controls,
        va: u64,
        error_code: u64,
    ) -> Fault {
        let access = Access::from_error_code(error_code);
        let leaf = match walk::walk(guest, controls, self.guest_cr3, va, access) {
            Walk::Allowed(leaf) => leaf,
            Walk::Fault { error_code } => {
                self.counters.true_faults += 1;
                return Fault::True { error_code };
            }
            Walk::Beyond(beyond) => return Fault::Beyond(beyond),
        };
        let machine = pmap.machine(leaf.page).expect("the walk checked the page is the domain's");
        let entry = leaf.shadow_entry(machine);
        match self.install(va, entry) {
            Some(old) if old == entry => {
                // The shadow already allowed what the guest's tables allow, and the CPU still
                // refused (SMEP, SMAP, protection keys: checks the shadow leaves to the CPU).
                self.counters.true_faults += 1;
                Fault::True { error_code }
            }
            _ => {
                self.counters.hidden_faults += 1;
                Fault::Hidden
            }
        }
    }

    /// Puts `entry` in the shadow level-1 slot for `va`, adding tables on the way (dropping
    /// every table first if the pool runs out); returns what the slot held before.
    fn install(&mut self, va: u64, entry: u64) -> Option<u64> {
        loop {
            if let Some(old) = self.try_install(va, entry) {
                return Some(old);
            }
            self.counters.recycled += 1;
            self.drop_all();
        }
    }

    /// [`Shadow::install`] without recycling: `None` if the pool ran out on the way.
    fn try_install(&mut self, va: u64, entry: u64) -> Option<u64> {
        let mut table = self.root;
        for level in (2..=4).rev() {
            let index = page_table::index(va, level);
            let existing = self.memory.entry(table, index);
            table = if existing & PRESENT != 0 {
                page_table::address(existing)
            } else {
                let next = self.memory.new_table()?;
                self.counters.tables_built += 1;
                // Upper shadow entries allow everything: the leaf carries the walk's rights.
                self.memory.set_entry(table, index, next | PRESENT | WRITABLE | USER);
                next
            };
        }
        let index = page_table::index(va, 1);
        let old = self.memory.entry(table, index);
        self.memory.set_entry(table, index, entry);
        Some(old)
    }
}

#[cfg(test)]
mod tests;
