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
/// `invlpg` (with "INVLPG exiting": shadow paging).
pub const INVLPG: u16 = 14;
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

/// The counter slot and the name of a VM exit in `mode`'s own words: VMX counts by basic exit
/// reason; SVM's exit codes are counted in the slot of the VMX reason that means the same
/// ([`svm::slot`]), so every program that reads [`crate::hypercall::Stats`] works in both.
pub fn name_in(mode: crate::Mode, slot: u16) -> &'static str {
    match mode {
        crate::Mode::Svm => svm::slot_name(slot),
        _ => name(slot),
    }
}

/// AMD-V exit codes (`EXITCODE` in the VMCB) and the VMX slot each is counted in. See: AMD64
/// APM Vol. 2, revision 3.42, Appendix C ("SVM intercept exit codes").
pub mod svm {
    /// `mov` from CR3 (shadow paging: the guest reads the value it wrote).
    pub const CR3_READ: u64 = 0x03;
    /// `mov` to CR3 (shadow paging: a new shadow).
    pub const CR3_WRITE: u64 = 0x13;
    /// A page fault (shadow paging: hidden, or the guest's).
    pub const PAGE_FAULT: u64 = 0x4e;
    /// `invlpg` (shadow paging).
    pub const INVLPG: u64 = 0x79;
    /// A physical interrupt arrived while the guest ran (the INTR intercept).
    pub const INTR: u64 = 0x60;
    /// The guest can take the virtual interrupt xen-lite offered (the VINTR intercept).
    pub const VINTR: u64 = 0x64;
    /// `cpuid`.
    pub const CPUID: u64 = 0x72;
    /// `invd`.
    pub const INVD: u64 = 0x76;
    /// `hlt`.
    pub const HLT: u64 = 0x78;
    /// `invlpga`.
    pub const INVLPGA: u64 = 0x7a;
    /// `in`/`out` to a port the I/O permission map intercepts.
    pub const IOIO: u64 = 0x7b;
    /// `rdmsr`/`wrmsr` of an MSR the MSR permission map intercepts (EXITINFO1 = 1 for a write).
    pub const MSR: u64 = 0x7c;
    /// Shutdown: the guest triple-faulted.
    pub const SHUTDOWN: u64 = 0x7f;
    /// `vmrun`.
    pub const VMRUN: u64 = 0x80;
    /// `vmmcall`: the hypercall.
    pub const VMMCALL: u64 = 0x81;
    /// `vmload`.
    pub const VMLOAD: u64 = 0x82;
    /// `vmsave`.
    pub const VMSAVE: u64 = 0x83;
    /// `stgi`.
    pub const STGI: u64 = 0x84;
    /// `clgi`.
    pub const CLGI: u64 = 0x85;
    /// `skinit`.
    pub const SKINIT: u64 = 0x86;
    /// `wbinvd`.
    pub const WBINVD: u64 = 0x89;
    /// `xsetbv`.
    pub const XSETBV: u64 = 0x8d;
    /// A guest-physical address the nested page tables do not map (EXITINFO2 holds it).
    pub const NPF: u64 = 0x400;
    /// `vmrun` refused the VMCB (no guest ran): `VMEXIT_INVALID`, -1.
    pub const INVALID: u64 = u64::MAX;

    /// Every exit code xen-lite tells apart: the code, its name, the VMX slot it is counted in.
    /// `MSR` has two slots (read, write): [`slot`] gets the direction.
    pub(crate) const CODES: [(u64, &str, u16); 24] = [
        (CR3_READ, "CR3 access", super::CR_ACCESS),
        (CR3_WRITE, "CR3 access", super::CR_ACCESS),
        (PAGE_FAULT, "#PF", super::EXCEPTION_OR_NMI),
        (INVLPG, "INVLPG", 14),
        (INTR, "INTR", super::EXTERNAL_INTERRUPT),
        (VINTR, "VINTR", super::INTERRUPT_WINDOW),
        (CPUID, "CPUID", super::CPUID),
        (INVD, "INVD", super::INVD),
        (HLT, "HLT", super::HLT),
        (INVLPGA, "INVLPGA", 58),
        (IOIO, "IOIO", super::IO_INSTRUCTION),
        (MSR, "MSR read", super::RDMSR),
        (MSR, "MSR write", super::WRMSR),
        (SHUTDOWN, "SHUTDOWN", super::TRIPLE_FAULT),
        (VMRUN, "VMRUN", 20),
        (VMMCALL, "VMMCALL", super::VMCALL),
        (VMLOAD, "VMLOAD", 21),
        (VMSAVE, "VMSAVE", 22),
        (STGI, "STGI", 25),
        (CLGI, "CLGI", 23),
        (SKINIT, "SKINIT", 11),
        (WBINVD, "WBINVD", super::WBINVD),
        (XSETBV, "XSETBV", 55),
        (NPF, "NPF", super::EPT_VIOLATION),
    ];

