//! A domain: everything xen-lite remembers about one guest (of any mode; the `pv` fields stay
//! unused for an hvm domain, whose CPU state the hardware keeps).

use core::ops::Range;

use hypercall_abi::hypercall::{Errno, Stats, NR_EVENT_PORTS, NR_VIRQS};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::shared_info::SharedInfo;
use hypercall_abi::Mode;

use super::guest_memory::guest_offset;
use super::page_types::{FrameTable, PageInfo, PageType, TableMemory, ENTRIES};
use crate::entry::TrapFrame;
use crate::frame::Frame;
use crate::memory_map::{phys_to_virt, HYPERVISOR_L4_SLOTS};

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// May be scheduled.
    Runnable,
    /// In `sched_op(block)`: waits for an event.
    Blocked,
    /// Shut down with this status (a kill uses `STATUS_DOMAIN_KILLED`).
    Dead(u8),
}

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

/// Longest console line kept before it is printed anyway.
const LINE_MAX: usize = 160;

/// A `pv` domain.
pub struct Domain {
    /// Its id.
    pub id: u32,
    /// How it runs: `pv`, or an hvm mode whose hardware state the `hvm` run loop keeps.
    pub mode: Mode,
    /// Its state.
    pub state: State,
    /// Registers, saved while it is not running.
    pub regs: TrapFrame,
    /// First machine frame of its (contiguous) memory.
    pub memory: Frame,
    /// Frames of memory.
    pub nr_pages: u64,
    /// CR3 value: machine address of its level-4 table.
    pub cr3: u64,
    /// gfn of its `SharedInfo`.
    pub shared_info_gfn: u64,
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
    /// ([`Domain::update_fast_syscall`]).
    pub fast_syscall: Option<(u64, u64, u64)>,
    /// One-shot timer deadline in ns (`set_timer_op`); 0 = none.
    pub timer_deadline: u64,
    /// Event ports.
    pub ports: [Port; NR_EVENT_PORTS as usize],
    /// The port bound to each VIRQ.
    pub virq_ports: [Option<u8>; NR_VIRQS as usize],
    /// Console bytes not yet printed (no newline yet).
    line: [u8; LINE_MAX],
    line_len: usize,
    /// Counters for `stats` and the summary.
    pub stats: Stats,
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

impl Domain {
    /// A new domain owning `nr_pages` frames from `memory`; `page_info` has one zeroed record
    /// per frame.
    pub fn new(
        id: u32,
        memory: Frame,
        nr_pages: u64,
        cr3: u64,
        shared_info_gfn: u64,
        regs: TrapFrame,
        page_info: &'static mut [PageInfo],
    ) -> Domain {
        let mut domain = Domain {
            id,
            mode: Mode::Pv,
            state: State::Runnable,
            regs,
            memory,
            nr_pages,
            cr3,
            shared_info_gfn,
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
            line: [0; LINE_MAX],
            line_len: 0,
            stats: Stats::new(),
            page_info,
        };
        // DESIGN §4, invariant 5: xen-lite writes the shared page for the domain's whole life,
        // through its own map, which ignores the guest's page-table rights. It holds a
        // `Writable` type reference on the frame from the start, and never drops it, so the
        // frame can never be validated as a page table (an attempt is `TypeConflict`).
        let held = domain.frame_table().get_type(shared_info_gfn, PageType::Writable);
        assert!(held.is_ok(), "a new domain's frames are all untyped");
        domain
    }

    /// The direct-paging state of this domain's frames.
    pub fn frame_table(&mut self) -> FrameTable<'_, DomainTables> {
        let memory = DomainTables { base: self.host_address(0), nr_pages: self.nr_pages };
        FrameTable {
            pages: self.page_info,
            base: self.memory.0,
            memory,
            reserved_l4: HYPERVISOR_L4_SLOTS,
            // Unset only while hvm domains are built: they never type an L4.
            switcher: super::SWITCHER_SLOT.get().copied().unwrap_or((usize::MAX, 0)),
        }
    }

    /// Recomputes [`Domain::fast_syscall`] after `set_callbacks` or `stack_switch`.
    pub fn update_fast_syscall(&mut self) {
        use hypercall_abi::shared_info::VcpuInfo;
        let mask = hypercall_abi::layout::gfn_to_va(self.shared_info_gfn)
            + (core::mem::offset_of!(SharedInfo, vcpu)
                + core::mem::offset_of!(VcpuInfo, upcall_mask)) as u64;
        self.fast_syscall = match (self.syscall_callback, self.kernel_stack) {
            (0, _) | (_, None) => None,
            (callback, Some(stack)) => Some((callback, stack, mask)),
        };
    }

