//! The guest's own periodic tick, built from one-shot virtual timer events.
//!
//! The platform offers a one-shot timer (`platform::set_timer`: xen-lite's `set_timer_op` in
//! `pv`, a deadline checked on every PIT tick in `hvm`) that raises an event on the port
//! `platform::bind_timer` returned. Each event re-arms it [`PERIOD_NS`] ahead, which gives the
//! kernel a steady tick whichever timer is underneath.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::Errno;

use crate::platform;

/// Tick period.
pub const PERIOD_NS: u64 = 10_000_000;
/// Ticks so far.
pub static TICKS: AtomicU64 = AtomicU64::new(0);

/// Binds the timer VIRQ and arms the first tick.
pub fn start() -> Result<(), Errno> {
    let port = platform::bind_timer()?;
    crate::events::TIMER_PORT.store(port, Ordering::Relaxed);
    platform::set_timer(platform::now_ns()? + PERIOD_NS)
}

/// Called from the upcall for each timer event.
pub fn on_timer_event() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    // Re-arming cannot fail once `start` succeeded: the clock and timer exist.
    if let Ok(now) = platform::now_ns() {
        let _ = platform::set_timer(now + PERIOD_NS);
    }
}

/// Ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}
