//! `mode=trap`: Popek and Goldberg's trap-and-emulate, on x86. The `hvm` kernel, unmodified
//! (the binary that runs natively and under VMX), runs in ring 1 on shadow paging. Every
//! privileged instruction it executes raises #GP into xen-lite, which decodes it
//! (`decode.rs`) and emulates it against a virtual CPU (`vcpu.rs`); interrupts, exceptions and
//! `syscall` reach it through its own IDT and LSTAR with the frames the hardware would push
//! (`deliver.rs`). To the run loop of the hardware modes (`crate::hvm`) this is one more
//! backend, [`Trap`]: a software VT, whose "VM exits" are traps. The devices, the scheduler,
//! the shadow tables and the exit handlers are the ones `vmx` and `svm` use.
//!
//! What it cannot do is the lesson (lecture note 09): the instructions that are sensitive
//! without being privileged run in ring 1 without a trap and give the wrong answer. `popfq`
//! silently keeps the real IF, `pushfq` shows it, `sgdt`/`sidt`/`smsw` show xen-lite's values
//! (unless `umip=on`, which makes them trap), `mov` from CS shows RPL 1, `cpuid` shows the host.
//! A kernel that waits for an interrupt after restoring IF with `popfq` waits forever: the
//! watchdog ends it with a line naming the last instruction xen-lite emulated and the virtual
//! IF.
//!
//! One trip into the guest ([`Trap::run`]): deliver what is pending (an exception the last
//! trap raised, or the interrupt the run loop injected), enter ring 1 through the switcher
//! (`entry.rs`: `trap_return` on the shadow root), and come back on the next trap, which the
//! trap handler hands here (`guest_trapped`) instead of to a pv domain.

mod decode;
mod deliver;
mod entry;
mod memory;
mod vcpu;

pub use self::entry::guest_trapped;

use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::hypercall::{HYPERCALL_STUB_SIZE, SYSCALL_BOUNCE_VECTOR};
use hypercall_abi::layout::selectors::{FLAT_RING1_CS, FLAT_RING1_DS};
use hypercall_abi::{vm_exit, Mode};

use self::decode::{decode, name, Instruction};
use self::deliver::{deliver, guest_ring, Event};
use self::memory::GuestView;
use self::vcpu::{emulate, Guest, Outcome, Refusal, VirtualCpu, RFLAGS_IF};
use crate::entry::TrapFrame;
use crate::hvm::{Exit, ExitInfo, Fatal, HardwareVt, VcpuBoot};
use crate::instructions::wrmsr;
use crate::shadow::walk::Controls;
use crate::shadow::{HostSlots, Pmap};
use crate::timer::{self, TIMER_VECTOR};

/// Set once the domains run: from then on traps from rings 1 and 3 come here.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether `mode=trap` is running.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Ticks an interrupt may wait on a clear virtual IF before the watchdog ends the domain.
const WATCHDOG_TICKS: u64 = 2000;
/// The vectors a trap arrives on.
const BREAKPOINT: u64 = 3;
const OVERFLOW: u64 = 4;
const NOT_PRESENT: u64 = 11;
const GENERAL_PROTECTION: u64 = 13;
const PAGE_FAULT: u64 = 14;
/// A #GP or #NP error code with this bit names an IDT entry: `int n` through a gate xen-lite
/// keeps closed.
const ERROR_CODE_IDT: u64 = 2;

/// The backend: all its state is per vCPU.
pub struct Trap;

