//! The VT-x backend (DESIGN §3, `vmx` row): VMX root operation, the controls, and the
//! `HardwareVt` implementation the `hvm` run loop drives.
//!
//! Before a hypervisor can create a single VMCS, the CPU must be switched into *VMX root
//! operation*. That takes four things, in this order:
//!
//! 1. `IA32_FEATURE_CONTROL` locked with bit 2 ("VMX outside SMX") set. Firmware normally does
//!    this at power-on; Bochs leaves the register 0 (unlocked), so xen-lite sets and locks it.
//!    Locked with the bit clear means the firmware forbade VMX until the next reset.
//! 2. CR0 and CR4 holding every bit `IA32_VMX_CR{0,4}_FIXED0` says must be 1 and no bit
//!    `IA32_VMX_CR{0,4}_FIXED1` says must be 0. CR4.VMXE is one of the must-be-1 bits; on most
//!    CPUs so are CR0.PE, CR0.NE and CR0.PG.
//! 3. A 4-KiB-aligned *VMXON region* whose first 31 bits hold the VMCS revision id from
//!    `IA32_VMX_BASIC`; the CPU owns the rest of the frame while in VMX operation.
//! 4. `vmxon` with the region's physical address; `vmxoff` leaves again.
//!
//! At boot, on a CPU that offers VMX (Bochs here; QEMU TCG does not), xen-lite enters and leaves
//! root operation once ([`check_root_operation`]) so the log states whether the later backend
//! can work on this machine, and which control-register bits VMX forces.
//!
//! See: Intel SDM Vol. 3C, revision 086, 24.7 (enabling and entering VMX operation), 24.8
//! (restrictions on VMX operation), Appendix A.1 (`IA32_VMX_BASIC`) and A.7/A.8 (fixed bits).

pub mod controls;
pub mod ept;
mod vmcs;
mod entry;
mod exits;

use core::fmt;

use x86::msr::{
    IA32_FEATURE_CONTROL, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0,
    IA32_VMX_CR4_FIXED1,
};

use hypercall_abi::hypercall::HYPERCALL_STUB_SIZE;
use hypercall_abi::Mode;

use crate::entry::TrapFrame;
use crate::frame::FrameAllocator;
use crate::hvm::{ExitInfo, HardwareVt, VcpuBoot};
use crate::instructions::{self, VmxStatus};
use crate::memory_map::phys_to_virt;
use controls::Controls;

/// `IA32_FEATURE_CONTROL` bit 0: the register is locked until reset.
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// `IA32_FEATURE_CONTROL` bit 2: VMXON is allowed outside SMX operation.
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// What `IA32_FEATURE_CONTROL` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMX enabled: VMXON may be used as is.
    Ready,
    /// Not locked yet: software may enable VMX and lock the register (the value to write).
    Unlocked { enable_with: u64 },
    /// Locked with VMX disabled: VMXON raises #GP until the next reset.
    LockedOff,
}

/// Reads an `IA32_FEATURE_CONTROL` value.
pub fn feature_control(value: u64) -> FeatureControl {
    match (value & FEATURE_CONTROL_LOCKED != 0, value & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0) {
        (true, true) => FeatureControl::Ready,
        (true, false) => FeatureControl::LockedOff,
        (false, _) => FeatureControl::Unlocked {
            enable_with: value | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
        },
    }
}

/// The value a control register must hold in VMX operation, from its current value and the two
/// fixed-bit MSRs: every bit set in `fixed0` is forced to 1. A bit that is set now but clear in
/// `fixed1` is not silently cleared (the running code may rely on it): it is returned as `Err`.
pub fn with_fixed_bits(current: u64, fixed0: u64, fixed1: u64) -> Result<u64, u64> {
    let forbidden = current & !fixed1;
    if forbidden != 0 {
        return Err(forbidden);
    }
    Ok(current | fixed0)
}

