//! The hardware-virtualisation modes: the `hvm` guest, unmodified, in a virtual CPU, and the one
//! run loop every hardware backend shares.
//!
//! A backend ([`HardwareVt`], in `backend.rs`: `crate::vmx::Vmx`, VT-x with EPT;
//! `crate::svm::Svm`, AMD-V with nested paging; `crate::trapmode::Trap`, no hardware support at
//! all, the kernel in ring 1 by trap-and-emulate) knows how to set up a virtual CPU for a domain,
//! enter it and report, in backend-neutral words ([`Exit`]), why it came back. Everything else
//! is here and backend-free: which domain runs (the scheduler every mode shares,
//! `crate::domain::schedule`), time (xen-lite's PIT tick), each domain's virtual PIC and PIT
//! ([`devices`]), interrupt injection, what each exit means (`exits.rs`), and hypercalls, which
//! go to the dispatcher every mode shares (`crate::domain::hypercalls`). An hvm domain is a
//! `crate::domain::Domain` with no ring-1 state: its memory is confined by second-stage tables
//! ([`nested`]: EPT or NPT) instead of by ring compression and validated page tables, or, with
//! `ept=off`/`npt=off`, by shadow page tables (`crate::shadow`), the pre-2008 way.
//!
//! One trip round [`Hvm::run`]:
//!
//! 1. account for host timer ticks since the last trip: advance every domain's virtual PIT,
//!    wake domains halted on an interrupt that is now deliverable, shorten the time slice;
//! 2. pick the domain to run (switching, idling or finishing as `pv` does);
//! 3. offer it a pending virtual interrupt: inject it if the guest can take one now, or ask to
//!    exit as soon as it can (interrupt-window exiting);
//! 4. enter the guest until its next VM exit, count the exit by reason, and handle it.
//!
//! A user `syscall` inside the guest never appears here: it goes to the guest kernel's own
//! LSTAR entry in non-root mode, which is the point of the `vmx` row of DESIGN §3.

mod backend;
pub mod devices;
mod exits;
pub mod nested;
pub mod uart;

pub use backend::{Exit, ExitInfo, Fatal, HardwareVt, VcpuBoot};

use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::devices::STATUS_BAD_GUEST;
use hypercall_abi::hypercall::VM_EXIT_SLOTS;
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::start_info::{START_FLAG_CONSOLE_UART, START_FLAG_PATCHED};
use hypercall_abi::vm_exit;

use self::devices::Devices;
use crate::config::{Config, MAX_DOMAINS};
use crate::domain::schedule::Decision;
use crate::domain::{self, Domain, Domains, State};
use crate::domain_builder::{self, DomainSpec};
use crate::entry::TrapFrame;
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::instructions::wait_for_interrupt;
use crate::shadow::{DomainShadow, Pmap};
use crate::timer::{self, NS_PER_TICK};

/// Set once the domains run: host timer interrupts while idle then belong to [`Hvm::run`].
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether `vmx`/`svm` mode is running.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// A host timer interrupt taken while idle (through xen-lite's IDT): count it; the run loop
/// accounts for it on its next trip.
pub fn host_timer_interrupt() {
    timer::tick();
}

/// The run loop's state besides the domains (which live in [`Domains`], as in every mode).
struct Hvm<V: HardwareVt> {
    vt: V,
    vcpus: [Option<V::Vcpu>; MAX_DOMAINS],
    /// Shadow paging: each domain's shadow tables and pmap (`None` with EPT or NPT).
    shadows: [Option<DomainShadow>; MAX_DOMAINS],
    devices: [Devices; MAX_DOMAINS],
    /// Host ticks accounted for so far.
    ticks_seen: u64,
}

