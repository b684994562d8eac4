//! Choosing VMX execution controls: pure rules, host-tested.
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
