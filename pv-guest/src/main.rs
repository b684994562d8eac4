//! # pv-guest
//!
//! The guest kernel xen-lite runs. One source, two flavours chosen at build time:
//!
//! - `pv`: runs in ring 1 under xen-lite; every sensitive operation is a hypercall or a store
//!   to the shared page.
//! - `hvm`: runs in ring 0 and uses the real instructions, natively or under VMX.
//!
//! The difference lives in one module, [`platform`], and nowhere else: that module *is* the
//! "sensitive instructions swapped for hypercalls" of the lecture, made visible, and
//! `platform/mod.rs` lists what it offers once, item by item. Everything else (start of day,
//! console, traps, events, the tick, address spaces, processes, system calls, the workloads) is
//! shared, so a measurement across modes compares only the mechanism.
//!
//! Modules, in reading order:
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

#[cfg(not(any(feature = "pv", feature = "hvm", test)))]
compile_error!(
    "pick a flavour: build pv-guest with `--features pv` or `--features hvm` (the xtask does this)"
);
#[cfg(all(feature = "pv", feature = "hvm"))]
compile_error!("pick one flavour, not both");

#[cfg(not(test))]
mod start;
mod platform;
mod hypercall_page;
mod console;
mod args;
mod traps;
mod syscall;
mod frames;
mod page_tables;
mod address_space;
mod program;
mod process;
mod bench_calls;
mod events;
mod timer;
mod workloads;

use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::StartInfo;

use crate::args::Args;

/// Exit code of a guest that panicked or took an unexpected exception.
pub const EXIT_PANIC: u8 = 99;
/// Exit code for a command line the guest does not understand.
pub const EXIT_BAD_ARGS: u8 = 98;

/// Called by `start::_start` with the `StartInfo` xen-lite built.
fn kernel_main(info: &'static StartInfo) -> ! {
    platform::init(info);
    if !info.is_valid() {
        println!(
            "start info has magic {:#x}, version {}: not from this xen-lite",
            info.magic, info.version
        );
        platform::shutdown(EXIT_BAD_ARGS);
    }
    let mode = info.mode().map_or("an unknown mode", |mode| mode.name());
    println!(
        "pv-guest ({} flavour) running in {mode} mode as domain {}",
        platform::FLAVOUR,
        info.domain_id
    );
    println!(
        "start info: {} pages ({} KiB), pte base {:#x}, page tables at {:#x} ({} frames), first free gfn {:#x}, stack top {:#x}",
        info.nr_pages,
        info.nr_pages * PAGE_SIZE / 1024,
        info.pte_base,
        info.pt_base,
        info.nr_pt_frames,
        info.first_free_gfn,
        info.stack_top
    );
    frames::init(info.first_free_gfn, info.nr_pages);
    if let Err(errno) = platform::install_traps() {
        println!("cannot install trap handlers ({errno:?})");
        platform::shutdown(EXIT_PANIC);
    }
    let cmdline = info.cmdline().unwrap_or("");
    println!("command line: \"{cmdline}\"");
    let args = match Args::parse(cmdline) {
        Ok(args) => args,
        Err(error) => {
            println!("bad command line: {error}");
            platform::shutdown(EXIT_BAD_ARGS);
        }
    };
    let code = workloads::run(&args, info);
    println!("shutting down with exit code {code}");
    platform::shutdown(code)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!("guest panic at {}:{}: {}", at.file(), at.line(), info.message()),
        None => println!("guest panic: {}", info.message()),
    }
    platform::shutdown(EXIT_PANIC)
}
