//! `cargo xtask doctor`: what this machine can run, and how to fix what is missing.
//!
//! Checks are read-only except one short KVM probe (QEMU started with `-accel kvm` and stopped
//! after two seconds), because `/dev/kvm` can exist and still refuse to run a guest.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{capture, on_path, stdout_of};
use crate::setup::{self, KERNEL_TARGET, NIGHTLY};

struct Check {
    ok: bool,
    what: String,
    fix: Option<String>,
}

fn check(ok: bool, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { ok, what: what.into(), fix: (!ok).then(|| fix.into()) }
}

fn first_line(text: Option<String>) -> String {
    text.and_then(|t| t.lines().next().map(str::to_string)).unwrap_or_default()
}

/// Runs every check and prints the table; exits 0 if the README's commands can work here.
pub fn doctor() -> Result<u8, String> {
    let mut checks = Vec::new();

    let targets = stdout_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    checks.push(check(
        targets.lines().any(|l| l.trim() == KERNEL_TARGET),
        format!("rust target {KERNEL_TARGET} (both kernels)"),
        format!("`cargo xtask run` installs it, or: rustup target add {KERNEL_TARGET}"),
    ));
    checks.push(check(
        setup::nightly_ready(),
        format!("{NIGHTLY} with rust-src, llvm-tools (bootloader image builder, built once)"),
        format!("`cargo xtask run` installs it, or: rustup toolchain install {NIGHTLY} --profile minimal -c rust-src,llvm-tools-preview"),
    ));

    let missing = setup::missing_packages();
    for package in &setup::PACKAGES {
        let ok = !missing.iter().any(|m| m.name == package.name);
        checks.push(check(
            ok,
            format!("{} ({})", package.name, package.purpose),
            setup::install_command(&[package]),
        ));
    }
    if on_path("qemu-system-x86_64") {
        let version = first_line(stdout_of(Command::new("qemu-system-x86_64").arg("--version")));
        checks.push(check(
            true,
            format!("{version}: TCG runs pv, svm, trap and native; it has no VMX"),
            "",
        ));
    }
    if on_path("bochs-bin") {
        // Bochs prints its model list on stdout or stderr depending on the build.
        let models = capture(Command::new("bochs-bin").args(["--help", "cpu"]))
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
        let model = crate::emulator::BOCHS_CPU_MODEL;
        checks.push(check(
            models.lines().any(|l| l.trim() == model),
            format!("Bochs CPU model {model} (VMX with EPT): vmx mode runs in Bochs"),
            "install Debian's bochs 2.7 package (built with VMX); other builds may lack it",
        ));
        let amd = crate::emulator::BOCHS_AMD_CPU_MODEL;
        checks.push(check(
            models.lines().any(|l| l.trim() == amd),
            format!("Bochs CPU model {amd} (SVM with nested paging): svm mode runs in Bochs"),
            "install Debian's bochs 2.7 package (built with SVM); other builds may lack it",
        ));
    }
    if on_path("gdb") {
        checks.push(check(true, first_line(stdout_of(Command::new("gdb").arg("--version"))), ""));
    }
    checks.push(kvm());

    println!("xen-lite doctor: what this machine can run\n");
    for c in &checks {
        println!("  [{}] {}", if c.ok { " ok " } else { "MISS" }, c.what);
        if let Some(fix) = &c.fix {
            println!("         fix: {fix}");
        }
    }
    let essential_missing = checks.iter().take(2 + setup::PACKAGES.len()).filter(|c| !c.ok).count();
    println!();
    if essential_missing == 0 {
        println!("xtask: doctor ok: `cargo xtask run` and `cargo xtask test` can run here");
        Ok(0)
    } else {
        println!("xtask: doctor: {essential_missing} item(s) missing; `cargo xtask run` installs them when run as root");
        Ok(1)
    }
}

/// KVM: device access, CPU support, nested virtualization, and whether QEMU accepts it.
fn kvm() -> Check {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let vendor = if has("vmx") {
        "vmx"
    } else if has("svm") {
        "svm"
    } else {
        "none"
    };
    let nested = ["kvm_intel", "kvm_amd"]
        .iter()
        .filter_map(|m| std::fs::read_to_string(format!("/sys/module/{m}/parameters/nested")).ok())
        .any(|v| matches!(v.trim(), "Y" | "1"));
    let access = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let what = format!(
        "KVM: /dev/kvm {}, host CPU virtualization {vendor}, nested {}",
        if access { "usable" } else { "absent or not accessible" },
        if nested { "on (vmx/svm guests possible)" } else { "off" }
    );
    if !access {
        return check(false, what, "optional: only `--emulator kvm` needs it; load kvm_intel/kvm_amd and add yourself to group kvm");
    }
    if !on_path("qemu-system-x86_64") {
        return check(false, what, "install qemu-system-x86 to use KVM");
    }
    // Some kernels expose /dev/kvm but cannot run a guest: let QEMU run the BIOS for two seconds,
    // with the same `-cpu host` that `run --emulator kvm` uses.
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-machine",
            "pc",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return check(false, what, "cannot start qemu-system-x86_64");
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            let mut error = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut error);
            }
            return check(
                false,
                what,
                format!("QEMU refuses KVM here: {}", error.trim().lines().next().unwrap_or("")),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    check(
        true,
        format!("{what}; QEMU ran its BIOS under KVM (to check xen-lite itself: `cargo xtask run --emulator kvm`)"),
        "",
    )
}
