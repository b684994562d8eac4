//! Entering and leaving VMX root operation, the state xen-lite must be in before it can create
//! a single VMCS.
//!
//! That takes four things, in this order:
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
//! [`enter_root`] takes these steps; `Vmx::enable` then stays in root operation for the rest of
//! the run. At boot, on a CPU that offers VMX (Bochs here; QEMU TCG does not), xen-lite also
//! enters and leaves root operation once ([`check_root_operation`]) so the log states whether
//! `vmx` mode can work on this machine, and which control-register bits VMX forces.
//!
//! See: Intel SDM Vol. 3C, revision 086, 24.7 (enabling and entering VMX operation), 24.8
//! (restrictions on VMX operation), Appendix A.1 (`IA32_VMX_BASIC`) and A.7/A.8 (fixed bits).

use core::fmt;

use x86::msr::{
    IA32_FEATURE_CONTROL, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0,
    IA32_VMX_CR4_FIXED1,
};

use crate::frame::Frame;
use crate::instructions::{self, VmxStatus};
use crate::memory_map::phys_to_virt;

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

/// Why VMX root operation could not be entered, or the backend cannot use it (a control).
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
pub struct RootOperation {
    /// The VMXON region (the CPU's until VMXOFF).
    region: Frame,
    /// CR4 before (VMXE clear).
    old_cr4: u64,
    /// CR0 and CR4 while in VMX operation.
    pub cr0: u64,
    pub cr4: u64,
}

/// The fixed-bit MSRs: `(CR0 fixed0, fixed1)`, `(CR4 fixed0, fixed1)`.
pub fn fixed_bits() -> ((u64, u64), (u64, u64)) {
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
pub fn enter_root(revision: u32, control: u64) -> Result<RootOperation, VmxError> {
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

    let region = crate::frame::alloc().ok_or(VmxError::NoFrame)?;
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
            crate::frame::free(region)
                .unwrap_or_else(|error| panic!("VMXON region {region}: {error:?}"));
            Err(VmxError::Instruction { name: "vmxon", status })
        }
    }
}

/// Enters VMX root operation and leaves it again, restoring CR4; returns the CR0 and CR4
/// values VMX operation required. `revision` and `control` are the VMCS revision id and
/// `IA32_FEATURE_CONTROL` as [`crate::cpu::probe`] read them (so the CPU reports VMX).
pub fn check_root_operation(revision: u32, control: u64) -> Result<(u64, u64), VmxError> {
    let root = enter_root(revision, control)?;
    // SAFETY: VMXON succeeded, so we are in VMX root operation, with no VMCS loaded.
    let status = unsafe { instructions::vmxoff() };
    if status != VmxStatus::Succeed {
        // Still in VMX operation: CR4.VMXE cannot be cleared, the region stays the CPU's.
        return Err(VmxError::Instruction { name: "vmxoff", status });
    }
    // SAFETY: not in VMX operation any more, so CR4.VMXE may be cleared again.
    unsafe { instructions::write_cr4(root.old_cr4) };
    let region = root.region;
    crate::frame::free(region).unwrap_or_else(|error| panic!("VMXON region {region}: {error:?}"));
    Ok((root.cr0, root.cr4))
}

/// Logs whether VMX root operation works on this CPU (arguments as [`check_root_operation`]).
pub fn log_root_operation(revision: u32, control: u64) {
    match check_root_operation(revision, control) {
        Ok((cr0, cr4)) => log::info!(
            "vmx: entered and left VMX root operation (VMXON, VMXOFF); CR0 {cr0:#x} and CR4 {cr4:#x} while in it"
        ),
        Err(error) => log::warn!("vmx: cannot enter VMX root operation: {error}"),
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
