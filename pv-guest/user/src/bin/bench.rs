//! The syscall-path benchmarks (`cargo xtask bench`): the same program in every mode.
//!
//! Each workload runs `ops` operations between two readings of the time-stamp counter (which
//! counts retired instructions under QEMU's `-icount shift=0` and Bochs' `clock: sync=none`,
//! DESIGN §9) and of xen-lite's counters (`hvstats`; none natively). What reading the counters
//! costs by itself is measured the same way with nothing in between and subtracted. One line
//! per measurement, for the xtask to parse:
//!
//! ```text
//! BENCH workload=null-syscall path=syscall ops=20000 instructions=... entries=... exits=... cr3=... timer=... hidden=... reasons=18x2
//! ```
//!
//! `entries` counts entries into xen-lite not caused by its timer (hypercalls, exceptions,
//! bounced syscalls, VM exits), `exits` the VM exits among them, `cr3` the CR3 writes xen-lite
//! made for them, `timer` the entries and exits its timer caused meanwhile (reported apart,
//! because they depend on how long the workload ran, not on what it did; of the I/O exits, one
//! per injected tick, the handler's end-of-interrupt `out`, is the timer's and the rest the
//! workload's), `hidden` the page
//! faults xen-lite fixed in a shadow without the guest knowing (shadow paging: `paging=shadow`,
//! `ept=off`, `npt=off`; 0 otherwise), `reasons` the non-timer VM exits by basic reason. Options (words on the domain's command line after
//! `init`): `scale=quick` runs a twentieth of the operations; `writes=N` sets the operations of
//! `console-write` (lab 7's workload; the xtask passes the handout seed's, `labs::params`).
#![no_std]
#![no_main]

use core::fmt::Write;

use hypercall_abi::hypercall::{Errno, Hypercall, Stats, VM_EXIT_SLOTS};
use hypercall_abi::vm_exit;
use pv_user::{
    exit, fork, getarg, getpid, hvstats, int80, null_hypercalls, println, pte_updates, rdtsc, sbrk,
    wait, write, yield_now,
};

/// One reading: the instruction counter and xen-lite's counters (zero natively).
#[derive(Clone, Copy)]
struct Reading {
    tsc: u64,
    stats: Stats,
}

fn read() -> Reading {
    let stats = hvstats().unwrap_or_default();
    Reading { tsc: rdtsc(), stats }
}

/// The difference between two readings, split by cause.
#[derive(Clone, Copy)]
struct Cost {
    instructions: u64,
    entries: u64,
    exits: u64,
    cr3: u64,
    timer: u64,
    hidden: u64,
    reasons: [u64; VM_EXIT_SLOTS],
}

fn cost(before: &Reading, after: &Reading) -> Cost {
    let (a, b) = (&after.stats, &before.stats);
    let mut reasons = [0; VM_EXIT_SLOTS];
    for (slot, reason) in reasons.iter_mut().enumerate() {
        *reason = a.vm_exits[slot] - b.vm_exits[slot];
    }
    // The guest's tick handler ends each injected tick with one `out` (its EOI): those I/O
    // exits are the timer's; any others are the workload's own (a UART's, `console=uart`).
    let io = usize::from(vm_exit::IO_INSTRUCTION);
    let workload_io = reasons[io].saturating_sub(a.events_delivered - b.events_delivered);
    let timer_exits: u64 =
        vm_exit::TIMER_REASONS.iter().map(|&r| reasons[usize::from(r)]).sum::<u64>() - workload_io;
    for r in vm_exit::TIMER_REASONS {
        reasons[usize::from(r)] = 0;
    }
    reasons[io] = workload_io;
    let exits = reasons.iter().sum::<u64>();
    // The timer's: xen-lite's tick interrupts, and the pv guest re-arming its one-shot virtual
    // timer (`set_timer_op`) on each of its ticks.
    let rearm = Hypercall::SetTimerOp as usize;
    let timer_entries =
        (a.entries_interrupt - b.entries_interrupt) + (a.hypercalls[rearm] - b.hypercalls[rearm]);
    let entries = (a.entries_hypercall - b.entries_hypercall)
        - (a.hypercalls[rearm] - b.hypercalls[rearm])
        + (a.entries_exception - b.entries_exception)
        + (a.entries_syscall - b.entries_syscall)
        + exits;
    // Every pv entry costs two CR3 writes (in and out, `switcher.rs`); the timer's are not
    // the workload's.
    let cr3 = (a.cr3_writes - b.cr3_writes).saturating_sub(2 * timer_entries);
    Cost {
        instructions: after.tsc - before.tsc,
        entries,
        exits,
        cr3,
        timer: timer_entries + timer_exits,
        hidden: a.shadow_hidden_faults - b.shadow_hidden_faults,
        reasons,
    }
}

/// What reading the counters costs on its own (subtracted from every measurement). One reading
/// first, thrown away: its first touches (the stack, the counters' buffer) would otherwise be
/// counted as the cost of every reading (under shadow paging each is a hidden fault).
fn overhead() -> Cost {
    read();
    let before = read();
    let after = read();
    cost(&before, &after)
}

/// Runs `body` (which performs `ops` operations) between two readings and prints the line.
fn measure(workload: &str, path: &str, ops: u64, base: &Cost, body: impl FnOnce()) {
    let before = read();
    body();
    let after = read();
    report(workload, path, ops, base, &before, &after);
}

