//! The boots a grading needs, one after another: each `boot` item's test from the boot-test
//! table, one run of the pv self-tests for every `selftest` item, the quick bench for `bench`
//! items; and the numbers `gdb`, `predict` and `report` items are judged against (`numbers`):
//! the lab's gdb script on the student's machine, the quick bench (release, as `cargo xtask
//! bench --quick` runs it) in the modes they name.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hypercall_abi::Mode;

use super::answers::Number;
use super::grade::describe;
use super::manifest::{Check, Item, Manifest};
use super::params::Params;
use crate::artifacts;
use crate::boot_tests::{self, BootTest, Bundle};
use crate::cli::{Emulator, TestOptions};

/// The self-tests' boot: the pv kernel's `tests` workload beside a bystander (as the
/// `pv-selftest` boot test runs it), in Bochs.
const SELFTESTS: &str = "mode=pv domain=tests domain=counter umip=off";

/// `describe(check) → (passed, detail)` for every boot and self-test item.
pub fn boots(
    items: &[&Item],
    timeout: Duration,
    params: &Params,
) -> Result<BTreeMap<String, (bool, String)>, String> {
    let table = boot_tests::all();
    let mut results = BTreeMap::new();
    let wanted: Vec<&Item> = items
        .iter()
        .copied()
        .filter(|i| {
            matches!(
                i.check,
                Check::Boot(_) | Check::Selftest(_) | Check::Bench { .. } | Check::Sized { .. }
            )
        })
        .collect();
    if wanted.is_empty() {
        return Ok(results);
    }
    let artifacts = match artifacts::build(false) {
        Ok(artifacts) => artifacts,
        Err(error) => {
            let _ = error; // the build's own output is above
            let why = "the tree does not build (see the compiler's errors above)".to_string();
            for item in wanted {
                results.insert(describe(&item.check), (false, why.clone()));
            }
            return Ok(results);
        }
    };
    let options = TestOptions { filter: None, timeout, jobs: 2, release: false };
    for item in &wanted {
        let Check::Boot(label) = &item.check else { continue };
        let verdict = match table.iter().find(|t| &t.label() == label) {
            None if item.hidden => (false, "hidden tests: graded in the TA's tree".into()),
            None => (false, format!("no boot test is labelled {label}")),
            Some(test) => {
                let (ok, report, _) = crate::test::run_one(test, &artifacts, &options);
                let first = report.lines().next().unwrap_or("").to_string();
                (ok, first.trim_start_matches("PASS  ").trim_start_matches("FAIL  ").to_string())
            }
        };
        results.insert(describe(&item.check), verdict);
    }
    if wanted.iter().any(|i| matches!(i.check, Check::Selftest(_))) {
        let test = BootTest {
            name: "lab-selftests",
            emulator: Emulator::Bochs,
            bundle: Bundle::Cmdline(SELFTESTS),
            expect: &[],
            status: 0,
        };
        let console = crate::test::console_of(&test, &artifacts, &options);
        for item in &wanted {
            let Check::Selftest(line) = &item.check else { continue };
            let verdict = match &console {
                Err(error) => (false, error.clone()),
                Ok(console) => {
                    let ok = format!("[dom0] ok {line}");
                    let failed = format!("[dom0] FAIL {line}");
                    if console.lines().any(|l| l.trim_end() == ok) {
                        (true, "the self-test says ok".into())
                    } else if let Some(why) = console.lines().find(|l| l.starts_with(&failed)) {
                        (false, why.to_string())
                    } else {
                        (false, "the self-test never ran to this line".into())
                    }
                }
            };
            results.insert(describe(&item.check), verdict);
        }
    }
    if wanted.iter().any(|i| matches!(i.check, Check::Bench { .. })) {
        let bench_options = quick_bench(timeout, params.console_writes);
        let lines = crate::bench::boot(&artifacts, crate::bench::QEMU_PV, &bench_options);
        for item in &wanted {
            let Check::Bench { workload, path, field, per_op } = &item.check else { continue };
            let verdict = match &lines {
                Err(error) => (false, format!("the bench did not run: {error}")),
                Ok(lines) => {
                    match lines.iter().find(|l| &l.workload == workload && &l.path == path) {
                        None => (false, format!("the bench printed no {workload} {path} line")),
                        Some(line) => {
                            let count = match field.as_str() {
                                "entries" => line.entries,
                                "cr3" => line.cr3,
                                _ => line.exits,
                            };
                            let detail = format!("{count} {field} over {} operations", line.ops);
                            (count == per_op * line.ops, detail)
                        }
                    }
                }
            };
            results.insert(describe(&item.check), verdict);
        }
    }
    if wanted.iter().any(|i| matches!(i.check, Check::Sized { .. })) {
        // A size no seed gives (`params`: 40 ..= 103, the reference 64).
        let asked = 211;
        let lines =
            crate::bench::boot(&artifacts, crate::bench::QEMU_PV, &quick_bench(timeout, asked));
        for item in &wanted {
            let Check::Sized { workload, path } = &item.check else { continue };
            let verdict = match &lines {
                Err(error) => (false, format!("the bench did not run: {error}")),
                Ok(lines) => {
                    match lines.iter().find(|l| &l.workload == workload && &l.path == path) {
                        None => (false, format!("the bench printed no {workload} {path} line")),
                        Some(line) if line.ops == asked => {
                            (true, format!("asked for {asked}, ran {asked}"))
                        }
                        Some(line) => (
                            false,
                            format!("asked for {asked} operations, the line reports {}", line.ops),
                        ),
                    }
                }
            };
            results.insert(describe(&item.check), verdict);
        }
    }
    Ok(results)
}

