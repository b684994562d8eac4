//! VMX basic exit reasons: the numbers xen-lite counts in `Stats::vm_exits` and prints in its
//! log, and their names, shared so that the guest, the log and the benchmarks say the same
//! thing. See: Intel SDM Vol. 3D, revision 086, Appendix C ("VMX basic exit reasons").

/// An exception or NMI arrived that the exception bitmap asks to see.
pub const EXCEPTION_OR_NMI: u16 = 0;
/// An external interrupt arrived (with "external-interrupt exiting").
pub const EXTERNAL_INTERRUPT: u16 = 1;
/// The guest triple-faulted.
pub const TRIPLE_FAULT: u16 = 2;
/// The guest can take an interrupt now (with "interrupt-window exiting").
pub const INTERRUPT_WINDOW: u16 = 7;
/// `cpuid` (always exits).
pub const CPUID: u16 = 10;
/// `hlt` (with "HLT exiting").
pub const HLT: u16 = 12;
/// `vmcall`: the hypercall.
pub const VMCALL: u16 = 18;
/// `mov` to or from a control register the masks claim.
pub const CR_ACCESS: u16 = 28;
/// `in`/`out` (with "unconditional I/O exiting").
pub const IO_INSTRUCTION: u16 = 30;
/// `rdmsr` (always exits without MSR bitmaps).
pub const RDMSR: u16 = 31;
/// `wrmsr` (always exits without MSR bitmaps).
pub const WRMSR: u16 = 32;
/// VM entry failed: invalid guest state.
pub const INVALID_GUEST_STATE: u16 = 33;
/// VM entry failed: MSR loading.
pub const MSR_LOADING: u16 = 34;
/// `invd` (always exits).
pub const INVD: u16 = 13;
/// `wbinvd` (exits with the WBINVD-exiting control).
pub const WBINVD: u16 = 54;
/// The guest touched a guest-physical address its EPT does not allow.
pub const EPT_VIOLATION: u16 = 48;
/// An EPT entry is malformed.
pub const EPT_MISCONFIGURATION: u16 = 49;
/// The VMX-preemption timer counted down to zero.
pub const PREEMPTION_TIMER: u16 = 52;

/// The exits xen-lite's timer causes whatever the guest is doing: xen-lite's own tick (an
/// external interrupt, or the VMX-preemption timer that backs it up) and the guest's virtual
/// tick (the interrupt window to inject it, the `out` of its end-of-interrupt, a `hlt` while it
/// waits). Measurements count these apart from the exits a workload causes.
pub const TIMER_REASONS: [u16; 5] =
    [EXTERNAL_INTERRUPT, PREEMPTION_TIMER, INTERRUPT_WINDOW, IO_INSTRUCTION, HLT];

/// The SDM's name for basic exit reason `reason`, in the words the log uses.
pub const fn name(reason: u16) -> &'static str {
    match reason {
        0 => "exception or NMI",
        1 => "external interrupt",
        2 => "triple fault",
        3 => "INIT signal",
        4 => "SIPI",
        5 => "I/O SMI",
        6 => "other SMI",
        7 => "interrupt window",
        8 => "NMI window",
        9 => "task switch",
        10 => "CPUID",
        11 => "GETSEC",
        12 => "HLT",
        13 => "INVD",
        14 => "INVLPG",
        15 => "RDPMC",
        16 => "RDTSC",
        17 => "RSM",
        18 => "VMCALL",
        19 => "VMCLEAR",
        20 => "VMLAUNCH",
        21 => "VMPTRLD",
        22 => "VMPTRST",
        23 => "VMREAD",
        24 => "VMRESUME",
        25 => "VMWRITE",
        26 => "VMXOFF",
        27 => "VMXON",
        28 => "control-register access",
        29 => "MOV DR",
        30 => "I/O instruction",
        31 => "RDMSR",
        32 => "WRMSR",
        33 => "VM entry failure: invalid guest state",
        34 => "VM entry failure: MSR loading",
        36 => "MWAIT",
        37 => "monitor trap flag",
        39 => "MONITOR",
        40 => "PAUSE",
        41 => "VM entry failure: machine check",
        43 => "TPR below threshold",
        44 => "APIC access",
        45 => "virtualized EOI",
        46 => "GDTR or IDTR access",
        47 => "LDTR or TR access",
        48 => "EPT violation",
        49 => "EPT misconfiguration",
        50 => "INVEPT",
        51 => "RDTSCP",
        52 => "VMX-preemption timer expired",
        53 => "INVVPID",
        54 => "WBINVD",
        55 => "XSETBV",
        56 => "APIC write",
        57 => "RDRAND",
        58 => "INVPCID",
        59 => "VMFUNC",
        60 => "ENCLS",
        61 => "RDSEED",
        62 => "page-modification log full",
        63 => "XSAVES",
        64 => "XRSTORS",
        _ => "unknown exit reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::VM_EXIT_SLOTS;

    #[test]
    fn named_reasons_match_the_sdm_numbers() {
        assert_eq!(name(VMCALL), "VMCALL");
        assert_eq!(name(EPT_VIOLATION), "EPT violation");
        assert_eq!(name(HLT), "HLT");
        assert_eq!(name(TRIPLE_FAULT), "triple fault");
        assert_eq!(name(35), "unknown exit reason", "35 is not assigned");
        // Every named reason has a counter slot.
        assert!((0..VM_EXIT_SLOTS as u16).any(|r| name(r) == "XRSTORS"));
        assert_eq!(name(VM_EXIT_SLOTS as u16), "unknown exit reason");
    }
}
