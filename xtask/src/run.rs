//! `cargo xtask run`: build, boot, stream the console, report the status.

use std::path::Path;

use hypercall_abi::devices::describe_status;
use hypercall_abi::Mode;

use crate::artifacts::{self, Artifacts};
use crate::cli::{Emulator, RunOptions};
use crate::emulator::{self, Boot, End, Outcome};
use crate::setup;

/// Guests booted when `--guests` is not given: two domains doing visibly different work in
/// `pv` mode; two domains running the user programs and their tests under VMX or SVM; the one domain
/// native mode can run elsewhere.
pub fn default_guests(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Pv => &["counter", "primes"],
        Mode::Vmx | Mode::Svm => &["init hello usertests", "init hello usertests"],
        _ => &["hello"],
    }
}

/// xen-lite's command line for a mode, guest list and extra words. Guests become
/// `domain="..."` words; the defaults apply only if neither `--guests` nor an extra `domain=`
/// names one. A fuzzer guest (`fuzz=SEED:COUNT`) turns the auditor on unless `audit=` is given.
pub fn cmdline(mode: Mode, guests: &[String], extra: &[String]) -> String {
    let mut words = vec![format!("mode={}", mode.name())];
    let extra_domains = extra.iter().any(|w| w.starts_with("domain="));
    let defaults: Vec<String> = default_guests(mode).iter().map(|g| g.to_string()).collect();
    let guests = if guests.is_empty() && !extra_domains { &defaults[..] } else { guests };
    words.extend(guests.iter().map(|g| format!("domain=\"{g}\"")));
    words.extend(extra.iter().cloned());
    let fuzzing = guests.iter().any(|g| g.starts_with("fuzz="));
    if fuzzing && !extra.iter().any(|w| w.starts_with("audit=")) {
        words.push("audit=on".to_string());
    }
    words.join(" ")
}

/// The guest kernel's workload names, from its own list (`pv-guest/src/args.rs`, `KNOWN`):
/// `init`, `hello`, `census`, `attack`, ... (what comes before `=` or a space in each entry).
fn known_workloads() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(crate::process::root().join("pv-guest/src/args.rs"))
        .unwrap_or_default();
    let known = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const KNOWN: &str = \""))
        .and_then(|rest| rest.strip_suffix("\";"))
        .unwrap_or_default()
        .to_string();
    let names = known
        .split(", ")
        .filter_map(|entry| entry.split(['=', ' ', '[']).next())
        .filter(|name| !name.is_empty())
        .map(String::from)
        .collect();
    (known, names)
}

/// The workloads, for `--help`: the guest kernel's own list, wrapped at word boundaries.
pub fn workloads_help() -> String {
    let (known, _) = known_workloads();
    let mut out = String::from(
        "workloads (the first word of each --guests entry; words after it are its options):\n",
    );
    let mut line = String::from("  ");
    for entry in known.split(", ") {
        if line.len() + entry.len() + 2 > 96 {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from("  ");
        }
        line.push_str(entry);
        line.push_str(", ");
    }
    out.push_str(line.trim_end().trim_end_matches(','));
    out
}

/// Checks that each of `guests` starts with a workload the guest kernel knows, before anything
/// is built or booted (the kernel would say the same, after the boot).
pub fn check_guests(guests: &[String]) -> Result<(), String> {
    let (known, names) = known_workloads();
    if names.is_empty() {
        return Ok(()); // no list to check against: the guest kernel still checks
    }
    for guest in guests {
        let first = guest.split_whitespace().next().unwrap_or("");
        let name = first.split('=').next().unwrap_or("");
        if !names.iter().any(|n| n == name) {
            return Err(format!(
                "--guests: unknown workload '{name}' in \"{guest}\"\n  known: {known}\n  (`cargo xtask run --help` has examples)"
            ));
        }
    }
    Ok(())
}

/// Symbol files for the Bochs debugger (`ldsym global "xen-lite.sym" 0xffff840000000000`, note
/// 05): one `address name` line per function and object of `elf`, from `nm`, names demangled and
/// without spaces (Bochs reads a symbol up to the first space).
fn bochs_symbols(elf: &Path, out: &Path) -> Result<usize, String> {
    let listing = crate::process::stdout_of(
        std::process::Command::new("nm").args(["--defined-only", "-C"]).arg(elf),
    )
    .ok_or_else(|| format!("nm could not read {}", elf.display()))?;
    let lines: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let (address, rest) = line.split_once(' ')?;
            let (kind, name) = rest.split_once(' ')?;
            matches!(kind, "T" | "t" | "D" | "d" | "B" | "b" | "R" | "r")
                .then(|| format!("{address} {}", name.replace(' ', "")))
        })
        .collect();
    std::fs::write(out, lines.join("\n") + "\n")
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(lines.len())
}

