//! The hostile table: every attack of `pv-guest/src/workloads/attacks.rs` as a boot test named
//! `hostile-<attack>`, each beside a bystander domain that must end intact, each expecting one
//! exact outcome: what the hypercall returned, what the snippet raised, or the line xen-lite
//! kills the attacker with. `cargo xtask test --filter hostile` ends with the table (case, mode,
//! emulator, expected, seen).
//!
//! Bochs is the authority for isolation (DESIGN §2). A case also runs in QEMU unless it relies
//! on one of QEMU 7.2's known deviations, which [`Case::qemu`] then names.

use hypercall_abi::devices::STATUS_DOMAIN_KILLED;

use crate::boot_tests::{BootTest, Bundle};
use crate::cli::Emulator;

/// What a case must end with.
#[derive(Clone, Copy)]
pub enum Expect {
    /// The attacker prints `attack NAME: <this>` and both domains exit 0.
    Line(&'static str),
    /// xen-lite kills the attacker with a line containing this; the bystander exits 0.
    Kill(&'static str),
}

/// One row of the table.
pub struct Case {
    /// The attack's name (`attack=NAME`); the test is `hostile-NAME` (or `hostile-vmx-NAME`,
    /// `hostile-svm-NAME`).
    pub attack: &'static str,
    /// `pv`, `vmx` or `svm`.
    pub mode: &'static str,
    /// Extra words for xen-lite's command line.
    pub options: &'static str,
    /// The outcome.
    pub expect: Expect,
    /// `Ok(())`: also in QEMU; `Err(why)`: Bochs only, because of this QEMU bug (or, for vmx,
    /// because QEMU has no VMX).
    pub qemu: Result<(), &'static str>,
    /// Why xen-lite must do this, in a few words (README and lecture note 07 list them).
    pub why: &'static str,
}

const fn pv(attack: &'static str, expect: Expect, why: &'static str) -> Case {
    Case { attack, mode: "pv", options: "", expect, qemu: Ok(()), why }
}

const fn vmx(attack: &'static str, expect: Expect, why: &'static str) -> Case {
    Case { attack, mode: "vmx", options: "", expect, qemu: Err("QEMU TCG has no VMX"), why }
}

const fn svm(attack: &'static str, expect: Expect, why: &'static str) -> Case {
    Case { attack, mode: "svm", options: "", expect, qemu: Ok(()), why }
}

const fn trap(attack: &'static str, expect: Expect, why: &'static str) -> Case {
    Case { attack, mode: "trap", options: "", expect, qemu: Ok(()), why }
}

use Expect::{Kill, Line};

/// Every case.
pub const CASES: &[Case] = &[
    // Pointer arguments (DESIGN §4 invariant 3).
    pv(
        "console-io-into-xen-lite",
        Line("returned EFAULT"),
        "a guest pointer into xen-lite is never followed",
    ),
    pv("console-io-wrapping", Line("returned EFAULT"), "a range that wraps past 2^64 is refused"),
    pv("console-io-huge-length", Line("returned EINVAL"), "lengths are bounded before any copy"),
    pv("console-io-non-canonical", Line("returned EFAULT"), "a non-canonical pointer is refused"),
    pv(
        "console-io-user-half",
        Line("returned EFAULT"),
        "hypercalls take kernel (direct-map) pointers only",
    ),
    pv(
        "console-io-past-its-memory",
        Line("returned EFAULT"),
        "a range running into another domain is refused",
    ),
    pv(
        "stats-into-its-l4",
        Line("returned EFAULT"),
        "xen-lite never writes a page table through its own map",
    ),
    pv(
        "stats-into-xen-lite",
        Line("returned EFAULT"),
        "output pointers are checked like input ones",
    ),
    Case {
        options: "umip=off",
        ..pv(
            "stats-into-the-switcher",
            Line("returned EFAULT"),
            "the switcher is mapped, but never the guest's",
        )
    },
    pv(
        "trap-table-in-xen-lite",
        Line("returned EFAULT"),
        "set_trap_table copies from the guest only",
    ),
    pv("trap-table-wrapping", Line("returned EFAULT"), "record arrays that wrap are refused"),
    pv(
        "trap-handler-in-user-half",
        Line("returned EINVAL"),
        "handlers must lie in the domain's kernel memory",
    ),
    pv(
        "stack-switch-into-xen-lite",
        Line("returned EFAULT"),
        "a bounce stack must be the domain's memory",
    ),
    pv(
        "stack-switch-wrapping",
        Line("returned EFAULT"),
        "a bounce stack below address 64 would wrap",
    ),
    pv(
        "stack-switch-xen-lite-selector",
        Line("returned EINVAL"),
        "only the ring-1 data selector is a stack selector",
    ),
    pv(
        "callback-in-xen-lite",
        Line("returned EINVAL"),
        "callbacks must lie in the domain's memory",
    ),
    pv(
        "callback-window-past-its-memory",
        Line("returned EINVAL"),
        "regression: the no-delivery window's end was unchecked",
    ),
    pv(
        "callback-window-over-the-kernel",
        Line("returned EINVAL"),
        "regression: a window over the whole kernel disables events",
    ),
    pv(
        "mmu-update-records-in-xen-lite",
        Line("returned EFAULT"),
        "batch records are copied in, checked",
    ),
    pv(
        "mmu-update-records-wrapping",
        Line("returned EFAULT"),
        "a record array that wraps is refused",
    ),
    pv("mmu-update-huge-count", Line("returned EINVAL"), "batch counts are bounded"),
    pv(
        "mmuext-done-in-xen-lite",
        Line("returned EFAULT, nothing applied"),
        "regression: a bad `done` was found only after the batch was applied",
    ),
    pv(
        "mmuext-done-in-its-l4",
        Line("returned EFAULT, nothing applied"),
        "regression: as above, `done` in a page table",
    ),
    pv(
        "mmuext-done-in-the-pinned-frame",
        Kill("mmuext_op: `done` at 0x"),
        "a batch that makes its own `done` a page table cannot be reported: kill",
    ),
    pv(
        "update-va-mapping-non-canonical",
        Line("returned EINVAL"),
        "regression: a non-canonical address edited its canonical twin",
    ),
    pv(
        "update-va-mapping-xen-lite",
        Line("returned EINVAL"),
        "xen-lite's level-4 slots are not the guest's",
    ),
    pv("hypercall-unknown-number", Line("returned ENOSYS"), "one exhaustive dispatcher"),
    // Typing the frames xen-lite writes (invariant 5) or already typed (invariant 2).
    pv(
        "pin-shared-info-as-l1",
        Line("returned EBUSY (read-only remap: 0x0)"),
        "regression, the escape: the shared page became an L1 xen-lite kept writing",
    ),
    pv(
        "pin-shared-info-as-l4",
        Line("returned EBUSY (read-only remap: 0x0)"),
        "the shared page can never be any page table",
    ),
    pv(
        "shared-info-under-an-l2-entry",
        Line("returned EBUSY"),
        "nor become one through a higher-level entry",
    ),
    pv("its-l4-under-an-l2-entry", Line("returned EBUSY"), "a frame has one table type at a time"),
    pv("map-its-l1-writable", Line("returned EBUSY"), "a page table is never mapped writable"),
    pv("new-baseptr-to-a-data-frame", Line("returned EBUSY"), "CR3 only ever names a validated L4"),
    pv("pin-another-domains-frame", Line("returned EPERM"), "a domain types only its own frames"),
    pv("pin-a-xen-lite-frame", Line("returned EPERM"), "nor xen-lite's"),
    // Flags across every entry instruction; every software interrupt; every selector.
    pv(
        "tf-across-a-hypercall",
        Line("caught vector 1 in ring 1"),
        "a single step across int 0x82 reaches the guest, not xen-lite",
    ),
    pv(
        "mov-ss-delays-tf-into-int-0x82",
        Line("caught vector 1 in ring 1"),
        "CVE-2018-8897: a #DB delayed by mov ss arrives at CPL 0 in xen-lite's entry stub",
    ),
    pv(
        "df-before-a-page-fault",
        Line("caught vector 14 in ring 1, error code 0x0"),
        "DF survives delivery: the IST path's string copies must clear it first",
    ),
    pv(
        "tf-before-syscall",
        Line("caught vector 1 in ring 3"),
        "regression: #DB at CPL 0 on syscall_entry's first instruction stopped xen-lite (XSA-204)",
    ),
    pv(
        "tf-before-int-0x80",
        Line("caught vector 1 in ring 3"),
        "the fast trap's single step stays in the guest",
    ),
    pv(
        "nt-before-syscall",
        Line("exited with status 0"),
        "FMASK clears NT: xen-lite's iretq must not #GP",
    ),
    pv("ac-before-syscall", Line("exited with status 0"), "FMASK clears AC"),
    pv(
        "iopl-from-ring-3",
        Line("caught vector 13 in ring 3"),
        "popfq cannot raise IOPL outside ring 0",
    ),
    pv(
        "iopl-from-ring-1",
        Kill("privileged instruction `in` in ring 1"),
        "nor in ring 1: the port stays closed",
    ),
    pv(
        "int-n-from-ring-3",
        Line("253 vectors #GP, 0 otherwise"),
        "only int3, into and int 0x80 are open to ring 3",
    ),
    pv(
        "int-n-from-ring-1",
        Line("252 vectors #GP, 0 otherwise"),
        "ring 1 also gets int 0x82, nothing else",
    ),
    Case {
        qemu: Err("QEMU 7.2 runs ring 1 at CPL 0 after `mov ss` of a null selector"),
        ..pv(
            "every-selector-in-every-segment",
            Line("66 loads, 334 refused, 0 not allowed by the SDM"),
            "xen-lite's descriptors cannot be loaded from ring 1",
        )
    },
    Case {
        qemu: Err("QEMU 7.2 mishandles far transfers into ring 1 (DESIGN §2)"),
        ..pv(
            "far-jump-to-every-selector",
            Line("2 landed, 0 outside its own code segment"),
            "no far jump reaches xen-lite's code segment",
        )
    },
    pv(
        "ldt-call-gate-into-ring-0",
        Line("caught vector 13 in ring 1, error code 0x4"),
        "regression: LDTR kept its reset value, so page 0 was an LDT the guest wrote",
    ),
    pv(
        "non-canonical-syscall-return",
        Line("caught vector 13 in ring 3 at rip 0x800000000000"),
        "CVE-2012-0217's set-up: per the SDM the kernel's own iretq faults (Bochs and QEMU fault at the target)",
    ),
    // What the CPU tables show (UMIP), what the stacks they name hold (invariant 6).
    pv(
        "sgdt-in-ring-1",
        Line("base 0x0 limit 0x0"),
        "regression: sgdt showed xen-lite's GDT; UMIP on, emulated",
    ),
    pv("sgdt-in-ring-3", Line("caught vector 13 in ring 3"), "UMIP: sgdt from user code is #GP"),
    Case {
        options: "umip=off",
        ..pv(
            "read-guest-visible-stacks",
            Line("0 words of another domain"),
            "regression: the #PF IST stack kept the last faulting domain's registers",
        )
    },
    // Events, timers, exhaustion.
    pv("event-send-bad-port", Line("returned EINVAL"), "ports are bounded"),
    pv("event-send-unbound-port", Line("returned ENOENT"), "a port must be opened for the sender"),
    pv("event-send-no-such-domain", Line("returned ESRCH"), "domain ids are checked"),
    pv("event-bind-virq-twice", Line("returned 0x0 then EBUSY"), "a VIRQ binds once"),
    pv("event-ports-exhausted", Line("63 ports, then returned ENOSPC"), "exhaustion is an errno"),
    pv(
        "event-storm",
        Line("20000 sends, 0 errors"),
        "events to itself cannot starve the bystander",
    ),
    pv("timer-storm", Line("1000 timers, 0 errors"), "timer abuse cannot starve the bystander"),
    pv("shutdown-bad-code", Line("returned EINVAL"), "exit codes are bounded"),
    pv(
        "frames-exhausted-as-page-tables",
        Line("64 frames pinned and unpinned, 0 failures"),
        "page-table frames come from the guest, not xen-lite",
    ),
    // The exits a VMX guest can force.
    vmx("wbinvd", Line("ran; 1 VM exit(s) for it"), "regression: wbinvd ran without an exit"),
    vmx("invd", Line("ran; 1 VM exit(s) for it"), "invd always exits; skipped, never executed"),
    vmx(
        "xsetbv",
        Kill("unexpected VM exit 55 (XSETBV)"),
        "an exit xen-lite does not emulate kills, naming it",
    ),
    vmx("vmxon", Kill("unexpected VM exit 27 (VMXON)"), "no nested VMX"),
    vmx(
        "pit-abuse",
        Kill("out of 1 byte(s), value 0x0, to port 0x43 at rip 0x"),
        "the virtual PIT refuses what it does not model",
    ),
    vmx(
        "nt-before-syscall",
        Line("exited with status 0"),
        "the hvm kernel's FMASK clears NT (Bochs's iretq did not fault without it)",
    ),
    vmx(
        "non-canonical-syscall-return",
        Line("caught vector 13 in ring 3 at rip 0x800000000000"),
        "the same set-up under the hvm kernel",
    ),
    vmx("console-io-into-xen-lite", Line("returned EFAULT"), "the same checked copy for vmcall"),
    vmx("stats-into-xen-lite", Line("returned EFAULT"), "the same checked copy for output"),
    // The same exits under SVM, and the SVM instructions its guest could reach.
    svm("wbinvd", Line("ran; 1 VM exit(s) for it"), "wbinvd is intercepted and skipped"),
    Case {
        qemu: Err("QEMU 7.2 reports invd's intercept with WBINVD's exit code (translate.c)"),
        ..svm("invd", Line("ran; 1 VM exit(s) for it"), "invd is intercepted, never executed")
    },
    Case {
        qemu: Err("QEMU 7.2's -cpu max has no XSAVE under TCG: #UD, and no XSETBV intercept"),
        ..svm(
            "xsetbv",
            Kill("unexpected #VMEXIT 0x8d (XSETBV)"),
            "SVM does not switch XCR0: intercepted, or one guest would set another's",
        )
    },
    svm("vmxon", Line("caught vector 6 in ring 0"), "no VMX on an AMD CPU: the guest's own #UD"),
    svm(
        "pit-abuse",
        Kill("out of 1 byte(s), value 0x0, to port 0x43 at rip 0x"),
        "the same virtual PIT as vmx",
    ),
    svm("nt-before-syscall", Line("exited with status 0"), "the same kernel as under vmx"),
    svm(
        "non-canonical-syscall-return",
        Line("caught vector 13 in ring 3 at rip 0x800000000000"),
        "the same set-up under the svm guest",
    ),
    svm("console-io-into-xen-lite", Line("returned EFAULT"), "the same checked copy for vmmcall"),
    svm("stats-into-xen-lite", Line("returned EFAULT"), "the same checked copy for output"),
    svm("vmrun", Kill("vmrun: an SVM instruction"), "no nested SVM: vmrun is intercepted"),
    svm("vmload", Kill("vmload: an SVM instruction"), "vmload would load any frame's state into the CPU"),
    svm("vmsave", Kill("vmsave: an SVM instruction"), "vmsave would write the CPU's state into any frame"),
    svm("stgi", Kill("stgi: an SVM instruction"), "the global interrupt flag is xen-lite's"),
    svm("clgi", Kill("clgi: an SVM instruction"), "clgi would hold off xen-lite's interrupts"),
    svm("skinit", Kill("skinit: an SVM instruction"), "no secure launch from a guest"),
    svm("invlpga", Kill("invlpga: an SVM instruction"), "another ASID's TLB entries are not the guest's"),
    // `mode=trap`: the virtual CPU's checks on what ring 1 asks of it.
    trap(
        "lgdt-non-canonical",
        Kill("lgdt with 0x8000000000000000: a table base must be canonical"),
        "xen-lite reads the guest's GDT: its base must be an address",
    ),
    trap(
        "far-return-to-data",
        Kill("a gate or far return with 0x10: kernel code must be a present 64-bit code descriptor of DPL 0"),
        "only code descriptors become the ring-1 code segment",
    ),
    trap(
        "ring0-descriptor",
        Line("after a far return to its DPL-0 code descriptor, CS is 0x19 (ring 1)"),
        "a DPL-0 descriptor is presented at DPL 1 (Xen's check_descriptor): ring 0 stays xen-lite's",
    ),
    trap(
        "wrmsr-sysenter",
        Kill("wrmsr of MSR 0x176 at rip 0x"),
        "an MSR xen-lite does not virtualise would reach the real CPU: refused",
    ),
    trap(
        "efer-long-mode-off",
        Kill("wrmsr of MSR 0xc0000080 at rip 0x"),
        "EFER's mode bits are xen-lite's; SCE and NXE are the guest's",
    ),
    trap(
        "ltr-data",
        Line("caught vector 13 in ring 0, error code 0x10"),
        "ltr of anything but an available TSS is the #GP the CPU raises",
    ),
];

/// The boot tests of the table.
pub fn tests() -> Vec<BootTest> {
    let mut tests = Vec::new();
    for case in CASES {
        let name: &'static str = Box::leak(test_name(case).into_boxed_str());
        let bystander = match (case.mode, case.attack) {
            (_, "read-guest-visible-stacks") => "secret-faults",
            ("vmx" | "svm" | "trap", _) => "init hello",
            _ => "hello",
        };
        let cmdline = format!(
            "mode={} domain=\"attack={}\" domain=\"{bystander}\" {}",
            case.mode, case.attack, case.options
        );
        let cmdline: &'static str = Box::leak(cmdline.into_boxed_str());
        let (first, status) = match case.expect {
            Line(line) => (format!("[dom0] attack {}: {line}", case.attack), 0),
            Kill(line) => (format!("[xen] ERROR dom0 killed: {line}"), STATUS_DOMAIN_KILLED),
        };
        let first: &'static str = Box::leak(first.into_boxed_str());
        let expect: &'static [&'static str] =
            Box::leak(Box::new([first, "[xen]   dom1: exit code 0"]));
        let emulators: &[Emulator] =
            if case.qemu.is_ok() { &[Emulator::Bochs, Emulator::Qemu] } else { &[Emulator::Bochs] };
        for &emulator in emulators {
            tests.push(BootTest {
                name,
                emulator,
                bundle: Bundle::Cmdline(cmdline),
                expect,
                status,
            });
        }
    }
    tests
}

/// `hostile-ATTACK` for pv, `hostile-MODE-ATTACK` for the hardware modes.
fn test_name(case: &Case) -> String {
    match case.mode {
        "pv" => format!("hostile-{}", case.attack),
        mode => format!("hostile-{mode}-{}", case.attack),
    }
}

/// The line of a hostile case's console that shows what happened: its result line, the kill,
/// or xen-lite's fatal report.
pub fn seen(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("[dom0] attack ") || l.contains("dom0 killed:") || l.contains("FATAL"))
        .map_or_else(|| "(nothing)".to_string(), |l| l.trim().to_string())
}