/// Why VMX root operation could not be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// `IA32_FEATURE_CONTROL` is locked with VMX disabled (its value).
    LockedOff(u64),
    /// A control register holds bits VMX operation requires to be 0.
    FixedBits { register: &'static str, current: u64, forbidden: u64 },
    /// No free frame for the VMXON region.
    NoFrame,
    /// `vmxon` or `vmxoff` reported failure.
    Instruction { name: &'static str, status: VmxStatus },
    /// A control xen-lite needs is not offered by this CPU (the control field, the bits).
    MissingControl { name: &'static str, missing: u32 },
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LockedOff(value) => write!(
                f,
                "IA32_FEATURE_CONTROL is {value:#x}: locked with VMX outside SMX disabled (enable VMX in the firmware)"
            ),
            Self::FixedBits { register, current, forbidden } => write!(
                f,
                "{register} is {current:#x} but VMX operation requires bits {forbidden:#x} to be 0"
            ),
            Self::NoFrame => write!(f, "no free frame for the VMXON region"),
            Self::Instruction { name, status } => write!(f, "{name} ended with {status:?}"),
            Self::MissingControl { name, missing } => {
                write!(f, "this CPU cannot set {name} controls {missing:#x}")
            }
        }
    }
}

/// What entering VMX root operation changed, so it can be undone.
struct RootOperation {
    /// The VMXON region (the CPU's until VMXOFF).
    region: crate::frame::Frame,
    /// CR4 before (VMXE clear).
    old_cr4: u64,
    /// CR0 and CR4 while in VMX operation.
    cr0: u64,
    cr4: u64,
}

/// The fixed-bit MSRs: `(CR0 fixed0, fixed1)`, `(CR4 fixed0, fixed1)`.
fn fixed_bits() -> ((u64, u64), (u64, u64)) {
    // SAFETY: only called once the CPU reported VMX, so these MSRs exist.
    unsafe {
        use instructions::rdmsr;
        (
            (rdmsr(IA32_VMX_CR0_FIXED0), rdmsr(IA32_VMX_CR0_FIXED1)),
            (rdmsr(IA32_VMX_CR4_FIXED0), rdmsr(IA32_VMX_CR4_FIXED1)),
        )
    }
}

/// Enters VMX root operation: feature control, fixed bits, VMXON region, `vmxon`.
fn enter_root<const WORDS: usize>(
    revision: u32,
    control: u64,
    frames: &mut FrameAllocator<WORDS>,
) -> Result<RootOperation, VmxError> {
    let (cr0_fixed, cr4_fixed) = fixed_bits();
    match feature_control(control) {
        FeatureControl::Ready => {}
        FeatureControl::LockedOff => return Err(VmxError::LockedOff(control)),
        FeatureControl::Unlocked { enable_with } => {
            // SAFETY: the register exists and is unlocked; enabling VMX outside SMX and locking
            // it changes nothing else.
            unsafe { instructions::wrmsr(IA32_FEATURE_CONTROL, enable_with) };
        }
    }
    let (old_cr0, old_cr4) = (instructions::read_cr0(), instructions::read_cr4());
    let fixed = |register, current, (fixed0, fixed1)| {
        with_fixed_bits(current, fixed0, fixed1).map_err(|forbidden| VmxError::FixedBits {
            register,
            current,
            forbidden,
        })
    };
    let cr0 = fixed("CR0", old_cr0, cr0_fixed)?;
    let cr4 = fixed("CR4", old_cr4, cr4_fixed)?;

    let region = frames.alloc().ok_or(VmxError::NoFrame)?;
    // SAFETY: the frame was just allocated, so nothing else uses it; it is reached through the
    // physical map. The revision id goes in its first four bytes (SDM 25.11.5).
    unsafe {
        let base = phys_to_virt(region.addr()) as *mut u8;
        core::ptr::write_bytes(base, 0, 4096);
        (base as *mut u32).write(revision);
    }
    // SAFETY: `with_fixed_bits` only adds bits VMX requires (CR0.NE/PE/PG, CR4.VMXE); paging and
    // protection stay as they are.
    unsafe {
        instructions::write_cr0(cr0);
        instructions::write_cr4(cr4);
    }
    // SAFETY: every precondition of VMXON was established above.
    match unsafe { instructions::vmxon(region.addr()) } {
        VmxStatus::Succeed => Ok(RootOperation { region, old_cr4, cr0, cr4 }),
        status => {
            // SAFETY: not in VMX operation, so CR4.VMXE may be cleared again.
            unsafe { instructions::write_cr4(old_cr4) };
            frames.free(region).unwrap_or_else(|error| panic!("VMXON region {region}: {error:?}"));
            Err(VmxError::Instruction { name: "vmxon", status })
        }
    }
}

