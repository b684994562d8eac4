//! `cargo xtask grade`: runs a lab's items and prints what each earned, then `score: N/M` per
//! lab and overall (`--json`: the same as one JSON object, documented in
//! `lecture-notes/labs/README.md`).
//!
//! Where it grades:
//!
//! - in the full tree (no `.lab-handout`): the tree itself, hidden tests included. CI checks
//!   every lab scores full marks there.
//! - in a handout: a grading copy under `target/grade/`, made of the handout as it was handed
//!   out (its single commit) with only the lab's allowed files taken from the student, and of
//!   those only the code before their `#[cfg(test)]` module: the tests are always the pristine
//!   ones. A change outside the allowed files is reported, and does not count.
//! - `--submissions DIR`: every directory in `DIR` is a student's handout; each is graded in a
//!   copy of this (full) tree with the student's allowed files, so hidden tests run too, and the
//!   results go to `DIR/grades.csv`. A lab judged by exact numbers (`gdb`, `predict`, `report`:
//!   addresses and instruction counts belong to one build) is graded instead on the student's
//!   own handout tree, as for self-grading, with this tree's `hidden` files (the gdb scripts)
//!   added, on the seed the handout was made with.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::handout::{is_hidden, tracked_files, HANDOUT_FILE};
use super::manifest::{Check, Item, Manifest};
use crate::process::root;

/// Options of `grade`.
#[derive(Debug)]
pub struct GradeOptions {
    /// The labs to grade (empty: every lab).
    pub labs: Vec<u32>,
    /// Print one JSON object instead of the report.
    pub json: bool,
    /// Grade every student tree in this directory.
    pub submissions: Option<PathBuf>,
    /// Grade this tree as it is (the grading copy's own run).
    pub here: bool,
    /// Per boot (generous: graders die of fixed short timeouts in slow VMs).
    pub timeout: Duration,
    /// The student's seed (`params`); `None`: the tree's `.lab-handout` says (0 if nothing).
    pub seed: Option<u64>,
    /// Write what gdb read and the bench measured into the model answers (full tree only).
    pub record: bool,
}

/// What one item earned.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The item.
    pub item: Item,
    /// Points earned.
    pub earned: u32,
    /// Why, in one line.
    pub detail: String,
}

/// One lab's result.
#[derive(Clone, Debug)]
pub struct LabResult {
    /// The manifest.
    pub manifest: Manifest,
    /// Every item's outcome.
    pub outcomes: Vec<Outcome>,
}

impl LabResult {
    /// Points earned.
    pub fn score(&self) -> u32 {
        self.outcomes.iter().map(|o| o.earned).sum()
    }
}

/// How an item reads in a report: `host xen-lite pv::bounce::tests::`.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Host { krate, prefix } => format!("host {krate} {prefix}"),
        Check::Boot(label) => format!("boot {label}"),
        Check::Selftest(line) => format!("selftest \"{line}\""),
        Check::Answer(section) => format!("answer \"{section}\""),
        Check::Bench { workload, path, field, per_op } => {
            format!("bench {workload} {path}: {per_op} {field} per operation")
        }
        Check::Gdb(key) => format!("gdb {key}"),
        Check::Sized { workload, path } => {
            format!("sized {workload} {path}: runs as many operations as asked")
        }
        Check::Predict { key, at, tolerance } => format!(
            "predict {key} (within {tolerance}% of {} {} {} {})",
            at.mode, at.workload, at.path, at.field
        ),
        Check::Report { key, at } => {
            format!("report {key} ({} {} {} {})", at.mode, at.workload, at.path, at.field)
        }
    }
}

/// The labs a handout tree is for, if `tree` is one.
fn handout_labs(tree: &Path) -> Option<Vec<u32>> {
    let text = fs::read_to_string(tree.join(HANDOUT_FILE)).ok()?;
    Some(super::params::handout_labs(&text))
}