/// One domain's virtual CPU.
pub struct TrapVcpu {
    cpu: VirtualCpu,
    /// Where the first entry goes: the kernel's entry point and stack.
    boot: Option<(u64, u64)>,
    /// The shadow root the CPU runs the guest on.
    shadow_root: u64,
    /// The guest's own CR3 (guest-physical), for xen-lite's reads of its memory.
    guest_cr3: u64,
    pmap: Pmap,
    /// An exception the last trap raised, or the interrupt the run loop injected.
    pending: Option<Event>,
    /// Bytes of the instruction the last exit was for.
    length: u8,
    /// Bytes to move `rip` on before the next entry: the run loop finished the instruction.
    skip: u8,
    /// The last instruction emulated and its `rip`, for the watchdog's line.
    last: (&'static str, u64),
    /// The tick since which an interrupt has waited on a clear virtual IF.
    waiting_since: Option<u64>,
    /// The real GS base the guest runs with (`swapgs`, `wrmsr`).
    gs_base: u64,
    /// The real FS base.
    fs_base: u64,
}

impl Trap {
    /// The backend; maps the switcher into the guests' address spaces as `pv` does.
    pub fn new() -> Trap {
        crate::pv::map_switcher();
        crate::syscall::init(crate::entry::syscall_entry_address());
        ACTIVE.store(true, Ordering::Relaxed);
        Trap
    }
}

/// An exit counted in VMX basic-reason `slot` (the run loop's counters speak VMX).
fn exit(reason: u16, exit: Exit) -> ExitInfo {
    ExitInfo { reason, exit }
}

/// The VMX reason an emulated instruction would have exited for, where VMX has one; the rest
/// (`cli`, `sti`, `iretq`, ...) are #GP traps, counted as exceptions.
fn reason_of(instruction: &Instruction) -> u16 {
    match instruction {
        Instruction::Hlt => vm_exit::HLT,
        Instruction::Io { .. } => vm_exit::IO_INSTRUCTION,
        Instruction::MovFromCr { .. } | Instruction::MovToCr { .. } | Instruction::Clts => {
            vm_exit::CR_ACCESS
        }
        Instruction::MovFromDr { .. } | Instruction::MovToDr { .. } => 29,
        Instruction::Wrmsr => vm_exit::WRMSR,
        Instruction::Rdmsr => vm_exit::RDMSR,
        Instruction::Invlpg(_) => vm_exit::INVLPG,
        Instruction::CacheFlush => vm_exit::WBINVD,
        Instruction::Lgdt(_) | Instruction::Lidt(_) => 46,
        Instruction::Lldt(_) | Instruction::Ltr(_) => 47,
        _ => vm_exit::EXCEPTION_OR_NMI,
    }
}

impl TrapVcpu {
    /// What a trap from the guest (in `regs`, with the real CR2 of a page fault) means.
    fn trapped(&mut self, regs: &mut TrapFrame, cr2: u64) -> ExitInfo {
        let emulated = exit(vm_exit::EXCEPTION_OR_NMI, Exit::Emulated);
        if guest_ring(regs) == 3 {
            self.cpu.interrupts = true; // ring 3 cannot clear IF (IOPL is 0)
        }
        let vector = regs.vector;
        let error_code = regs.error_code;
        log::trace!(
            "trap: vector {vector:#x} error {error_code:#x} at {:#x}:{:#x} rsp {:#x}, virtual IF {}",
            regs.cs,
            regs.rip,
            regs.rsp,
            self.cpu.interrupts
        );
        if vector == u64::from(TIMER_VECTOR) || vector == u64::from(timer::SPURIOUS_VECTOR) {
            return exit(vm_exit::EXTERNAL_INTERRUPT, Exit::HostInterrupt(vector as u8));
        }
        if vector == SYSCALL_BOUNCE_VECTOR {
            self.last = ("syscall", regs.rip);
            let outcome = deliver::syscall(&mut self.cpu, regs);
            return self.outcome(outcome, emulated);
        }
        if vector == PAGE_FAULT {
            return exit(vm_exit::EXCEPTION_OR_NMI, Exit::PageFault { address: cr2, error_code });
        }
        let software = (vector == GENERAL_PROTECTION || vector == NOT_PRESENT)
            && error_code & ERROR_CODE_IDT != 0;
        if software {
            // `int n` through a gate xen-lite keeps closed: the guest's gate decides. The
            // vector is read from the instruction (QEMU 7.2 reports `int 0x80` as #GP(0x802),
            // the SDM and Bochs as #GP(0x402)); the frame shows the instruction after it.
            let mut bytes = [0u8; 2];
            let _ = GuestView::of(self).read(regs.rip, &mut bytes);
            let (vector, length) = match bytes {
                [0xcd, vector] => (vector, 2),
                [0xcc, _] => (3, 1),
                [0xce, _] => (4, 1),
                _ => ((error_code >> 3) as u8, 2),
            };
            regs.rip += length;
            self.last = ("int n", regs.rip - length);
            self.pending = Some(Event { vector, error_code: None, software: true });
            return emulated;
        }
        if vector == GENERAL_PROTECTION && guest_ring(regs) == 0 {
            return self.privileged(regs);
        }
        if vector < 32 && vector != 2 && vector != 8 && vector != 18 {
            // The guest's own exception (a user #GP, a #UD, #DE, #BP...), for its own IDT.
            let has_code = hypercall_abi::frame::has_error_code(vector);
            let software = vector == BREAKPOINT || vector == OVERFLOW;
            let error_code = has_code.then_some(error_code);
            self.pending = Some(Event { vector: vector as u8, error_code, software });
            return emulated;
        }
        if vector == u64::from(hypercall_abi::hypercall::HYPERCALL_VECTOR) {
            // `int 0x82` from the kernel (the gate admits ring 1): a software interrupt.
            self.pending = Some(Event { vector: vector as u8, error_code: None, software: true });
            return emulated;
        }
        let fatal = Fatal::Refused {
            instruction: "an interrupt",
            why: "xen-lite delivers no other vector to a trap-mode guest",
        };
        exit(vm_exit::EXCEPTION_OR_NMI, Exit::Fatal(fatal))
    }