/// Enters VMX root operation and leaves it again, restoring CR4; returns the CR0 and CR4
/// values VMX operation required. `revision` and `control` are the VMCS revision id and
/// `IA32_FEATURE_CONTROL` as [`crate::cpu::probe`] read them (so the CPU reports VMX).
pub fn check_root_operation<const WORDS: usize>(
    revision: u32,
    control: u64,
    frames: &mut FrameAllocator<WORDS>,
) -> Result<(u64, u64), VmxError> {
    let root = enter_root(revision, control, frames)?;
    // SAFETY: VMXON succeeded, so we are in VMX root operation, with no VMCS loaded.
    let status = unsafe { instructions::vmxoff() };
    if status != VmxStatus::Succeed {
        // Still in VMX operation: CR4.VMXE cannot be cleared, the region stays the CPU's.
        return Err(VmxError::Instruction { name: "vmxoff", status });
    }
    // SAFETY: not in VMX operation any more, so CR4.VMXE may be cleared again.
    unsafe { instructions::write_cr4(root.old_cr4) };
    let region = root.region;
    frames.free(region).unwrap_or_else(|error| panic!("VMXON region {region}: {error:?}"));
    Ok((root.cr0, root.cr4))
}

/// Logs whether VMX root operation works on this CPU (arguments as [`check_root_operation`]).
pub fn log_root_operation<const WORDS: usize>(
    revision: u32,
    control: u64,
    frames: &mut FrameAllocator<WORDS>,
) {
    match check_root_operation(revision, control, frames) {
        Ok((cr0, cr4)) => log::info!(
            "vmx: entered and left VMX root operation (VMXON, VMXOFF); CR0 {cr0:#x} and CR4 {cr4:#x} while in it"
        ),
        Err(error) => log::warn!("vmx: cannot enter VMX root operation: {error}"),
    }
}

/// The VMX backend: xen-lite in VMX root operation for the rest of the run.
pub struct Vmx {
    revision: u32,
    controls: Controls,
    host: vmcs::HostState,
    /// What the VMX-preemption timer starts from at every entry: one tick of guest time.
    preemption_count: u64,
}

/// The `syscall` MSRs of a domain, which the CPU does not switch: xen-lite loads them into the
/// real MSRs whenever the domain is scheduled in (the guest uses them without any exit).
#[derive(Clone, Copy, Debug, Default)]
struct SyscallMsrs {
    star: u64,
    lstar: u64,
    cstar: u64,
    fmask: u64,
    kernel_gs_base: u64,
}

const IA32_EFER: u32 = 0xc000_0080;
const IA32_STAR: u32 = 0xc000_0081;
const IA32_LSTAR: u32 = 0xc000_0082;
const IA32_CSTAR: u32 = 0xc000_0083;
const IA32_FMASK: u32 = 0xc000_0084;
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// One domain's virtual CPU under VMX.
pub struct Vcpu {
    /// The VMCS frame.
    vmcs: crate::frame::Frame,
    /// Whether `vmlaunch` has run (then `vmresume`).
    launched: bool,
    /// Whether interrupt-window exiting is on.
    window: bool,
    /// Whether an event is set up for injection at the next entry (a re-injection).
    injecting: bool,
    msrs: SyscallMsrs,
}

