//! # xen-lite
//!
//! An educational, Xen-style, ring-compression paravirtual hypervisor for x86-64.
//!
//! The bootloader (`bootloader` 0.11) loads this ELF into the top of the address space and
//! calls [`kernel_main`] in 64-bit ring 0 with a [`BootInfo`]: the memory map, and the ramdisk,
//! which carries the *boot bundle* (command line and guest images, `hypercall_abi::bundle`).
//! xen-lite takes over the CPU tables, memory and console, reads the bundle, and starts the
//! domains in the mode the command line names. `lecture-notes/01-how-xen-lite-boots.md`
//! follows this path step by step.
//!
//! It runs `pv` mode (guest kernels in ring 1: hypercalls, bounced traps, virtual interrupts,
//! timers, validated direct paging; see [`pv`]), `vmx` mode (the `hvm` guest in VMX non-root
//! mode with EPT, through the backend-neutral run loop in [`hvm`] and the VT-x backend in
//! [`vmx`]), `svm` mode (the same guest and run loop under AMD-V with nested paging: [`svm`])
//! and `native` mode (the `hvm` guest gets the machine and xen-lite steps aside).
//! Whatever the mode, a guest is a [`domain::Domain`], scheduled, served and summarised by the
//! same code ([`domain`]).
//!
//! Modules, in reading order (the parts of the lecture, one group each):
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

// Boot and machine access: the only privileged instructions, the console, leaving the
// emulator, the command line.
mod instructions;
mod serial;
mod console;
mod exit;
mod config;
// Memory: the virtual layout, machine frames, xen-lite's own page tables.
mod memory_map;
mod frame;
mod paging;
// The CPU tables and the ways in: GDT and TSS, IDT, exception and `syscall` entry, the
// switcher pages every guest maps, the timer, CPU features.
mod stack;
mod switcher;
mod gdt;
mod entry;
mod trap;
mod idt;
mod syscall;
mod timer;
mod cpu;
mod decode;
// Domains, in every mode: the table, the scheduler, the hypercall dispatcher, guest memory,
// the auditor; and the builder that lays a kernel image out in a domain's frames.
mod domain;
mod domain_builder;
// pv: ring compression.
mod pv;
// hvm: the unmodified kernel in a virtual CPU; the run loop and devices, then the VT-x and AMD-V backends.
mod hvm;
mod shadow;
mod vmx;
mod svm;
// trap: the same kernel in ring 1, by trap-and-emulate (a software backend of the same loop).
mod trapmode;
// native: the kernel alone on the machine.
mod native;
#[cfg(test)]
mod fuzz_tests;

use bootloader_api::info::MemoryRegionKind;
use bootloader_api::BootInfo;
use hypercall_abi::bundle::Bundle;
use hypercall_abi::devices::STATUS_BAD_BUNDLE;
use hypercall_abi::start_info::MAX_MODULES;
use hypercall_abi::Mode;
use log::LevelFilter;

use crate::config::{Config, Selftest};
use crate::exit::exit_emulator;

#[cfg(not(test))]
bootloader_api::entry_point!(kernel_main, config = &memory_map::BOOTLOADER_CONFIG);

/// The first Rust code to run: the boot sequence.
fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    console::init(LevelFilter::Info);
    log::info!("xen-lite {} booting", env!("CARGO_PKG_VERSION"));
    // Every entry loads this CR3; until xen-lite has its own tables it is the bootloader's.
    switcher::set_hypervisor_cr3(instructions::read_cr3());
    instructions::enable_write_protect();
    gdt::init();
    idt::init();

    let mut frames = frame::lock();
    let usable = boot_info.memory_regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable);
    let regions =
        usable.map(|region| frames.add_region(region.start, region.end)).filter(|&n| n > 0).count();
    log::info!("memory: {} MiB free in {regions} regions", (frames.free_count() * 4096) >> 20);
    let l4 = frames.alloc().unwrap_or_else(|| panic!("no frame for xen-lite's page table"));
    drop(frames);
    paging::adopt_boot_tables(l4);
    log::info!("paging: own level-4 table at {l4}, holding only the reserved range");

    let cpu = cpu::probe();
    cpu::log_report(&cpu);
    if let Some((revision, control)) = cpu.vmx {
        vmx::log_root_operation(revision, control);
    }
    if cpu.svm {
        svm::log_features();
    }

    let bundle = read_bundle(boot_info);
    let config = config::parse(bundle.cmdline()).unwrap_or_else(|error| {
        log::error!("fatal: bad command line in boot bundle: {error}");
        exit_emulator(STATUS_BAD_BUNDLE)
    });
    console::set_level(config.log_level);
    cpu::set_umip(&cpu, config.umip);
    log::info!(
        "bundle: {} images, mode={}, {} domain(s)",
        bundle.len(),
        config.mode.name(),
        config.domain_count
    );
    if let Some(selftest) = config.selftest {
        provoke(selftest);
    }
    start(&config, &bundle)
}

