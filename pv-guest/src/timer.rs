//! The guest's own periodic tick, built from one-shot virtual timer events.
//!
//! xen-lite offers only a one-shot timer (`set_timer_op`); each event re-arms it one
//! [`PERIOD_NS`] later, which gives the kernel a steady tick without ever touching a real timer.

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