impl Vmx {
    /// Enters VMX root operation for good and reads what this CPU's VMX allows.
    pub fn enable<const WORDS: usize>(
        revision: u32,
        control: u64,
        frames: &mut FrameAllocator<WORDS>,
    ) -> Result<Vmx, VmxError> {
        let controls = Controls::for_this_cpu()?;
        let root = enter_root(revision, control, frames)?;
        let (gdt, tss) = crate::gdt::bases();
        // SAFETY: EFER exists on every x86-64 CPU.
        let efer = unsafe { instructions::rdmsr(IA32_EFER) };
        let host = vmcs::HostState {
            cr0: root.cr0,
            cr3: crate::switcher::hypervisor_cr3(),
            cr4: root.cr4,
            efer,
            gdt,
            idt: crate::idt::base(),
            tss,
        };
        log::info!(
            "vmx: in VMX root operation; controls pin {:#x}, primary {:#x}, secondary {:#x}, exit {:#x}, entry {:#x}",
            controls.pin,
            controls.primary,
            controls.secondary,
            controls.exit,
            controls.entry
        );
        Ok(Vmx { revision, controls, host, preemption_count: u64::from(u32::MAX) })
    }
}

/// EPT tables in machine frames from the frame allocator, through xen-lite's direct map.
struct MachineTables;

impl ept::EptMemory for MachineTables {
    fn new_table(&mut self) -> Option<u64> {
        let frame = crate::frame::alloc()?;
        // SAFETY: a frame just allocated for this table; nothing else refers to it.
        unsafe { core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, 4096) };
        Some(frame.addr())
    }

    fn entry(&self, table: u64, slot: usize) -> u64 {
        // SAFETY: `table` is a frame `new_table` returned, in the direct map; `slot` < 512.
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *const u64).read() }
    }

    fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
        // SAFETY: as in `entry`; no guest runs on these tables yet.
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *mut u64).write(value) }
    }
}

/// Whether `value` is a canonical address (bits 63:47 all equal).
fn canonical(value: u64) -> bool {
    let top = value >> 47;
    top == 0 || top == 0x1_ffff
}

impl HardwareVt for Vmx {
    type Vcpu = Vcpu;

    const MODE: Mode = Mode::Vmx;

