//! The hardware-virtualisation modes: the `hvm` guest, unmodified, in a virtual CPU, and the one
//! run loop every hardware backend shares.
//!
//! A backend ([`HardwareVt`]: `crate::vmx::Vmx`, VT-x with EPT; `crate::svm::Svm`, AMD-V with
//! nested paging) knows how to set up a virtual
//! CPU for a domain, enter it and report, in backend-neutral words ([`Exit`]), why it came back.
//! Everything else is here and backend-free: which domain runs (the scheduler every mode
//! shares, `crate::domain::schedule`), time (xen-lite's PIT tick), each domain's virtual PIC
//! and PIT ([`devices`]), interrupt injection, what each exit means ([`exits`]), and
//! hypercalls, which go to the dispatcher every mode shares (`crate::domain::hypercalls`). An
//! hvm domain is a `crate::domain::Domain` with no ring-1 state: its memory is confined by EPT
//! instead of by ring compression and validated page tables ([`nested`]).
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

pub mod devices;
mod exits;
pub mod nested;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::devices::STATUS_BAD_GUEST;
use hypercall_abi::hypercall::{HYPERCALL_STUB_SIZE, VM_EXIT_SLOTS};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::{vm_exit, Mode};

use self::devices::Devices;
use crate::config::{Config, MAX_DOMAINS};
use crate::domain::schedule::Decision;
use crate::domain::{self, Domain, Domains, State};
use crate::domain_builder::{self, DomainSpec};
use crate::entry::TrapFrame;
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::instructions::wait_for_interrupt;
use crate::shadow::pool::Pool;
use crate::shadow::{Pmap, Shadow};
use crate::timer::{self, NS_PER_TICK};

/// Where a domain's virtual CPU starts: what the builder laid out.
pub struct VcpuBoot {
    /// Guest-virtual entry point (long mode, ring 0).
    pub entry: u64,
    /// Initial stack pointer.
    pub stack_top: u64,
    /// Guest-virtual address of `StartInfo`, passed in `rdi`.
    pub start_info: u64,
    /// Guest-physical address of the level-4 page table.
    pub cr3: u64,
    /// First machine frame of the domain's (contiguous) memory: guest-physical 0.
    pub memory: Frame,
    /// Frames of memory.
    pub nr_pages: u64,
    /// The gfn of its `SharedInfo` page.
    pub shared_info_gfn: u64,
    /// Shadow paging (`npt=off`, `ept=off`): the machine address of the shadow root the guest
    /// runs on (then no second-stage tables, and CR3, `invlpg` and page faults are intercepted).
    pub shadow_root: Option<u64>,
}

/// Why the guest stopped running, in terms every backend can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A hypercall (`vmcall`): number in `rax`, arguments in `rdi, rsi, rdx, r10, r8`.
    Hypercall,
    /// `hlt`: the guest waits for an interrupt.
    Halt,
    /// A host interrupt arrived while the guest ran, acknowledged on exit: this vector.
    HostInterrupt(u8),
    /// A host interrupt arrived while the guest ran and is still pending at the PIC (SVM does
    /// not acknowledge it): xen-lite takes it through its own IDT.
    HostInterruptPending,
    /// The guest can take an interrupt now (asked for with interrupt-window exiting).
    InterruptWindow,
    /// The guest used up the time the backend allows between exits (VMX-preemption timer).
    TimeUp,
    /// `cpuid`, leaf in `eax`, subleaf in `ecx`.
    Cpuid,
    /// `in` or `out` of `size` bytes at `port`; the value is in `al`/`ax`/`eax`.
    Io {
        /// The port.
        port: u16,
        /// Bytes: 1, 2 or 4.
        size: u8,
        /// `out` (else `in`).
        write: bool,
    },
    /// `wbinvd` or `invd`: a cache flush (or, worse, a discard) the guest does not need, since
    /// xen-lite gives it no device that could; skipped.
    CacheFlush,
    /// `rdmsr` or `wrmsr`; the MSR is in `ecx`, the value in `edx:eax`.
    Msr {
        /// `wrmsr` (else `rdmsr`).
        write: bool,
    },
    /// Shadow paging: a page fault (hidden, or the guest's own).
    PageFault {
        /// The faulting linear address (CR2).
        address: u64,
        /// The hardware's error code.
        error_code: u64,
    },
    /// Shadow paging: `mov cr3, r64` of `value`.
    Cr3Write {
        /// The value the guest loads.
        value: u64,
    },
    /// Shadow paging: `mov r64, cr3` into general register `register` (encoding number).
    Cr3Read {
        /// The destination register.
        register: u8,
    },
    /// Shadow paging: `invlpg` of `address`.
    Invlpg {
        /// The linear address.
        address: u64,
    },
    /// Something the domain dies for.
    Fatal(Fatal),
}

