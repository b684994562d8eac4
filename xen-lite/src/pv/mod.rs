//! `pv` mode: guest kernels in ring 1 under xen-lite (DESIGN §3-§5).
//!
//! Every way into xen-lite while a domain runs ends in [`handle`]: a hypercall (`int 0x82`), an
//! exception the guest raised, or the timer. Each entry does its work, then [`Pv::resume`]
//! decides what the trap frame returns to: the same domain, another one (round robin,
//! preemptive), the idle loop, or the end of the run. Before the frame goes back to a domain,
//! pending events are delivered (`events`). The frame is the whole context: switching domains
//! is saving one frame, loading another and writing CR3.
//!
//! What ring 1 buys and what it does not: the guest cannot execute privileged instructions
//! (they #GP, and xen-lite kills the domain naming the instruction, `crate::decode`), cannot
//! raise hypercalls from its user code (the gate's DPL is 1), and cannot reach I/O ports. But
//! paging does not tell ring 1 from ring 0, so memory is protected by page tables alone: xen-lite
//! maps only its switcher into guests (`crate::switcher`), and every page-table change goes
//! through validated direct paging (`page_types`, `mmu`).
//!
pub mod audit;
mod bounce;
mod domain;
mod emulate;
mod events;
mod guest_memory;
pub mod hypercalls;
pub mod mmu;
pub mod page_types;
pub mod schedule;

use core::fmt;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::devices::{STATUS_BAD_BUNDLE, STATUS_BAD_GUEST, STATUS_DOMAIN_KILLED};
use hypercall_abi::frame::has_error_code;
use hypercall_abi::hypercall::{
    Hypercall, HYPERCALL_STUB_SIZE, HYPERCALL_VECTOR, SYSCALL_BOUNCE_VECTOR,
};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::Mode;
use spin::{Mutex, Once};

pub use self::bounce::RFLAGS_CLEARED_ON_DELIVERY;
use self::bounce::{bounce_frame, enter_handler, BounceError};
pub use self::domain::{Domain, State};
use self::page_types::{PageInfo, PageType};
use self::schedule::{pick_next, Next, SLICE_TICKS};
use crate::config::{Config, MAX_DOMAINS};
use crate::decode::privileged_instruction;
use crate::domain_builder::{self, DomainSpec};
use crate::entry::{enter_frame, TrapFrame};
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::gdt::{
    hypervisor_stack_top, GUEST_KERNEL_CS, GUEST_KERNEL_DS, HYPERVISOR_CS, HYPERVISOR_DS,
};
use crate::instructions::{read_cr2, wait_for_interrupt};
use crate::memory_map::phys_to_virt;
use crate::stack::Stack;
use crate::switcher;
use crate::timer::{self, TIMER_VECTOR};
use crate::trap::Vector;

/// The domains and who runs: all `pv` state, and the bookkeeping `hvm` mode shares.
pub struct Pv {
    /// Every domain, by id.
    pub domains: [Option<Domain>; MAX_DOMAINS],
    /// The running domain; `None` while idle.
    pub current: Option<usize>,
    /// Ticks left in the current domain's slice.
    pub slice_left: u64,
    /// The current domain asked to yield.
    pub yield_now: bool,
}

static PV: Mutex<Pv> = Mutex::new(Pv {
    domains: [const { None }; MAX_DOMAINS],
    current: None,
    slice_left: 0,
    yield_now: false,
});

/// Set once the domains are built: from then on traps from outer rings belong to them. An
/// atomic rather than a look into `PV`, so a fault while `PV` is locked still gets reported.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// `audit=on`: check the protection invariants after every entry ([`audit`]).
static AUDIT: AtomicBool = AtomicBool::new(false);

/// The domain running now (`u64::MAX` while idle); for debuggers (`xl-domain` in gdb).
#[used] // read only by debuggers: keep it, and every store to it
pub static CURRENT_DOMAIN: AtomicU64 = AtomicU64::new(u64::MAX);

