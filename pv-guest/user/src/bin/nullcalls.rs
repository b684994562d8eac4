//! What a null system call costs the hypervisor, measured by the hypervisor's own counters:
//! `getpid` many times through `syscall`, then through `int 0x80`, with xen-lite's `stats`
//! read before and after each run (`hvstats`).
//!
//! What it checks, per mode:
//! - `pv`: every `syscall` enters xen-lite exactly once (it is bounced to the guest kernel);
//!   `int 0x80` never does (the fast trap goes straight from ring 3 to ring 1).
//! - `vmx`: no system call causes a VM exit. Exits still happen while the loop runs (xen-lite's
//!   timer interrupt, the guest's own tick); those are counted and shown apart.
//! - `native`: there is no hypervisor to ask; the program says so and succeeds.
#![no_std]
#![no_main]

use hypercall_abi::hypercall::{Errno, Stats};
use hypercall_abi::vm_exit;
use pv_user::{getpid, hvstats, int80, println};

/// Calls per path.
const CALLS: u64 = 10_000;

/// One path's measurement: the counters' growth over `CALLS` calls.
fn measure(path: &str, call: fn() -> u64) -> Result<bool, Errno> {
    let before = hvstats()?;
    for _ in 0..CALLS {
        call();
    }
    let after = hvstats()?;
    let delta = |f: fn(&Stats) -> u64| f(&after) - f(&before);
    let entries = delta(|s| s.entries_syscall);
    let exits = delta(Stats::vm_exits_total);
    let timer: u64 = vm_exit::TIMER_REASONS
        .iter()
        .map(|&r| after.vm_exits[usize::from(r)] - before.vm_exits[usize::from(r)])
        .sum();
    // Reading the counters is itself a system call, and xen-lite counts the second reading:
    // under VMX one VMCALL exit (the kernel's `stats` hypercall), in `pv` one bounced
    // `syscall` entry.
    let vmx = exits > 0;
    let stats_exit = u64::from(vmx);
    let by_calls = entries - u64::from(!vmx && entries > 0);
    let exits_by_calls = exits - timer - stats_exit;
    println!(
        "nullcalls: {CALLS} getpid via {path}: {by_calls} xen-lite entries, {exits_by_calls} VM exits by the calls ({timer} by the timer), {} CR3 writes in all",
        delta(|s| s.cr3_writes)
    );
    let ok = if vmx {
        exits_by_calls == 0
    } else if path == "syscall" {
        by_calls == CALLS
    } else {
        by_calls == 0
    };
    Ok(ok)
}

fn main() -> u8 {
    let syscall = measure("syscall", getpid);
    let int80 = measure("int 0x80", int80::getpid);
    match (syscall, int80) {
        (Ok(true), Ok(true)) => {
            println!("nullcalls: the counts are as the mode promises");
            0
        }
        (Err(Errno::ENOSYS), _) => {
            println!("nullcalls: hvstats is ENOSYS: no hypervisor counts here (native mode), or the program runs without processes (run=)");
            0
        }
        (syscall, int80) => {
            println!("nullcalls: FAILED (syscall path {syscall:?}, int 0x80 path {int80:?})");
            1
        }
    }
}

pv_user::entry!(main);