/// Exits no correct guest causes: each kills the domain with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// A guest-physical address outside the domain's EPT or nested page tables.
    BeyondMemory {
        /// What the CPU reported: `"EPT violation"` or `"nested page fault"`.
        tables: &'static str,
        /// The guest-physical address.
        gpa: u64,
        /// The guest-linear address, when the CPU knows it.
        linear: Option<u64>,
        /// `"read"`, `"write"` or `"instruction fetch"`.
        access: &'static str,
    },
    /// The guest triple-faulted (an exception while delivering a double fault).
    TripleFault,
    /// VM entry refused the guest state or controls: in words, with the raw detail.
    EntryFailed {
        /// What failed.
        what: &'static str,
        /// The SDM's number for it.
        detail: u64,
    },
    /// An intercepted instruction the guest may not use, and why.
    Refused {
        /// The instruction.
        instruction: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// Any other SVM exit code, with its two information words.
    UnexpectedCode {
        /// The exit code.
        code: u64,
        /// The APM's name for it.
        name: &'static str,
        /// EXITINFO1 and EXITINFO2.
        info1: u64,
        info2: u64,
    },
    /// Any other VMX exit reason, with its exit qualification.
    Unexpected {
        /// The basic exit reason.
        reason: u16,
        /// The exit qualification.
        qualification: u64,
    },
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BeyondMemory { tables, gpa, linear: Some(linear), access } => write!(
                f,
                "{tables}: {access} of guest-physical {gpa:#x} (linear {linear:#x}), outside the domain's memory"
            ),
            Self::BeyondMemory { tables, gpa, linear: None, access } => write!(
                f,
                "{tables}: {access} of guest-physical {gpa:#x}, outside the domain's memory"
            ),
            Self::Refused { instruction, why } => write!(f, "{instruction}: {why}"),
            Self::UnexpectedCode { code, name, info1, info2 } => write!(
                f,
                "unexpected #VMEXIT {code:#x} ({name}), EXITINFO1 {info1:#x}, EXITINFO2 {info2:#x}"
            ),
            Self::TripleFault => f.write_str("triple fault (an exception it could not deliver)"),
            Self::EntryFailed { what, detail } => write!(f, "VM entry failed: {what} ({detail})"),
            Self::Unexpected { reason, qualification } => write!(
                f,
                "unexpected VM exit {reason} ({}), qualification {qualification:#x}",
                vm_exit::name(reason)
            ),
        }
    }
}

/// A VM exit: the basic reason (for the counters) and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The VMX basic exit reason, the slot it is counted in (the SVM backend maps its codes
    /// onto these: `hypercall_abi::vm_exit::svm::slot`).
    pub reason: u16,
    /// What happened.
    pub exit: Exit,
}

/// A hardware virtualisation backend: VMX (`crate::vmx::Vmx`) or SVM (`crate::svm::Svm`). It owns the per-domain hardware
/// state (VMCS or VMCB) and nothing of the scheduling, devices or hypercalls.
pub trait HardwareVt {
    /// One domain's virtual CPU.
    type Vcpu;

    /// The mode this backend runs (`vmx`, `svm`).
    const MODE: Mode;