/// Prints the BENCH line of `ops` operations done between readings `before` and `after`, less
/// what reading costs (`base`).
fn report(workload: &str, path: &str, ops: u64, base: &Cost, before: &Reading, after: &Reading) {
    let c = cost(before, after);
    let mut reasons = Reasons([0u8; 64], 0);
    for (reason, &n) in c.reasons.iter().enumerate() {
        let n = n.saturating_sub(base.reasons[reason]);
        if n > 0 {
            let _ = write!(reasons, "{}{reason}x{n}", if reasons.1 > 0 { "," } else { "" });
        }
    }
    println!(
        "BENCH workload={workload} path={path} ops={ops} instructions={} entries={} exits={} cr3={} timer={} hidden={} reasons={}",
        c.instructions.saturating_sub(base.instructions),
        c.entries.saturating_sub(base.entries),
        c.exits.saturating_sub(base.exits),
        c.cr3.saturating_sub(base.cr3),
        c.timer,
        c.hidden.saturating_sub(base.hidden),
        if reasons.1 == 0 { "none" } else { reasons.as_str() },
    );
}

/// A small text buffer for the `reasons` field.
struct Reasons([u8; 64], usize);

impl Reasons {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0[..self.1]).unwrap_or("?")
    }
}

impl Write for Reasons {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0.get_mut(self.1..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

/// Whether `option` (`scale=quick`) is among the words after `init`; for `key=` (ending in
/// `=`), the number after it.
fn option(wanted: &[u8]) -> Option<u64> {
    let mut word = [0u8; 31];
    let mut index = 0;
    while let Ok(len) = getarg(index, &mut word) {
        let word = &word[..len];
        if word == wanted {
            return Some(0);
        }
        if let Some(number) = wanted.ends_with(b"=").then(|| word.strip_prefix(wanted)).flatten() {
            return core::str::from_utf8(number).ok()?.parse().ok();
        }
        index += 1;
    }
    None
}

/// Lab 7's workload: `writes` system calls that each write one byte (`.`) to the console.
/// Under pv the byte goes user → xen-lite (the bounced `syscall`) → guest kernel →
/// `console_io` hypercall → xen-lite → serial port; natively the kernel drives the port.
fn console_write(writes: u64, base: &Cost) {
    // LAB 7.1 BEGIN: measure `writes` one-byte writes to the console (fd 1) as workload `console-write`, path `syscall`, and end the line of dots before the BENCH line
    // Hint: `read()` before and after the operations, then `report(workload, path, ops, base, &before, &after)` prints the BENCH line; `write(fd, bytes)` is the system call.
    // Hint: xen-lite's console cuts lines at 160 bytes: a newline after the dots (outside the measurement) keeps the BENCH line whole.
    // Handout: let _ = (writes, base, write, report); // LAB 7.1: not written yet, so the bench prints no console-write line
    let before = read();
    for _ in 0..writes {
        write(1, b".");
    }
    let after = read();
    println!("");
    report("console-write", "syscall", writes, base, &before, &after);
    // LAB 7.1 END
}

fn main() -> u8 {
    let divide = if option(b"scale=quick").is_some() { 20 } else { 1 };
    let base = overhead();
    let native = hvstats() == Err(Errno::ENOSYS);
    println!(
        "bench: {} counters, scale 1/{divide}",
        if native { "no hypervisor" } else { "xen-lite" }
    );

    let calls = 20_000 / divide;
    measure("null-syscall", "syscall", calls, &base, || {
        for _ in 0..calls {
            getpid();
        }
    });
    measure("null-syscall", "int80", calls, &base, || {
        for _ in 0..calls {
            int80::getpid();
        }
    });
    // Counters but no hypercalls: trap-and-emulate (`mode=trap`), whose kernel believes it is alone.
    if !native && null_hypercalls(1).is_ok() {
        measure("null-hypercall", "hypercall", calls, &base, || {
            let _ = null_hypercalls(calls);
        });
    }

    let forks = 200 / divide;
    measure("fork-exit-wait", "syscall", forks, &base, || {
        for _ in 0..forks {
            match fork() {
                Ok(0) => exit(0),
                Ok(_) => {
                    let _ = wait();
                }
                Err(errno) => println!("bench: fork failed: {errno:?}"),
            }
        }
    });

    // An address space holds at most 256 data pages (`pv-guest/src/address_space.rs`), code and
    // stack included: stay well below.
    let pages = 200 / divide;
    measure("first-touch", "page-fault", pages, &base, || {
        let Ok(start) = sbrk((pages * 4096) as i64) else { return };
        for page in 0..pages {
            // SAFETY: the heap was just grown over these pages; the first write faults one in.
            unsafe { ((start + page * 4096) as *mut u8).write_volatile(1) };
        }
        let _ = sbrk(-((pages * 4096) as i64));
    });

    // Page-table updates: the same number of PTEs in batches of 1, 8, 64 and 512 (one system
    // call for all of them). Not scaled down: the scratch table's set-up must be amortised
    // over several batches of 512 for the comparison to mean anything, and PTEs are cheap.
    let ptes = 4096;
    for batch in [1u64, 8, 64, 512] {
        let rounds = (ptes / batch).max(1);
        let path = match batch {
            1 => "batch-1",
            8 => "batch-8",
            64 => "batch-64",
            _ => "batch-512",
        };
        measure("pte-update", path, batch * rounds, &base, || {
            if let Err(errno) = pte_updates(batch, rounds) {
                println!("bench: pte_updates({batch}, {rounds}) failed: {errno:?}");
            }
        });
    }

    let yields = 2000 / divide;
    measure("context-switch", "yield", 2 * yields, &base, || match fork() {
        Ok(0) => {
            for _ in 0..yields {
                let _ = yield_now();
            }
            exit(0)
        }
        Ok(_) => {
            for _ in 0..yields {
                let _ = yield_now();
            }
            let _ = wait();
        }
        Err(errno) => println!("bench: fork failed: {errno:?}"),
    });

    console_write(option(b"writes=").unwrap_or(64), &base);
    println!("bench: done");
    0
}

pv_user::entry!(main);
