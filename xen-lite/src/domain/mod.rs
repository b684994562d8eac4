//! Domains: what xen-lite keeps about every guest, whatever mode runs it.
//!
//! A [`Domain`] is the part every mode shares: its id and mode, its life ([`State`]), its
//! registers while it does not run, its memory (contiguous machine frames, guest-physical 0 at
//! [`Domain::memory`]), its shared-info page, its console line and its counters. The ring-1
//! state of a `pv` guest (virtual IDT, callbacks, event ports, validated page tables) hangs off
//! it as [`Domain::pv`], as Xen hangs `arch.pv` off a vCPU; an hvm domain has none, because the
//! hardware keeps its CPU state (`crate::hvm`).
//!
//! The table of every domain is [`Domains`]. The modes share, from here:
//!
//! - the scheduler's one decision of who runs next ([`schedule`]);
//! - the hypercall dispatcher and the handlers that mean the same in every mode ([`hypercalls`]);
//! - the one checked way to reach a guest's memory, by typed copy-in and copy-out ([`memory`]);
//! - the invariant auditor's driver (`audit=on`, [`audit`]);
//! - the end of the run: every domain's summary line, and the exit status.

pub mod audit;
pub mod hypercalls;
mod memory;
pub mod schedule;

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::devices::{STATUS_BAD_GUEST, STATUS_DOMAIN_KILLED};
use hypercall_abi::hypercall::{Hypercall, Stats};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::shared_info::SharedInfo;
use hypercall_abi::Mode;
use spin::Mutex;

pub use self::memory::guest_offset;
use crate::config::{Config, MAX_DOMAINS};
use crate::entry::TrapFrame;
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::memory_map::phys_to_virt;
use crate::pv::PvState;
use crate::trap::Vector;

/// Ends a domain for breaking the ABI, with one line naming the rule and the values:
/// `kill!(domain, "what at rip {rip:#x}: why")`, `domain` a `&mut Domain`. The message is one
/// string literal, so it can be grepped for, and rustfmt formats the call.
macro_rules! kill {
    ($domain:expr, $($message:tt)+) => {
        $domain.kill(format_args!($($message)+))
    };
}
pub(crate) use kill;

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// May be scheduled.
    Runnable,
    /// Waits for an event (`sched_op(block)`) or an interrupt (`hlt` under hvm).
    Blocked,
    /// Shut down with this status (a kill uses `STATUS_DOMAIN_KILLED`).
    Dead(u8),
}

/// Longest console line kept before it is printed anyway.
const LINE_MAX: usize = 160;

/// One guest, in any mode.
pub struct Domain {
    /// Its id.
    pub id: u32,
    /// How it runs.
    pub mode: Mode,
    /// Its state.
    pub state: State,
    /// Registers while it does not run: a `pv` domain's whole context (the trap frame it
    /// resumes with); an hvm domain's general registers (the VMCS keeps the rest).
    pub regs: TrapFrame,
    /// First machine frame of its (contiguous) memory.
    pub memory: Frame,
    /// Frames of memory.
    pub nr_pages: u64,
    /// gfn of its `SharedInfo`.
    pub shared_info_gfn: u64,
    /// Counters for `stats` and the summary.
    pub stats: Stats,
    /// The ring-1 state of a `pv` domain; `None` for an hvm domain.
    pub pv: Option<PvState>,
    /// Console bytes not yet printed (no newline yet).
    line: [u8; LINE_MAX],
    line_len: usize,
}

impl Domain {
    /// A new domain of `mode` owning `nr_pages` frames from `memory`, starting with `regs`;
    /// `pv` is its ring-1 state if it runs in ring 1.
    pub fn new(
        id: u32,
        mode: Mode,
        (memory, nr_pages): (Frame, u64),
        shared_info_gfn: u64,
        regs: TrapFrame,
        pv: Option<PvState>,
    ) -> Domain {
        Domain {
            id,
            mode,
            state: State::Runnable,
            regs,
            memory,
            nr_pages,
            shared_info_gfn,
            stats: Stats::new(),
            pv,
            line: [0; LINE_MAX],
            line_len: 0,
        }
    }

    /// Ends the domain for breaking the ABI, with one line naming the rule and the values
    /// (called through [`kill!`]).
    pub fn kill(&mut self, why: fmt::Arguments<'_>) {
        self.console_flush();
        self.state = State::Dead(STATUS_DOMAIN_KILLED);
        log::error!("dom{} killed: {why}", self.id);
    }