    /// `mov eax, number; vmcall; ret`, padded with `int3`.
    fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
        const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
        hypercall_abi::hypercall::hypercall_stub(number, &VMCALL)
    }

    fn create_vcpu(&mut self, boot: &VcpuBoot) -> Result<Vcpu, &'static str> {
        let base = boot.memory.addr();
        let root = ept::build(&mut MachineTables, base, boot.nr_pages)
            .ok_or("no free frames for its EPT tables")?;
        // The domain's memory, exactly: its first byte is there, the byte past its end is not.
        let end = boot.nr_pages * 4096;
        assert_eq!(ept::translate(&MachineTables, root, 0), Some(base));
        assert_eq!(ept::translate(&MachineTables, root, end), None);
        let vmcs = crate::frame::alloc().ok_or("no free frame for its VMCS")?;
        // SAFETY: a frame just allocated for the VMCS; the revision id goes in its first four
        // bytes, the rest belongs to the CPU.
        unsafe {
            let base = phys_to_virt(vmcs.addr()) as *mut u8;
            core::ptr::write_bytes(base, 0, 4096);
            (base as *mut u32).write(self.revision);
        }
        // SAFETY: in VMX root operation; the frame is a fresh VMCS region.
        let cleared = unsafe { instructions::vmclear(vmcs.addr()) };
        // SAFETY: as above; the VMCS was just cleared.
        let loaded = unsafe { instructions::vmptrld(vmcs.addr()) };
        if cleared != VmxStatus::Succeed || loaded != VmxStatus::Succeed {
            return Err("VMCLEAR or VMPTRLD of its VMCS failed");
        }
        vmcs::setup(boot, &self.controls, &self.host, ept::pointer(root));
        vmcs::write(x86::vmx::vmcs::guest::VMX_PREEMPTION_TIMER_VALUE, self.preemption_count);
        Ok(Vcpu {
            vmcs,
            launched: false,
            window: false,
            injecting: false,
            msrs: SyscallMsrs::default(),
        })
    }

    /// The VMX-preemption timer, started afresh at every entry (its value is not saved on
    /// exit), ends any guest run after one tick. It is a backstop to external-interrupt
    /// exiting: the SDM says a host interrupt exits whatever the guest's IF, but Bochs 2.7
    /// delivers none while a guest keeps IF clear from its first instruction (it decides
    /// whether an interrupt is masked when IF changes, and VM entry loads the guest's IF = 0
    /// while still in host context); a guest computing with interrupts off was never preempted.
    fn set_tick_length(&mut self, tsc: u64) {
        self.preemption_count =
            (tsc >> self.controls.preemption_rate).clamp(1, u64::from(u32::MAX));
    }

    fn load(&mut self, vcpu: &mut Vcpu) {
        // SAFETY: in VMX root operation; the frame is this vCPU's VMCS, set up by `create_vcpu`.
        let status = unsafe { instructions::vmptrld(vcpu.vmcs.addr()) };
        assert!(status == VmxStatus::Succeed, "VMPTRLD of a set-up VMCS failed: {status:?}");
        vmcs::write(x86::vmx::vmcs::guest::VMX_PREEMPTION_TIMER_VALUE, self.preemption_count);
        let m = vcpu.msrs;
        // SAFETY: these MSRs exist on every x86-64 CPU; every value was checked canonical when
        // the guest wrote it, and xen-lite itself never executes `syscall` or `swapgs`.
        unsafe {
            instructions::wrmsr(IA32_STAR, m.star);
            instructions::wrmsr(IA32_LSTAR, m.lstar);
            instructions::wrmsr(IA32_CSTAR, m.cstar);
            instructions::wrmsr(IA32_FMASK, m.fmask);
            instructions::wrmsr(IA32_KERNEL_GS_BASE, m.kernel_gs_base);
        }
    }

    fn run(&mut self, vcpu: &mut Vcpu, regs: &mut TrapFrame) -> ExitInfo {
        if let Err(status) = entry::enter(regs, vcpu.launched) {
            return exits::entry_failed(status);
        }
        vcpu.launched = true;
        exits::read(vcpu, regs)
    }

    fn skip_instruction(&mut self, _vcpu: &mut Vcpu) {
        use x86::vmx::vmcs::{guest, ro};
        let rip = vmcs::read(guest::RIP) + vmcs::read(ro::VMEXIT_INSTRUCTION_LEN);
        vmcs::write(guest::RIP, rip);
        // The `sti` or `mov ss` shadow covered only the instruction just skipped.
        let state = vmcs::read(guest::INTERRUPTIBILITY_STATE);
        if state & 3 != 0 {
            vmcs::write(guest::INTERRUPTIBILITY_STATE, state & !3);
        }
    }

    fn interruptible(&mut self, vcpu: &mut Vcpu) -> bool {
        use x86::vmx::vmcs::guest;
        !vcpu.injecting
            && vmcs::read(guest::RFLAGS) & (1 << 9) != 0
            && vmcs::read(guest::INTERRUPTIBILITY_STATE) & 3 == 0
    }

    fn inject_interrupt(&mut self, vcpu: &mut Vcpu, vector: u8) {
        // Valid (bit 31), type 0 (external interrupt), the vector.
        vmcs::write(
            x86::vmx::vmcs::control::VMENTRY_INTERRUPTION_INFO_FIELD,
            (1 << 31) | u64::from(vector),
        );
        vcpu.injecting = true;
    }

    fn request_interrupt_window(&mut self, vcpu: &mut Vcpu, on: bool) {
        use x86::vmx::vmcs::control::{PrimaryControls, PRIMARY_PROCBASED_EXEC_CONTROLS};
        if vcpu.window != on {
            let window = if on { PrimaryControls::INTERRUPT_WINDOW_EXITING.bits() } else { 0 };
            vmcs::write(PRIMARY_PROCBASED_EXEC_CONTROLS, u64::from(self.controls.primary | window));
            vcpu.window = on;
        }
    }

    fn read_msr(&mut self, vcpu: &mut Vcpu, msr: u32) -> Option<u64> {
        use x86::vmx::vmcs::guest;
        let m = &vcpu.msrs;
        Some(match msr {
            IA32_EFER => vmcs::read(guest::IA32_EFER_FULL),
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.fmask,
            IA32_FS_BASE => vmcs::read(guest::FS_BASE),
            IA32_GS_BASE => vmcs::read(guest::GS_BASE),
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            _ => return None,
        })
    }

    fn write_msr(&mut self, vcpu: &mut Vcpu, msr: u32, value: u64) -> Result<(), &'static str> {
        use x86::vmx::vmcs::guest;
        const EFER_SCE: u64 = 1;
        let address =
            |value: u64| if canonical(value) { Ok(value) } else { Err("non-canonical address") };
        match msr {
            IA32_EFER => {
                let current = vmcs::read(guest::IA32_EFER_FULL);
                if (value ^ current) & !(EFER_SCE | vmcs::EFER_NXE) != 0 {
                    return Err("only EFER.SCE and EFER.NXE may change under xen-lite");
                }
                vmcs::write(guest::IA32_EFER_FULL, value);
                return Ok(());
            }
            IA32_FS_BASE => {
                vmcs::write(guest::FS_BASE, address(value)?);
                return Ok(());
            }
            IA32_GS_BASE => {
                vmcs::write(guest::GS_BASE, address(value)?);
                return Ok(());
            }
            IA32_STAR => vcpu.msrs.star = value,
            IA32_LSTAR => vcpu.msrs.lstar = address(value)?,
            IA32_CSTAR => vcpu.msrs.cstar = address(value)?,
            IA32_FMASK => vcpu.msrs.fmask = value & 0xffff_ffff,
            IA32_KERNEL_GS_BASE => vcpu.msrs.kernel_gs_base = address(value)?,
            _ => return Err("xen-lite does not virtualise it"),
        }
        // The vCPU is the one running: its MSRs are the real ones now.
        let value = match msr {
            IA32_FMASK => value & 0xffff_ffff,
            _ => value,
        };
        // SAFETY: a `syscall` MSR, with a canonical address where it holds one; xen-lite itself
        // never executes `syscall` or `swapgs`.
        unsafe { instructions::wrmsr(msr, value) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_control_states() {
        assert_eq!(feature_control(0x5), FeatureControl::Ready);
        assert_eq!(feature_control(0x7), FeatureControl::Ready);
        assert_eq!(feature_control(0x1), FeatureControl::LockedOff);
        assert_eq!(feature_control(0x3), FeatureControl::LockedOff);
        assert_eq!(feature_control(0x0), FeatureControl::Unlocked { enable_with: 0x5 });
        // Bits software does not touch survive.
        assert_eq!(feature_control(0x2), FeatureControl::Unlocked { enable_with: 0x7 });
    }

    #[test]
    fn fixed_bits_are_forced_on() {
        // A typical CR0: PE|PG on, NE off; FIXED0 = PE|NE|PG, FIXED1 = all ones.
        assert_eq!(with_fixed_bits(0x8000_0011, 0x8000_0021, u64::MAX), Ok(0x8000_0031));
        // CR4 with PAE only; FIXED0 = VMXE.
        assert_eq!(with_fixed_bits(0x20, 0x2000, 0x3f_ffff), Ok(0x2020));
    }

    #[test]
    fn forbidden_bits_are_reported_not_cleared() {
        assert_eq!(with_fixed_bits(0x40_2020, 0x2000, 0x3f_ffff), Err(0x40_0000));
    }

    #[test]
    fn errors_name_the_register_and_values() {
        let error =
            VmxError::FixedBits { register: "CR4", current: 0x40_2020, forbidden: 0x40_0000 };
        assert_eq!(
            error.to_string(),
            "CR4 is 0x402020 but VMX operation requires bits 0x400000 to be 0"
        );
    }
}
