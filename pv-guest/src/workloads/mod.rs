//! What the kernel does after start of day, chosen by its command line (`args`).
//!
//! The same workloads run in every flavour; where a flavour lacks a facility (today the `hvm`
//! flavour has no timer or trap table yet) the workload says so and fails, rather than
//! pretending.

mod demo;
mod hostile;
mod selftest;

use hypercall_abi::hypercall::Errno;
use hypercall_abi::StartInfo;

use crate::args::{Args, Workload};
use crate::println;

/// Runs the workload; returns the exit code.
pub fn run(args: &Args, info: &StartInfo) -> u8 {
    let result = match args.workload {
        Workload::Hello => {
            println!("hello from the guest kernel!");
            Ok(())
        }
        Workload::Counter => demo::counter(),
        Workload::Primes => demo::primes(),
        Workload::SpinMasked => demo::spin_masked(),
        Workload::Pong(from) => demo::pong(from),
        Workload::Ping(to) => demo::ping(to),
        Workload::Tests => return selftest::run(info),
        Workload::Privileged(instruction) => hostile::privileged(instruction),
        Workload::NoHandler => hostile::no_handler(),
        Workload::BadStack => hostile::bad_stack(),
    };
    match result {
        Ok(()) => args.exit_code,
        Err(Errno::ENOSYS) => {
            println!(
                "this workload needs a facility the {} flavour does not have yet (ENOSYS)",
                crate::platform::FLAVOUR
            );
            1
        }
        Err(errno) => {
            println!("workload failed: {errno:?}");
            1
        }
    }
}
