//! Booting a disk image in QEMU, Bochs or QEMU+KVM, following the console, and reading the
//! exit status the kernel left (see `hypercall_abi::devices`).
//!
//! Each boot gets a private directory holding its disk image, generated configuration and
//! logs, so boots can run side by side. A boot that produces no exit status within its timeout
//! is stopped and counts as hung.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hypercall_abi::devices::status_from_qemu_exit;

use crate::cli::Emulator;

/// Bochs disk geometry: images are padded to whole cylinders of 16 heads x 63 sectors.
const BOCHS_CYLINDER: u64 = 16 * 63 * 512;
/// What the bootloader prints when it panics (on serial, before xen-lite runs).
const BOOTLOADER_PANIC: &str = "ERROR: panicked at";
/// Guest RAM in every emulator.
const MEMORY_MIB: u32 = 256;
/// The Bochs CPU model: has VMX with EPT (VMCS revision 4), PCID, SMEP, SMAP, UMIP.
pub const BOCHS_CPU_MODEL: &str = "tigerlake";
/// The Bochs CPU model for `svm` mode: an AMD CPU with SVM and nested paging.
pub const BOCHS_AMD_CPU_MODEL: &str = "ryzen";

/// One boot to perform.
pub struct Boot<'a> {
    /// Which emulator.
    pub emulator: Emulator,
    /// The disk image (it is copied into `dir`).
    pub disk: &'a Path,
    /// The private run directory.
    pub dir: &'a Path,
    /// How long before it counts as hung.
    pub timeout: Duration,
    /// Copy the console to stdout as it arrives.
    pub echo: bool,
    /// Count time in instructions, one per nanosecond: QEMU gets
    /// `-icount shift=0,sleep=off,align=off` (so the guest's `rdtsc` counts retired
    /// instructions, DESIGN §9); Bochs, which always runs with `clock: sync=none` and counts
    /// its TSC in instructions, gets `ips=1000000000` instead of the usual 50 million, so that a
    /// timer tick is a million instructions in both emulators (as on a ~1-GIPS CPU), not 50 000.
    pub icount: bool,
    /// Boot an AMD CPU (`svm` mode): Bochs gets [`BOCHS_AMD_CPU_MODEL`] instead of its Intel
    /// model; QEMU's `-cpu max` offers SVM either way.
    pub amd: bool,
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The kernel left through the exit device with this status.
    Status(u8),
    /// No exit within the timeout.
    Timeout,
    /// The emulator stopped without an exit status; the reason as far as known.
    Crashed(String),
}

/// Everything a boot produced.
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// The serial console, `\r` removed.
    pub console: String,
    /// Wall-clock time (emulator time, not a measurement of the kernel).
    pub elapsed: Duration,
}

/// Run directories kept under `target/runs/` (each holds a disk image of some 30 MB): older ones
/// go when a new one is made, once they are an hour old (so no running boot loses its files).
const RUNS_KEPT: usize = 40;

