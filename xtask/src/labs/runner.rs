//! The boots a grading needs: each `boot` item's test from the boot-test table, and one run of
//! the pv self-tests for every `selftest` item, one after another.

use std::collections::BTreeMap;
use std::time::Duration;

use super::grade::describe;
use super::manifest::{Check, Item};
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
) -> Result<BTreeMap<String, (bool, String)>, String> {
    let table = boot_tests::all();
    let mut results = BTreeMap::new();
    let wanted: Vec<&Item> = items
        .iter()
        .copied()
        .filter(|i| matches!(i.check, Check::Boot(_) | Check::Selftest(_) | Check::Bench { .. }))
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
        let bench_options = crate::bench::BenchOptions {
            out: crate::process::root().join("target/grade/bench"),
            quick: true,
            timeout,
            kvm: false,
        };
        let lines = crate::bench::boot(&artifacts, crate::bench::MATRIX[0], &bench_options);
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
    Ok(results)
}
