//! What the CPU underneath offers: vendor, model, and its hardware virtualisation (VMX, which
//! `vmx` mode needs; SVM, which the boot log reports), and UMIP.
//!
//! See: Intel SDM Vol. 3C, revision 086, 24.6 (discovering VMX support) and Appendix A.1
//! (`IA32_VMX_BASIC`); AMD APM Vol. 2, revision 3.42, 15.4 (enabling SVM).

use x86::msr::{IA32_FEATURE_CONTROL, IA32_VMX_BASIC};

use crate::instructions::{cpuid, rdmsr};

/// CPUID.1:ECX bit 5: VMX.
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CPUID.(EAX=7,ECX=0):ECX bit 2: UMIP.
const CPUID_7_ECX_UMIP: u32 = 1 << 2;
/// CPUID.80000001h:ECX bit 2: SVM.
const CPUID_80000001_ECX_SVM: u32 = 1 << 2;

/// Hardware-virtualization facts about this CPU.
pub struct CpuReport {
    /// `GenuineIntel`, `AuthenticAMD`, ...
    pub vendor: [u8; 12],
    /// The brand string, NUL-padded.
    pub brand: [u8; 48],
    /// VMX: `(IA32_VMX_BASIC revision id, IA32_FEATURE_CONTROL)` if CPUID reports VMX.
    pub vmx: Option<(u32, u64)>,
    /// Whether CPUID reports SVM.
    pub svm: bool,
    /// Whether CPUID reports UMIP (user-mode instruction prevention, CR4 bit 11).
    pub umip: bool,
}

/// Reads everything [`CpuReport`] holds.
pub fn probe() -> CpuReport {
    let [_, ebx, ecx, edx] = cpuid(0, 0);
    let mut vendor = [0; 12];
    for (chunk, word) in vendor.chunks_mut(4).zip([ebx, edx, ecx]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let max_extended = cpuid(0x8000_0000, 0)[0];
    let mut brand = [0; 48];
    if max_extended >= 0x8000_0004 {
        for (i, leaf) in (0x8000_0002..=0x8000_0004).enumerate() {
            for (j, word) in cpuid(leaf, 0).into_iter().enumerate() {
                let at = i * 16 + j * 4;
                brand[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    let vmx = (cpuid(1, 0)[2] & CPUID_1_ECX_VMX != 0).then(|| {
        // SAFETY: both MSRs exist on every CPU that reports VMX in CPUID.
        let (basic, control) = unsafe { (rdmsr(IA32_VMX_BASIC), rdmsr(IA32_FEATURE_CONTROL)) };
        ((basic & 0x7fff_ffff) as u32, control)
    });
    let svm = max_extended >= 0x8000_0001 && cpuid(0x8000_0001, 0)[2] & CPUID_80000001_ECX_SVM != 0;
    let umip = cpuid(0, 0)[0] >= 7 && cpuid(7, 0)[2] & CPUID_7_ECX_UMIP != 0;
    CpuReport { vendor, brand, vmx, svm, umip }
}

fn text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("?").trim()
}

/// Logs the CPU and its virtualization features, one line each.
pub fn log_report(report: &CpuReport) {
    log::info!("cpu: {} \"{}\"", text(&report.vendor), text(&report.brand));
    match report.vmx {
        Some((revision, control)) => log::info!(
            "cpu: VMX offered, VMCS revision id {revision:#x} (IA32_VMX_BASIC); IA32_FEATURE_CONTROL {control:#x} ({}, VMX outside SMX {})",
            if control & 1 != 0 { "locked" } else { "unlocked" },
            if control & 4 != 0 { "on" } else { "off" },
        ),
        None => log::info!("cpu: VMX not offered by this CPU"),
    }
    log::info!("cpu: SVM {}", if report.svm { "offered" } else { "not offered" });
}

/// Turns CR4.UMIP on if the CPU has it and the command line wants it. Then `sgdt`, `sidt`,
/// `sldt`, `str` and `smsw` raise #GP outside ring 0 instead of showing a guest where
/// xen-lite's tables are (one of the instructions that make x86 fail Popek and Goldberg);
/// `pv` emulates them for the guest kernel with fixed values (`pv::guest_exception`).
pub fn set_umip(report: &CpuReport, wanted: bool) {
    let on = report.umip && wanted;
    let cr4 = crate::instructions::read_cr4();
    let bit = x86::controlregs::Cr4::CR4_ENABLE_UMIP.bits() as u64;
    // SAFETY: UMIP only changes what the five instructions do outside ring 0; xen-lite never
    // executes them there.
    unsafe { crate::instructions::write_cr4(if on { cr4 | bit } else { cr4 & !bit }) };
    log::info!(
        "cpu: UMIP {}",
        match (report.umip, wanted) {
            (false, _) => "not offered",
            (true, true) => "on",
            (true, false) => "offered, off (umip=off)",
        }
    );
}