/// Checks that the machine can boot `emulator` and says how to fix it if not.
pub fn check_emulator(emulator: Emulator) -> Result<(), String> {
    let missing = setup::ensure_packages()?;
    let needed: Vec<_> = missing
        .into_iter()
        .filter(|p| match emulator {
            Emulator::Qemu | Emulator::Kvm => p.name == "qemu-system-x86",
            Emulator::Bochs => p.name.starts_with("bochs") || p.name == "vgabios",
        })
        .collect();
    if !needed.is_empty() {
        return Err(format!(
            "{} is not installed and this user cannot install it; run:\n    {}",
            emulator.name(),
            setup::install_command(&needed)
        ));
    }
    if emulator == Emulator::Kvm
        && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err()
    {
        return Err(
            "--emulator kvm needs read-write access to /dev/kvm (see `cargo xtask doctor`)".into(),
        );
    }
    Ok(())
}

/// Builds a disk image for `bundle` bytes in `dir`.
pub fn disk_for(
    artifacts: &Artifacts,
    dir: &Path,
    bundle: &[u8],
) -> Result<std::path::PathBuf, String> {
    let ramdisk = dir.join("bundle.bin");
    std::fs::write(&ramdisk, bundle)
        .map_err(|e| format!("cannot write {}: {e}", ramdisk.display()))?;
    let image = dir.join("image.img");
    artifacts::make_disk(artifacts, &ramdisk, &image)?;
    Ok(image)
}

/// The one-line verdict on an outcome, and whether it is a success.
pub fn verdict(outcome: &Outcome) -> (String, bool) {
    match &outcome.end {
        End::Status(status) => {
            (format!("exit status {status} ({})", describe_status(*status)), *status == 0)
        }
        End::Timeout => ("no exit status before the timeout (hung?)".into(), false),
        End::Crashed(reason) => (reason.clone(), false),
    }
}

/// Resolves the `location: xen-lite+0x...` of a fatal report to a function and source line with
/// `addr2line` (binutils), if both are there. With `-i` it lists the inlined frames innermost
/// first, often a helper of the Rust library (`core::panicking`, an `unwrap`); the first frame in
/// this workspace is the one a student wants.
pub fn locate_fault(console: &str, elf: &Path) -> Option<String> {
    let offset = parse_location(console)?;
    let output = crate::process::stdout_of(
        std::process::Command::new("addr2line")
            .args(["-f", "-i", "-C", "-e"])
            .arg(elf)
            .arg(format!("{offset:#x}")),
    )?;
    let root = format!("{}/", crate::process::root().display());
    first_own_frame(&output, &root)
}

/// Of `addr2line -f -i` output (function and place, line by line, innermost first), the first
/// frame whose place lies under `root`, else the innermost: `function at place`.
fn first_own_frame(output: &str, root: &str) -> Option<String> {
    let lines: Vec<&str> = output.lines().collect();
    let frames: Vec<(&str, &str)> =
        lines.chunks(2).filter_map(|c| Some((c[0], *c.get(1)?))).collect();
    let (function, place) =
        frames.iter().find(|(_, place)| place.starts_with(root)).or(frames.first())?;
    Some(format!("{function} at {}", place.strip_prefix(root).unwrap_or(place)))
}

