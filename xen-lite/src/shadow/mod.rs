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
//! Host slots (`pv` mode only): a ring-1 guest shares its address space with the switcher, which
//! lives in level-4 slots reserved for xen-lite (`crate::memory_map::HYPERVISOR_L4_SLOTS`).
//! Every shadow root gets the switcher's entry there ([`Shadow::new`]); the guest's
//! own entries in those slots are never read, a fault there is the guest's (a true fault) and an
//! `invlpg` there changes nothing, so the walk never descends into xen-lite's tables.
//!
//! Recycling: a CR3 load drops every shadow table (the real MMU flushes the TLB then, so nothing
//! is lost but speed), and so does running out of pool: the fill starts again with an empty
//! shadow, and the count of recycles says how often. See: lguest `drivers/lguest/page_tables.c`
//! (Linux before 4.14); Intel SDM Vol. 3A, revision 086, 4.10 (TLBs and their invalidation).

pub mod pool;
pub mod walk;

use core::ops::Range;

use hypercall_abi::page_table::{self, PRESENT, USER, WRITABLE};

use hypercall_abi::devices::STATUS_BAD_GUEST;
use hypercall_abi::stats::Stats;

use crate::config::Config;
use crate::domain::{kill, Domain};
use crate::exit::exit_emulator;
use crate::hvm::nested::TableMemory;
use crate::memory_map::phys_to_virt;
use pool::Pool;
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
        // LAB 5.1 BEGIN: the machine address behind guest-physical `gpa`, or `None` if the domain has no such page
        // Hint: the domain's pages are one contiguous run of machine memory from `self.base`; it has `self.pages` of them.
        (gpa < self.pages * 4096).then(|| self.base + gpa)
        // LAB 5.1 END
    }
}

/// The guest's memory through its pmap and xen-lite's direct map.
pub struct PmapMemory(pub Pmap);

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

/// Level-4 slots the guest's tables do not decide (see the module comment): `slots`, of which
/// `entry.0` holds `entry.1` in every shadow root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSlots {
    /// The reserved level-4 slots (empty under VMX and SVM, where the guest has them all).
    pub slots: Range<usize>,
    /// The slot and entry every shadow root holds (the switcher's), if any.
    pub entry: Option<(usize, u64)>,
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
    /// Level-4 slots that belong to xen-lite, and the one entry every root holds among them.
    host: HostSlots,
    /// The counters.
    pub counters: Counters,
}

impl<M: TableMemory> Shadow<M> {
    /// Shadow tables in `memory` for a guest whose CR3 is `guest_cr3` and whose level-4 slots
    /// `host.slots` are xen-lite's; `recycle` gives every table of `memory` back. `None` if
    /// `memory` cannot hold even a root.
    pub fn new(
        mut memory: M,
        recycle: fn(&mut M),
        guest_cr3: u64,
        host: HostSlots,
    ) -> Option<Shadow<M>> {
        let root = memory.new_table()?;
        let counters = Counters { tables_built: 1, ..Counters::default() };
        let mut shadow = Shadow { memory, root, guest_cr3, recycle, host, counters };
        shadow.install_host_entry();
        Some(shadow)
    }

    /// Writes the host entry into the root (every new root gets it).
    fn install_host_entry(&mut self) {
        if let Some((slot, entry)) = self.host.entry {
            self.memory.set_entry(self.root, slot, entry);
        }
    }

    /// Whether `va` lies in a level-4 slot of xen-lite's.
    fn in_host_slot(&self, va: u64) -> bool {
        self.host.slots.contains(&page_table::index(va, 4))
    }

    /// The tables, for the auditor (`crate::pv::audit::check_shadow`).
    pub fn memory(&self) -> &M {
        &self.memory
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
        self.install_host_entry();
    }

