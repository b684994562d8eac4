//! The ring-1 state of a `pv` domain ([`PvState`], `Domain::pv`): what a paravirtualised
//! kernel registers with xen-lite instead of loading it into the CPU, and the type of every
//! frame it owns (validated direct paging).

use core::ops::Range;

use hypercall_abi::hypercall::{NR_EVENT_PORTS, NR_VIRQS};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::shared_info::SharedInfo;

use hypercall_abi::page_table::ENTRIES;

use super::page_types::{FrameTable, PageInfo, PageType, TableMemory};
use crate::domain::Domain;
use crate::memory_map::HYPERVISOR_L4_SLOTS;
use crate::shadow::DomainShadow;

/// What an event port is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Not in use.
    Free,
    /// Raised by xen-lite for this virtual IRQ.
    Virq(u64),
    /// Open for `send` from this domain.
    Unbound {
        /// The domain allowed to send.
        remote: u32,
    },
}

/// One entry of the virtual IDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapHandler {
    /// Ring-1 handler address; 0 = none.
    pub address: u64,
    /// Highest ring allowed to raise it with `int n`.
    pub dpl: u8,
}

/// A `pv` domain's ring-1 state.
pub struct PvState {
    /// CR3 value: machine address of the level-4 table it runs on (under shadow paging, the
    /// shadow root, which xen-lite keeps equal to `shadow.tables.root()`).
    pub cr3: u64,
    /// `paging=shadow`: the shadow tables the domain runs on; `None` under direct paging.
    pub shadow: Option<DomainShadow>,
    /// The virtual IDT (`set_trap_table`).
    pub traps: [TrapHandler; 256],
    /// Event upcall entry (`set_callbacks`); 0 = none.
    pub event_callback: u64,
    /// Failsafe callback (`set_callbacks`); recorded, used when segment reloads fail.
    pub failsafe_callback: u64,
    /// Where a user `syscall` is bounced to (`set_callbacks`); 0 = none.
    pub syscall_callback: u64,
    /// The ring-1 handler for `int 0x80` if the trap table gave it DPL 3: the fast trap.
    pub fast_trap: Option<u64>,
    /// `rip` range in which no upcall is delivered (the guest's unmask-and-`iretq` window).
    pub no_delivery: Range<u64>,
    /// Ring-1 stack for bounces from ring 3 (`stack_switch`).
    pub kernel_stack: Option<u64>,
    /// Where the switcher's `syscall` fast path bounces this domain's system calls: its
    /// callback, its `stack_switch` stack and the guest address of its virtual IF; `None` (the
    /// slow path, which kills with a reason) until it has registered both
    /// ([`PvState::update_fast_syscall`]).
    pub fast_syscall: Option<(u64, u64, u64)>,
    /// One-shot timer deadline in ns (`set_timer_op`); 0 = none.
    pub timer_deadline: u64,
    /// Event ports.
    pub ports: [Port; NR_EVENT_PORTS as usize],
    /// The port bound to each VIRQ.
    pub virq_ports: [Option<u8>; NR_VIRQS as usize],
    /// Type and reference counts of every frame (direct paging), in frames xen-lite allocated.
    page_info: &'static mut [PageInfo],
}

/// The domain's frames as page tables, through xen-lite's direct map.
pub struct DomainTables {
    /// xen-lite's address of the domain's first frame.
    base: u64,
    /// Frames in the domain.
    nr_pages: u64,
}

impl DomainTables {
    fn slot_address(&self, index: u64, slot: usize) -> *mut u64 {
        assert!(
            index < self.nr_pages && slot < ENTRIES,
            "frame {index} slot {slot} is outside the domain"
        );
        (self.base + index * PAGE_SIZE + slot as u64 * 8) as *mut u64
    }
}

impl TableMemory for DomainTables {
    fn entry(&self, index: u64, slot: usize) -> u64 {
        // SAFETY: `slot_address` checked the frame is the domain's; it is mapped in xen-lite's
        // direct map and the guest is stopped while xen-lite runs.
        unsafe { self.slot_address(index, slot).read_volatile() }
    }

    fn set_entry(&mut self, index: u64, slot: usize, value: u64) {
        // SAFETY: as in `entry`; the value was validated by `FrameTable` before this write.
        unsafe { self.slot_address(index, slot).write_volatile(value) }
    }
}

impl PvState {
    /// The state of a domain that has registered nothing yet, running on the L4 at `cr3`;
    /// `page_info` has one zeroed record per frame of the domain.
    pub fn new(cr3: u64, page_info: &'static mut [PageInfo]) -> PvState {
        PvState {
            cr3,
            shadow: None,
            traps: [TrapHandler::default(); 256],
            event_callback: 0,
            failsafe_callback: 0,
            syscall_callback: 0,
            fast_trap: None,
            no_delivery: 0..0,
            kernel_stack: None,
            fast_syscall: None,
            timer_deadline: 0,
            ports: [Port::Free; NR_EVENT_PORTS as usize],
            virq_ports: [None; NR_VIRQS as usize],
            page_info,
        }
    }

    /// Whether frame `gfn` is in use as a page table.
    #[inline]
    pub fn is_page_table(&self, gfn: u64) -> bool {
        let info = self.page_info[gfn as usize];
        info.type_count > 0 && info.page_type.level().is_some()
    }

    /// The frame table's records, for the auditor.
    #[inline]
    pub fn page_info(&self) -> &[PageInfo] {
        self.page_info
    }

    /// Stops xen-lite if the shared-info frame `gfn` lost the `Writable` type reference it
    /// holds for the domain's whole life (`Domain::shared`).
    #[inline]
    pub fn assert_shared_info_typed(&self, id: u32, base: u64, gfn: u64) {
        let info = self.page_info[gfn as usize];
        assert!(
            info.page_type == PageType::Writable && info.type_count > 0,
            "dom{id}'s shared-info frame {:#x} lost its type reference: {info:?}",
            base + gfn
        );
    }

    /// Recomputes [`PvState::fast_syscall`] after `set_callbacks` or `stack_switch`;
    /// `shared_info_gfn` locates the virtual IF.
    pub fn update_fast_syscall(&mut self, shared_info_gfn: u64) {
        use hypercall_abi::shared_info::VcpuInfo;
        let mask = hypercall_abi::layout::gfn_to_va(shared_info_gfn)
            + (core::mem::offset_of!(SharedInfo, vcpu)
                + core::mem::offset_of!(VcpuInfo, upcall_mask)) as u64;
        self.fast_syscall = match (self.syscall_callback, self.kernel_stack) {
            (0, _) | (_, None) => None,
            (callback, Some(stack)) => Some((callback, stack, mask)),
        };
    }
}

impl Domain {
    /// The ring-1 state of this domain, which must be a `pv` one.
    #[inline]
    pub fn pv(&mut self) -> &mut PvState {
        self.pv.as_mut().expect("only pv domains reach ring-1 code")
    }

    /// The direct-paging state of this `pv` domain's frames.
    #[inline]
    pub fn frame_table(&mut self) -> FrameTable<'_, DomainTables> {
        let memory = DomainTables { base: self.host_address(0), nr_pages: self.nr_pages };
        let base = self.memory.0;
        FrameTable {
            pages: self.pv().page_info,
            base,
            memory,
            reserved_l4: HYPERVISOR_L4_SLOTS,
            switcher: super::switcher_slot(),
        }
    }

    /// The domain's frames as tables, for the auditor's walk.
    #[inline]
    pub fn tables(&self) -> DomainTables {
        DomainTables { base: self.host_address(0), nr_pages: self.nr_pages }
    }
}
