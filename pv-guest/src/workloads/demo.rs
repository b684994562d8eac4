//! Demonstration workloads: two domains doing visibly different work side by side.

use hypercall_abi::hypercall::Errno;

use crate::{events, platform, println, timer};

/// Events `ping` sends and `pong` waits for.
const PINGS: u64 = 3;

/// Counts five 100 ms periods of timer ticks, sleeping (`block`) in between: the domain only
/// runs when its virtual timer fires.
pub fn counter() -> Result<(), Errno> {
    timer::start()?;
    platform::events_enable();
    for period in 1..=5 {
        while timer::ticks() < period * 10 {
            platform::block()?;
        }
        println!(
            "counter: {} ticks, {} ms of system time",
            timer::ticks(),
            platform::now_ns()? / 1_000_000
        );
    }
    println!("counter: done");
    Ok(())
}

/// Finds the primes below 600 000 by trial division, reporting every 5 000: pure computation
/// that never yields, so only xen-lite's preemption lets the other domains run.
pub fn primes() -> Result<(), Errno> {
    let mut found = 0u64;
    for candidate in 2u64..600_000 {
        let prime = (2..).take_while(|d| d * d <= candidate).all(|d| candidate % d != 0);
        if prime {
            found += 1;
            if found.is_multiple_of(5_000) {
                println!("primes: {found} found, the latest is {candidate}");
            }
        }
    }
    println!("primes: done, {found} primes below 600000");
    Ok(())
}

/// Masks events and spins for one second of system time. xen-lite's real timer still
/// preempts it (the virtual IF masks only the guest's own upcalls), so other domains run.
pub fn spin_masked() -> Result<(), Errno> {
    platform::events_disable();
    let start = platform::now_ns()?;
    let mut spins = 0u64;
    while platform::now_ns()? < start + 1_000_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    println!("spin-masked: done, spun {spins} times over 1000 ms with events masked");
    platform::events_enable();
    Ok(())
}

/// Opens an event port that domain `from` may send to (the first free port, 1), then sleeps
/// until `PINGS` events have arrived on it.
pub fn pong(from: u32) -> Result<(), Errno> {
    let port = platform::open_port_for(from)?;
    println!("pong: listening on port {port} for dom{from}");
    platform::events_enable();
    while events::count(port) < PINGS {
        platform::block()?;
    }
    println!("pong: received {} events from dom{from}", events::count(port));
    Ok(())
}

/// Sends `PINGS` events to port 1 of domain `to`, yielding until `pong` has opened it. Events
/// on one port coalesce until the receiver handles them (a pending *bit*), so after each send
/// it yields, letting `pong` take the event before the next one.
pub fn ping(to: u32) -> Result<(), Errno> {
    let mut sent = 0;
    while sent < PINGS {
        match platform::send_event(to, 1) {
            Ok(()) => {
                sent += 1;
                println!("ping: event {sent} sent to dom{to}");
                platform::yield_cpu();
            }
            // Not open yet (ENOENT): let the other domain run.
            Err(Errno::ENOENT) => platform::yield_cpu(),
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}