/// The domains, for `hvm` mode's run loop (which holds them for the whole run).
pub fn lock() -> spin::MutexGuard<'static, Pv> {
    PV.lock()
}

/// Whether `pv` mode is running.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

impl Pv {
    /// Domain `index`, which must exist.
    pub fn domain(&mut self, index: usize) -> &mut Domain {
        self.domains[index].as_mut().expect("the caller names an existing domain")
    }

    /// Domain `index`, if it exists.
    pub fn find(&mut self, index: usize) -> Option<&mut Domain> {
        self.domains.get_mut(index).and_then(Option::as_mut)
    }

    /// Ends domain `index` for breaking the ABI, with one line naming the rule and the values.
    pub fn kill(&mut self, index: usize, why: fmt::Arguments<'_>) {
        self.domain(index).kill(why);
    }

    /// Decides what `frame` returns to, and delivers pending events to it.
    fn resume(&mut self, frame: &mut TrapFrame) {
        loop {
            let must_switch = match self.current {
                None => true,
                Some(c) => {
                    self.domain(c).state != State::Runnable
                        || self.yield_now
                        || self.slice_left == 0
                }
            };
            if must_switch {
                self.switch(frame);
            }
            let Some(c) = self.current else { return };
            let domain = self.domain(c);
            domain.shared().system_time_ns = timer::now_ns();
            if !events::upcall_due(domain, frame.rip, frame.cs) {
                return;
            }
            let handler = domain.event_callback;
            match self.bounce(c, frame, handler, None) {
                Ok(()) => {
                    let domain = self.domain(c);
                    domain.shared().vcpu.upcall_mask = 1;
                    domain.stats.events_delivered += 1;
                    return;
                }
                Err(()) => continue, // killed; choose again
            }
        }
    }

    /// Saves the current domain's frame and loads the next one's (or the idle loop's).
    fn switch(&mut self, frame: &mut TrapFrame) {
        let states: [State; MAX_DOMAINS] =
            core::array::from_fn(|i| self.domains[i].as_ref().map_or(State::Dead(0), |d| d.state));
        let next = pick_next(&states, self.current);
        if let Some(c) = self.current {
            let stays = next == Next::Domain(c);
            self.slice_left = SLICE_TICKS;
            self.yield_now = false;
            if stays {
                return;
            }
            if !self.domain(c).is_dead() {
                self.domain(c).regs = *frame;
            }
        }
        if next != self.current.map_or(Next::Idle, Next::Domain) {
            switcher::scrub_before_switch();
        }
        match next {
            Next::Domain(n) => {
                let domain = self.domain(n);
                *frame = domain.regs;
                domain.stats.schedules += 1;
                self.current = Some(n);
                self.slice_left = SLICE_TICKS;
                self.yield_now = false;
            }
            Next::Idle if self.nothing_can_wake() => {
                for index in 0..MAX_DOMAINS {
                    if self.find(index).is_some_and(|d| d.state == State::Blocked) {
                        self.kill(index, format_args!(
                            "blocked forever: no timer armed and no runnable domain left to send it an event"
                        ));
                    }
                }
                self.finish()
            }
            Next::Idle => {
                *frame = idle_frame();
                self.current = None;
            }
            Next::AllDead => self.finish(),
        }
    }

    /// Whether no blocked domain can ever wake: none has a timer armed, and nobody runs.
    fn nothing_can_wake(&self) -> bool {
        self.domains
            .iter()
            .flatten()
            .all(|d| d.is_dead() || (d.state == State::Blocked && d.timer_deadline == 0))
    }