    /// The slot every other exit code is counted in (the last).
    pub const OTHER_SLOT: u16 = crate::hypercall::VM_EXIT_SLOTS as u16 - 1;

    /// The APM's name for exit `code` (exceptions as `EXCP n`).
    pub fn name(code: u64) -> &'static str {
        const EXCEPTIONS: [&str; 32] = [
            "EXCP 0", "EXCP 1", "EXCP 2", "EXCP 3", "EXCP 4", "EXCP 5", "EXCP 6", "EXCP 7",
            "EXCP 8", "EXCP 9", "EXCP 10", "EXCP 11", "EXCP 12", "EXCP 13", "EXCP 14", "EXCP 15",
            "EXCP 16", "EXCP 17", "EXCP 18", "EXCP 19", "EXCP 20", "EXCP 21", "EXCP 22", "EXCP 23",
            "EXCP 24", "EXCP 25", "EXCP 26", "EXCP 27", "EXCP 28", "EXCP 29", "EXCP 30", "EXCP 31",
        ];
        match code {
            0x40..=0x5f => EXCEPTIONS[(code - 0x40) as usize],
            INVALID => "INVALID",
            MSR => "MSR",
            _ => CODES.iter().find(|c| c.0 == code).map_or("unknown exit code", |c| c.1),
        }
    }

    /// The `Stats::vm_exits` slot exit `code` is counted in (`write` tells an MSR write).
    pub fn slot(code: u64, write: bool) -> u16 {
        let slot = |name: &str| CODES.iter().find(|c| c.1 == name).map(|c| c.2);
        let found = match code {
            MSR if write => slot("MSR write"),
            MSR => slot("MSR read"),
            _ => CODES.iter().find(|c| c.0 == code).map(|c| c.2),
        };
        found.unwrap_or(OTHER_SLOT)
    }

    /// The SVM name of what slot `slot` counts.
    pub fn slot_name(slot: u16) -> &'static str {
        match CODES.iter().find(|c| c.2 == slot) {
            Some(c) => c.1,
            None if slot == OTHER_SLOT => "other",
            None => "unused",
        }
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

    #[test]
    fn svm_codes_count_in_the_slot_of_the_vmx_reason_that_means_the_same() {
        assert_eq!(svm::slot(svm::VMMCALL, false), VMCALL);
        assert_eq!(svm::slot(svm::MSR, false), RDMSR);
        assert_eq!(svm::slot(svm::MSR, true), WRMSR);
        assert_eq!(svm::slot(svm::NPF, false), EPT_VIOLATION);
        assert_eq!(svm::slot(svm::INTR, false), EXTERNAL_INTERRUPT);
        assert_eq!(svm::slot(0x7d, false), svm::OTHER_SLOT, "task switch: not told apart");
        assert_eq!(svm::slot_name(VMCALL), "VMMCALL");
        assert_eq!(svm::slot_name(WRMSR), "MSR write");
        assert_eq!(name_in(crate::Mode::Svm, HLT), "HLT");
        assert_eq!(name_in(crate::Mode::Vmx, VMCALL), "VMCALL");
        assert_eq!(svm::name(0x4e), "EXCP 14");
        assert_eq!(svm::name(svm::INVALID), "INVALID");
        // Every slot holds one kind of exit (MSR's two directions apart, CR3's together).
        for (i, a) in svm::CODES.iter().enumerate() {
            let shares = |b: &&(u64, &str, u16)| b.2 == a.2 && b.1 != a.1;
            assert!(svm::CODES[i + 1..].iter().all(|b| !shares(&b)), "{} shares a slot", a.1);
            assert!((a.2 as usize) < VM_EXIT_SLOTS - 1);
        }
        // The timer's reasons exist under SVM too, except the VMX-preemption timer.
        for r in TIMER_REASONS.iter().filter(|&&r| r != PREEMPTION_TIMER) {
            assert_ne!(svm::slot_name(*r), "unused");
        }
    }
}