/// The offset in `location: xen-lite+0x1234` of a fatal report.
fn parse_location(console: &str) -> Option<u64> {
    let at = console.find("location: xen-lite+0x")? + "location: xen-lite+0x".len();
    let hex: String = console[at..].chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// Runs the command.
pub fn run(options: &RunOptions) -> Result<u8, String> {
    if options.mode == Mode::Vmx && options.emulator == Emulator::Qemu {
        return Err(
            "--mode vmx cannot run in QEMU here: TCG has no VMX. Use --emulator bochs (the default for vmx) or, on an Intel host with nested VMX, --emulator kvm"
                .into(),
        );
    }
    check_guests(&options.guests)?;
    check_emulator(options.emulator)?;
    let artifacts = artifacts::build(options.release)?;
    let dir = emulator::private_dir("run")?;
    let cmdline = cmdline(options.mode, &options.guests, &options.extra);
    let bundle = artifacts::standard_bundle(&artifacts, &cmdline)?;
    let disk = disk_for(&artifacts, &dir, &bundle)?;
    println!("xtask: booting xen-lite in {} with: {cmdline}", options.emulator.name());
    println!("xtask: run directory {}", dir.display());
    if options.emulator == Emulator::Bochs {
        let guest =
            if options.mode == Mode::Pv { &artifacts.guest_pv } else { &artifacts.guest_hvm };
        for (elf, name) in [(&artifacts.xen_lite, "xen-lite.sym"), (guest, "guest.sym")] {
            if let Err(error) = bochs_symbols(elf, &dir.join(name)) {
                println!("xtask: no Bochs debugger symbols: {error}");
            }
        }
    }
    let outcome = emulator::boot(&Boot {
        emulator: options.emulator,
        disk: &disk,
        dir: &dir,
        timeout: options.timeout,
        echo: true,
        icount: false,
        amd: options.mode == Mode::Svm,
    })?;
    if let Some(place) = locate_fault(&outcome.console, &artifacts.xen_lite) {
        println!("xtask: the fault is in {place}");
    }
    let (text, ok) = verdict(&outcome);
    let seconds = outcome.elapsed.as_secs_f64();
    let label = format!("{} mode in {}", options.mode.name(), options.emulator.name());
    let killed = outcome.end == End::Status(hypercall_abi::devices::STATUS_DOMAIN_KILLED);
    if ok {
        println!("xtask: run ok: {label}, {text}, {seconds:.1} s wall");
    } else if killed {
        // What the hostile demos are for: not a failure of the run, but not a success either
        // (the exit status stays 104, for scripts).
        println!(
            "xtask: run ended with a domain killed: {label}, {text}, {seconds:.1} s wall; the ERROR line above names the domain and the rule, the summary shows how the others ended; logs in {}",
            dir.display()
        );
    } else {
        println!(
            "xtask: run FAILED: {label}, {text}, {seconds:.1} s wall; logs in {}",
            dir.display()
        );
    }
    Ok(match outcome.end {
        End::Status(status) => status,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn fault_locations_are_parsed() {
        assert_eq!(
            parse_location("[xen] ERROR   location: xen-lite+0xeb20 (addr2line ...)"),
            Some(0xeb20)
        );
        assert_eq!(parse_location("no fault here"), None);
    }

    #[test]
    fn unknown_workloads_are_refused_before_the_boot() {
        let guests = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_guests(&guests(&["init hello usertests", "census=4", "hello exit=3"])),
            Ok(())
        );
        assert_eq!(check_guests(&guests(&["attack=pin-shared-info-as-l1", "fuzz=7:5000"])), Ok(()));
        let refused = check_guests(&guests(&["hello", "juggle fast"])).unwrap_err();
        assert!(refused.contains("unknown workload 'juggle' in \"juggle fast\""), "{refused}");
        assert!(refused.contains("known: init PROGRAM..., hello,"), "{refused}");
        let help = workloads_help();
        assert!(help.contains("census[=N]") && help.lines().all(|l| l.len() <= 96), "{help}");
    }

    #[test]
    fn the_fault_is_placed_in_the_first_frame_of_the_workspace() {
        let output = "core::panicking::panic\n/rustc/abc/library/core/src/panicking.rs:145\n\
                      xen_lite::pv::guest_exception\n/w/xen-lite/src/pv/mod.rs:190\n\
                      xen_lite::trap::dispatch\n/w/xen-lite/src/trap.rs:60\n";
        assert_eq!(
            first_own_frame(output, "/w/").as_deref(),
            Some("xen_lite::pv::guest_exception at xen-lite/src/pv/mod.rs:190")
        );
        let outside = "core::panicking::panic\n/rustc/abc/library/core/src/panicking.rs:145\n";
        assert_eq!(
            first_own_frame(outside, "/w/").as_deref(),
            Some("core::panicking::panic at /rustc/abc/library/core/src/panicking.rs:145")
        );
        assert_eq!(first_own_frame("", "/w/"), None);
    }

    #[test]
    fn command_lines_carry_guests_and_extras() {
        assert_eq!(cmdline(Mode::Native, &[], &[]), "mode=native domain=\"hello\"");
        assert_eq!(cmdline(Mode::Pv, &[], &[]), "mode=pv domain=\"counter\" domain=\"primes\"");
        assert_eq!(
            cmdline(Mode::Pv, &strings(&["a", "b exit=2"]), &strings(&["loglevel=debug"])),
            "mode=pv domain=\"a\" domain=\"b exit=2\" loglevel=debug"
        );
        assert_eq!(cmdline(Mode::Native, &[], &strings(&["domain=x"])), "mode=native domain=x");
        assert_eq!(
            cmdline(Mode::Pv, &strings(&["fuzz=7:100", "primes"]), &[]),
            "mode=pv domain=\"fuzz=7:100\" domain=\"primes\" audit=on"
        );
        assert_eq!(
            cmdline(Mode::Pv, &strings(&["fuzz=7:100"]), &strings(&["audit=off"])),
            "mode=pv domain=\"fuzz=7:100\" audit=off"
        );
    }
}