    /// A #GP from the guest kernel: the privileged instruction at `rip`, emulated.
    fn privileged(&mut self, regs: &mut TrapFrame) -> ExitInfo {
        let mut bytes = [0u8; 15];
        let mut guest = GuestView::of(self);
        let mut fetched = 0;
        while fetched < bytes.len()
            && guest.read(regs.rip + fetched as u64, &mut bytes[fetched..=fetched]).is_ok()
        {
            fetched += 1;
        }
        let Some(decoded) = decode(&bytes[..fetched]) else {
            // Not a privileged instruction: the kernel's own #GP (a bad selector, a
            // non-canonical address), which it takes through its own IDT as natively.
            self.pending =
                Some(Event { vector: 13, error_code: Some(regs.error_code), software: false });
            return exit(vm_exit::EXCEPTION_OR_NMI, Exit::Emulated);
        };
        self.last = (name(&decoded.instruction), regs.rip);
        self.length = decoded.length;
        let reason = reason_of(&decoded.instruction);
        if let Instruction::MovToCr { cr: 3, register } = decoded.instruction {
            self.guest_cr3 = regs.registers()[usize::from(register)];
        }
        let outcome = emulate(&mut self.cpu, decoded.instruction, decoded.length, regs, &mut guest);
        if let Outcome::Exit(Exit::Halt) = outcome {
            self.length = 1; // `sti; hlt` left rip at the `hlt`
        }
        self.outcome(outcome, exit(reason, Exit::Emulated))
    }

    /// What the run loop is told about an emulation's `outcome` (`done` if it needs nothing).
    fn outcome(&mut self, outcome: Outcome, done: ExitInfo) -> ExitInfo {
        let fatal = |fatal| ExitInfo { reason: done.reason, exit: Exit::Fatal(fatal) };
        match outcome {
            Outcome::Done => done,
            Outcome::Exit(exit) => ExitInfo { reason: done.reason, exit },
            Outcome::Raise { vector, error_code } => {
                let has_code = hypercall_abi::frame::has_error_code(u64::from(vector));
                let error_code = has_code.then_some(error_code);
                self.pending = Some(Event { vector, error_code, software: false });
                done
            }
            Outcome::Memory(Refusal::PageFault { address, error_code }) => {
                self.cpu.cr2 = address;
                let error_code = Some(error_code);
                self.pending = Some(Event { vector: 14, error_code, software: false });
                done
            }
            Outcome::Memory(Refusal::Beyond { address }) => fatal(Fatal::Emulation {
                instruction: self.last.0,
                rule: "its operand lies in memory the domain does not have",
                value: address,
            }),
            Outcome::Kill { instruction, rule, value } => {
                fatal(Fatal::Emulation { instruction, rule, value })
            }
        }
    }

