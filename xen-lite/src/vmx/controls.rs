//! The VMX execution controls: what xen-lite wants in every domain's VMCS, made legal for this
//! CPU ([`Controls::for_this_cpu`]) by one pure, host-tested rule ([`adjust`]).
//!
//! Every control field (pin-based, primary and secondary processor-based, VM-exit, VM-entry) has
//! a capability MSR whose low 32 bits say which controls *must* be 1 and whose high 32 bits say
//! which *may* be 1. A hypervisor states what it wants and `adjust` makes it legal, or says
//! which wanted bits this CPU lacks. When `IA32_VMX_BASIC` bit 55 is set, the `IA32_VMX_TRUE_*`
//! MSRs apply instead: they allow clearing some "default1" controls (such as CR3-load exiting)
//! that the older MSRs force on. See: Intel SDM Vol. 3D, revision 086, Appendix A.3-A.5.

use x86::msr::{
    IA32_VMX_BASIC, IA32_VMX_ENTRY_CTLS, IA32_VMX_EPT_VPID_CAP, IA32_VMX_EXIT_CTLS, IA32_VMX_MISC,
    IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2,
    IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS,
    IA32_VMX_TRUE_PROCBASED_CTLS,
};

use super::root::{fixed_bits, VmxError};
use crate::instructions;

/// `IA32_VMX_BASIC` bit 55: the `IA32_VMX_TRUE_*` capability MSRs exist.
pub const BASIC_TRUE_CONTROLS: u64 = 1 << 55;

/// `desired` made legal under `capability` (allowed-0 settings in bits 31:0, allowed-1 in
/// 63:32): forced bits added. `Err` holds the desired bits the CPU cannot set.
pub fn adjust(desired: u32, capability: u64) -> Result<u32, u32> {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    let missing = desired & !may_be_one;
    if missing != 0 {
        return Err(missing);
    }
    Ok(desired | must_be_one)
}

/// The execution controls every domain's VMCS gets, adjusted to this CPU.
pub struct Controls {
    /// Pin-based: host interrupts exit; the VMX-preemption timer runs.
    pub pin: u32,
    /// Primary processor-based: `hlt` and all I/O exit; MSR accesses exit (no bitmaps); the
    /// secondary controls are used.
    pub primary: u32,
    /// Secondary: EPT.
    pub secondary: u32,
    /// VM exit: 64-bit host, acknowledge the interrupt on exit, save and load EFER.
    pub exit: u32,
    /// VM entry: 64-bit guest, load EFER.
    pub entry: u32,
    /// CR0 bits VMX forces on (guest/host mask: the guest may not clear them).
    pub cr0_fixed0: u64,
    /// CR4 bits VMX forces on (VMXE).
    pub cr4_fixed0: u64,
    /// log2 of the TSC cycles per count of the VMX-preemption timer.
    pub preemption_rate: u32,
}

impl Controls {
    /// What xen-lite wants, made legal for this CPU; `Err` names the control it lacks.
    pub fn for_this_cpu() -> Result<Controls, VmxError> {
        use x86::vmx::vmcs::control::{
            EntryControls, ExitControls, PinbasedControls, PrimaryControls, SecondaryControls,
        };
        // SAFETY: the CPU reports VMX, so its capability MSRs exist; the TRUE ones exist when
        // BASIC bit 55 says so.
        let read = |msr| unsafe { instructions::rdmsr(msr) };
        let true_controls = read(IA32_VMX_BASIC) & BASIC_TRUE_CONTROLS != 0;
        let pick = |plain, with_true| read(if true_controls { with_true } else { plain });
        let adjust = |name, desired: u32, capability| {
            self::adjust(desired, capability)
                .map_err(|missing| VmxError::MissingControl { name, missing })
        };
        let pin = adjust(
            "pin-based",
            (PinbasedControls::EXTERNAL_INTERRUPT_EXITING | PinbasedControls::VMX_PREEMPTION_TIMER)
                .bits(),
            pick(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS),
        )?;
        let primary = adjust(
            "primary processor-based",
            (PrimaryControls::HLT_EXITING
                | PrimaryControls::UNCOND_IO_EXITING
                | PrimaryControls::SECONDARY_CONTROLS)
                .bits(),
            pick(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS),
        )?;
        let secondary_capability = read(IA32_VMX_PROCBASED_CTLS2);
        // RDTSCP (and RDPID) raise #UD in the guest unless enabled: enabled where the CPU
        // allows it (bits 63:32 of the capability), so the guest has what it has natively.
        let rdtscp = SecondaryControls::ENABLE_RDTSCP.bits();
        let rdtscp = if (secondary_capability >> 32) as u32 & rdtscp != 0 { rdtscp } else { 0 };
        let secondary = adjust(
            "secondary processor-based",
            // WBINVD exiting: a guest's cache flush would stall every domain (xen-lite has no
            // devices that need it), so it exits and is skipped, as Xen does.
            (SecondaryControls::ENABLE_EPT | SecondaryControls::WBINVD_EXITING).bits() | rdtscp,
            secondary_capability,
        )?;
        let exit = adjust(
            "VM-exit",
            (ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::ACK_INTERRUPT_ON_EXIT
                | ExitControls::SAVE_IA32_EFER
                | ExitControls::LOAD_IA32_EFER)
                .bits(),
            pick(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS),
        )?;
        let entry = adjust(
            "VM-entry",
            (EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER).bits(),
            pick(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS),
        )?;
        // EPT with a four-level walk and write-back tables (EPT/VPID capability bits 6, 14).
        let ept = read(IA32_VMX_EPT_VPID_CAP);
        if ept & (1 << 6) == 0 || ept & (1 << 14) == 0 {
            return Err(VmxError::MissingControl { name: "EPT capability", missing: ept as u32 });
        }
        let ((cr0_fixed0, _), (cr4_fixed0, _)) = fixed_bits();
        // The preemption timer counts down once every 2^rate TSC cycles (IA32_VMX_MISC 4:0).
        let preemption_rate = (read(IA32_VMX_MISC) & 0x1f) as u32;
        Ok(Controls {
            pin,
            primary,
            secondary,
            exit,
            entry,
            cr0_fixed0,
            cr4_fixed0,
            preemption_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_bits_are_added_and_allowed_bits_kept() {
        // Must be one: bits 1, 2, 4 (0x16); may be one: everything in 0xff.
        let capability = (0xffu64 << 32) | 0x16;
        assert_eq!(adjust(0x81, capability), Ok(0x97));
        assert_eq!(adjust(0, capability), Ok(0x16));
    }

    #[test]
    fn bits_the_cpu_lacks_are_named() {
        let capability = (0x0fu64 << 32) | 0x01;
        assert_eq!(adjust(0x31, capability), Err(0x30));
    }
}