    /// Bounces `frame` (domain `index`) to the guest `handler`; kills the domain if the frame
    /// cannot be written.
    fn bounce(
        &mut self,
        index: usize,
        frame: &mut TrapFrame,
        handler: u64,
        error_code: Option<u64>,
    ) -> Result<(), ()> {
        let domain = self.domain(index);
        let virtual_if = events::virtual_if(domain);
        // What is being bounced, for the kill lines: `#PF (vector 14)`, or `syscall`.
        let what = BouncedEvent(frame.vector);
        let bounce = match bounce_frame(frame, error_code, virtual_if, domain.kernel_stack) {
            Ok(bounce) => bounce,
            Err(BounceError::NoKernelStack) => {
                self.kill(
                    index,
                    format_args!(
                    "{what} at rip {:#x} from ring 3: no kernel stack registered with stack_switch",
                    frame.rip
                ),
                );
                return Err(());
            }
        };
        let mut bytes = [0u8; 48];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&bounce.words[..bounce.len]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        if domain.copy_to_guest(bounce.rsp, &bytes[..bounce.bytes() as usize]).is_err() {
            self.kill(
                index,
                format_args!(
                "{what} at rip {:#x}: the ring-1 stack at {:#x} cannot take a {}-byte bounce frame",
                frame.rip, bounce.rsp, bounce.bytes()
            ),
            );
            return Err(());
        }
        enter_handler(
            frame,
            handler,
            &bounce,
            u64::from(GUEST_KERNEL_CS.bits()),
            u64::from(GUEST_KERNEL_DS.bits()),
        );
        Ok(())
    }

    /// An exception raised by domain `index`: bounce it to the guest's handler, or kill.
    fn guest_exception(&mut self, index: usize, frame: &mut TrapFrame) {
        let vector = frame.vector as u8;
        let (mnemonic, _) = Vector::name(frame.vector);
        let domain = self.domain(index);
        domain.stats.entries_exception += 1;
        if vector == Vector::PAGE_FAULT {
            domain.shared().vcpu.cr2 = read_cr2();
        }
        if vector == Vector::GENERAL_PROTECTION && frame.cs & 3 == 1 {
            let mut bytes = [0u8; 15];
            let readable = (1..=bytes.len())
                .rev()
                .find(|&n| domain.copy_from_guest(frame.rip, &mut bytes[..n]).is_ok());
            if let Some(name) = readable.and_then(|n| privileged_instruction(&bytes[..n])) {
                self.kill(
                    index,
                    format_args!(
                        "privileged instruction `{name}` in ring 1 at rip {:#x} (#GP)",
                        frame.rip
                    ),
                );
                return;
            }
            let emulated = readable.and_then(|n| emulate::umip_read(domain, frame, &bytes[..n]));
            if let Some(name) = emulated {
                log::debug!("dom{index}: emulated `{name}` (UMIP)");
                return;
            }
        }
        let handler = domain.traps[usize::from(vector)].address;
        if handler == 0 {
            self.kill(index, format_args!(
                "{mnemonic} (vector {vector}) at rip {:#x} in ring {}, error code {:#x}: no handler registered with set_trap_table",
                frame.rip, frame.cs & 3, frame.error_code
            ));
            return;
        }
        let error_code = has_error_code(frame.vector).then_some(frame.error_code);
        if self.bounce(index, frame, handler, error_code).is_ok() {
            self.domain(index).stats.bounces[usize::from(vector)] += 1;
        }
    }

    /// A user program's `syscall`, which always enters ring 0: bounce it to the guest
    /// kernel's syscall callback, as if the user had raised an interrupt.
    fn guest_syscall(&mut self, index: usize, frame: &mut TrapFrame) {
        let domain = self.domain(index);
        domain.stats.entries_syscall += 1;
        let handler = domain.syscall_callback;
        if handler == 0 {
            self.kill(
                index,
                format_args!(
                    "syscall at rip {:#x}: no syscall callback registered with set_callbacks",
                    frame.rip
                ),
            );
            return;
        }
        let _ = self.bounce(index, frame, handler, None);
    }

    /// A timer tick: time advances, timers fire, the slice shrinks.
    fn tick(&mut self) {
        let now = timer::tick();
        for domain in self.domains.iter_mut().flatten().filter(|d| !d.is_dead()) {
            domain.shared().system_time_ns = now;
            events::check_timer(domain, now);
        }
        if let Some(c) = self.current {
            self.domain(c).stats.entries_interrupt += 1;
            self.slice_left = self.slice_left.saturating_sub(1);
        }
    }