/// Runs `grade`.
pub fn grade(options: &GradeOptions) -> Result<u8, String> {
    let tree = root();
    if let Some(dir) = &options.submissions {
        return submissions(dir, options);
    }
    let manifests = super::manifests(&tree)?;
    let labs: Vec<u32> = if options.labs.is_empty() {
        handout_labs(&tree).unwrap_or_else(|| manifests.iter().map(|m| m.lab).collect())
    } else {
        options.labs.clone()
    };
    let chosen: Vec<Manifest> = manifests.into_iter().filter(|m| labs.contains(&m.lab)).collect();
    if chosen.len() != labs.len() {
        return Err(format!("grade: no such lab among {labs:?}"));
    }
    if options.record && (handout_labs(&tree).is_some() || options.seed.unwrap_or(0) != 0) {
        return Err(
            "grade: --record rewrites the model answers: only in the full tree, seed 0".into()
        );
    }
    let (results, outside) = if options.here || handout_labs(&tree).is_none() {
        let seed = options.seed.unwrap_or_else(|| super::params::tree_seed(&tree));
        (run_items(&tree, &chosen, options, seed)?, Vec::new())
    } else {
        let pristine = pristine_handout(&tree)?;
        // The seed it was handed out with, whatever `.lab-handout` says now.
        let seed = options.seed.unwrap_or_else(|| super::params::tree_seed(&pristine));
        let outside = changes_outside(&tree, &pristine, &chosen)?;
        let copy = grading_copy(&pristine, &tree, &chosen, "self")?;
        (grade_in(&copy, &labs, seed, options)?, outside)
    };
    report(&results, &outside, options.json);
    let full = results.iter().all(|r| r.score() == r.manifest.total());
    Ok(if full { 0 } else { 1 })
}

/// Prints the report, or the JSON object.
fn report(results: &[LabResult], outside: &[String], json: bool) {
    if json {
        println!("{}", to_json(results, outside));
        return;
    }
    for file in outside {
        println!("grade: {file} is outside the lab's allowed files: your change there is not graded (the handout's version is used)");
    }
    let (mut score, mut total) = (0, 0);
    for result in results {
        let m = &result.manifest;
        println!("lab {}: {}", m.lab, m.title);
        for o in &result.outcomes {
            let verdict = if o.earned == o.item.points { "PASS" } else { "FAIL" };
            let hidden = if o.item.hidden { " (hidden)" } else { "" };
            println!(
                "  {verdict}  [{}] {}{hidden}: {}/{}  {}",
                o.item.part,
                describe(&o.item.check),
                o.earned,
                o.item.points,
                o.detail
            );
        }
        println!("score: lab {} {}/{}", m.lab, result.score(), m.total());
        score += result.score();
        total += m.total();
    }
    println!("score: {score}/{total}");
}