/// Finds and checks the boot bundle in the ramdisk.
fn read_bundle(boot_info: &'static BootInfo) -> Bundle<'static> {
    let Some(address) = boot_info.ramdisk_addr.into_option() else {
        log::error!("fatal: bad boot bundle: the bootloader loaded no ramdisk");
        exit_emulator(STATUS_BAD_BUNDLE);
    };
    // SAFETY: the bootloader mapped the ramdisk at this address with this length, read-only to
    // us by convention, for the lifetime of the system.
    let bytes = unsafe {
        core::slice::from_raw_parts(address as *const u8, boot_info.ramdisk_len as usize)
    };
    Bundle::parse(bytes).unwrap_or_else(|error| {
        log::error!("fatal: bad boot bundle: {error}");
        exit_emulator(STATUS_BAD_BUNDLE)
    })
}

/// Starts the domains in the configured mode.
fn start(config: &Config<'_>, bundle: &Bundle<'static>) -> ! {
    // Every image that is not a guest kernel is a module for every domain (user programs).
    let mut modules = [("", &[][..]); MAX_MODULES];
    let mut count = 0;
    for entry in bundle.entries().filter(|e| !e.name.starts_with("guest-")) {
        if count == MAX_MODULES {
            log::error!("fatal: the bundle holds more than {MAX_MODULES} modules");
            exit_emulator(STATUS_BAD_BUNDLE);
        }
        modules[count] = (entry.name, entry.data);
        count += 1;
    }
    let modules = &modules[..count];
    match config.mode {
        Mode::Native => {
            let memory = frame::alloc_contiguous(config.domain_pages);
            native::run(config, bundle.find(config.kernel), memory, modules)
        }
        Mode::Pv => pv::start(config, bundle.find(config.kernel), modules),
        Mode::Vmx => {
            let Some((revision, control)) = cpu::probe().vmx else {
                log::error!("fatal: mode=vmx needs a CPU with VMX (Bochs here; QEMU TCG has none)");
                exit_emulator(STATUS_BAD_BUNDLE)
            };
            let vmx = vmx::Vmx::enable(revision, control).unwrap_or_else(|error| {
                log::error!("fatal: cannot use VMX: {error}");
                exit_emulator(STATUS_BAD_BUNDLE)
            });
            hvm::start(vmx, config, bundle.find(config.kernel), modules)
        }
        Mode::Trap => {
            hvm::start(trapmode::Trap::new(), config, bundle.find(config.kernel), modules)
        }
        Mode::Svm => {
            let svm = svm::Svm::enable().unwrap_or_else(|error| {
                log::error!("fatal: mode=svm cannot run: {error}");
                exit_emulator(STATUS_BAD_BUNDLE)
            });
            hvm::start(svm, config, bundle.find(config.kernel), modules)
        }
    }
}

/// Faults on purpose, so tests can check the fatal path (`selftest=` on the command line).
fn provoke(selftest: Selftest) {
    log::info!("selftest: provoking {selftest:?} in xen-lite");
    match selftest {
        Selftest::Panic => panic!("selftest panic requested on the command line"),
        // SAFETY: deliberately raises #UD; the handler reports it and ends the run.
        Selftest::InvalidOpcode => unsafe { core::arch::asm!("ud2") },
        Selftest::PageFault => {
            // An address in the lower half, which xen-lite's own table leaves unmapped.
            let unmapped = 0x1000 as *const u64;
            // SAFETY: deliberately raises #PF; the handler reports it and ends the run.
            let value = unsafe { core::ptr::read_volatile(unmapped) };
            log::error!("selftest: read {value:#x} from an unmapped address?");
        }
        Selftest::DirtyStack => {
            let word = (gdt::ist_top(gdt::PAGE_FAULT_IST) - 4096) as *mut u64;
            // SAFETY: the lowest word of the #PF IST page, a stack of xen-lite's that nothing
            // uses at boot; the auditor must report it (invariant 6).
            unsafe { word.write_volatile(0x005e_c7e7) };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => console::fatal_line(format_args!(
            "FATAL: panic in xen-lite at {}:{}: {}",
            at.file(),
            at.line(),
            info.message()
        )),
        None => console::fatal_line(format_args!("FATAL: panic in xen-lite: {}", info.message())),
    }
    exit::leave(hypercall_abi::devices::STATUS_HYPERVISOR_FAULT)
}
