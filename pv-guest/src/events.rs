//! The guest's side of events: the upcall handler and its port table.
//!
//! The event entry (`traps::guest_event_entry`) runs [`upcall`] with events masked: entered by
//! xen-lite for a `pv` upcall, by the timer's interrupt gate in `hvm`. It acknowledges the
//! event, takes the pending ports (`platform::take_pending_events`) and handles each, until
//! nothing is left; only then does the return path (`platform_trap_restore`) restore the
//! interrupted context's event mask and return.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::platform;

/// Upcalls taken (each entry into [`upcall`]).
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Events handled, by port.
pub static PORT_EVENTS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// The port the timer VIRQ is bound to (0 = none).
pub static TIMER_PORT: AtomicU64 = AtomicU64::new(0);

/// The event handler.
pub fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    platform::acknowledge_event();
    loop {
        let pending = platform::take_pending_events();
        if pending == 0 {
            break;
        }
        for port in (0..64).filter(|p| pending >> p & 1 == 1) {
            PORT_EVENTS[port].fetch_add(1, Ordering::Relaxed);
            if port as u64 == TIMER_PORT.load(Ordering::Relaxed) {
                crate::timer::on_timer_event();
            }
        }
    }
}

/// Events handled on `port` so far.
pub fn count(port: u64) -> u64 {
    PORT_EVENTS[port as usize % 64].load(Ordering::Relaxed)
}