    /// Delivers the pending event, if any: `Some` exit if the delivery itself failed.
    fn deliver_pending(&mut self, regs: &mut TrapFrame) -> Option<ExitInfo> {
        let event = self.pending.take()?;
        let mut guest = GuestView::of(self);
        let failed = |fatal| Some(exit(vm_exit::EXCEPTION_OR_NMI, Exit::Fatal(fatal)));
        match deliver(&mut self.cpu, regs, event, &mut guest) {
            Ok(()) => None,
            Err(Outcome::Raise { error_code, .. }) if event.software => {
                // `int n` the gate does not admit: #GP(vector * 8 + 2) instead, as the CPU.
                self.pending = Some(Event { vector: 13, error_code: Some(error_code), software: false });
                self.deliver_pending(regs)
            }
            Err(Outcome::Raise { error_code, .. }) => failed(Fatal::Delivery {
                vector: event.vector,
                why: "its gate is missing or not an interrupt or trap gate (the CPU would raise #GP, then a double fault)",
                detail: error_code,
            }),
            Err(Outcome::Memory(Refusal::PageFault { address, .. } | Refusal::Beyond { address })) => {
                failed(Fatal::Delivery {
                    vector: event.vector,
                    why: "the guest's IDT, TSS or stack is not mapped for it (a double fault)",
                    detail: address,
                })
            }
            Err(Outcome::Kill { instruction, rule, value }) => {
                failed(Fatal::Emulation { instruction, rule, value })
            }
            Err(Outcome::Done | Outcome::Exit(_)) => None,
        }
    }
}

impl HardwareVt for Trap {
    type Vcpu = TrapVcpu;

    const MODE: Mode = Mode::Trap;

    const GUEST_WORLD: &'static str = "ring 1, by trap-and-emulate";

    /// No hypercalls under trap-and-emulate: the kernel believes it owns the machine. A stub
    /// that is called anyway raises #UD in the guest.
    fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
        hypercall_abi::hypercall::hypercall_stub(number, &[0x0f, 0x0b])
    }

    fn host_slots() -> HostSlots {
        crate::pv::shadow_host_slots()
    }