/// Deletes the run directories beyond the newest [`RUNS_KEPT`] that are over an hour old.
fn prune_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else { return };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, path)| path.is_dir())
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (modified, path) in dirs.into_iter().skip(RUNS_KEPT) {
        if modified < hour_ago {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// A fresh private directory under `target/runs/` for one boot.
pub fn private_dir(label: &str) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let runs = crate::process::root().join("target/runs");
    if n == 0 {
        prune_runs(&runs); // once per xtask process
    }
    let dir = runs.join(format!("{label}-{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Boots and waits for the end.
pub fn boot(boot: &Boot<'_>) -> Result<Outcome, String> {
    fs::create_dir_all(boot.dir)
        .map_err(|e| format!("cannot create {}: {e}", boot.dir.display()))?;
    let disk = boot.dir.join("disk.img");
    fs::copy(boot.disk, &disk).map_err(|e| format!("cannot copy the disk image: {e}"))?;
    let serial = boot.dir.join("serial.log");
    File::create(&serial).map_err(|e| format!("cannot create {}: {e}", serial.display()))?;
    let mut command = match boot.emulator {
        Emulator::Qemu | Emulator::Kvm => qemu_command(boot, &disk, &serial),
        Emulator::Bochs => bochs_command(boot.dir, &disk, boot.icount, boot.amd)?,
    };
    let start = Instant::now();
    let mut child =
        command.spawn().map_err(|e| format!("cannot start {}: {e}", boot.emulator.name()))?;
    let mut follower = Follower { path: serial, offset: 0, text: String::new(), echo: boot.echo };
    let exited = loop {
        follower.poll();
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(Some(status));
        }
        if start.elapsed() > boot.timeout {
            stop(&mut child);
            break None;
        }
        if follower.text.contains(BOOTLOADER_PANIC) {
            // The bootloader halts after a panic; waiting for the timeout would only waste time.
            std::thread::sleep(Duration::from_millis(200));
            follower.poll();
            stop(&mut child);
            break Some(None);
        }
        std::thread::sleep(Duration::from_millis(30));
    };
    follower.poll();
    let end = match exited {
        None => End::Timeout,
        Some(None) => {
            let line = follower
                .text
                .lines()
                .skip_while(|l| !l.contains(BOOTLOADER_PANIC))
                .take(2)
                .collect::<Vec<_>>();
            End::Crashed(format!("the bootloader panicked before xen-lite ran: {}", line.join(" ")))
        }
        Some(Some(status)) => match boot.emulator {
            Emulator::Qemu | Emulator::Kvm => qemu_end(status.code(), &follower.text, boot.dir),
            Emulator::Bochs => bochs_end(boot.dir),
        },
    };
    if boot.echo && !follower.text.ends_with('\n') && !follower.text.is_empty() {
        println!();
    }
    Ok(Outcome { end, console: follower.text, elapsed: start.elapsed() })
}

/// Stops an emulator: SIGTERM first (Bochs drops into its debugger on SIGINT), then SIGKILL.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Follows the growing serial log.
struct Follower {
    path: PathBuf,
    offset: u64,
    text: String,
    echo: bool,
}

/// How many bytes at the end of `bytes` begin a UTF-8 character that is not complete yet (the
/// emulator writes the console a byte at a time, so a read can end inside one).
fn incomplete_tail(bytes: &[u8]) -> usize {
    match core::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(error) if error.error_len().is_none() => bytes.len() - error.valid_up_to(),
        Err(_) => 0,
    }
}

impl Follower {
    fn poll(&mut self) {
        let Ok(mut file) = File::open(&self.path) else { return };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
            return;
        }
        // Leave a character cut in half for the next read, rather than decoding both halves as
        // replacement characters.
        let complete = bytes.len() - incomplete_tail(&bytes);
        self.offset += complete as u64;
        let chunk = String::from_utf8_lossy(&bytes[..complete]).replace('\r', "");
        if self.echo {
            print!("{chunk}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        self.text.push_str(&chunk);
    }
}

fn qemu_command(boot: &Boot<'_>, disk: &Path, serial: &Path) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command.current_dir(boot.dir);
    if boot.emulator == Emulator::Kvm {
        command.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        command.args(["-accel", "tcg", "-cpu", "max"]);
        if boot.icount {
            command.args(["-icount", "shift=0,sleep=off,align=off"]);
        }
    }
    command
        .args(["-machine", "pc", "-m", &format!("{MEMORY_MIB}M"), "-smp", "1"])
        .args(["-no-reboot", "-display", "none", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!("format=raw,if=ide,file={}", disk.display()))
        .stdin(Stdio::null());
    redirect_output(&mut command, boot.dir, "qemu.log");
    command
}

fn redirect_output(command: &mut Command, dir: &Path, name: &str) {
    match File::create(dir.join(name)) {
        Ok(file) => {
            let copy = file.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
            command.stdout(file).stderr(copy);
        }
        Err(_) => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
}

fn qemu_end(code: Option<i32>, console: &str, dir: &Path) -> End {
    let log = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
    match code.and_then(status_from_qemu_exit) {
        // Exit code 1 is also QEMU failing to start; a silent console tells them apart.
        Some(0) if console.is_empty() => End::Crashed(format!("QEMU failed to start: {}", log.trim())),
        Some(status) => End::Status(status),
        None if code == Some(0) => End::Crashed("QEMU exited 0 without the exit device: a triple fault (the CPU reset; -no-reboot stopped it)".into()),
        None => End::Crashed(format!("QEMU exited with {code:?}: {}", log.trim())),
    }
}

/// The Bochs configuration for one run (DESIGN §2 has the reasons for each line).
///
/// One addition to the recipe there: `sound: driver=dummy`. With the default driver Bochs 2.7
/// starts an ALSA mixer thread, which on a machine without a sound card can abort the whole
/// emulator ("buffer overflow detected" in `mixer_thread`; seen on a fresh CI-like machine).
pub fn bochsrc(disk: &Path, cylinders: u64, ips: u64, model: &str) -> String {
    format!(
        "# Generated by cargo xtask for one run; see DESIGN §2 for why each line is here.
romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
vga: extension=vbe
display_library: sdl2
megs: {MEMORY_MIB}
cpu: model={model}, count=1, ips={ips}, reset_on_triple_fault=0
clock: sync=none, time0=1
boot: disk
ata0-master: type=disk, mode=flat, path=\"{disk}\", cylinders={cylinders}, heads=16, spt=63
ata1: enabled=0
ata2: enabled=0
ata3: enabled=0
com1: enabled=1, mode=file, dev=serial.log
port_e9_hack: enabled=1
magic_break: enabled=1
panic: action=fatal
error: action=report
info: action=ignore
speaker: enabled=0
sound: driver=dummy
mouse: enabled=0
",
        disk = disk.display()
    )
}

/// Bochs' instructions per emulated second: the DESIGN §2 recipe's, or one per nanosecond.
const BOCHS_IPS: u64 = 50_000_000;
const BOCHS_IPS_ICOUNT: u64 = 1_000_000_000;

fn bochs_command(dir: &Path, disk: &Path, icount: bool, amd: bool) -> Result<Command, String> {
    let len = fs::metadata(disk).map_err(|e| e.to_string())?.len();
    let cylinders = len.div_ceil(BOCHS_CYLINDER);
    let file = fs::OpenOptions::new().write(true).open(disk).map_err(|e| e.to_string())?;
    file.set_len(cylinders * BOCHS_CYLINDER)
        .map_err(|e| format!("cannot pad the disk image: {e}"))?;
    let ips = if icount { BOCHS_IPS_ICOUNT } else { BOCHS_IPS };
    let model = if amd { BOCHS_AMD_CPU_MODEL } else { BOCHS_CPU_MODEL };
    fs::write(dir.join("bochsrc"), bochsrc(disk, cylinders, ips, model))
        .map_err(|e| e.to_string())?;
    // On the magic breakpoint the debugger runs the rest: print registers (the status is in
    // eax), then quit.
    fs::write(dir.join("debugger.rc"), "continue\nregs\nquit\n").map_err(|e| e.to_string())?;
    let mut command = Command::new("bochs-bin");
    command
        .current_dir(dir)
        .env("SDL_VIDEODRIVER", "dummy")
        .args(["-q", "-unlock", "-f", "bochsrc", "-rc", "debugger.rc", "-log", "bochs.log"])
        .stdin(Stdio::null());
    redirect_output(&mut command, dir, "bochs.out");
    Ok(command)
}

/// The status from the register dump after the magic breakpoint, or why Bochs stopped.
fn bochs_end(dir: &Path) -> End {
    let out = fs::read_to_string(dir.join("bochs.out")).unwrap_or_default();
    if let Some(status) = parse_bochs_rax(&out) {
        return End::Status(status);
    }
    let log = fs::read_to_string(dir.join("bochs.log")).unwrap_or_default();
    let reason = log
        .lines()
        .chain(out.lines())
        .rfind(|line| {
            line.contains("PANIC") || line.contains("triple fault") || line.contains("3rd")
        })
        .unwrap_or("no magic breakpoint and no panic in bochs.log");
    End::Crashed(format!("Bochs stopped without an exit status: {}", reason.trim()))
}

/// Finds `rax: 0x00000000_00000003` after a magic breakpoint; returns its low byte.
pub fn parse_bochs_rax(out: &str) -> Option<u8> {
    let after_break = &out[out.find("Magic breakpoint")?..];
    let line = after_break.lines().find(|line| line.trim_start().starts_with("rax:"))?;
    let hex: String = line.split(':').nth(1)?.trim().trim_start_matches("0x").replace('_', "");
    let value = u64::from_str_radix(hex.split_whitespace().next()?, 16).ok()?;
    u8::try_from(value & 0xffff_ffff).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochs_status_is_read_from_the_register_dump() {
        let out = "(0) Magic breakpoint\nNext at t=123\n(0) [0x...] 0008:ffff xchg bx, bx\nCPU0:\nrax: 0x00000000_00000066\nrbx: 0x0\n";
        assert_eq!(parse_bochs_rax(out), Some(0x66));
        assert_eq!(parse_bochs_rax("rax: 0x00000000_00000001\n"), None, "no breakpoint, no status");
        assert_eq!(
            parse_bochs_rax("Magic breakpoint\nrax: 0x00000001_00000000\n"),
            Some(0),
            "upper half ignored"
        );
        assert_eq!(
            parse_bochs_rax("Magic breakpoint\nrax: 0x00000000_00001000\n"),
            None,
            "not a status"
        );
    }

    #[test]
    fn qemu_codes_become_ends() {
        let dir = Path::new("/nonexistent");
        assert_eq!(qemu_end(Some(7), "x", dir), End::Status(3));
        assert_eq!(qemu_end(Some(1), "console", dir), End::Status(0));
        assert_eq!(incomplete_tail("a§".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"a§".as_bytes()[..2]), 1, "the first byte of §");
        assert_eq!(incomplete_tail(b"ab\xff"), 0, "invalid, not incomplete: decoded as such");
        assert!(matches!(qemu_end(Some(1), "", dir), End::Crashed(_)));
        assert!(
            matches!(qemu_end(Some(0), "x", dir), End::Crashed(m) if m.contains("triple fault"))
        );
    }

    #[test]
    fn the_bochsrc_follows_the_verified_recipe() {
        let rc = bochsrc(Path::new("/tmp/d.img"), 10, BOCHS_IPS, BOCHS_CPU_MODEL);
        for line in [
            "display_library: sdl2",
            "options=fastboot",
            "magic_break: enabled=1",
            "clock: sync=none",
            "cylinders=10, heads=16, spt=63",
            "sound: driver=dummy",
        ] {
            assert!(rc.contains(line), "missing {line}");
        }
    }
}
