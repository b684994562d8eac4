//! Demonstration workloads: two domains doing visibly different work side by side.

use hypercall_abi::hypercall::{Errno, Hypercall, Stats};

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

/// The kernel idiom that saves the flags, disables interrupts and restores them with `popfq`,
/// then waits 30 ms of system time. Natively and under vmx or svm, `popfq` sets IF again and the
/// timer's ticks come; in pv the clock is xen-lite's shared time, so IF does not matter. Under
/// `mode=trap`, `popfq` in ring 1 cannot change IF (sensitive, but not privileged: it does not
/// trap), the virtual IF stays clear, no tick is delivered, and xen-lite's watchdog ends the
/// domain with a line naming the last instruction it emulated (`cli`). With `patch=on` the
/// platform follows `popfq` with a trapping `sti`, and it returns again.
pub fn popf_wait() -> Result<(), Errno> {
    timer::start()?;
    platform::events_enable();
    let flags = platform::save_flags();
    platform::events_disable();
    platform::restore_flags(flags);
    let start = platform::now_ns()?;
    while platform::now_ns()? < start + 30_000_000 {
        core::hint::spin_loop();
    }
    println!(
        "popf-wait: 30 ms of system time passed after popfq (IF was {} when saved)",
        flags >> 9 & 1
    );
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

/// Yields the CPU `ROUNDS` times, in a ring of `domains` domains all running this workload, and
/// (domain 0) prints a `BENCH` line (the format of `pv-guest/user/src/bin/bench.rs`): the
/// instructions (`rdtsc`, an instruction count under the benchmark's emulators) per domain
/// switch, all domains' work between two of its own yields included, and its own entries into
/// xen-lite. Warm-up yields first, so every domain is in its loop before the measurement starts.
pub fn domain_switch(info: &hypercall_abi::StartInfo, domains: u32) -> Result<(), Errno> {
    const WARM_UP: u64 = 50;
    const ROUNDS: u64 = 400;
    for _ in 0..WARM_UP {
        platform::yield_cpu();
    }
    let before = platform::stats()?;
    let start = rdtsc();
    for _ in 0..ROUNDS {
        platform::yield_cpu();
    }
    let end = rdtsc();
    let after = platform::stats()?;
    let delta = |f: fn(&Stats) -> u64| f(&after) - f(&before);
    let exits = delta(Stats::vm_exits_total);
    let yields = delta(|s| s.hypercalls[Hypercall::SchedOp as usize]);
    if info.domain_id == 0 {
        println!(
            "BENCH workload=domain-switch path=yield-{domains} ops={} instructions={} entries={} exits={} cr3={} timer=0 reasons=none",
            ROUNDS * u64::from(domains),
            end - start,
            yields.max(exits),
            exits,
            delta(|s| s.cr3_writes),
        );
    }
    // Keep yielding until every other domain has finished measuring too.
    for _ in 0..WARM_UP * u64::from(domains) {
        platform::yield_cpu();
    }
    Ok(())
}

/// What one timer event costs, end to end (pv: the upcall bounce, the guest's handler and its
/// `set_timer_op`; vmx: the injection, the handler and its PIC end-of-interrupt; native: the
/// PIT interrupt and the handler). The same spin loop runs twice with interrupts on, first
/// before the guest's 100 Hz tick is started, then with it; the difference in instructions
/// (`rdtsc`) and in xen-lite's counters, divided by the events delivered, is the cost of one.
/// (xen-lite's own tick interrupts both runs alike, so it cancels out.) Prints a `BENCH` line
/// in the format of `pv-guest/user/src/bin/bench.rs`.
pub fn event_cost() -> Result<(), Errno> {
    const SPINS: u64 = 200_000_000;
    let spin = || {
        for i in 0..SPINS {
            core::hint::black_box(i);
        }
    };
    let stats = || platform::stats().unwrap_or_default();
    platform::events_enable();
    let (quiet_stats, quiet_start) = (stats(), rdtsc());
    spin();
    let (quiet_end, quiet_after) = (rdtsc(), stats());
    timer::start()?;
    let ticks = timer::ticks();
    let (live_stats, live_start) = (stats(), rdtsc());
    spin();
    let (live_end, live_after) = (rdtsc(), stats());
    let events = timer::ticks() - ticks;
    let extra = (live_end - live_start).saturating_sub(quiet_end - quiet_start);
    // Counters the events added: the live run's growth minus the quiet run's.
    let grown = |f: fn(&Stats) -> u64| {
        (f(&live_after) - f(&live_stats)).saturating_sub(f(&quiet_after) - f(&quiet_stats))
    };
    let entries = |s: &Stats| {
        s.entries_hypercall
            + s.entries_exception
            + s.entries_interrupt
            + s.entries_syscall
            + s.vm_exits_total()
    };
    println!(
        "BENCH workload=event-delivery path=timer ops={events} instructions={extra} entries={} exits={} cr3={} timer=0 reasons=none",
        grown(entries),
        grown(Stats::vm_exits_total),
        grown(|s| s.cr3_writes),
    );
    Ok(())
}

/// The time-stamp counter: an instruction count under the benchmark's emulators (DESIGN §9).
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