    fn create_vcpu(&mut self, boot: &VcpuBoot) -> Result<TrapVcpu, &'static str> {
        let shadow_root = boot.shadow_root.ok_or("trap mode runs on shadow paging")?;
        Ok(TrapVcpu {
            cpu: VirtualCpu::at_boot(),
            boot: Some((boot.entry, boot.stack_top)),
            shadow_root,
            guest_cr3: boot.cr3,
            pmap: Pmap { base: boot.memory.addr(), pages: boot.nr_pages },
            pending: None,
            length: 0,
            skip: 0,
            last: ("(none yet)", boot.entry),
            waiting_since: None,
            gs_base: 0,
            fs_base: 0,
        })
    }

    fn set_tick_length(&mut self, _tsc: u64) {}

    fn load(&mut self, vcpu: &mut TrapVcpu) {
        // SAFETY: FS_BASE and GS_BASE exist on every x86-64 CPU; xen-lite never uses them, and
        // the values are this guest's own, canonical.
        unsafe {
            wrmsr(x86::msr::IA32_FS_BASE, vcpu.fs_base);
            wrmsr(x86::msr::IA32_GS_BASE, vcpu.gs_base);
        }
    }

    fn run(&mut self, vcpu: &mut TrapVcpu, regs: &mut TrapFrame) -> ExitInfo {
        if let Some((entry, stack)) = vcpu.boot.take() {
            (regs.rip, regs.rsp, regs.rflags) = (entry, stack, 2);
            (regs.cs, regs.ss) = (FLAT_RING1_CS.into(), FLAT_RING1_DS.into());
        }
        regs.rip += u64::from(core::mem::take(&mut vcpu.skip));
        if let Some(since) = vcpu.waiting_since.filter(|_| !vcpu.cpu.interrupts) {
            let ticks = timer::ticks() - since;
            if ticks > WATCHDOG_TICKS {
                let (last, rip) = vcpu.last;
                let fatal = Fatal::Watchdog { ticks, last, rip };
                return exit(vm_exit::EXCEPTION_OR_NMI, Exit::Fatal(fatal));
            }
        }
        if let Some(failed) = vcpu.deliver_pending(regs) {
            return failed;
        }
        // The CPU runs the guest with the real IF on and IOPL 0, whatever it believes.
        regs.rflags = (regs.rflags & deliver::GUEST_FLAGS) | RFLAGS_IF;
        let cr2 = entry::enter(regs, vcpu.shadow_root);
        let info = vcpu.trapped(regs, cr2);
        // The run loop sees the flags the guest believes in.
        regs.rflags = (regs.rflags & !RFLAGS_IF) | if vcpu.cpu.interrupts { RFLAGS_IF } else { 0 };
        info
    }

    fn skip_instruction(&mut self, vcpu: &mut TrapVcpu) {
        vcpu.skip = vcpu.length; // applied to the registers before the next entry
    }

    fn interruptible(&mut self, vcpu: &mut TrapVcpu) -> bool {
        vcpu.cpu.interrupts && vcpu.pending.is_none()
    }

    fn inject_interrupt(&mut self, vcpu: &mut TrapVcpu, vector: u8) {
        vcpu.pending = Some(Event { vector, error_code: None, software: false });
    }

    fn request_interrupt_window(&mut self, vcpu: &mut TrapVcpu, on: bool) {
        vcpu.waiting_since = match (on, vcpu.waiting_since) {
            (false, _) => None,
            (true, None) => Some(timer::ticks()),
            (true, since) => since,
        };
    }

    fn read_msr(&mut self, vcpu: &mut TrapVcpu, msr: u32) -> Option<u64> {
        use x86::msr::*;
        Some(match msr {
            IA32_EFER => vcpu.cpu.efer,
            IA32_STAR => vcpu.cpu.star,
            IA32_LSTAR => vcpu.cpu.lstar,
            IA32_FMASK => vcpu.cpu.fmask,
            IA32_FS_BASE => vcpu.fs_base,
            IA32_GS_BASE => vcpu.gs_base,
            IA32_KERNEL_GSBASE => vcpu.cpu.kernel_gs_base,
            _ => return None,
        })
    }

    fn write_msr(&mut self, vcpu: &mut TrapVcpu, msr: u32, value: u64) -> Result<(), &'static str> {
        use x86::msr::*;
        let canonical = || {
            if hypercall_abi::layout::is_canonical(value) {
                Ok(value)
            } else {
                Err("the address must be canonical")
            }
        };
        match msr {
            IA32_EFER if value & 0x500 != 0x500 || value & !0xd01 != 0 => {
                return Err("EFER: long mode stays on, and only SCE and NXE are the guest's")
            }
            IA32_EFER => vcpu.cpu.efer = value,
            IA32_STAR => vcpu.cpu.star = value,
            IA32_LSTAR => vcpu.cpu.lstar = canonical()?,
            IA32_FMASK => vcpu.cpu.fmask = value & 0xffff_ffff,
            IA32_FS_BASE => vcpu.fs_base = canonical()?,
            IA32_GS_BASE => vcpu.gs_base = canonical()?,
            IA32_KERNEL_GSBASE => vcpu.cpu.kernel_gs_base = canonical()?,
            _ => {
                return Err(
                    "xen-lite virtualises only EFER, the syscall MSRs and the segment bases",
                )
            }
        }
        self.load(vcpu);
        Ok(())
    }

    fn set_shadow_root(&mut self, vcpu: &mut TrapVcpu, root: u64) {
        vcpu.shadow_root = root;
    }

    fn flush_guest_tlb(&mut self, _vcpu: &mut TrapVcpu) {
        // Every entry loads the shadow root into CR3, which flushes the guest's TLB entries.
    }

    fn paging_controls(&mut self, vcpu: &mut TrapVcpu) -> Controls {
        GuestView::of(vcpu).controls
    }

    fn inject_page_fault(&mut self, vcpu: &mut TrapVcpu, error_code: u64, address: u64) {
        vcpu.cpu.cr2 = address;
        vcpu.pending = Some(Event { vector: 14, error_code: Some(error_code), software: false });
    }
}
