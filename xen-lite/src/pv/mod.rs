//! `pv` mode, ring compression: guest kernels in ring 1 under xen-lite (DESIGN §3-§5). The
//! domains themselves, the scheduler and the hypercall dispatcher are every mode's
//! (`crate::domain`); this module holds only what ring 1 needs.
//!
//! Every way into xen-lite while a domain runs ends in [`handle`]: a hypercall (`int 0x82`), an
//! exception the guest raised, or the timer. Each entry does its work, then `resume` decides
//! what the trap frame returns to: the same domain, another one (the scheduler's decision), the
//! idle loop, or the end of the run. Before the frame goes back to a domain, pending events are
//! delivered (`events`). The frame is the whole context: switching domains is saving one frame,
//! loading another and writing CR3.
//!
//! The files: `build` (domains laid out, validated and entered), `state` (what a ring-1 kernel
//! registers instead of loading it into the CPU), `bounce` (exceptions and events delivered to
//! the guest's handlers), `events` (event channels and upcalls), `hypercalls` (the ring-1
//! hypercalls), `mmu` and `page_types` (validated direct paging), `shadow` (`paging=shadow`:
//! the guest's own tables, shadowed), `emulate` (the UMIP reads), `audit` (the invariant
//! checks).
//!
//! What ring 1 buys and what it does not: the guest cannot execute privileged instructions
//! (they #GP, and xen-lite kills the domain naming the instruction, `crate::decode`), cannot
//! raise hypercalls from its user code (the gate's DPL is 1), and cannot reach I/O ports. But
//! paging does not tell ring 1 from ring 0, so memory is protected by page tables alone: xen-lite
//! maps only its switcher into guests (`crate::switcher`), and every page-table change goes
//! through validated direct paging (`page_types`, `mmu`), or, under `paging=shadow`, no guest
//! table reaches the MMU at all: it runs on xen-lite's shadows of them (`shadow`).
//!
pub mod audit;
mod bounce;
mod build;
mod emulate;
mod events;
pub mod hypercalls;
pub mod mmu;
pub mod page_types;
mod shadow;
mod state;

use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::frame::has_error_code;
use hypercall_abi::hypercall::{HYPERCALL_VECTOR, SYSCALL_BOUNCE_VECTOR};

pub use self::bounce::RFLAGS_CLEARED_ON_DELIVERY;
pub use self::build::{map_switcher, start, switcher_slot};
pub use self::shadow::host_slots as shadow_host_slots;
pub use self::state::PvState;
use crate::decode::privileged_instruction;
use crate::domain::schedule::Decision;
use crate::domain::{self, kill, Domain, Domains};
use crate::entry::TrapFrame;
use crate::gdt::{HYPERVISOR_CS, HYPERVISOR_DS};
use crate::instructions::{read_cr2, wait_for_interrupt};
use crate::stack::Stack;
use crate::switcher;
use crate::timer::{self, TIMER_VECTOR};
use crate::trap::Vector;

/// Set once the domains are built: from then on traps from outer rings belong to them. An
/// atomic rather than a look into the domain table, so a fault while it is locked still gets
/// reported.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether `pv` mode is running.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Handles an entry from a `pv` domain (or a timer tick while idle), then returns into
/// whatever `frame` now describes.
pub fn handle(frame: &mut TrapFrame) {
    let mut domains = domain::lock();
    // System calls the switcher bounced without entering xen-lite proper, since it last ran.
    let fast = switcher::take_fast_bounces();
    if let Some(c) = domains.current {
        domains.domain(c).stats.entries_syscall += fast;
    }
    if let (Some(c), true) = (domains.current, frame.cs & 3 != 0) {
        domains.domain(c).stats.cr3_writes += 1; // the entry code loaded xen-lite's CR3
    }
    match (frame.vector, domains.current) {
        (v, _) if v == u64::from(TIMER_VECTOR) => tick(&mut domains),
        (v, Some(c)) if v == u64::from(HYPERCALL_VECTOR) && frame.cs & 3 == 1 => {
            domains.domain(c).stats.entries_hypercall += 1;
            domain::hypercalls::dispatch(&mut domains, c, frame);
        }
        (SYSCALL_BOUNCE_VECTOR, Some(c)) => guest_syscall(domains.domain(c), frame),
        (v, Some(c)) if v < 32 && frame.cs & 3 != 0 => guest_exception(domains.domain(c), frame),
        _ => crate::trap::fatal_exception(frame),
    }
    let before = domains.current;
    let tick = frame.vector == u64::from(TIMER_VECTOR);
    resume(&mut domains, frame);
    if domain::audit::enabled() {
        let switched = domains.current != before;
        domain::audit::run(&mut domains, before, switched, !tick);
    }
    domain::set_current_for_debuggers(domains.current);
    // What `trap_return` needs for the context it resumes: its CR3, and (for a domain) its
    // fast-trap gate and ring-1 stack.
    match domains.current {
        Some(c) => {
            let domain = domains.domain(c);
            domain.stats.cr3_writes += 1;
            let pv = domain.pv();
            switcher::set_return_cr3(pv.cr3);
            load_fast_trap(pv);
            switcher::set_fast_syscall(pv.fast_syscall);
        }
        None => {
            switcher::set_return_cr3(switcher::hypervisor_cr3());
            switcher::set_fast_syscall(None);
        }
    }
}

