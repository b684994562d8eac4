//! Setting up what the commands need, so that a fresh machine only needs `cargo`:
//! the kernel target, the pinned nightly for the bootloader image builder, and the emulators.
//!
//! DESIGN §2 records why each piece is needed and which versions were verified.

use std::process::Command;

use crate::process::{on_path, run_visible, stdout_of};

/// The bare-metal target both kernels are built for (on the stable toolchain).
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// The nightly that builds `bootloader` 0.11.17's BIOS stages (`-Zbuild-std`).
pub const NIGHTLY: &str = "nightly-2026-08-01";
/// Components that nightly needs.
pub const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "llvm-tools"];

/// A Debian package and the file whose presence shows it is installed (for machines where
/// `dpkg-query` is missing).
pub struct Package {
    /// Debian package name.
    pub name: &'static str,
    /// A file it installs.
    pub file: &'static str,
    /// What it is for, for `doctor`.
    pub purpose: &'static str,
}

/// Every package the run and test commands use.
pub const PACKAGES: [Package; 6] = [
    Package {
        name: "qemu-system-x86",
        file: "/usr/bin/qemu-system-x86_64",
        purpose: "QEMU: pv, svm, native; gdb stub",
    },
    Package {
        name: "bochs",
        file: "/usr/bin/bochs-bin",
        purpose: "Bochs: the only VMX here; svm too",
    },
    Package {
        name: "bochsbios",
        file: "/usr/share/bochs/BIOS-bochs-latest",
        purpose: "Bochs BIOS",
    },
    Package {
        name: "vgabios",
        file: "/usr/share/bochs/VGABIOS-lgpl-latest",
        purpose: "Bochs VGA BIOS",
    },
    Package {
        name: "bochs-sdl",
        file: "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_sdl2_gui.so",
        purpose: "Bochs SDL2 display (needed for a 24-bit VBE mode)",
    },
    Package { name: "gdb", file: "/usr/bin/gdb", purpose: "step-by-step debugging" },
];

/// Whether `package` is installed.
pub fn installed(package: &Package) -> bool {
    let status =
        stdout_of(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", package.name]));
    match status {
        Some(status) => status.starts_with("ii"),
        None => std::path::Path::new(package.file).exists(),
    }
}

fn rustup() -> Result<(), String> {
    if on_path("rustup") {
        Ok(())
    } else {
        Err("rustup is not on the PATH; install Rust with rustup (https://rustup.rs) so the xtask can add the kernel target and the pinned nightly".into())
    }
}

/// Installs the kernel target for the toolchain running this xtask if it is missing.
pub fn ensure_kernel_target() -> Result<(), String> {
    rustup()?;
    let installed = stdout_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if installed.lines().any(|line| line.trim() == KERNEL_TARGET) {
        return Ok(());
    }
    println!("xtask: installing the {KERNEL_TARGET} target (once)");
    run_visible(Command::new("rustup").args(["target", "add", KERNEL_TARGET]))
}

/// Whether the pinned nightly and its components are installed.
pub fn nightly_ready() -> bool {
    let components = stdout_of(Command::new("rustup").env_remove("RUSTUP_TOOLCHAIN").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]));
    components.is_some_and(|list| {
        NIGHTLY_COMPONENTS.iter().all(|c| list.lines().any(|line| line.starts_with(c)))
    })
}

/// Installs the pinned nightly with its components if missing.
pub fn ensure_nightly() -> Result<(), String> {
    rustup()?;
    if nightly_ready() {
        return Ok(());
    }
    println!("xtask: installing {NIGHTLY} with rust-src and llvm-tools-preview for the bootloader image builder (once)");
    run_visible(Command::new("rustup").env_remove("RUSTUP_TOOLCHAIN").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src,llvm-tools-preview",
    ]))
}

/// The packages not installed.
pub fn missing_packages() -> Vec<&'static Package> {
    PACKAGES.iter().filter(|p| !installed(p)).collect()
}

fn is_root() -> bool {
    stdout_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// The command a user must run to install `missing`.
pub fn install_command(missing: &[&Package]) -> String {
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    format!("sudo apt-get update && sudo apt-get install -y {}", names.join(" "))
}

/// Installs every missing package with `apt-get` when running as root. Otherwise returns the
/// missing ones, for the caller to refuse (`run`) or skip (`test`) with the exact command.
pub fn ensure_packages() -> Result<Vec<&'static Package>, String> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(missing);
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    if !is_root() || !on_path("apt-get") {
        return Ok(missing);
    }
    println!("xtask: installing Debian packages: {}", names.join(" "));
    run_visible(Command::new("apt-get").args(["update", "-q"]))?;
    run_visible(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&names),
    )?;
    let still = missing_packages();
    if still.is_empty() {
        Ok(still)
    } else {
        let names: Vec<&str> = still.iter().map(|p| p.name).collect();
        Err(format!("apt-get ran but these are still missing: {}", names.join(" ")))
    }
}