/// The JSON form of a grading: `{"score", "total", "outside_allowed", "labs": [{"lab",
/// "title", "score", "total", "items": [{"part", "check", "points", "earned", "hidden",
/// "detail"}]}]}`.
pub fn to_json(results: &[LabResult], outside: &[String]) -> String {
    let text = |s: &str| {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let labs: Vec<String> = results
        .iter()
        .map(|r| {
            let items: Vec<String> = r
                .outcomes
                .iter()
                .map(|o| {
                    format!(
                        "{{\"part\":{},\"check\":{},\"points\":{},\"earned\":{},\"hidden\":{},\"detail\":{}}}",
                        text(&o.item.part),
                        text(&describe(&o.item.check)),
                        o.item.points,
                        o.earned,
                        o.item.hidden,
                        text(&o.detail)
                    )
                })
                .collect();
            format!(
                "{{\"lab\":{},\"title\":{},\"score\":{},\"total\":{},\"items\":[{}]}}",
                r.manifest.lab,
                text(&r.manifest.title),
                r.score(),
                r.manifest.total(),
                items.join(",")
            )
        })
        .collect();
    let score: u32 = results.iter().map(LabResult::score).sum();
    let total: u32 = results.iter().map(|r| r.manifest.total()).sum();
    let outside: Vec<String> = outside.iter().map(|f| text(f)).collect();
    format!(
        "{{\"score\":{score},\"total\":{total},\"outside_allowed\":[{}],\"labs\":[{}]}}",
        outside.join(","),
        labs.join(",")
    )
}

/// The handout `tree` as it was handed out (its first commit), extracted under `target/grade/`.
fn pristine_handout(tree: &Path) -> Result<PathBuf, String> {
    let first = git_output(tree, &["rev-list", "--max-parents=0", "HEAD"])?;
    let first = first.lines().next().ok_or("grade: the handout has no commit")?.to_string();
    let dir = tree.join("target/grade/pristine");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let archive = Command::new("git")
        .args(["archive", "--format=tar", &first])
        .current_dir(tree)
        .output()
        .map_err(|e| format!("cannot run git archive: {e}"))?;
    let mut untar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    use std::io::Write;
    untar
        .stdin
        .take()
        .ok_or("tar has no stdin")?
        .write_all(&archive.stdout)
        .map_err(|e| e.to_string())?;
    untar.wait().map_err(|e| e.to_string())?;
    Ok(dir)
}

fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!("git {} failed in {}", args.join(" "), dir.display()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Files of `student` that differ from `pristine` but are not allowed in any of `labs`.
fn changes_outside(
    student: &Path,
    pristine: &Path,
    labs: &[Manifest],
) -> Result<Vec<String>, String> {
    let allowed: Vec<&String> = labs.iter().flat_map(|m| &m.allowed).collect();
    let mut outside = Vec::new();
    for file in tracked_files(student)? {
        if allowed.contains(&&file) || file == HANDOUT_FILE {
            continue;
        }
        let (a, b) = (fs::read(student.join(&file)).ok(), fs::read(pristine.join(&file)).ok());
        if a != b {
            outside.push(file);
        }
    }
    Ok(outside)
}

/// The code of a Rust file before its `#[cfg(test)]` module, and that module on.
fn split_tests(text: &str) -> (&str, &str) {
    match text.find("\n#[cfg(test)]") {
        Some(at) => text.split_at(at + 1),
        None => (text, ""),
    }
}

/// A copy of `pristine` with the allowed files' code taken from `student` (their tests stay
/// pristine), under `pristine/../NAME`, sharing the slow image builder with this tree.
fn grading_copy(
    pristine: &Path,
    student: &Path,
    labs: &[Manifest],
    name: &str,
) -> Result<PathBuf, String> {
    let copy = root().join("target/grade").join(name);
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(&copy).map_err(|e| e.to_string())?;
    copy_sources(pristine, &copy)?;
    for file in labs.iter().flat_map(|m| &m.allowed) {
        let Ok(mine) = fs::read_to_string(student.join(file)) else { continue };
        let theirs = fs::read_to_string(pristine.join(file)).unwrap_or_default();
        let text = if file.ends_with(".rs") {
            format!("{}{}", split_tests(&mine).0, split_tests(&theirs).1)
        } else {
            mine
        };
        fs::write(copy.join(file), text).map_err(|e| e.to_string())?;
    }
    // The image builder (the pinned nightly's bootloader build, minutes) is this tree's: the
    // copy links to it, and builds it there if this tree never has.
    let builder = root().join("target/image-builder");
    fs::create_dir_all(&builder).map_err(|e| e.to_string())?;
    fs::create_dir_all(copy.join("target")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&builder, copy.join("target/image-builder"))
        .map_err(|e| format!("cannot link the image builder: {e}"))?;
    Ok(copy)
}

/// Copies the tree `from` to `to`, leaving out build output (`target/`) and `.git`.
fn copy_sources(from: &Path, to: &Path) -> Result<(), String> {
    for entry in fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            copy_sources(&source, &target)?;
        } else if kind.is_file() {
            fs::copy(&source, &target)
                .map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
        }
    }
    Ok(())
}