/// Decides what `frame` returns to (the same domain, another one, the idle loop, or the end
/// of the run), and delivers pending events to it.
fn resume(domains: &mut Domains, frame: &mut TrapFrame) {
    loop {
        switch(domains, frame);
        let Some(c) = domains.current else { return };
        let domain = domains.domain(c);
        let shared = domain.shared();
        shared.system_time_ns = timer::now_ns();
        let vcpu = shared.vcpu;
        if !events::upcall_due(domain.pv(), vcpu, frame.rip, frame.cs) {
            return;
        }
        let handler = domain.pv().event_callback;
        match bounce::deliver(domain, frame, handler, None) {
            Ok(()) => {
                domain.shared().vcpu.upcall_mask = 1;
                domain.stats.events_delivered += 1;
                return;
            }
            Err(()) => continue, // killed; choose again
        }
    }
}

/// Asks the scheduler who runs next and makes `frame` theirs: the frame is the whole context,
/// so a switch saves one frame and loads another (or the idle loop's).
#[inline(always)] // most entries return to the domain that made them: keep that path short
fn switch(domains: &mut Domains, frame: &mut TrapFrame) {
    let was = domains.current;
    let decision = domains.schedule(
        // A blocked domain wakes by its own timer, or by an event from one that has a timer.
        |domains, _| {
            domains
                .domains
                .iter()
                .flatten()
                .any(|d| !d.is_dead() && d.pv.as_ref().is_some_and(|pv| pv.timer_deadline != 0))
        },
        "blocked forever: no timer armed and no runnable domain left to send it an event",
    );
    if let Decision::Stay(_) = decision {
        return;
    }
    if let Some(c) = was {
        if !domains.domain(c).is_dead() {
            domains.domain(c).regs = *frame;
        }
        switcher::scrub_before_switch();
    }
    match decision {
        Decision::Switch { to, .. } => {
            if was.is_none() {
                switcher::scrub_before_switch();
            }
            *frame = domains.domain(to).regs;
        }
        Decision::Idle => {
            *frame = idle_frame();
            domains.current = None;
        }
        Decision::Stay(_) => {}
    }
}

/// An exception raised by `domain`: bounce it to the guest's handler, or kill.
fn guest_exception(domain: &mut Domain, frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let (mnemonic, _) = Vector::name(frame.vector);
    domain.stats.entries_exception += 1;
    if vector == Vector::PAGE_FAULT {
        let address = read_cr2();
        if domain.pv().shadow.is_some() && !shadow::page_fault(domain, frame, address) {
            return; // hidden (retry the instruction), or the domain was killed
        }
        domain.shared().vcpu.cr2 = address;
    }
    if vector == Vector::GENERAL_PROTECTION && frame.cs & 3 == 1 {
        let mut bytes = [0u8; 15];
        let readable = (1..=bytes.len())
            .rev()
            .find(|&n| domain.copy_from_guest(frame.rip, &mut bytes[..n]).is_ok());
        if let Some(name) = readable.and_then(|n| privileged_instruction(&bytes[..n])) {
            kill!(
                domain,
                "privileged instruction `{name}` in ring 1 at rip {:#x} (#GP)",
                frame.rip
            );
            return;
        }
        let emulated = readable.and_then(|n| emulate::umip_read(domain, frame, &bytes[..n]));
        if let Some(name) = emulated {
            log::debug!("dom{}: emulated `{name}` (UMIP)", domain.id);
            return;
        }
    }
    let handler = domain.pv().traps[usize::from(vector)].address;
    if handler == 0 {
        kill!(
            domain,
            "{mnemonic} (vector {vector}) at rip {:#x} in ring {}, error code {:#x}: no handler registered with set_trap_table",
            frame.rip,
            frame.cs & 3,
            frame.error_code
        );
        return;
    }
    let error_code = has_error_code(frame.vector).then_some(frame.error_code);
    if bounce::deliver(domain, frame, handler, error_code).is_ok() {
        domain.stats.bounces[usize::from(vector)] += 1;
    }
}

/// A user program's `syscall`, which always enters ring 0: bounce it to the guest kernel's
/// syscall callback, as if the user had raised an interrupt.
fn guest_syscall(domain: &mut Domain, frame: &mut TrapFrame) {
    // LAB 2.3 BEGIN: the slow path: count the entry, then bounce the call to the guest kernel's syscall callback as `bounce::deliver` does for an interrupt, or kill the domain if it never registered one
    // Hint: the callback is in the domain's ring-1 state (`domain.pv()`), registered with `set_callbacks`; 0 means none.
    // Hint: a kill is one line naming the rule and the values: `kill!(domain, "...", ...)`.
    domain.stats.entries_syscall += 1;
    let handler = domain.pv().syscall_callback;
    if handler == 0 {
        kill!(
            domain,
            "syscall at rip {:#x}: no syscall callback registered with set_callbacks",
            frame.rip
        );
        return;
    }
    let _ = bounce::deliver(domain, frame, handler, None);
    // LAB 2.3 END
}

/// A timer tick: time advances, timers fire, the slice shrinks.
fn tick(domains: &mut Domains) {
    let now = timer::tick();
    for domain in domains.domains.iter_mut().flatten().filter(|d| !d.is_dead()) {
        domain.shared().system_time_ns = now;
        events::check_timer(domain, now);
    }
    if let Some(c) = domains.current {
        domains.domain(c).stats.entries_interrupt += 1;
        domains.slice_left = domains.slice_left.saturating_sub(1);
    }
}

/// Points the `int 0x80` gate and TSS.RSP1 at the domain's handler and stack, if it
/// registered both; otherwise removes the gate.
fn load_fast_trap(pv: &PvState) {
    match (pv.fast_trap, pv.kernel_stack) {
        (Some(handler), Some(stack)) => {
            crate::gdt::set_ring1_stack(stack);
            crate::idt::set_fast_trap(Some(handler));
        }
        _ => crate::idt::set_fast_trap(None),
    }
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

/// Marks `pv` mode as running (`build::start`, once the domains exist).
fn set_active() {
    ACTIVE.store(true, Ordering::Relaxed);
}
