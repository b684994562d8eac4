//! `cargo xtask test`: every test layer, one summary line.
//!
//! 1. Host unit tests of every crate (`cargo test --workspace`): pure logic such as bundle
//!    parsing, ELF checks, the domain builder, the frame allocator, descriptor encoding.
//! 2. Source checks ([`crate::checks`]): STYLE rules a compiler does not enforce.
//! 3. Boot tests ([`crate::boot_tests`]) in QEMU and Bochs, `--jobs` at a time, each in its
//!    own run directory with its own timeout.
//!
//! The last line is `N passed, N failed` (plus `, N skipped (why)` when an emulator is
//! missing); the exit code is non-zero if anything failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::artifacts::{self, Artifacts};
use crate::boot_tests::{self, BootTest};
use crate::cli::{Emulator, TestOptions};
use crate::emulator::{self, Boot, End};
use crate::process::{cargo, describe};
use crate::run::{disk_for, verdict};
use crate::setup;
use crate::{checks, doc_checks};

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    /// Reason → how many tests it skipped.
    skipped: BTreeMap<String, usize>,
}

/// Runs the command.
pub fn test(options: &TestOptions) -> Result<u8, String> {
    let start = Instant::now();
    let mut tally = Tally::default();
    let wanted = |name: &str| options.filter.as_deref().is_none_or(|f| name.contains(f));

    if wanted("host") {
        host_tests(&mut tally);
    }
    if wanted("source") {
        let all = [
            checks::safety_comments(),
            doc_checks::note_references(),
            checks::flavour_boundary(),
            doc_checks::headers_are_current(),
            doc_checks::file_lengths(),
            doc_checks::page_table_facts_once(),
            crate::book::book_in_step(),
            crate::labs::markers_match_manifests(),
        ];
        for check in all {
            if check.problems.is_empty() {
                println!("PASS  source check: {} ({} examined)", check.name, check.examined);
                tally.passed += 1;
            } else {
                println!(
                    "FAIL  source check: {}\n      {}",
                    check.name,
                    check.problems.join("\n      ")
                );
                tally.failed += 1;
            }
        }
    }
    let tests: Vec<BootTest> =
        boot_tests::all().into_iter().filter(|t| wanted(&t.label())).collect();
    if !tests.is_empty() {
        boot(&tests, options, &mut tally)?;
    }
    for (label, mode, extra) in crate::gdb::WALKTHROUGHS {
        if wanted(label) {
            gdb_walkthrough(options, &mut tally, label, mode, extra);
        }
    }
    for manifest in crate::labs::manifests(&crate::process::root()).unwrap_or_default() {
        let full = format!("lab-{}-full-marks", manifest.lab);
        if wanted(&full) {
            check_line(
                &full,
                crate::labs::grade::full_marks(&manifest, options.timeout, 0),
                &mut tally,
            );
        }
        // Answers read on one student's machine must not pass on another's: the model answers
        // (seed 0) graded on seed 5's machine lose the seed-dependent items.
        let seeded = manifest.items.iter().any(|i| i.check.is_number());
        let other = format!("lab-{}-other-seed-fails", manifest.lab);
        if seeded && wanted(&other) {
            let result = match crate::labs::grade::full_marks(&manifest, options.timeout, 5) {
                Ok(score) => Err(format!(
                    "seed 5's machine accepts seed 0's answers ({score}): they do not depend on the seed"
                )),
                Err(missed) => Ok(format!("seed 5 scores {}", missed.replace("\n      ", "; "))),
            };
            check_line(&other, result, &mut tally);
        }
        let zero = format!("lab-{}-handout-scores-0", manifest.lab);
        if wanted(&zero) {
            check_line(&zero, crate::labs::grade::handout_scores_zero(&manifest), &mut tally);
        }
    }
    if wanted("book") {
        let built = crate::book::build()
            .and_then(|built| built.map(|index| format!("both languages, no warning: {index}")));
        check_line("book: lecture-notes/ built with mdBook", built, &mut tally);
    }
    if wanted("bench-quick") {
        bench_quick(options, &mut tally);
    }
    if wanted("census") {
        let result = crate::census::collect(options.timeout, options.release).and_then(|rows| {
            let mut problems = crate::census::check(&rows);
            problems.extend(crate::census::note_is_current(&rows).err());
            match problems.as_slice() {
                [] => Ok(format!(
                    "{} instructions in {} setups, {} expectations hold",
                    rows.iter().filter(|r| r.name != "nop").count(),
                    crate::census::SETUPS.len(),
                    crate::census::EXPECTED.len()
                )),
                problems => Err(problems.join("\n      ")),
            }
        });
        check_line("census: Popek and Goldberg's table", result, &mut tally);
    }

    let skipped: String =
        tally.skipped.iter().map(|(why, n)| format!(", {n} skipped ({why})")).collect();
    println!(
        "xtask: test {} in {:.0} s",
        if tally.failed == 0 { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    println!("{} passed, {} failed{skipped}", tally.passed, tally.failed);
    Ok(if tally.failed == 0 { 0 } else { 1 })
}

/// One check's `PASS  name (detail)` or `FAIL  name: problem` line, counted.
fn check_line(name: &str, result: Result<String, String>, tally: &mut Tally) {
    match result {
        Ok(detail) => {
            tally.passed += 1;
            println!("PASS  {name} ({detail})");
        }
        Err(problem) => {
            tally.failed += 1;
            println!("FAIL  {name}: {problem}");
        }
    }
}

/// `cargo xtask bench --quick`, checked: every setup boots and reports; the transition counts
/// the benchmark issue names are what they must be (one entry and no CR3 write per bounced pv
/// syscall, no entry for the fast trap, no VM exit per vmx or svm syscall, one per hypercall); and
/// two runs of the same setup give identical counts, QEMU with icount and Bochs alike.
fn bench_quick(options: &TestOptions, tally: &mut Tally) {
    use crate::bench::{self, BenchOptions, Measurement, Setup, MATRIX};
    let mut check = |name: &str, result: Result<String, String>| {
        check_line(&format!("bench-quick: {name}"), result, tally);
    };
    // The release build, as `cargo xtask bench` measures: the notes quote its counts.
    let artifacts = match artifacts::build(true) {
        Ok(artifacts) => artifacts,
        Err(error) => return check("release build", Err(error)),
    };
    let params = crate::labs::params::here();
    let bench_options = BenchOptions {
        out: crate::process::root().join("target/bench-quick"),
        quick: true,
        timeout: options.timeout,
        kvm: false,
        console_writes: params.console_writes,
        record: false,
    };
    let mut measurements = Vec::new();
    for setup in MATRIX {
        let name = format!("{} mode in {} reports", setup.name(), setup.emulator.name());
        match bench::boot(&artifacts, setup, &bench_options) {
            Ok(lines) => {
                check(&name, Ok(format!("{} measurements", lines.len())));
                measurements.extend(lines.into_iter().map(|line| Measurement {
                    setup,
                    line,
                    cycles: None,
                }));
            }
            Err(error) => check(&name, Err(error)),
        }
    }
    let find = |setup: Setup, workload: &str, path: &str| {
        measurements
            .iter()
            .find(|m| m.setup == setup && m.line.workload == workload && m.line.path == path)
    };
    for setup in MATRIX {
        let label = format!("{}/{}", setup.name(), setup.emulator.name());
        let mut expect = |what: &str,
                          workload: &str,
                          path: &str,
                          value: fn(&Measurement) -> u64,
                          want: fn(u64) -> u64| {
            let result = match find(setup, workload, path) {
                None => Err(format!("no {workload} {path} measurement")),
                Some(m) if value(m) == want(m.line.ops) => {
                    Ok(format!("{} over {} calls", value(m), m.line.ops))
                }
                Some(m) => Err(format!(
                    "{} over {} calls, expected {}",
                    value(m),
                    m.line.ops,
                    want(m.line.ops)
                )),
            };
            check(&format!("{label}: {what}"), result);
        };
        match setup.mode {
            // Under shadow paging a first touch inside the measurement (a page of the loop, of
            // the stack) is a hidden fault: an entry with its two CR3 writes, apart from the
            // syscalls'. Direct paging has none (`hidden` is 0).
            hypercall_abi::Mode::Pv => {
                expect(
                    "one xen-lite entry per bounced syscall (besides hidden faults)",
                    "null-syscall",
                    "syscall",
                    |m| m.line.entries.saturating_sub(m.line.hidden),
                    |ops| ops,
                );
                expect(
                    "no CR3 write per bounced syscall (the switcher's fast path)",
                    "null-syscall",
                    "syscall",
                    |m| m.line.cr3.saturating_sub(2 * m.line.hidden),
                    |_| 0,
                );
                expect(
                    "no xen-lite entry for the int 0x80 fast trap",
                    "null-syscall",
                    "int80",
                    |m| m.line.entries,
                    |_| 0,
                );
            }
            // (On shadow page tables a first touch anywhere is an exit: not counted here.)
            hypercall_abi::Mode::Vmx | hypercall_abi::Mode::Svm if !setup.shadow => {
                expect(
                    "no VM exit per syscall",
                    "null-syscall",
                    "syscall",
                    |m| m.line.exits,
                    |_| 0,
                );
                expect("no VM exit per int 0x80", "null-syscall", "int80", |m| m.line.exits, |_| 0);
                expect(
                    "one VM exit per hypercall",
                    "null-hypercall",
                    "hypercall",
                    |m| m.line.exits,
                    |ops| ops,
                );
            }
            _ => {}
        }
    }
    // The notes quote the reference tree's counts; a lab handout's seed changes console-write's.
    if params.seed == 0 {
        for (name, result) in crate::figures::check_or_record(&measurements, false) {
            check(&name, result);
        }
    }
    use hypercall_abi::Mode;
    let twice = [
        (Emulator::Qemu, Mode::Pv, false),
        (Emulator::Bochs, Mode::Pv, false),
        (Emulator::Qemu, Mode::Pv, true),
        (Emulator::Qemu, Mode::Svm, false),
    ];
    for setup in twice.map(|(emulator, mode, shadow)| Setup { emulator, mode, shadow, uart: false })
    {
        let name = format!(
            "{} mode in {}: a second run counts the same",
            setup.name(),
            setup.emulator.name()
        );
        let first: Vec<_> =
            measurements.iter().filter(|m| m.setup == setup).map(|m| m.line.clone()).collect();
        let result = bench::boot(&artifacts, setup, &bench_options).and_then(|second| {
            if second == first {
                Ok(format!("{} identical measurements", second.len()))
            } else {
                Err(format!("first {first:?}\n      second {second:?}"))
            }
        });
        check(&name, result);
    }
}

/// A checked gdb walkthrough in QEMU (`crate::gdb::walkthrough`) of `mode` booted with `extra`
/// on xen-lite's command line: one system call in pv, the CR3 swap under `paging=shadow`, one
/// world switch and exit in svm.
fn gdb_walkthrough(
    options: &TestOptions,
    tally: &mut Tally,
    label: &str,
    mode: hypercall_abi::Mode,
    extra: Option<&str>,
) {
    let missing = setup::missing_packages();
    if let Some(package) = missing.iter().find(|p| p.name == "gdb" || p.name == "qemu-system-x86") {
        let why = format!("{} missing: {}", package.name, setup::install_command(&[package]));
        *tally.skipped.entry(why).or_default() += 1;
        return;
    }
    let start = Instant::now();
    let session = crate::gdb::walkthrough_session(mode, extra, false, options.release);
    match crate::gdb::gdb(&session) {
        Ok(0) => {
            tally.passed += 1;
            println!("PASS  {label} ({:.1} s)", start.elapsed().as_secs_f64());
        }
        Ok(code) => {
            tally.failed += 1;
            println!("FAIL  {label}: gdb exited {code} (transcript above)");
        }
        Err(error) => {
            tally.failed += 1;
            println!("FAIL  {label}: {error}");
        }
    }
}

/// Runs `cargo test --workspace --no-fail-fast` and adds its counts: a failing test in one
/// crate does not stop the others from being run and reported.
fn host_tests(tally: &mut Tally) {
    println!("xtask: host unit tests (cargo test --workspace --no-fail-fast)");
    let mut command = cargo();
    command.args(["test", "--workspace", "--no-fail-fast", "--color", "never"]);
    let output = match command.output() {
        Ok(output) => output,
        Err(error) => {
            println!("FAIL  host unit tests: cannot start `{}`: {error}", describe(&command));
            tally.failed += 1;
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (passed, failed) = count_results(&stdout);
    tally.passed += passed;
    tally.failed += failed;
    if output.status.success() {
        println!("PASS  host unit tests: {passed} passed");
    } else {
        if failed == 0 {
            tally.failed += 1; // it did not even build
        }
        println!("FAIL  host unit tests: {passed} passed, {failed} failed\n{stdout}\n{stderr}");
    }
}

/// Sums `test result: ok. 12 passed; 0 failed; ...` lines.
fn count_results(output: &str) -> (usize, usize) {
    let number_before = |line: &str, word: &str| -> usize {
        line.split(';')
            .find_map(|part| {
                part.trim()
                    .strip_suffix(word)
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    output
        .lines()
        .filter(|line| line.starts_with("test result:"))
        .map(|line| (number_before(line, "passed"), number_before(line, "failed")))
        .fold((0, 0), |(p, f), (lp, lf)| (p + lp, f + lf))
}

/// Builds once, then runs the boot tests `jobs` at a time.
fn boot(tests: &[BootTest], options: &TestOptions, tally: &mut Tally) -> Result<(), String> {
    let missing = setup::ensure_packages()?;
    let unavailable = |emulator: Emulator| -> Option<String> {
        let need: Vec<_> = missing
            .iter()
            .copied()
            .filter(|p| match emulator {
                Emulator::Qemu | Emulator::Kvm => p.name == "qemu-system-x86",
                Emulator::Bochs => p.name.starts_with("bochs") || p.name == "vgabios",
            })
            .collect();
        (!need.is_empty())
            .then(|| format!("{} missing: {}", emulator.name(), setup::install_command(&need)))
    };
    let mut runnable = Vec::new();
    for test in tests {
        match unavailable(test.emulator) {
            Some(why) => *tally.skipped.entry(why).or_default() += 1,
            None => runnable.push(test),
        }
    }
    if runnable.is_empty() {
        return Ok(());
    }
    let artifacts = artifacts::build(options.release)?;
    println!(
        "xtask: {} boot tests, {} at a time, timeout {} s each",
        runnable.len(),
        options.jobs,
        options.timeout.as_secs()
    );

    let next = AtomicUsize::new(0);
    let results = Mutex::new((0usize, 0usize));
    let hostile_rows = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.min(runnable.len()) {
            scope.spawn(|| {
                while let Some(test) = runnable.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (ok, report, seen) = run_one(test, &artifacts, options);
                    println!("{report}");
                    if let Some(seen) = seen {
                        let expected = test.expect[0].to_string();
                        let mut rows = hostile_rows.lock().unwrap_or_else(|p| p.into_inner());
                        rows.push((test.label(), expected, seen, ok));
                    }
                    let mut counts = results.lock().unwrap_or_else(|p| p.into_inner());
                    if ok {
                        counts.0 += 1
                    } else {
                        counts.1 += 1
                    }
                }
            });
        }
    });
    let (passed, failed) = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut rows = hostile_rows.into_inner().unwrap_or_else(|p| p.into_inner());
    rows.sort();
    crate::hostile::print_table(&rows);
    tally.passed += passed;
    tally.failed += failed;
    Ok(())
}

/// The console of one boot of `test` (whatever it ends with), for the lab grader.
pub fn console_of(
    test: &BootTest,
    artifacts: &Artifacts,
    options: &TestOptions,
) -> Result<String, String> {
    let dir = emulator::private_dir(&test.label().replace('/', "-"))?;
    let disk = disk_for(artifacts, &dir, &test.bundle_bytes(artifacts)?)?;
    let outcome = emulator::boot(&Boot {
        emulator: test.emulator,
        disk: &disk,
        dir: &dir,
        timeout: options.timeout,
        echo: false,
        icount: false,
        amd: test.amd(),
    })?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(outcome.console)
}

/// Boots one test; returns whether it passed, its report, and (for a hostile case) the line
/// that shows what happened.
pub fn run_one(
    test: &BootTest,
    artifacts: &Artifacts,
    options: &TestOptions,
) -> (bool, String, Option<String>) {
    let hostile = test.name.starts_with("hostile-");
    let label = test.label();
    let attempt = || -> Result<(Option<String>, emulator::Outcome, std::path::PathBuf), String> {
        let dir = emulator::private_dir(&label.replace('/', "-"))?;
        let disk = disk_for(artifacts, &dir, &test.bundle_bytes(artifacts)?)?;
        let outcome = emulator::boot(&Boot {
            emulator: test.emulator,
            disk: &disk,
            dir: &dir,
            timeout: options.timeout * test.timeout_factor(),
            echo: false,
            icount: false,
            amd: test.amd(),
        })?;
        let problem = match (&outcome.end, boot_tests::first_missing(&outcome.console, test.expect))
        {
            (End::Status(status), None) if *status == test.status => None,
            (End::Status(status), None) => {
                Some(format!("exit status {status}, expected {}", test.status))
            }
            (End::Status(_), Some(line)) => Some(format!("console never showed: {line}")),
            _ => Some(verdict(&outcome).0),
        };
        Ok((problem, outcome, dir))
    };
    match attempt() {
        Ok((None, outcome, dir)) => {
            let _ = std::fs::remove_dir_all(dir);
            let seen = hostile.then(|| crate::hostile::seen(&outcome.console));
            (true, format!("PASS  {label} ({:.1} s)", outcome.elapsed.as_secs_f64()), seen)
        }
        Ok((Some(problem), outcome, dir)) => {
            let tail: Vec<&str> = outcome.console.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            (
                false,
                format!(
                    "FAIL  {label}: {problem}\n      run directory: {}\n      last console lines:\n        {}",
                    dir.display(),
                    tail.join("\n        ")
                ),
                hostile.then(|| crate::hostile::seen(&outcome.console)),
            )
        }
        Err(error) => (false, format!("FAIL  {label}: {error}"), hostile.then(|| error.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_result_lines_are_summed() {
        let out = "running 3 tests\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
                   test result: FAILED. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(count_results(out), (13, 2));
        assert_eq!(count_results("nothing"), (0, 0));
    }
}