/// Grades `copy` by running `cargo xtask grade --here --json` in it.
fn grade_in(
    copy: &Path,
    labs: &[u32],
    seed: u64,
    options: &GradeOptions,
) -> Result<Vec<LabResult>, String> {
    let list: Vec<String> = labs.iter().map(u32::to_string).collect();
    eprintln!("grade: grading a copy in {} (it builds first; seed {seed})", copy.display());
    let output = Command::new("cargo")
        .args(["xtask", "grade", "--here", "--json", "--lab", &list.join(",")])
        .args(["--timeout", &options.timeout.as_secs().to_string()])
        .args(["--seed", &seed.to_string()])
        .current_dir(copy)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("cannot run the grader in {}: {e}", copy.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.lines().rev().find(|l| l.starts_with("{\"score\""));
    let Some(json) = json else {
        return Err(format!(
            "the grading copy in {} printed no result:\n{}",
            copy.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    from_json(json, &super::manifests(copy)?)
}

/// Reads back [`to_json`]'s `earned` and `detail` of each item (the manifests give the rest).
fn from_json(json: &str, manifests: &[Manifest]) -> Result<Vec<LabResult>, String> {
    let mut results = Vec::new();
    for chunk in json.split("{\"lab\":").skip(1) {
        let lab: u32 = chunk.split(',').next().and_then(|n| n.parse().ok()).ok_or("bad JSON")?;
        let manifest = manifests
            .iter()
            .find(|m| m.lab == lab)
            .ok_or("a lab the JSON names is unknown")?
            .clone();
        let mut outcomes = Vec::new();
        for (item, text) in manifest.items.iter().zip(chunk.split("{\"part\":").skip(1)) {
            let earned = text
                .split("\"earned\":")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .and_then(|n| n.parse().ok())
                .ok_or("bad JSON")?;
            let detail = text
                .split("\"detail\":\"")
                .nth(1)
                .and_then(|t| t.split("\"}").next())
                .unwrap_or("")
                .replace("\\\"", "\"");
            outcomes.push(Outcome { item: item.clone(), earned, detail });
        }
        results.push(LabResult { manifest, outcomes });
    }
    Ok(results)
}

/// Grades every student tree under `dir`; writes `dir/grades.csv`.
fn submissions(dir: &Path, options: &GradeOptions) -> Result<u8, String> {
    let manifests = super::manifests(&root())?;
    let mut students: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("grade: cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    students.sort();
    let mut csv = String::from("student,lab,score,total,outside_allowed,failed_items\n");
    for student in &students {
        let name =
            student.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let graded = (|| -> Result<(Vec<String>, Vec<LabResult>), String> {
            let labs = if options.labs.is_empty() {
                handout_labs(student).ok_or_else(|| {
                    format!("not a handout (no {HANDOUT_FILE}) and no --lab given")
                })?
            } else {
                options.labs.clone()
            };
            let chosen: Vec<Manifest> =
                manifests.iter().filter(|m| labs.contains(&m.lab)).cloned().collect();
            let pristine = pristine_handout(student)?;
            let seed = options.seed.unwrap_or_else(|| super::params::tree_seed(&pristine));
            let outside = changes_outside(student, &pristine, &chosen)?;
            // Exact numbers (what gdb reads, what the bench counts) belong to the exact build
            // the student measured: those labs are graded on the handout's own tree with the
            // TA's hidden scripts added. The others are graded in a copy of this tree, so
            // their hidden tests run.
            let (numbers, code): (Vec<Manifest>, Vec<Manifest>) =
                chosen.into_iter().partition(|m| m.items.iter().any(|i| i.check.is_number()));
            let numbers_of = |ms: &[Manifest]| ms.iter().map(|m| m.lab).collect::<Vec<u32>>();
            let mut results = Vec::new();
            if !code.is_empty() {
                let copy = grading_copy(&root(), student, &code, &format!("submission-{name}"))?;
                results.extend(grade_in(&copy, &numbers_of(&code), seed, options)?);
            }
            if !numbers.is_empty() {
                let copy =
                    grading_copy(&pristine, student, &numbers, &format!("submission-{name}-own"))?;
                for file in tracked_files(&root())?.iter().filter(|f| is_hidden(f)) {
                    if let Some(parent) = copy.join(file).parent() {
                        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    fs::copy(root().join(file), copy.join(file)).map_err(|e| e.to_string())?;
                }
                results.extend(grade_in(&copy, &numbers_of(&numbers), seed, options)?);
            }
            let _ = fs::remove_dir_all(&pristine);
            results.sort_by_key(|r| r.manifest.lab);
            Ok((outside, results))
        })();
        // One student's tree that cannot be graded is a row of the CSV, not the end of the run.
        let (outside, results) = match graded {
            Ok(graded) => graded,
            Err(error) => {
                println!("grade: {name}: cannot be graded: {error}");
                let error = error.replace('"', "'").replace('\n', " ");
                csv.push_str(&format!("{name},,0,,\"\",\"cannot be graded: {error}\"\n"));
                continue;
            }
        };
        for r in &results {
            let failed: Vec<String> = r
                .outcomes
                .iter()
                .filter(|o| o.earned < o.item.points)
                .map(|o| format!("[{}] {}", o.item.part, describe(&o.item.check)))
                .collect();
            csv.push_str(&format!(
                "{name},{},{},{},\"{}\",\"{}\"\n",
                r.manifest.lab,
                r.score(),
                r.manifest.total(),
                outside.join(" "),
                failed.join("; ").replace('"', "'")
            ));
            println!("grade: {name}: lab {} {}/{}", r.manifest.lab, r.score(), r.manifest.total());
        }
    }
    let out = dir.join("grades.csv");
    fs::write(&out, csv).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("grade: {} submissions graded; {}", students.len(), out.display());
    Ok(0)
}

/// CI's first check of a lab: the full tree (solutions, hidden tests, model answers) earns
/// every point on the machine of `seed` (the model answers are seed 0's).
pub fn full_marks(manifest: &Manifest, timeout: Duration, seed: u64) -> Result<String, String> {
    let options = GradeOptions {
        labs: vec![manifest.lab],
        json: false,
        submissions: None,
        here: true,
        timeout,
        seed: Some(seed),
        record: false,
    };
    let results = run_items(&root(), std::slice::from_ref(manifest), &options, seed)?;
    let result = &results[0];
    let missed: Vec<String> = result
        .outcomes
        .iter()
        .filter(|o| o.earned < o.item.points)
        .map(|o| format!("[{}] {}: {}", o.item.part, describe(&o.item.check), o.detail))
        .collect();
    let numbers =
        result.outcomes.iter().any(|o| o.earned < o.item.points && o.item.check.is_number());
    let hint = if numbers && seed == 0 {
        format!("\n      (if the code changed the machine, `cargo xtask grade --lab {} --record` rewrites the model answers' numbers)", manifest.lab)
    } else {
        String::new()
    };
    if missed.is_empty() {
        Ok(format!("{}/{}", result.score(), manifest.total()))
    } else {
        Err(format!(
            "{}/{}; missed:\n      {}{hint}",
            result.score(),
            manifest.total(),
            missed.join("\n      ")
        ))
    }
}

/// CI's second check of a lab: its handout, graded by its own `cargo xtask grade`, earns
/// nothing, and names every item it failed.
pub fn handout_scores_zero(manifest: &Manifest) -> Result<String, String> {
    let dir = root().join(format!("target/labs/handout-{}", manifest.lab));
    let _ = fs::remove_dir_all(&dir);
    super::handout::handout(&[manifest.lab], 0, &dir)?;
    // The slow image builder is this tree's, as a TA's machine would share it.
    let builder = root().join("target/image-builder");
    fs::create_dir_all(&builder).map_err(|e| e.to_string())?;
    fs::create_dir_all(dir.join("target")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&builder, dir.join("target/image-builder"))
        .map_err(|e| e.to_string())?;
    let output = Command::new("cargo")
        .args(["xtask", "grade", "--lab", &manifest.lab.to_string(), "--json"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("cannot run the handout's grader: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.lines().rev().find(|l| l.starts_with("{\"score\"")).ok_or_else(|| {
        format!(
            "the handout's grader printed no score:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let results = from_json(json, std::slice::from_ref(manifest))?;
    let result = &results[0];
    let unnamed = result.outcomes.iter().filter(|o| o.detail.trim().is_empty()).count();
    if result.score() != 0 || output.status.success() {
        return Err(format!("the handout scores {}/{}", result.score(), manifest.total()));
    }
    if unnamed > 0 {
        return Err(format!("{unnamed} failed items say nothing about why"));
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(format!("0/{}, every item failed with a reason", manifest.total()))
}

/// Runs every item of `labs` in `tree` (as it is), on the machine of `seed`.
fn run_items(
    tree: &Path,
    labs: &[Manifest],
    options: &GradeOptions,
    seed: u64,
) -> Result<Vec<LabResult>, String> {
    let params = super::params::Params::of(seed);
    let items: Vec<&Item> = labs.iter().flat_map(|m| &m.items).collect();
    let host = host_results(tree, &items, options.timeout, &params);
    let boots = super::runner::boots(&items, options.timeout, &params)?;
    let found = super::runner::numbers(tree, labs, options.timeout, &params);
    if options.record {
        record(tree, labs, &found)?;
    }
    let mut results = Vec::new();
    for manifest in labs {
        let outcomes = manifest
            .items
            .iter()
            .map(|item| {
                let (ok, detail) = match &item.check {
                    Check::Host { krate, prefix } => {
                        host_verdict(&host, krate, prefix, item.hidden)
                    }
                    Check::Boot(_)
                    | Check::Selftest(_)
                    | Check::Bench { .. }
                    | Check::Sized { .. } => boots
                        .get(&describe(&item.check))
                        .cloned()
                        .unwrap_or((false, "not run".into())),
                    Check::Answer(section) => {
                        super::answers::answer_verdict(tree, manifest, section)
                    }
                    Check::Gdb(_) | Check::Predict { .. } | Check::Report { .. } => {
                        super::answers::number_verdict(tree, manifest, item, &found)
                    }
                };
                Outcome { item: item.clone(), earned: if ok { item.points } else { 0 }, detail }
            })
            .collect();
        results.push(LabResult { manifest: manifest.clone(), outcomes });
    }
    Ok(results)
}

/// `grade --record`: the model answers' gdb and report values become what this tree's machine
/// (seed 0) shows; predictions stay, they are reasoning.
fn record(
    tree: &Path,
    labs: &[Manifest],
    found: &BTreeMap<String, Result<super::answers::Number, String>>,
) -> Result<(), String> {
    for manifest in labs {
        let Some(file) = &manifest.answers else { continue };
        let mut values = BTreeMap::new();
        for item in &manifest.items {
            let (Check::Gdb(key) | Check::Report { key, .. }) = &item.check else { continue };
            let Some(Ok(value)) = found.get(&describe(&item.check)) else { continue };
            if let Some(text) = super::answers::written(&item.check, *value) {
                values.insert(key.clone(), text);
            }
        }
        if values.is_empty() {
            continue;
        }
        let path = tree.join(file);
        let text = fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        let (text, changed) = super::answers::with_values(&text, &values);
        fs::write(&path, text).map_err(|e| format!("{file}: {e}"))?;
        eprintln!(
            "grade: --record: {file}: {} changed",
            if changed.is_empty() { "nothing".into() } else { changed.join(", ") }
        );
    }
    Ok(())
}

/// `crate → (test name → passed)`, one `cargo test --no-fail-fast` per crate the items name.
fn host_results(
    tree: &Path,
    items: &[&Item],
    timeout: Duration,
    params: &super::params::Params,
) -> BTreeMap<String, Result<BTreeMap<String, bool>, String>> {
    let mut crates: Vec<&str> = items
        .iter()
        .filter_map(|i| match &i.check {
            Check::Host { krate, .. } => Some(krate.as_str()),
            _ => None,
        })
        .collect();
    crates.sort();
    crates.dedup();
    crates
        .into_iter()
        .map(|krate| {
            let mut command = Command::new("cargo");
            command.args(["test", "-p", krate, "--no-fail-fast", "--color", "never"]);
            if let Some(seed) = params.hidden_seed {
                command.env(super::params::SEED_VARIABLE, seed.to_string());
            }
            let output = crate::process::output_within(command.current_dir(tree), timeout);
            let result = match output {
                Err(e) => Err(format!("cargo test -p {krate}: {e}")),
                Ok(output) => {
                    let stdout = String::from_utf8_lossy(&output.stdout);
                    let tests = parse_test_lines(&stdout);
                    if tests.is_empty() && !output.status.success() {
                        let stderr = String::from_utf8_lossy(&output.stderr);
                        let first = stderr
                            .lines()
                            .find(|l| l.starts_with("error"))
                            .unwrap_or("it does not build");
                        Err(format!("cargo test -p {krate}: {first}"))
                    } else {
                        Ok(tests)
                    }
                }
            };
            (krate.to_string(), result)
        })
        .collect()
}

/// `test a::b ... ok` / `... FAILED` lines (a panic inside a test, a `todo!` included, is a
/// failure).
pub fn parse_test_lines(output: &str) -> BTreeMap<String, bool> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, verdict) = rest.rsplit_once(" ... ")?;
            match verdict.trim() {
                "ok" => Some((name.to_string(), true)),
                "FAILED" => Some((name.to_string(), false)),
                _ => None,
            }
        })
        .collect()
}

fn host_verdict(
    host: &BTreeMap<String, Result<BTreeMap<String, bool>, String>>,
    krate: &str,
    prefix: &str,
    hidden: bool,
) -> (bool, String) {
    let tests = match host.get(krate) {
        Some(Ok(tests)) => tests,
        Some(Err(why)) => return (false, why.clone()),
        None => return (false, "not run".into()),
    };
    let matching: Vec<(&String, &bool)> =
        tests.iter().filter(|(n, _)| n.starts_with(prefix)).collect();
    if matching.is_empty() {
        let why = if hidden { "hidden tests: graded in the TA's tree" } else { "no such test" };
        return (false, why.into());
    }
    let failed: Vec<&str> =
        matching.iter().filter(|(_, ok)| !**ok).map(|(n, _)| n.as_str()).collect();
    if failed.is_empty() {
        (true, format!("{} tests pass", matching.len()))
    } else {
        (false, format!("{} of {} fail: {}", failed.len(), matching.len(), failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lines_are_read_from_cargo_output() {
        let out = "running 3 tests\ntest pv::bounce::tests::a ... ok\ntest pv::bounce::tests::b ... FAILED\ntest x ... ignored\ntest result: FAILED. 1 passed; 1 failed";
        let tests = parse_test_lines(out);
        assert_eq!(tests.len(), 2);
        assert_eq!(tests["pv::bounce::tests::b"], false);
    }

    #[test]
    fn host_items_need_every_matching_test_and_at_least_one() {
        let mut host = BTreeMap::new();
        let tests: BTreeMap<String, bool> = [
            ("m::tests::a".to_string(), true),
            ("m::tests::b".to_string(), false),
            ("n::c".to_string(), true),
        ]
        .into();
        host.insert("k".to_string(), Ok(tests));
        assert!(!host_verdict(&host, "k", "m::tests::", false).0);
        assert!(host_verdict(&host, "k", "n::", false).0);
        let (ok, why) = host_verdict(&host, "k", "z::", true);
        assert!(!ok && why.contains("hidden"));
    }

    #[test]
    fn json_round_trips_the_earned_points() {
        let manifest = super::super::manifest::parse(
            "lab 2 \"T q\"\nallowed a.rs\npart 2.1 \"p\"\nboot x/qemu 5\nhost k m:: 3\n",
        )
        .unwrap();
        let result = LabResult {
            manifest: manifest.clone(),
            outcomes: vec![
                Outcome {
                    item: manifest.items[0].clone(),
                    earned: 5,
                    detail: "ok \"quoted\"".into(),
                },
                Outcome {
                    item: manifest.items[1].clone(),
                    earned: 0,
                    detail: "no such test".into(),
                },
            ],
        };
        let json = to_json(&[result], &["b.rs".into()]);
        assert!(json.starts_with("{\"score\":5,\"total\":8,\"outside_allowed\":[\"b.rs\"]"));
        let back = from_json(&json, &[manifest]).unwrap();
        assert_eq!(back[0].score(), 5);
        assert_eq!(back[0].outcomes[0].detail, "ok \"quoted\"");
    }
}