    /// Where the guest kernel runs, in the vendor's words (for the log).
    const GUEST_WORLD: &'static str;

    /// The hypercall-page stub for `number`: load it into `eax`, trap to xen-lite, return.
    fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize];

    /// A virtual CPU that starts as `boot` says, with memory mapped exactly as it says.
    fn create_vcpu(&mut self, boot: &VcpuBoot) -> Result<Self::Vcpu, &'static str>;

    /// One of xen-lite's ticks lasts `tsc` time-stamp-counter cycles: the backend may use it to
    /// bound how long a guest runs between exits whatever the guest does with interrupts.
    fn set_tick_length(&mut self, tsc: u64);

    /// Makes `vcpu` the one [`HardwareVt::run`] enters (on a domain switch).
    fn load(&mut self, vcpu: &mut Self::Vcpu);

    /// Enters the guest with the general registers in `regs` until its next exit; saves them
    /// back, with `rip`, `rsp` and `rflags` too (for messages).
    fn run(&mut self, vcpu: &mut Self::Vcpu, regs: &mut TrapFrame) -> ExitInfo;

    /// Moves the guest past the instruction that caused the last exit.
    fn skip_instruction(&mut self, vcpu: &mut Self::Vcpu);

    /// Whether the guest can take an external interrupt at the next entry (IF set, no
    /// `sti`/`mov ss` shadow, nothing else being injected).
    fn interruptible(&mut self, vcpu: &mut Self::Vcpu) -> bool;

    /// Delivers interrupt `vector` at the next entry.
    fn inject_interrupt(&mut self, vcpu: &mut Self::Vcpu, vector: u8);

    /// Asks for an exit as soon as the guest can take an interrupt (or stops asking).
    fn request_interrupt_window(&mut self, vcpu: &mut Self::Vcpu, on: bool);

    /// `rdmsr` of `msr` by the guest, if the backend virtualises it.
    fn read_msr(&mut self, vcpu: &mut Self::Vcpu, msr: u32) -> Option<u64>;

    /// `wrmsr` of `value` to `msr` by the guest; `Err` if the backend does not virtualise it
    /// or refuses the value (with why).
    fn write_msr(
        &mut self,
        vcpu: &mut Self::Vcpu,
        msr: u32,
        value: u64,
    ) -> Result<(), &'static str>;

    /// Shadow paging: the guest now runs on the shadow root at machine address `root`, and its
    /// TLB entries go.
    fn set_shadow_root(&mut self, vcpu: &mut Self::Vcpu, root: u64);

    /// Shadow paging: the shadow changed; the guest's TLB entries go before it runs again.
    fn flush_guest_tlb(&mut self, vcpu: &mut Self::Vcpu);

    /// The guest's CR0.WP and EFER.NXE, which decide what its tables allow.
    fn paging_controls(&mut self, vcpu: &mut Self::Vcpu) -> crate::shadow::walk::Controls;

    /// Shadow paging: delivers a page fault with `error_code` at `address` (the guest's CR2) at
    /// the next entry, as the guest's own MMU would have raised it.
    fn inject_page_fault(&mut self, vcpu: &mut Self::Vcpu, error_code: u64, address: u64);
}

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
    shadows: [Option<(Shadow<Pool>, Pmap)>; MAX_DOMAINS],
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
            let pool = Pool::allocate(config.shadow_pool).unwrap_or_else(|why| {
                log::error!("{mode}: cannot shadow dom{id}'s page tables: {why}");
                exit_emulator(STATUS_BAD_GUEST)
            });
            let shadow = Shadow::new(pool, Pool::recycle, boot.cr3).expect("a pool holds a root");
            boot.shadow_root = Some(shadow.root());
            log::info!(
                "{mode}: dom{id}: shadow paging, {} tables in its pool; its CR3 {:#x} (guest-physical) runs on shadow root {:#x}",
                config.shadow_pool,
                boot.cr3,
                shadow.root()
            );
            hvm.shadows[id] = Some((shadow, Pmap { base: base.addr(), pages: config.domain_pages }));
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