/// Builds every domain the command line names under backend `vt`, and runs them.
pub fn start<V: HardwareVt>(
    vt: V,
    config: &Config<'_>,
    image: Option<&[u8]>,
    modules: &[(&str, &[u8])],
) -> ! {
    let mode = V::MODE.name();
    let Some(image) = image else {
        log::error!("{mode}: no image '{}' in the boot bundle", config.kernel);
        exit_emulator(hypercall_abi::devices::STATUS_BAD_BUNDLE);
    };
    let mut hvm = Hvm {
        vt,
        vcpus: [const { None }; MAX_DOMAINS],
        shadows: [const { None }; MAX_DOMAINS],
        devices: [const { Devices::new() }; MAX_DOMAINS],
        ticks_seen: 0,
    };
    let mut domains = domain::lock();
    if config.audit {
        domain::audit::enable();
    }
    for (id, cmdline) in config.domains().iter().enumerate() {
        let base = domain::allocate_memory(config, id);
        let mut boot = build::<V>(id as u32, config, cmdline, image, modules, base);
        if !config.nested_paging {
            let pmap = Pmap { base: base.addr(), pages: config.domain_pages };
            let shadow = DomainShadow::allocate(config, id, pmap, boot.cr3, V::host_slots());
            boot.shadow_root = Some(shadow.tables.root());
            hvm.shadows[id] = Some(shadow);
        }
        let vcpu = hvm.vt.create_vcpu(&boot).unwrap_or_else(|why| {
            log::error!("{mode}: cannot create a virtual CPU for dom{id}: {why}");
            exit_emulator(STATUS_BAD_GUEST)
        });
        hvm.vcpus[id] = Some(vcpu);
        let regs = TrapFrame { rdi: boot.start_info, ..TrapFrame::default() };
        let memory = (base, config.domain_pages);
        let domain = Domain::new(id as u32, V::MODE, memory, boot.shared_info_gfn, regs, None);
        domains.domains[id] = Some(domain);
        log::info!(
            "{mode}: dom{id}: {} frames at machine {:#x} (guest-physical 0), entry {:#x}, command line \"{cmdline}\"",
            config.domain_pages,
            base.addr(),
            boot.entry
        );
    }
    // Host interrupts return through `trap_return`, which loads this CR3.
    crate::switcher::set_return_cr3(crate::switcher::hypervisor_cr3());
    ACTIVE.store(true, Ordering::Relaxed);
    timer::init();
    let tsc = tsc_per_tick();
    hvm.vt.set_tick_length(tsc);
    hvm.ticks_seen = timer::ticks();
    log::info!("{mode}: one tick is {tsc} TSC cycles; entering dom0 in {}", V::GUEST_WORLD);
    hvm.run(&mut domains)
}

/// Measures how many TSC cycles one of xen-lite's ticks lasts, over ten ticks of the PIT (as Xen
/// calibrates its TSC against the PIT).
fn tsc_per_tick() -> u64 {
    const TICKS: u64 = 10;
    let first = timer::ticks();
    while timer::ticks() == first {
        wait_for_interrupt();
    }
    let start = crate::instructions::rdtsc();
    while timer::ticks() < first + 1 + TICKS {
        wait_for_interrupt();
    }
    (crate::instructions::rdtsc() - start) / TICKS
}

/// Builds domain `id` in the frames at `base`: guest-physical addresses in its page tables,
/// the backend's stubs in its hypercall page.
fn build<V: HardwareVt>(
    id: u32,
    config: &Config<'_>,
    cmdline: &str,
    image: &[u8],
    modules: &[(&str, &[u8])],
    base: Frame,
) -> VcpuBoot {
    let pages = config.domain_pages;
    // SAFETY: the frames were just allocated for this domain (`domain::allocate_memory`) and are
    // reached only through this slice until the domain runs.
    let memory = unsafe { domain_builder::domain_memory(base, pages) };
    let spec = DomainSpec {
        domain_id: id,
        mode: V::MODE,
        cmdline,
        image,
        pte_base: 0, // EPT turns guest-physical into machine addresses
        hypervisor_slots: None,
        read_only_page_tables: false,
        start_flags: if config.console_uart { START_FLAG_CONSOLE_UART } else { 0 }
            | if config.patch { START_FLAG_PATCHED } else { 0 },
        modules,
    };
    let built = domain_builder::build(memory, &spec).unwrap_or_else(|error| {
        log::error!("{}: cannot build dom{id} from '{}': {error}", V::MODE.name(), config.kernel);
        exit_emulator(STATUS_BAD_GUEST)
    });
    domain_builder::fill_hypercall_page(
        &mut memory[built.hypercall_page_gfn as usize],
        V::hypercall_stub,
    );
    VcpuBoot {
        entry: built.entry,
        stack_top: built.stack_top,
        start_info: built.start_info,
        cr3: built.l4_gfn * PAGE_SIZE,
        memory: base,
        nr_pages: pages,
        shared_info_gfn: built.shared_info_gfn,
        shadow_root: None,
    }
}