    /// Whether it has ended.
    #[inline]
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead(_))
    }

    /// The domain's `SharedInfo`, through xen-lite's map: the one path by which xen-lite writes
    /// a frame of the domain outside [`Domain::write`]. For a `pv` domain it checks, every
    /// time, that the frame still holds the `Writable` type reference taken when the domain
    /// was built (`PvState::new`): a frame that had become a page table would turn every
    /// store below into an unvalidated entry (the escape an outside review found), so a failed
    /// check is a bug in xen-lite and stops it. An hvm guest may use the frame however it
    /// likes: EPT confines whatever it maps to its own memory.
    #[inline]
    pub fn shared(&mut self) -> &mut SharedInfo {
        if let Some(pv) = &self.pv {
            pv.assert_shared_info_typed(self.id, self.memory.0, self.shared_info_gfn);
        }
        let address = self.host_address(self.shared_info_gfn * PAGE_SIZE);
        // SAFETY: the page belongs to this domain and is only accessed through this `&mut self`
        // while xen-lite runs (the guest is stopped); the struct fits in the page; for a `pv`
        // domain the check above keeps it from being a page table.
        unsafe { &mut *(address as *mut SharedInfo) }
    }

    /// xen-lite's pointer to byte `offset` of the domain's memory.
    #[inline]
    pub fn host_address(&self, offset: u64) -> u64 {
        phys_to_virt(self.memory.addr() + offset)
    }

    /// Appends console output, printing each complete line with the `[domN]` prefix.
    pub fn console_write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' || self.line_len == LINE_MAX {
                crate::console::guest_line(self.id, self.shown_line());
                self.line_len = 0;
                if byte == b'\n' {
                    continue;
                }
            }
            self.line[self.line_len] = byte;
            self.line_len += 1;
        }
    }

    /// Ends the domain at its own request, with `code` (at most `GUEST_STATUS_MAX`).
    pub fn shut_down(&mut self, code: u8) {
        self.console_flush();
        self.state = State::Dead(code);
        log::info!("dom{} shut down with exit code {code}", self.id);
    }

    /// Prints what is left of an unfinished line (at shutdown).
    pub fn console_flush(&mut self) {
        if self.line_len > 0 {
            crate::console::guest_line(self.id, self.shown_line());
            self.line_len = 0;
        }
    }

    /// The line being written, as the console shows it after xen-lite's `[domN]`: a
    /// `mode=trap` kernel believes it is alone on the machine and tags its lines itself, as it
    /// does natively, so its own tag (if it is this domain's) goes.
    fn shown_line(&self) -> &[u8] {
        let line = &self.line[..self.line_len];
        if self.mode != Mode::Trap {
            return line;
        }
        let Some(rest) = line.strip_prefix(b"[dom") else { return line };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let id = core::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u32>().ok());
        match (id, rest[digits..].strip_prefix(b"] ")) {
            (Some(id), Some(text)) if id == self.id => text,
            _ => line,
        }
    }
}

/// Every domain, and who runs.
pub struct Domains {
    /// Every domain, by id.
    pub domains: [Option<Domain>; MAX_DOMAINS],
    /// The running domain; `None` while `pv` mode runs its idle loop.
    pub current: Option<usize>,
    /// Ticks left in the current domain's slice.
    pub slice_left: u64,
    /// The current domain asked to yield.
    pub yield_now: bool,
}

static DOMAINS: Mutex<Domains> = Mutex::new(Domains {
    domains: [const { None }; MAX_DOMAINS],
    current: None,
    slice_left: 0,
    yield_now: false,
});

/// The domain running now (`u64::MAX` while idle); for debuggers (`xl-domain` in gdb).
#[used] // read only by debuggers: keep it, and every store to it
pub static CURRENT_DOMAIN: AtomicU64 = AtomicU64::new(u64::MAX);

/// The domain table. A mode's run loop holds it for as long as xen-lite works on domains.
#[inline]
pub fn lock() -> spin::MutexGuard<'static, Domains> {
    DOMAINS.lock()
}

/// Publishes who runs, for debuggers.
#[inline]
pub fn set_current_for_debuggers(current: Option<usize>) {
    CURRENT_DOMAIN.store(current.map_or(u64::MAX, |c| c as u64), Ordering::Relaxed);
}

impl Domains {
    /// Domain `index`, which must exist.
    #[inline]
    pub fn domain(&mut self, index: usize) -> &mut Domain {
        self.domains[index].as_mut().expect("the caller names an existing domain")
    }

    /// Domain `index`, if it exists.
    #[inline]
    pub fn find(&mut self, index: usize) -> Option<&mut Domain> {
        self.domains.get_mut(index).and_then(Option::as_mut)
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
        let nmis = crate::switcher::nmi_count();
        if steps + nmis > 0 {
            log::info!(
                "  xen-lite: {steps} #DB on an entry's first instruction, {nmis} NMIs: ignored"
            );
        }
        exit_emulator(status)
    }
}

/// Allocates domain `id`'s memory: `config.domain_pages` contiguous frames; ends the run if the
/// machine has too little.
pub fn allocate_memory(config: &Config<'_>, id: usize) -> Frame {
    crate::frame::alloc_contiguous(config.domain_pages).unwrap_or_else(|| {
        log::error!("no {} contiguous free frames for dom{id}", config.domain_pages);
        exit_emulator(STATUS_BAD_GUEST)
    })
}

/// The shadow-paging part of a summary line, for a domain that ran on shadows.
fn shadow_summary(f: &mut fmt::Formatter<'_>, stats: &Stats) -> fmt::Result {
    if stats.shadow_tables_built == 0 {
        return Ok(());
    }
    write!(
        f,
        "; shadow paging: {} hidden faults, {} true, {} tables built, {} recycles, {} invalidations",
        stats.shadow_hidden_faults,
        stats.shadow_true_faults,
        stats.shadow_tables_built,
        stats.shadow_recycled,
        stats.shadow_invalidations
    )
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
        for &hypercall in Hypercall::ALL {
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
                write!(
                    f,
                    " {} {count}",
                    hypercall_abi::vm_exit::name_in(domain.mode, reason as u16)
                )?;
            }
            shadow_summary(f, stats)?;
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
        shadow_summary(f, stats)?;
        write!(
            f,
            "; events delivered {}; scheduled {} times",
            stats.events_delivered, stats.schedules
        )
    }
}
