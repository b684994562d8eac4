//! What the kernel does after start of day, chosen by its command line (`args`).
//!
//! The same workloads build in every flavour; where a flavour lacks a facility (the `hvm` flavour
//! has no event channels to other domains, and in `native` mode no hypervisor to call or count)
//! the platform answers `ENOSYS` and the workload says so and fails, rather than pretending.
//! Some exist to exercise the pv ABI itself (the self-tests, the attacks, the fuzzer, the
//! hostile guests) and call it through the platform's pv-ABI items on purpose.

mod attacks;
mod census;
mod demo;
mod fuzz;
mod hostile;
mod tlb;
mod selftest;

use hypercall_abi::hypercall::Errno;
use hypercall_abi::StartInfo;

use crate::args::{Args, Workload};
use crate::println;

/// Runs the workload; returns the exit code.
pub fn run(args: &Args, info: &'static StartInfo) -> u8 {
    let result = match args.workload {
        Workload::Hello => {
            println!("hello from the guest kernel!");
            Ok(())
        }
        Workload::Counter => demo::counter(),
        Workload::Primes => demo::primes(),
        Workload::SpinMasked => demo::spin_masked(),
        Workload::PopfWait => demo::popf_wait(),
        Workload::Pong(from) => demo::pong(from),
        Workload::Ping(to) => demo::ping(to),
        Workload::Tests => return selftest::run(info),
        Workload::Privileged(instruction) => hostile::privileged(instruction),
        Workload::NoHandler => hostile::no_handler(),
        Workload::Run(name) => return run_program(info, name.as_str()),
        Workload::Init => match crate::process::start(info, "init") {
            Ok(never) => match never {},
            Err(errno) => Err(errno),
        },
        Workload::BadStack => hostile::bad_stack(),
        Workload::StackOnPageTable => hostile::stack_on_page_table(info),
        Workload::BeyondMemory => hostile::beyond_memory(info),
        Workload::ShadowTlb => tlb::shadow_tlb(info),
        Workload::ShadowSweep => tlb::shadow_sweep(info),
        Workload::ShadowReservedSlot => tlb::shadow_reserved_slot(info),
        Workload::Census(from) => census::census(info, from),
        Workload::TripleFault => hostile::triple_fault(),
        Workload::DomainSwitch(domains) => demo::domain_switch(info, domains),
        Workload::EventCost => demo::event_cost(),
        Workload::Attack(name) => return attacks::run(info, name.as_str()),
        Workload::Fuzz { seed, count } => return fuzz::run(info, seed, count),
        // LAB HIDDEN BEGIN
        Workload::LabHidden => return selftest::lab_hidden(info),
        // LAB HIDDEN END
        Workload::SecretFaults => {
            attacks::secret_faults();
            Ok(())
        }
        Workload::SyscallStackOnPageTable => {
            hostile::syscall_stack_on_page_table(info);
            return run_program(info, "hello");
        }
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

/// Runs user program `name`; its exit status becomes the domain's.
fn run_program(info: &StartInfo, name: &str) -> u8 {
    let free_before = crate::frames::free_count();
    let outcome = crate::program::run(info, name);
    let leaked = free_before - crate::frames::free_count();
    if leaked > 0 {
        println!("run: {name} leaked {leaked} frames");
        return 1;
    }
    match outcome {
        Ok(crate::program::Outcome::Exited(status)) => {
            println!("run: {name} exited with status {status}; every frame it used is free again");
            status.min(u64::from(hypercall_abi::devices::GUEST_STATUS_MAX)) as u8
        }
        Ok(crate::program::Outcome::Killed(caught)) => {
            println!(
                "run: {name} killed by vector {} at rip {:#x}, error code {:#x}, fault address {:#x}",
                caught.vector, caught.rip, caught.error_code, caught.fault_address
            );
            1
        }
        Err(errno) => {
            println!("run: cannot run {name}: {errno:?}");
            1
        }
    }
}