    /// `invlpg va`: the shadow entry for `va` goes (its tables stay: they hold no rights).
    pub fn invalidate_page(&mut self, va: u64) {
        self.counters.invalidations += 1;
        if self.in_host_slot(va) {
            return; // xen-lite's tables: the guest's invlpg cannot reach them
        }
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
        if self.in_host_slot(va) {
            // Nothing of the guest's can be mapped there: what faulted is the guest's own.
            self.counters.true_faults += 1;
            return Fault::True { error_code };
        }
        // LAB 5.3 BEGIN: walk the guest's tables for the access `error_code` describes and decide: the guest's own fault (`Fault::True`), an entry beyond memory (`Fault::Beyond`), or a hidden fault, fixed by installing the shadow entry before returning `Fault::Hidden`; count each in `self.counters`
        // Hint: `Access::from_error_code`, then `walk::walk` from `self.guest_cr3`; the pmap turns the leaf's guest-physical page into a machine one, `Leaf::shadow_entry` makes the entry, `install` puts it in.
        // Hint: if the shadow already held exactly that entry, the CPU refused for a reason of its own (SMEP, say): a true fault with the hardware's error code, or the guest would fault for ever.
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
        // LAB 5.3 END
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

/// One domain's shadow paging as xen-lite keeps it, in every mode that uses it (`pv` with
/// `paging=shadow`, `vmx` with `ept=off`, `svm` with `npt=off`): its shadow tables, in a pool of
/// xen-lite's frames, and its pmap.
pub struct DomainShadow {
    /// The shadow tables.
    pub tables: Shadow<Pool>,
    /// Guest-physical to machine.
    pub pmap: Pmap,
}

impl DomainShadow {
    /// Domain `id`'s shadow (`shadow_pool=` tables), its guest-physical memory `pmap`, for a
    /// guest whose CR3 is `guest_cr3`; ends the run if xen-lite has no frames for the pool.
    pub fn allocate(
        config: &Config<'_>,
        id: usize,
        pmap: Pmap,
        guest_cr3: u64,
        host: HostSlots,
    ) -> DomainShadow {
        let mode = config.mode.name();
        let pool = Pool::allocate(config.shadow_pool).unwrap_or_else(|why| {
            log::error!("{mode}: cannot shadow dom{id}'s page tables: {why}");
            exit_emulator(STATUS_BAD_GUEST)
        });
        let tables =
            Shadow::new(pool, Pool::recycle, guest_cr3, host).expect("a pool holds a root");
        log::info!(
            "{mode}: dom{id}: shadow paging, {} tables in its pool; its CR3 {guest_cr3:#x} (guest-physical) runs on shadow root {:#x}",
            config.shadow_pool,
            tables.root()
        );
        DomainShadow { tables, pmap }
    }

    /// A page fault of domain `id` at `va` with `error_code`, while it runs on this shadow with
    /// `controls`: a hidden fault is fixed before this returns; the counters reach `stats`. A
    /// [`Fault::Beyond`] is for the caller to end with [`kill_beyond`].
    pub fn page_fault(
        &mut self,
        id: u32,
        stats: &mut Stats,
        controls: Controls,
        va: u64,
        error_code: u64,
    ) -> Fault {
        let recycled = self.tables.counters.recycled;
        let fault = self.tables.page_fault(self.pmap, controls, va, error_code);
        if recycled == 0 && self.tables.counters.recycled > 0 {
            log::info!(
                "dom{id}: shadow paging: its pool ran out; every shadow table was dropped and refills on demand (Stats::shadow_recycled counts each time)"
            );
        }
        log::trace!(
            "dom{id}: shadow: page fault at {va:#x}, error code {error_code:#x}: {fault:?}"
        );
        self.record(stats);
        fault
    }

    /// Copies the counters into the domain's `Stats`.
    pub fn record(&self, stats: &mut Stats) {
        let n = self.tables.counters;
        stats.shadow_hidden_faults = n.hidden_faults;
        stats.shadow_true_faults = n.true_faults;
        stats.shadow_tables_built = n.tables_built;
        stats.shadow_recycled = n.recycled;
        stats.shadow_invalidations = n.invalidations;
    }
}

/// Kills `domain`, whose access to `va` at `rip` walked through an entry naming memory beyond
/// its `pages` frames (a [`Fault::Beyond`]).
pub fn kill_beyond(domain: &mut Domain, beyond: BeyondMemory, pages: u64, va: u64, rip: u64) {
    kill!(
        domain,
        "shadow paging: the level-{} entry {:#x} at guest-physical {:#x} names memory beyond the domain's {pages} frames (access to {va:#x} at rip {rip:#x})",
        beyond.level,
        beyond.entry,
        beyond.at
    );
}

#[cfg(test)]
mod tests;