    /// Every domain has ended: print the summary and leave with 0 only if all exited 0.
    pub fn finish(&mut self) -> ! {
        log::info!("all domains have ended; summary:");
        let mut status = 0;
        for domain in self.domains.iter().flatten() {
            let State::Dead(code) = domain.state else { continue };
            if status == 0 {
                status = code;
            }
            log::info!("{}", Summary(domain, code));
        }
        let steps = crate::trap::SYSCALL_SINGLE_STEPS.load(Ordering::Relaxed);
        let nmis = switcher::nmi_count();
        if steps + nmis > 0 {
            log::info!(
                "  xen-lite: {steps} #DB on an entry's first instruction, {nmis} NMIs: ignored"
            );
        }
        exit_emulator(status)
    }
}

/// Names a bounced event: an exception by mnemonic and vector, or a user's `syscall`.
struct BouncedEvent(u64);

impl fmt::Display for BouncedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SYSCALL_BOUNCE_VECTOR => f.write_str("syscall"),
            vector => write!(f, "{} (vector {vector})", Vector::name(vector).0),
        }
    }
}

/// One domain's summary line.
struct Summary<'a>(&'a Domain, u8);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (domain, code) = (self.0, self.1);
        let stats = &domain.stats;
        if code == STATUS_DOMAIN_KILLED {
            write!(f, "  dom{}: killed (status {code})", domain.id)?;
        } else {
            write!(f, "  dom{}: exit code {code}", domain.id)?;
        }
        f.write_str("; hypercalls:")?;
        let mut any = false;
        for hypercall in Hypercall::ALL {
            let count = stats.hypercalls[hypercall as usize];
            if count > 0 {
                write!(f, " {} {count}", hypercall.name())?;
                any = true;
            }
        }
        if !any {
            f.write_str(" none")?;
        }
        if domain.mode != Mode::Pv {
            f.write_str("; VM exits:")?;
            for (reason, &count) in stats.vm_exits.iter().enumerate().filter(|(_, c)| **c > 0) {
                write!(f, " {} {count}", hypercall_abi::vm_exit::name(reason as u16))?;
            }
            return write!(
                f,
                "; interrupts injected {}; scheduled {} times",
                stats.events_delivered, stats.schedules
            );
        }
        f.write_str("; bounces:")?;
        any = false;
        for (vector, &count) in stats.bounces.iter().enumerate().filter(|(_, c)| **c > 0) {
            write!(f, " {} {count}", Vector::name(vector as u64).0)?;
            any = true;
        }
        if !any {
            f.write_str(" none")?;
        }
        write!(
            f,
            "; events delivered {}; scheduled {} times",
            stats.events_delivered, stats.schedules
        )
    }
}

