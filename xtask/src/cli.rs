//! Command-line parsing for the xtask: every flag, with a clear message for a bad one.

use std::time::Duration;

use hypercall_abi::Mode;

/// Printed by `help` and after a usage error.
pub const USAGE: &str = "\
usage:
  cargo xtask run    [--mode pv|vmx|svm|trap|native] [--emulator qemu|bochs|kvm] [--guests A,B,...]
                     [--release] [--timeout SECS] [-- XEN_LITE_CMDLINE_WORDS...]
      Build everything, boot xen-lite in an emulator and stream its console.
      Exits with the guest's status (0 = success). --mode vmx runs in Bochs unless told
      otherwise (QEMU's TCG has no VMX); --mode svm runs in QEMU (or --emulator bochs, an AMD
      model); --emulator kvm needs a host with nested VMX or SVM.
  cargo xtask test   [--filter PATTERN] [--timeout SECS] [--jobs N] [--release]
      Host unit tests of every crate, then the boot tests in QEMU and Bochs.
      Ends with \"N passed, N failed[, N skipped]\".
  cargo xtask gdb    [--mode pv|svm|trap|native] [--guests A,B,...] [--port N] [--symbols ELF]... [--release]
                     [--no-gdb | --batch FILE | --walkthrough [--record]] [--lab 0 [--seed S]]
                     [-- XEN_LITE_CMDLINE_WORDS...]
      QEMU halted at its first instruction, gdb attached with the symbols of xen-lite and the
      guest kernel and the xl-* commands. --walkthrough runs the checked walkthrough: of one
      system call (pv), of the CR3 swap (pv, -- paging=shadow), of one vmrun and #VMEXIT
      (--mode svm).
      --lab 0 boots lab 0's machine (this handout's seed, or --seed S).
  cargo xtask bench  [--quick [--record]] [--out DIR] [--timeout SECS] [--emulator kvm]
      Every workload in every mode: pv (direct and shadow paging), svm, trap and native in QEMU
      (-icount), and the same with vmx in Bochs; instructions per operation (counts, not time),
      entries, VM exits, CR3 writes, transitions; ratios and targets; results.json, results.csv
      and SVG charts in DIR (target/bench/). --quick runs 1/20 of the operations; with --record it
      writes the tables lecture notes 05, 06 and 08 quote, which `cargo xtask test` checks.
      --emulator kvm adds pv and native (vmx with nested VMX) under QEMU+KVM: cycles, median of 5.
  cargo xtask census [--out DIR] [--timeout SECS] [--record]
      Popek and Goldberg's table: some fifty sensitive and privileged instructions run in the
      guest kernel's ring and in ring 3, in native, pv, vmx (Bochs) and svm (QEMU); each mode
      against native: ok, trapped+emulated, WRONG (saw X, native Y) or kill; the class and
      the cost of each; results.json, results.csv and census.svg in DIR (target/census/).
      --record writes the table into lecture note 09, which `cargo xtask test` checks.
  cargo xtask notes  [--update]
      Makes every generated block of lecture-notes/ again (the gdb walkthroughs' transcripts,
      the census table) and compares it with the notes (English and Korean); --update writes
      them. `cargo xtask test` fails on a stale transcript or table with the lines that differ.
  cargo xtask book
      The lecture notes as a book, English and Korean, built with mdBook (installed into
      target/tools/ the first time) into target/book/; fails on any mdBook warning.
  cargo xtask handout --lab N[,M...] --out DIR [--seed S]
      The student tree for labs N, M...: their solutions cut out (todo!s with instructions and
      hints), hidden tests removed, as a fresh git repository with one commit. --seed S gives
      the student their own machine (lab 0's memory and domains, lab 7's workload size, the
      hidden tests' random seed).
  cargo xtask grade  [--lab N[,M...]] [--json] [--submissions DIR] [--timeout SECS] [--seed S]
                     [--record]
      Scores labs against their manifests (lecture-notes/labs/*.lab): every item, then
      \"score: N/M\". In a handout it grades a copy with the pristine tests; --submissions
      grades every student tree in DIR and writes DIR/grades.csv. --seed S grades on student
      S's machine; --record (full tree) rewrites the model answers' gdb and bench numbers.
  cargo xtask doctor
      What this machine can run (QEMU, Bochs with VMX, gdb, KVM) and how to fix what is missing.

examples:
  cargo xtask run
  cargo xtask run --emulator bochs
  cargo xtask run --mode vmx
  cargo xtask run --guests \"hello exit=3\"
  cargo xtask run -- loglevel=debug
  cargo xtask test --filter bochs";

/// Which emulator boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emulator {
    /// QEMU with TCG: software emulation, gdb stub, no VMX.
    Qemu,
    /// Bochs: slower, exact, emulates VMX.
    Bochs,
    /// QEMU on KVM: real hardware speed where /dev/kvm works.
    Kvm,
}

impl Emulator {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "qemu",
            Emulator::Bochs => "bochs",
            Emulator::Kvm => "kvm",
        }
    }
}

/// Options of `run`.
#[derive(Debug)]
pub struct RunOptions {
    pub mode: Mode,
    pub emulator: Emulator,
    pub guests: Vec<String>,
    pub release: bool,
    pub timeout: Duration,
    pub extra: Vec<String>,
}

/// Options of `test`.
#[derive(Debug)]
pub struct TestOptions {
    pub filter: Option<String>,
    pub timeout: Duration,
    pub jobs: usize,
    pub release: bool,
}

/// Options of `gdb`.
#[derive(Debug)]
pub struct GdbOptions {
    pub mode: Mode,
    pub guests: Vec<String>,
    pub port: u16,
    pub release: bool,
    pub no_gdb: bool,
    pub batch: Option<std::path::PathBuf>,
    pub walkthrough: bool,
    pub record: bool,
    pub extra: Vec<String>,
    /// More symbol files to load (a user program's ELF, say).
    pub symbols: Vec<std::path::PathBuf>,
    /// Print the transcript only on failure (the test suite).
    pub quiet: bool,
}

/// A parsed command.
#[derive(Debug)]
pub enum Command {
    Run(RunOptions),
    Bench(crate::bench::BenchOptions),
    Census(crate::census::CensusOptions),
    Book,
    /// `notes`: whether to write the generated blocks (`--update`) or only compare them.
    Notes(bool),
    Gdb(GdbOptions),
    Test(TestOptions),
    /// Labs, seed, output directory.
    Handout(Vec<u32>, u64, std::path::PathBuf),
    Grade(crate::labs::grade::GradeOptions),
    Doctor,
    Help,
}

/// Default time a boot may take before it counts as hung. Generous: CI machines are slow and
/// Bochs is an interpreter.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

fn value<'a>(flag: &str, it: &mut impl Iterator<Item = &'a String>) -> Result<&'a str, String> {
    it.next().map(String::as_str).ok_or_else(|| format!("{flag} needs a value"))
}

/// A `--seed` value: a student's number, any unsigned 64-bit integer.
fn seed_value(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("--seed '{text}': expected a number (0 ..= 2^64-1)"))
}

fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{flag} '{text}' is not a positive number of seconds")),
    }
}

/// Parses a `--mode` value.
fn mode(name: &str) -> Result<Mode, String> {
    Mode::from_name(name)
        .ok_or_else(|| format!("--mode '{name}': expected pv, vmx, svm, trap or native"))
}

/// Splits a `--guests` list: comma-separated guest command lines, none empty, no quotes.
fn guest_list(list: &str) -> Result<Vec<String>, String> {
    let guests: Vec<String> = list.split(',').map(|g| g.trim().to_string()).collect();
    if guests.iter().any(|g| g.is_empty() || g.contains('"')) {
        return Err(format!("--guests '{list}': names must be non-empty, without quotes"));
    }
    Ok(guests)
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    // `cargo xtask gdb --help` (any command's): the usage, not "unknown flag". After `--` the
    // words are xen-lite's, so they are left alone.
    let own = rest.iter().take_while(|a| a.as_str() != "--");
    if own.clone().any(|a| matches!(a.as_str(), "--help" | "-h")) {
        return Ok(Command::Help);
    }
    let mut it = rest.iter();
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "doctor" => match it.next() {
            None => Ok(Command::Doctor),
            Some(flag) => Err(format!("doctor takes no argument, got '{flag}'")),
        },
        "run" => {
            let mut options = RunOptions {
                mode: Mode::Pv,
                emulator: Emulator::Qemu,
                guests: Vec::new(),
                release: false,
                timeout: DEFAULT_TIMEOUT,
                extra: Vec::new(),
            };
            let mut emulator = None;
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--mode" => options.mode = mode(value(flag, &mut it)?)?,
                    "--emulator" => {
                        emulator = Some(match value(flag, &mut it)? {
                            "qemu" => Emulator::Qemu,
                            "bochs" => Emulator::Bochs,
                            "kvm" => Emulator::Kvm,
                            other => {
                                return Err(format!(
                                    "--emulator '{other}': expected qemu, bochs or kvm"
                                ))
                            }
                        })
                    }
                    "--guests" => options.guests = guest_list(value(flag, &mut it)?)?,
                    "--release" => options.release = true,
                    "--timeout" => options.timeout = seconds(flag, value(flag, &mut it)?)?,
                    "--" => options.extra.extend(it.by_ref().cloned()),
                    other => return Err(format!("run: unknown flag '{other}'")),
                }
            }
            // QEMU TCG has no VMX: vmx runs in Bochs unless the user names an emulator.
            options.emulator = emulator.unwrap_or(match options.mode {
                Mode::Vmx => Emulator::Bochs,
                _ => Emulator::Qemu,
            });
            Ok(Command::Run(options))
        }
        "gdb" => {
            let mut options = GdbOptions {
                mode: Mode::Pv,
                guests: Vec::new(),
                port: crate::gdb::default_port(),
                release: false,
                no_gdb: false,
                batch: None,
                walkthrough: false,
                record: false,
                extra: Vec::new(),
                symbols: Vec::new(),
                quiet: false,
            };
            let (mut lab, mut seed) = (None, None);
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--mode" => options.mode = mode(value(flag, &mut it)?)?,
                    "--guests" => options.guests = guest_list(value(flag, &mut it)?)?,
                    "--lab" => lab = Some(value(flag, &mut it)?.to_string()),
                    "--seed" => seed = Some(seed_value(value(flag, &mut it)?)?),
                    "--port" => {
                        let text = value(flag, &mut it)?;
                        options.port = text
                            .parse()
                            .ok()
                            .filter(|&p| p >= 1024)
                            .ok_or_else(|| format!("--port '{text}': expected 1024..=65535"))?;
                    }
                    "--release" => options.release = true,
                    "--no-gdb" => options.no_gdb = true,
                    "--batch" => options.batch = Some(value(flag, &mut it)?.into()),
                    "--walkthrough" => options.walkthrough = true,
                    "--record" => options.record = true,
                    "--symbols" => options.symbols.push(value(flag, &mut it)?.into()),
                    "--" => options.extra.extend(it.by_ref().cloned()),
                    other => return Err(format!("gdb: unknown flag '{other}'")),
                }
            }
            match lab.as_deref() {
                None if seed.is_some() => return Err("gdb: --seed goes with --lab 0".into()),
                None => {}
                Some("0") => {
                    // Lab 0's machine: this handout's (or `--seed`'s) memory and domains.
                    let seed = seed
                        .unwrap_or_else(|| crate::labs::params::tree_seed(&crate::process::root()));
                    let params = crate::labs::params::Params::of(seed);
                    (options.guests, options.extra) = params.lab0_boot();
                    options.mode = Mode::Pv;
                }
                Some(other) => {
                    return Err(format!("gdb: --lab {other}: only lab 0 has a machine of its own"))
                }
            }
            if options.record && !options.walkthrough {
                return Err("--record only goes with --walkthrough".into());
            }
            if [options.no_gdb, options.batch.is_some(), options.walkthrough]
                .iter()
                .filter(|&&x| x)
                .count()
                > 1
            {
                return Err("choose one of --no-gdb, --batch and --walkthrough".into());
            }
            Ok(Command::Gdb(options))
        }
        "test" => {
            let mut options =
                TestOptions { filter: None, timeout: DEFAULT_TIMEOUT, jobs: 2, release: false };
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--filter" => options.filter = Some(value(flag, &mut it)?.to_string()),
                    "--timeout" => options.timeout = seconds(flag, value(flag, &mut it)?)?,
                    "--jobs" => {
                        let text = value(flag, &mut it)?;
                        options.jobs =
                            text.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                                format!("--jobs '{text}' is not a positive number")
                            })?;
                    }
                    "--release" => options.release = true,
                    other => return Err(format!("test: unknown flag '{other}'")),
                }
            }
            Ok(Command::Test(options))
        }
        "bench" => {
            let mut options = crate::bench::BenchOptions {
                out: crate::process::root().join("target/bench"),
                quick: false,
                timeout: DEFAULT_TIMEOUT,
                kvm: false,
                console_writes: crate::labs::params::here().console_writes,
                record: false,
            };
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--out" => options.out = value(flag, &mut it)?.into(),
                    "--quick" => options.quick = true,
                    "--record" => options.record = true,
                    "--timeout" => options.timeout = seconds(flag, value(flag, &mut it)?)?,
                    "--emulator" => match value(flag, &mut it)? {
                        "kvm" => options.kvm = true,
                        other => {
                            return Err(format!(
                                "bench: --emulator '{other}': QEMU and Bochs always run; the only extra is kvm (cycles)"
                            ))
                        }
                    },
                    other => return Err(format!("bench: unknown flag '{other}'")),
                }
            }
            if options.record && !options.quick {
                return Err("bench: --record only goes with --quick (the notes quote the quick bench, which `cargo xtask test` runs)".into());
            }
            if options.record && crate::labs::params::here().seed != 0 {
                return Err("bench: --record writes the reference tree's figures; this lab handout has its own seed".into());
            }
            Ok(Command::Bench(options))
        }
        "census" => {
            let mut options = crate::census::CensusOptions {
                out: crate::process::root().join("target/census"),
                timeout: DEFAULT_TIMEOUT,
                record: false,
            };
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--out" => options.out = value(flag, &mut it)?.into(),
                    "--timeout" => options.timeout = seconds(flag, value(flag, &mut it)?)?,
                    "--record" => options.record = true,
                    other => return Err(format!("census: unknown flag '{other}'")),
                }
            }
            Ok(Command::Census(options))
        }
        "book" => match it.next() {
            None => Ok(Command::Book),
            Some(other) => Err(format!("book: unknown flag '{other}' (it takes none)")),
        },
        "notes" => {
            let mut update = false;
            for flag in it {
                match flag.as_str() {
                    "--update" => update = true,
                    other => return Err(format!("notes: unknown flag '{other}' (only --update)")),
                }
            }
            Ok(Command::Notes(update))
        }
        "handout" => {
            let (mut labs, mut out, mut seed) = (Vec::new(), None, 0);
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--lab" => labs = lab_list(value(flag, &mut it)?)?,
                    "--out" => out = Some(std::path::PathBuf::from(value(flag, &mut it)?)),
                    "--seed" => seed = seed_value(value(flag, &mut it)?)?,
                    other => return Err(format!("handout: unknown flag '{other}'")),
                }
            }
            match (labs.is_empty(), out) {
                (false, Some(out)) => Ok(Command::Handout(labs, seed, out)),
                _ => Err("handout needs --lab N and --out DIR".into()),
            }
        }
        "grade" => {
            let mut options = crate::labs::grade::GradeOptions {
                labs: Vec::new(),
                json: false,
                submissions: None,
                here: false,
                timeout: Duration::from_secs(600),
                seed: None,
                record: false,
            };
            while let Some(flag) = it.next() {
                match flag.as_str() {
                    "--lab" => options.labs = lab_list(value(flag, &mut it)?)?,
                    "--json" => options.json = true,
                    "--here" => options.here = true,
                    "--submissions" => {
                        options.submissions = Some(value(flag, &mut it)?.into());
                    }
                    "--timeout" => options.timeout = seconds(flag, value(flag, &mut it)?)?,
                    "--seed" => options.seed = Some(seed_value(value(flag, &mut it)?)?),
                    "--record" => options.record = true,
                    other => return Err(format!("grade: unknown flag '{other}'")),
                }
            }
            Ok(Command::Grade(options))
        }
        other => Err(format!("unknown command '{other}'")),
    }
}

/// Parses `--lab 2` or `--lab 1,2`.
fn lab_list(text: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .map_err(|_| format!("--lab '{text}': expected lab numbers like 2 or 1,2"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_flags_parse() {
        let Command::Run(run) =
            parse(&args("run --emulator bochs --guests hello,b --timeout 5 -- loglevel=debug x"))
                .unwrap()
        else {
            panic!("not run")
        };
        assert_eq!(run.emulator, Emulator::Bochs);
        assert_eq!(run.guests, ["hello", "b"]);
        assert_eq!(run.timeout, Duration::from_secs(5));
        assert_eq!(run.extra, ["loglevel=debug", "x"]);
        assert_eq!(run.mode, Mode::Pv, "pv is the default");
        let Command::Bench(bench) = parse(&args("bench --quick --emulator kvm")).unwrap() else {
            panic!()
        };
        assert!(bench.quick && bench.kvm);
        assert!(parse(&args("bench --emulator bochs")).unwrap_err().contains("kvm"));
        let Command::Run(vmx) = parse(&args("run --mode vmx")).unwrap() else { panic!() };
        assert_eq!(vmx.emulator, Emulator::Bochs, "vmx defaults to Bochs");
        let Command::Run(vmx) = parse(&args("run --emulator kvm --mode vmx")).unwrap() else {
            panic!()
        };
        assert_eq!(vmx.emulator, Emulator::Kvm);
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(parse(&args("run --emulator vbox")).unwrap_err().contains("vbox"));
        assert!(parse(&args("run --mode")).unwrap_err().contains("needs a value"));
        assert!(parse(&args("run --bogus")).unwrap_err().contains("--bogus"));
        assert!(parse(&args("test --timeout 0")).unwrap_err().contains("positive"));
        assert!(parse(&args("test --jobs x")).unwrap_err().contains("--jobs"));
        assert!(parse(&args("frobnicate")).unwrap_err().contains("frobnicate"));
        assert!(parse(&args("doctor now")).is_err());
        assert!(matches!(parse(&[]), Ok(Command::Help)));
    }

    #[test]
    fn help_after_any_command_is_the_usage() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(parse(&words(&["gdb", "--help"])), Ok(Command::Help)));
        assert!(matches!(parse(&words(&["run", "--mode", "svm", "-h"])), Ok(Command::Help)));
        // After `--` the words are xen-lite's command line.
        assert!(!matches!(parse(&words(&["run", "--", "--help"])), Ok(Command::Help)));
    }
}
