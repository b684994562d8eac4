//! Demonstration workloads: two domains doing visibly different work side by side.

use hypercall_abi::hypercall::Errno;

use crate::{platform, println, timer};

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
            if found % 5_000 == 0 {
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