/// Handles an entry from a `pv` domain (or a timer tick while idle), then returns into
/// whatever `frame` now describes.
pub fn handle(frame: &mut TrapFrame) {
    let mut pv = PV.lock();
    // System calls the switcher bounced without entering xen-lite proper, since it last ran.
    let fast = switcher::take_fast_bounces();
    if let Some(c) = pv.current {
        pv.domain(c).stats.entries_syscall += fast;
    }
    if let (Some(c), true) = (pv.current, frame.cs & 3 != 0) {
        pv.domain(c).stats.cr3_writes += 1; // the entry code loaded xen-lite's CR3
    }
    match (frame.vector, pv.current) {
        (v, _) if v == u64::from(TIMER_VECTOR) => pv.tick(),
        (v, Some(c)) if v == u64::from(HYPERCALL_VECTOR) && frame.cs & 3 == 1 => {
            pv.domain(c).stats.entries_hypercall += 1;
            hypercalls::dispatch(&mut pv, c, frame);
        }
        (SYSCALL_BOUNCE_VECTOR, Some(c)) => pv.guest_syscall(c, frame),
        (v, Some(c)) if v < 32 && frame.cs & 3 != 0 => pv.guest_exception(c, frame),
        _ => crate::trap::fatal_exception(frame),
    }
    let before = pv.current;
    let tick = frame.vector == u64::from(TIMER_VECTOR);
    pv.resume(frame);
    if AUDIT.load(Ordering::Relaxed) {
        let switched = pv.current != before;
        audit(&mut pv, before, switched, !tick);
    }
    CURRENT_DOMAIN.store(pv.current.map_or(u64::MAX, |c| c as u64), Ordering::Relaxed);
    // What `trap_return` needs for the context it resumes: its CR3, and (for a domain) its
    // fast-trap gate and ring-1 stack.
    match pv.current {
        Some(c) => {
            let domain = pv.domain(c);
            domain.stats.cr3_writes += 1;
            switcher::set_return_cr3(domain.cr3);
            load_fast_trap(domain);
            switcher::set_fast_syscall(domain.fast_syscall);
        }
        None => {
            switcher::set_return_cr3(switcher::hypervisor_cr3());
            switcher::set_fast_syscall(None);
        }
    }
}

/// Turns the auditor on for the rest of the run (`audit=on`).
pub fn enable_audit() {
    AUDIT.store(true, Ordering::Relaxed);
    log::info!("audit: checking the protection invariants (DESIGN section 4) after every entry");
}

/// Whether the auditor is on.
pub fn auditing() -> bool {
    AUDIT.load(Ordering::Relaxed)
}

/// Runs the auditor over every live domain and the guest-visible stacks; a violation ends the
/// run as a fault in xen-lite, naming the invariant, the domain and the frame. `switched`: a
/// different domain (or the idle loop) runs next, so nothing of the last one may be left in
/// the switcher's shared pages. `tables`: walk page tables too (after a hypercall, an
/// exception or a VM exit; a bare timer tick changes no table, and walking them on every tick
/// would let the ticks of an emulator with a virtual clock outrun the guest): those of
/// `entered`, the domain whose entry this was (only it can have changed its tables), and on a
/// switch those of every domain.
pub fn audit(pv: &mut Pv, entered: Option<usize>, switched: bool, tables: bool) {
    let reserved = audit::Reserved {
        slots: crate::memory_map::HYPERVISOR_L4_SLOTS,
        switcher: SWITCHER_SLOT.get().copied().unwrap_or((usize::MAX, 0)),
    };
    for domain in pv.domains.iter_mut().flatten().filter(|d| !d.is_dead()) {
        let walk = tables && (switched || entered == Some(domain.id as usize));
        if let Err(violation) = domain.audit(&reserved, walk) {
            audit_failed(violation, Some(domain.id));
        }
    }
    // Only pv guests map the switcher's stacks (an hvm guest sees nothing of xen-lite).
    if active() {
        if let Err(violation) = switcher::audit_stacks(switched, tables) {
            audit_failed(violation, pv.current.map(|c| c as u32));
        }
    }
}

fn audit_failed(violation: audit::Violation, domain: Option<u32>) -> ! {
    let invariant = violation.invariant();
    match domain {
        Some(id) => crate::console::fatal_line(format_args!(
            "FATAL: audit: invariant {invariant} broken in dom{id}: {violation}"
        )),
        None => crate::console::fatal_line(format_args!(
            "FATAL: audit: invariant {invariant} broken: {violation}"
        )),
    }
    crate::exit::leave(hypercall_abi::devices::STATUS_HYPERVISOR_FAULT)
}

/// Points the `int 0x80` gate and TSS.RSP1 at `domain`'s handler and stack, if it registered
/// both; otherwise removes the gate.
fn load_fast_trap(domain: &Domain) {
    match (domain.fast_trap, domain.kernel_stack) {
        (Some(handler), Some(stack)) => {
            crate::gdt::set_ring1_stack(stack);
            crate::idt::set_fast_trap(Some(handler));
        }
        _ => crate::idt::set_fast_trap(None),
    }
}

