//! Choosing VMX execution controls, and naming what went wrong: pure rules, host-tested.
//!
//! Every control field (pin-based, primary and secondary processor-based, VM-exit, VM-entry) has
//! a capability MSR whose low 32 bits say which controls *must* be 1 and whose high 32 bits say
//! which *may* be 1. A hypervisor states what it wants and [`adjust`] makes it legal, or says
//! which wanted bits this CPU lacks. When `IA32_VMX_BASIC` bit 55 is set, the `IA32_VMX_TRUE_*`
//! MSRs apply instead: they allow clearing some "default1" controls (such as CR3-load exiting)
//! that the older MSRs force on. See: Intel SDM Vol. 3D, revision 086, Appendix A.3-A.5.

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

/// The VM-instruction error number in words (what a failed `vmlaunch`, `vmresume`, `vmptrld`
/// or `vmwrite` leaves in the current VMCS). See: SDM Vol. 3C, 31.4.
pub const fn instruction_error(number: u64) -> &'static str {
    match number {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
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

    #[test]
    fn errors_read_as_words() {
        assert_eq!(instruction_error(7), "VM entry with invalid control field(s)");
        assert_eq!(instruction_error(8), "VM entry with invalid host-state field(s)");
        assert_eq!(instruction_error(99), "unknown VM-instruction error");
    }
}