/// The quick bench as a grading runs it, with `console_writes` writes for `console-write`.
fn quick_bench(timeout: Duration, console_writes: u64) -> crate::bench::BenchOptions {
    crate::bench::BenchOptions {
        out: crate::process::root().join("target/grade/bench"),
        quick: true,
        timeout,
        kvm: false,
        console_writes,
        record: false,
    }
}

/// `describe(check) → the value, or why there is none` for every `gdb`, `predict` and
/// `report` item of `labs`.
pub fn numbers(
    tree: &Path,
    labs: &[Manifest],
    timeout: Duration,
    params: &Params,
) -> BTreeMap<String, Result<Number, String>> {
    let mut found = BTreeMap::new();
    for manifest in labs {
        let gdb: Vec<&Item> =
            manifest.items.iter().filter(|i| matches!(i.check, Check::Gdb(_))).collect();
        if let (false, Some(script)) = (gdb.is_empty(), &manifest.script) {
            let read = read_in_gdb(&tree.join(script), timeout, params);
            for item in gdb {
                let Check::Gdb(key) = &item.check else { continue };
                let value = match &read {
                    Err(why) => Err(why.clone()),
                    Ok((_, values)) if values.contains_key(key) => Ok(values[key]),
                    Ok((transcript, _)) => Err(format!(
                        "the grader's gdb script found no {key} (its last line: {})",
                        transcript.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("none")
                    )),
                };
                found.insert(describe(&item.check), value);
            }
        }
    }
    let measured: Vec<&Item> = labs
        .iter()
        .flat_map(|m| &m.items)
        .filter(|i| matches!(i.check, Check::Predict { .. } | Check::Report { .. }))
        .collect();
    if measured.is_empty() {
        return found;
    }
    let modes: Vec<&str> = ["pv", "native"]
        .into_iter()
        .filter(|mode| {
            measured.iter().any(|i| match &i.check {
                Check::Predict { at, .. } | Check::Report { at, .. } => at.mode == *mode,
                _ => false,
            })
        })
        .collect();
    let bench = bench_quick(&modes, timeout, params);
    for item in measured {
        let (Check::Predict { at, .. } | Check::Report { at, .. }) = &item.check else { continue };
        let value = match &bench {
            Err(why) => Err(why.clone()),
            Ok(all) => all
                .iter()
                .find(|m| {
                    m.setup.mode.name() == at.mode
                        && m.line.workload == at.workload
                        && m.line.path == at.path
                })
                .map(|m| {
                    Number::Real(match at.field.as_str() {
                        "instructions" => m.instructions(),
                        "entries" => m.entries(),
                        "exits" => m.exits(),
                        "cr3" => m.cr3(),
                        _ => m.transitions(),
                    })
                })
                .ok_or_else(|| {
                    format!(
                        "the bench printed no {} {} line in {} mode",
                        at.workload, at.path, at.mode
                    )
                }),
        };
        found.insert(describe(&item.check), value);
    }
    found
}

/// Lab 0's gdb script on the student's machine: its transcript and the `lab0: key = value`
/// lines it printed. The script finds the studied domain itself (the one running `tests`).
fn read_in_gdb(
    script: &Path,
    timeout: Duration,
    params: &Params,
) -> Result<(String, BTreeMap<String, Number>), String> {
    if !script.is_file() {
        return Err("hidden tests: graded in the TA's tree".into());
    }
    let (guests, extra) = params.lab0_boot();
    let options = crate::cli::GdbOptions {
        mode: Mode::Pv,
        guests,
        // The student's own session may hold the usual port.
        port: crate::gdb::default_port() + 1000,
        release: false,
        no_gdb: false,
        batch: None,
        walkthrough: false,
        record: false,
        extra,
        symbols: Vec::new(),
        quiet: true,
    };
    let (_, transcript) = crate::gdb::batch_output(&options, script, timeout)?;
    let values = transcript
        .lines()
        .filter_map(|line| {
            let (key, value) = line.strip_prefix("lab0: ")?.split_once(" = ")?;
            Some((key.trim().to_string(), super::answers::number(value)?))
        })
        .collect();
    Ok((transcript, values))
}

/// The quick bench (release build) in QEMU, in each of `modes`.
fn bench_quick(
    modes: &[&str],
    timeout: Duration,
    params: &Params,
) -> Result<Vec<crate::bench::Measurement>, String> {
    let artifacts = artifacts::build(true)
        .map_err(|_| "the release build fails (see the compiler's errors above)".to_string())?;
    let options = quick_bench(timeout, params.console_writes);
    let mut all = Vec::new();
    for mode in modes {
        let mode = Mode::from_name(mode).ok_or("unknown mode")?;
        let setup =
            crate::bench::Setup { emulator: Emulator::Qemu, mode, shadow: false, uart: false };
        let lines = crate::bench::boot(&artifacts, setup, &options)
            .map_err(|e| format!("the bench did not run in {} mode: {e}", mode.name()))?;
        all.extend(lines.into_iter().map(|line| crate::bench::Measurement {
            setup,
            line,
            cycles: None,
        }));
    }
    Ok(all)
}