/// The level-4 slot and entry that map the switcher into every guest (`switcher.rs`).
static SWITCHER_SLOT: Once<(usize, u64)> = Once::new();

/// The switcher's slot and entry; xen-lite writes it into every guest L4 it validates.
pub fn switcher_slot() -> (usize, u64) {
    *SWITCHER_SLOT.get().expect("pv::start builds it")
}

/// The idle loop: interrupts on, halt, repeat. Runs only when every live domain is blocked.
extern "C" fn idle_loop() -> ! {
    loop {
        wait_for_interrupt();
    }
}

const IDLE_STACK_SIZE: usize = 8192;
static IDLE_STACK: Stack<IDLE_STACK_SIZE> = Stack::new();

/// A fresh frame for the idle loop (it keeps no state, so it always starts over).
fn idle_frame() -> TrapFrame {
    TrapFrame {
        rip: idle_loop as *const () as u64,
        cs: u64::from(HYPERVISOR_CS.bits()),
        rflags: 0x2,
        rsp: IDLE_STACK.top(),
        ss: u64::from(HYPERVISOR_DS.bits()),
        ..TrapFrame::default()
    }
}

/// The stub for hypercall `number`: `mov eax, number; int 0x82; ret`, padded with `int3`.
pub fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
    hypercall_abi::hypercall::hypercall_stub(number, &[0xcd, HYPERCALL_VECTOR])
}

/// Builds every domain the command line names and starts the first.
pub fn start(
    config: &Config<'_>,
    image: Option<&[u8]>,
    modules: &[(&str, &[u8])],
    frames: &Mutex<crate::frame::FrameAllocator<{ crate::FRAME_BITMAP_WORDS }>>,
) -> ! {
    let Some(image) = image else {
        log::error!("pv: no image '{}' in the boot bundle", config.kernel);
        exit_emulator(STATUS_BAD_BUNDLE);
    };
    SWITCHER_SLOT.call_once(|| {
        switcher::build_guest_slot(|| {
            let frame = frames
                .lock()
                .alloc()
                .unwrap_or_else(|| panic!("no frame for the switcher's page tables"));
            // SAFETY: a frame just allocated for a page table; nothing else refers to it.
            unsafe {
                core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, PAGE_SIZE as usize)
            };
            frame
        })
    });
    let mut pv = PV.lock();
    for (id, cmdline) in config.domains().iter().enumerate() {
        let (base, page_info) = allocate_domain(config, id);
        pv.domains[id] = Some(build(id as u32, config, cmdline, image, modules, base, page_info));
    }
    timer::init();
    crate::syscall::init(crate::entry::syscall_entry_address());
    if config.audit {
        enable_audit();
    }
    ACTIVE.store(true, Ordering::Relaxed);
    let first = pv.domain(0);
    let (regs, cr3) = (first.regs, first.cr3);
    first.stats.schedules += 1;
    pv.current = Some(0);
    CURRENT_DOMAIN.store(0, Ordering::Relaxed);
    pv.slice_left = SLICE_TICKS;
    drop(pv);
    log::info!("pv: entering dom0 in ring 1");
    switcher::set_return_cr3(cr3);
    // SAFETY: `trap_return` switches to dom0's tables, which map the switcher (its code and the
    // entry stack the frame is on); `regs` is a ring-1 context the builder laid out; the entry
    // stack is unused.
    unsafe { enter_frame(&regs, hypervisor_stack_top(), cr3) }
}

