//! Building what boots: both kernels, the boot bundle, and the BIOS disk image.
//!
//! The disk image is made by `xtask/image-builder`, a small program built once with the pinned
//! nightly (the `bootloader` crate compiles its BIOS stages with `-Zbuild-std`) and cached in
//! `target/image-builder`; later runs reuse it in milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use hypercall_abi::bundle::BundleWriter;

use crate::process::{cargo, clear_build_environment, root, run_visible};
use crate::setup::{ensure_kernel_target, ensure_nightly, KERNEL_TARGET, NIGHTLY};

/// The guest kernel's flavours, each a cargo feature of `pv-guest`.
pub const FLAVOURS: [&str; 2] = ["pv", "hvm"];

/// Built kernels and the image builder.
pub struct Artifacts {
    /// xen-lite's ELF.
    pub xen_lite: PathBuf,
    /// The guest kernel, pv flavour.
    pub guest_pv: PathBuf,
    /// The guest kernel, hvm flavour.
    pub guest_hvm: PathBuf,
    /// The user programs (`pv-guest/user`), each carried in the bundle under its name.
    pub user_programs: Vec<(&'static str, PathBuf)>,
    /// The disk-image builder binary.
    pub image_builder: PathBuf,
}

/// The user programs built from `pv-guest/user/src/bin`.
pub const USER_PROGRAMS: [&str; 6] = ["init", "usertests", "hello", "faulty", "nullcalls", "bench"];

fn profile(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

/// Builds the kernels (quietly unless something is rebuilt) and makes sure the image builder
/// exists.
pub fn build(release: bool) -> Result<Artifacts, String> {
    ensure_kernel_target()?;
    let mut xen = cargo();
    xen.args(["build", "--quiet", "--package", "xen-lite", "--target", KERNEL_TARGET]);
    let mut commands = vec![xen];
    for flavour in FLAVOURS {
        let mut guest = cargo();
        // Each flavour has its own target directory, so switching flavours never rebuilds.
        guest.args(["build", "--quiet", "--package", "pv-guest", "--features", flavour]);
        guest.args(["--target", KERNEL_TARGET, "--target-dir", &format!("target/guest-{flavour}")]);
        commands.push(guest);
    }
    let mut user = cargo();
    user.args([
        "build",
        "--quiet",
        "--manifest-path",
        "pv-guest/user/Cargo.toml",
        "--target",
        KERNEL_TARGET,
    ]);
    user.args(["--target-dir", "target/user"]);
    commands.push(user);
    for command in &mut commands {
        if release {
            command.arg("--release");
        }
        run_visible(command)?;
    }
    let target = root().join("target");
    let guest = |flavour: &str| {
        target
            .join(format!("guest-{flavour}"))
            .join(KERNEL_TARGET)
            .join(profile(release))
            .join("pv-guest")
    };
    Ok(Artifacts {
        xen_lite: target.join(KERNEL_TARGET).join(profile(release)).join("xen-lite"),
        guest_pv: guest("pv"),
        guest_hvm: guest("hvm"),
        user_programs: USER_PROGRAMS
            .iter()
            .map(|name| {
                (*name, target.join("user").join(KERNEL_TARGET).join(profile(release)).join(name))
            })
            .collect(),
        image_builder: image_builder()?,
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The image-builder binary, built with the pinned nightly the first time.
pub fn image_builder() -> Result<PathBuf, String> {
    let dir = root().join("xtask/image-builder");
    let binary = root().join("target/image-builder/release/image-builder");
    let sources = ["Cargo.toml", "Cargo.lock", "src/main.rs"].map(|f| dir.join(f));
    let newest_source = sources.iter().filter_map(|p| modified(p)).max();
    if modified(&binary).is_some_and(|built| Some(built) >= newest_source) {
        return Ok(binary);
    }
    ensure_nightly()?;
    println!("xtask: building the bootloader image builder with {NIGHTLY}; the first build takes about two minutes, later runs reuse it");
    let mut command = Command::new("rustup");
    // The nightly's own cargo must run, not the stable one that runs this xtask.
    command.current_dir(&dir).env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    clear_build_environment(&mut command);
    command.args(["run", NIGHTLY, "cargo", "build", "--release", "--locked", "--target-dir"]);
    command.arg(root().join("target/image-builder"));
    run_visible(&mut command)?;
    Ok(binary)
}

/// The standard bundle: `cmdline`, both guest flavours (`guest-pv`, `guest-hvm`) and the user
/// programs under their names.
pub fn standard_bundle(artifacts: &Artifacts, cmdline: &str) -> Result<Vec<u8>, String> {
    let pv = read(&without_debug(&artifacts.guest_pv)?)?;
    let hvm = read(&without_debug(&artifacts.guest_hvm)?)?;
    let programs: Vec<(&str, Vec<u8>)> = artifacts
        .user_programs
        .iter()
        .map(|(name, path)| Ok((*name, read(&without_debug(path)?)?)))
        .collect::<Result<_, String>>()?;
    let mut images: Vec<(&str, &[u8])> = vec![("guest-pv", &pv), ("guest-hvm", &hvm)];
    images.extend(programs.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
    bundle_bytes(cmdline, &images)
}

/// The bytes of a bundle with `cmdline` and `images`.
pub fn bundle_bytes(cmdline: &str, images: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut writer = BundleWriter::new(cmdline).map_err(|e| format!("bundle: {e}"))?;
    for (name, data) in images {
        writer.add(name, data).map_err(|e| format!("bundle: {e}"))?;
    }
    writer.finish().map_err(|e| format!("bundle: {e}"))
}

/// `elf` without its debug sections and symbols, in a file beside it (`NAME.boot`): what is
/// booted. Both stay in `elf`, for gdb and fault locations. Two reasons: DWARF records the
/// directory the tree was built in, and cargo hashes a workspace crate's path into every
/// mangled name (`17h…E`, and the number of digits of LLVM's `.llvm.N` suffixes changes with
/// it), so with either the boot image's size, and so where xen-lite's free memory and each
/// domain's frames begin, would depend on where the tree is checked out (lab 0 reads machine
/// addresses: a clone in `/check/work/main` was a page lower than one in `/tmp`); and a boot
/// loads a tenth of the bytes. Nothing at run time reads an image's symbols.
pub fn without_debug(elf: &Path) -> Result<PathBuf, String> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static OBJCOPY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let _one_at_a_time = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = elf.with_extension("boot");
    // Newer than the ELF and than this xtask (which decides how to strip) means still right.
    let xtask = std::env::current_exe().ok().and_then(|exe| modified(&exe));
    if modified(&out).is_some_and(|stripped| Some(stripped) >= modified(elf).max(xtask)) {
        return Ok(out);
    }
    // The pinned nightly's llvm-tools (installed with it, for the image builder).
    let objcopy = OBJCOPY.get_or_init(|| {
        ensure_nightly()?;
        let sysroot = crate::process::stdout_of(
            Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]),
        )
        .ok_or("cannot ask the pinned nightly for its sysroot")?;
        let tool = PathBuf::from(sysroot.trim())
            .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-objcopy");
        if tool.is_file() {
            Ok(tool)
        } else {
            Err(format!(
                "{} is missing: `rustup component add llvm-tools-preview --toolchain {NIGHTLY}`",
                tool.display()
            ))
        }
    });
    let objcopy = objcopy.clone()?;
    let status = Command::new(&objcopy)
        .arg("--strip-all")
        .arg(elf)
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", objcopy.display()))?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("llvm-objcopy --strip-all {} failed ({status})", elf.display()))
    }
}

/// Reads a built file.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Wraps xen-lite and a ramdisk into a bootable BIOS disk image at `out`.
pub fn make_disk(artifacts: &Artifacts, ramdisk: &Path, out: &Path) -> Result<(), String> {
    let output = Command::new(&artifacts.image_builder)
        .arg(without_debug(&artifacts.xen_lite)?)
        .arg(ramdisk)
        .arg(out)
        .output()
        .map_err(|e| format!("cannot start the image builder: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("image builder failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}