impl<V: HardwareVt> Hvm<V> {
    /// The loop described in the module documentation; ends the run when every domain has.
    fn run(&mut self, domains: &mut Domains) -> ! {
        loop {
            self.account_time(domains);
            let Some(c) = self.choose(domains) else {
                wait_for_interrupt(); // idle: every live domain is halted
                continue;
            };
            self.offer_interrupt(domains, c);
            let vcpu = self.vcpus[c].as_mut().expect("every domain has a vCPU");
            let info = self.vt.run(vcpu, &mut domains.domain(c).regs);
            let slot = usize::from(info.reason).min(VM_EXIT_SLOTS - 1);
            let domain = domains.domain(c);
            domain.stats.vm_exits[slot] += 1;
            log::trace!(
                "dom{c}: VM exit {} ({}) at rip {:#x}",
                info.reason,
                vm_exit::name_in(V::MODE, info.reason),
                domain.regs.rip
            );
            self.handle(domains, c, info.exit);
            if domain::audit::enabled() {
                domain::audit::run(domains, Some(c), false, true);
            }
        }
    }

    /// Host ticks since the last trip: virtual PITs advance, halted domains with a
    /// deliverable interrupt wake, the running domain's slice shrinks.
    fn account_time(&mut self, domains: &mut Domains) {
        let now = timer::ticks();
        let elapsed = now - self.ticks_seen;
        if elapsed == 0 {
            return;
        }
        self.ticks_seen = now;
        for index in 0..MAX_DOMAINS {
            let Some(domain) = domains.find(index).filter(|d| !d.is_dead()) else { continue };
            domain.shared().system_time_ns = now * NS_PER_TICK;
            self.devices[index].advance(elapsed * NS_PER_TICK);
            if domain.state == State::Blocked && self.devices[index].deliverable().is_some() {
                domain.state = State::Runnable;
            }
        }
        domains.slice_left = domains.slice_left.saturating_sub(elapsed);
    }

    /// The domain to enter now (the scheduler's decision; on a switch its vCPU is loaded);
    /// `None` to idle.
    fn choose(&mut self, domains: &mut Domains) -> Option<usize> {
        let devices = &self.devices;
        let decision = domains.schedule(
            |_, index| devices[index].can_interrupt(),
            "halted forever: its virtual PIC has IRQ 0 masked or its PIT was never programmed",
        );
        match decision {
            Decision::Stay(c) => Some(c),
            Decision::Switch { to, .. } => {
                let vcpu = self.vcpus[to].as_mut().expect("every domain has a vCPU");
                self.vt.load(vcpu);
                Some(to)
            }
            Decision::Idle => None,
        }
    }

    /// Injects domain `c`'s pending virtual interrupt if the guest can take it now; else asks
    /// for an exit as soon as it can.
    fn offer_interrupt(&mut self, domains: &mut Domains, c: usize) {
        let vcpu = self.vcpus[c].as_mut().expect("every domain has a vCPU");
        match self.devices[c].deliverable() {
            Some(vector) if self.vt.interruptible(vcpu) => {
                self.vt.inject_interrupt(vcpu, vector);
                self.devices[c].acknowledge();
                domains.domain(c).stats.events_delivered += 1;
                self.vt.request_interrupt_window(vcpu, false);
            }
            Some(_) => self.vt.request_interrupt_window(vcpu, true),
            None => self.vt.request_interrupt_window(vcpu, false),
        }
    }
}
