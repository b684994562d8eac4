//! What a hardware backend is to the run loop: the [`HardwareVt`] trait, where each virtual CPU
//! starts ([`VcpuBoot`]), and the backend-neutral words it reports an exit in ([`Exit`],
//! [`Fatal`], [`ExitInfo`]). `crate::vmx` and `crate::svm` implement it; `super::exits`
//! handles what they report.

use core::fmt;

use hypercall_abi::hypercall::HYPERCALL_STUB_SIZE;
use hypercall_abi::{vm_exit, Mode};

use crate::entry::TrapFrame;
use crate::frame::Frame;

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
    /// `mode=trap`: an instruction or event the backend emulated itself (counted; nothing
    /// is left for the run loop to do).
    Emulated,
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
    /// `mode=trap`: an emulated instruction asked for what the virtual CPU refuses.
    Emulation {
        /// The instruction.
        instruction: &'static str,
        /// The rule.
        rule: &'static str,
        /// The offending value.
        value: u64,
    },
    /// `mode=trap`: an event could not be delivered through the guest's IDT.
    Delivery {
        /// The vector.
        vector: u8,
        /// Why not.
        why: &'static str,
        /// The error code or address involved.
        detail: u64,
    },
    /// `mode=trap`: an interrupt has waited `ticks` on a clear virtual IF; the last
    /// instruction xen-lite emulated was `last` at `rip`.
    Watchdog {
        /// How long.
        ticks: u64,
        /// The instruction.
        last: &'static str,
        /// Its address.
        rip: u64,
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
            Self::Emulation { instruction, rule, value } => {
                write!(f, "{instruction} with {value:#x}: {rule}")
            }
            Self::Delivery { vector, why, detail } => {
                write!(f, "cannot deliver vector {vector} ({detail:#x}): {why}")
            }
            Self::Watchdog { ticks, last, rip } => write!(
                f,
                "watchdog: an interrupt has waited {ticks} ticks on a clear virtual IF; the last instruction xen-lite emulated was `{last}` at rip {rip:#x} (a `popfq` that set IF again would not trap in ring 1: sensitive, not privileged)"
            ),
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

    /// What every shadow root holds in the reserved level-4 slots: nothing (the guest has them
    /// all) unless the backend runs guests on xen-lite's own IDT (`mode=trap`).
    fn host_slots() -> crate::shadow::HostSlots {
        crate::shadow::HostSlots::default()
    }

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