/// Allocates domain `id`'s memory (contiguous, `config.domain_pages` frames) and its zeroed
/// frame table; ends the run if the machine has too little memory.
pub fn allocate_domain(config: &Config<'_>, id: usize) -> (Frame, &'static mut [PageInfo]) {
    let Some(base) = crate::FRAMES.lock().alloc_contiguous(config.domain_pages) else {
        log::error!("no {} contiguous free frames for dom{id}", config.domain_pages);
        exit_emulator(STATUS_BAD_GUEST);
    };
    let info_frames = (config.domain_pages * size_of::<PageInfo>() as u64).div_ceil(PAGE_SIZE);
    let Some(info) = crate::FRAMES.lock().alloc_contiguous(info_frames) else {
        log::error!("no {info_frames} contiguous free frames for dom{id}'s frame table");
        exit_emulator(STATUS_BAD_GUEST);
    };
    // SAFETY: the frames were just allocated for this table; zero bytes are a valid
    // `PageInfo` (type None, counts 0) and nothing else refers to them.
    let page_info = unsafe {
        let start = phys_to_virt(info.addr()) as *mut u8;
        core::ptr::write_bytes(start, 0, (info_frames * PAGE_SIZE) as usize);
        core::slice::from_raw_parts_mut(start as *mut PageInfo, config.domain_pages as usize)
    };
    (base, page_info)
}

/// Builds one domain in the frames at `base`.
fn build(
    id: u32,
    config: &Config<'_>,
    cmdline: &str,
    image: &[u8],
    modules: &[(&str, &[u8])],
    base: Frame,
    page_info: &'static mut [PageInfo],
) -> Domain {
    let pages = config.domain_pages;
    let switcher_slot = switcher_slot();
    // SAFETY: the frames were just allocated for this domain (`pv::allocate_domain`) and are
    // reached only through this slice until the domain runs.
    let memory = unsafe { domain_builder::domain_memory(base, pages) };
    let spec = DomainSpec {
        domain_id: id,
        mode: Mode::Pv,
        cmdline,
        image,
        pte_base: base.addr(),
        hypervisor_slots: Some((
            switcher_slot.0..switcher_slot.0 + 1,
            core::slice::from_ref(&switcher_slot.1),
        )),
        read_only_page_tables: true,
        modules,
    };
    let built = domain_builder::build(memory, &spec).unwrap_or_else(|error| {
        log::error!("pv: cannot build dom{id} from '{}': {error}", config.kernel);
        exit_emulator(STATUS_BAD_GUEST)
    });
    domain_builder::fill_hypercall_page(
        &mut memory[built.hypercall_page_gfn as usize],
        hypercall_stub,
    );
    let regs = TrapFrame {
        rip: built.entry,
        cs: u64::from(GUEST_KERNEL_CS.bits()),
        rflags: 0x202, // IF on: the real timer must be able to preempt the guest
        rsp: built.stack_top,
        ss: u64::from(GUEST_KERNEL_DS.bits()),
        rdi: built.start_info,
        ..TrapFrame::default()
    };
    let cr3 = base.addr() + built.l4_gfn * PAGE_SIZE;
    let mut domain = Domain::new(id, base, pages, cr3, built.shared_info_gfn, regs, page_info);
    // Direct paging from the first instruction: the start-of-day L4 is validated and pinned,
    // and holds one more type reference for being the base pointer.
    let mut table = domain.frame_table();
    let typed = table
        .pin(built.l4_gfn, PageType::L4)
        .and_then(|()| table.get_type(built.l4_gfn, PageType::L4));
    if let Err(error) = typed {
        log::error!(
            "pv: dom{id}'s start-of-day page tables break the direct-paging rules: {error:?}"
        );
        exit_emulator(STATUS_BAD_GUEST);
    }
    domain.shared().vcpu.upcall_mask = 1; // events start masked, as after a CPU reset
    log::info!(
        "pv: dom{id}: {pages} frames at machine {:#x}, entry {:#x}, command line \"{cmdline}\"",
        base.addr(),
        built.entry
    );
    domain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_stubs_load_the_number_and_trap() {
        let stub = hypercall_stub(18);
        assert_eq!(stub[..8], [0xb8, 18, 0, 0, 0, 0xcd, 0x82, 0xc3]);
        assert!(stub[8..].iter().all(|&b| b == 0xcc));
    }
}