    /// Checks this domain's tables and shared-info frame (`audit=on`; `pv::audit`). An hvm
    /// domain types no tables (its own are its business; EPT confines it), so for it only the
    /// shared page is checked.
    pub fn audit(
        &self,
        reserved: &super::audit::Reserved,
        tables: bool,
    ) -> Result<(), super::audit::Violation> {
        use super::audit::{check_shared_info, check_tables};
        let (pages, base, shared) = (&*self.page_info, self.memory.0, self.shared_info_gfn);
        if self.mode != Mode::Pv || !tables {
            return check_shared_info(pages, base, shared);
        }
        let memory = DomainTables { base: self.host_address(0), nr_pages: self.nr_pages };
        check_tables(pages, base, &memory, reserved, shared)
    }

    /// Ends the domain for breaking the ABI, with one line naming the rule and the values.
    pub fn kill(&mut self, why: core::fmt::Arguments<'_>) {
        self.console_flush();
        self.state = State::Dead(hypercall_abi::devices::STATUS_DOMAIN_KILLED);
        log::error!("dom{} killed: {why}", self.id);
    }

    /// Whether it has ended.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead(_))
    }

    /// xen-lite's pointer to byte `offset` of the domain's memory.
    fn host_address(&self, offset: u64) -> u64 {
        phys_to_virt(self.memory.addr() + offset)
    }

    /// Copies `out.len()` bytes from guest address `va`.
    pub fn copy_from_guest(&self, va: u64, out: &mut [u8]) -> Result<(), Errno> {
        let offset = guest_offset(va, out.len() as u64, self.nr_pages)?;
        // SAFETY: `guest_offset` proved the range lies in this domain's frames, which xen-lite
        // maps in its direct map; the guest is not running, so nothing writes them meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.host_address(offset) as *const u8,
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` to guest address `va`. xen-lite writes through its own map of the
    /// domain's frames, which ignores the guest's page-table permissions, so it refuses any
    /// frame that is a page table: otherwise a guest could aim a bounce frame or a hypercall's
    /// output at its own (validated, read-only) page tables and write entries nobody checked.
    pub fn copy_to_guest(&self, va: u64, data: &[u8]) -> Result<(), Errno> {
        let offset = guest_offset(va, data.len() as u64, self.nr_pages)?;
        if !data.is_empty() {
            let (first, last) = (offset / PAGE_SIZE, (offset + data.len() as u64 - 1) / PAGE_SIZE);
            if (first..=last).any(|gfn| self.is_page_table(gfn)) {
                return Err(Errno::EFAULT);
            }
        }
        // SAFETY: as in `copy_from_guest`; the bytes written belong to this domain alone.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.host_address(offset) as *mut u8,
                data.len(),
            )
        };
        Ok(())
    }

    /// Whether frame `gfn` is in use as a page table.
    fn is_page_table(&self, gfn: u64) -> bool {
        let info = self.page_info[gfn as usize];
        info.type_count > 0 && info.page_type.level().is_some()
    }

    /// The domain's `SharedInfo`, through xen-lite's map: the one path by which xen-lite writes
    /// a frame of the domain outside [`Domain::copy_to_guest`]. It checks, every time, that the
    /// frame still holds the `Writable` type reference taken in [`Domain::new`]; a frame that
    /// had become a page table would turn every store below into an unvalidated entry (the
    /// escape an outside review found), so a failed check is a bug in xen-lite and stops it.
    pub fn shared(&mut self) -> &mut SharedInfo {
        let info = self.page_info[self.shared_info_gfn as usize];
        assert!(
            info.page_type == PageType::Writable && info.type_count > 0,
            "dom{}'s shared-info frame {:#x} lost its type reference: {info:?}",
            self.id,
            self.memory.0 + self.shared_info_gfn
        );
        let address = self.host_address(self.shared_info_gfn * PAGE_SIZE);
        // SAFETY: the page belongs to this domain and is only accessed through this `&mut self`
        // while xen-lite runs (the guest is stopped); the struct fits in the page; the check
        // above keeps it from being a page table.
        unsafe { &mut *(address as *mut SharedInfo) }
    }

    /// Appends console output, printing each complete line with the `[domN]` prefix.
    pub fn console_write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' || self.line_len == LINE_MAX {
                crate::console::guest_line(self.id, &self.line[..self.line_len]);
                self.line_len = 0;
                if byte == b'\n' {
                    continue;
                }
            }
            self.line[self.line_len] = byte;
            self.line_len += 1;
        }
    }

    /// Prints what is left of an unfinished line (at shutdown).
    pub fn console_flush(&mut self) {
        if self.line_len > 0 {
            crate::console::guest_line(self.id, &self.line[..self.line_len]);
            self.line_len = 0;
        }
    }
}