/// Prints the table of the hostile cases that ran: `(label, expected, seen, passed)`.
pub fn print_table(rows: &[(String, String, String, bool)]) {
    if rows.is_empty() {
        return;
    }
    println!("hostile table: {} runs", rows.len());
    println!("  {:<48} {:<5} {:<8} {:<6} expected / seen", "case", "mode", "emulator", "");
    for (label, expected, seen, passed) in rows {
        let (name, emulator) = label.rsplit_once('/').unwrap_or((label, "?"));
        let case = CASES.iter().find(|c| test_name(c) == name);
        let mode = case.map_or("?", |c| c.mode);
        let verdict = if *passed { "ok" } else { "FAIL" };
        println!("  {name:<48} {mode:<5} {emulator:<8} {verdict:<6} {expected}");
        if !passed || !seen.contains(expected.trim_start_matches("[dom0] ")) {
            println!("  {:<48} {:<5} {:<8} {:<6} seen: {seen}", "", "", "", "");
            if let Some(case) = case {
                println!("  {:<48} {:<5} {:<8} {:<6} why: {}", "", "", "", "", case.why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_at_least_forty_attacks_and_every_one_says_why() {
        assert!(CASES.len() >= 40, "{} cases", CASES.len());
        assert!(CASES
            .iter()
            .all(|c| !c.why.is_empty() && matches!(c.mode, "pv" | "vmx" | "svm" | "trap")));
        let regressions = CASES.iter().filter(|c| c.why.starts_with("regression")).count();
        assert!(regressions >= 10, "{regressions} regression cases");
    }

    #[test]
    fn every_attack_name_fits_the_guest_command_line() {
        for case in CASES {
            assert!(case.attack.len() <= 31, "{} is longer than a ProgramName", case.attack);
        }
    }

    #[test]
    fn every_attack_the_table_names_exists_in_the_guest() {
        let source = include_str!("../../pv-guest/src/workloads/attacks.rs");
        for case in CASES {
            assert!(source.contains(&format!("name: \"{}\"", case.attack)), "{}", case.attack);
        }
    }

    #[test]
    fn lecture_note_07_lists_every_case() {
        let note = include_str!("../../lecture-notes/07-hostile-guests.md");
        for case in CASES {
            assert!(
                note.contains(&format!("| `{}` | {} |", case.attack, case.mode)),
                "{}",
                case.attack
            );
        }
    }

    #[test]
    fn the_seen_line_is_the_outcome() {
        let console = "[dom1] hello\n[dom0] attack x: returned EFAULT\n[xen] summary";
        assert_eq!(seen(console), "[dom0] attack x: returned EFAULT");
        assert_eq!(seen("[xen] ERROR dom0 killed: why\n"), "[xen] ERROR dom0 killed: why");
        assert_eq!(seen(""), "(nothing)");
    }
}
