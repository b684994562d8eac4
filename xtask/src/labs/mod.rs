//! Course labs: one tree that is the solution of every lab and, cut by markers, each lab's
//! handout; a grader that scores a tree against its lab's manifest. The TA guide is
//! `lecture-notes/labs/README.md`.
//!
//! - `markers`: `// LAB n.k BEGIN` ... `// LAB n.k END` regions, and what a handout makes of
//!   them;
//! - `manifest`: a lab's `.lab` file, its parts and graded items;
//! - `handout`: `cargo xtask handout`, a fresh single-commit repository of the student tree;
//! - `answers`: the answers file's sections and `key = value` numbers, and how each is judged;
//! - `grade`: `cargo xtask grade`, in the full tree, in a handout, or over a directory of
//!   submissions;
//! - `params`: per-student parameters from a seed (`--seed S`);
//! - `runner`: the boots, gdb sessions and bench runs a grading needs.

pub mod answers;
pub mod grade;
pub mod handout;
pub mod manifest;
pub mod markers;
pub mod params;
mod runner;

use std::fs;
use std::path::Path;

use self::manifest::{Check, Manifest};
use crate::checks::{rust_files, CheckResult};

/// Where the labs' manifests and handouts live.
pub const LABS_DIR: &str = "lecture-notes/labs";

/// The template of answers file `answers` (`02-x.md` → `02-x.template.md`), which handouts
/// get in its place; the tree holds the model answers.
pub fn answers_template(answers: &str) -> String {
    match answers.strip_suffix(".md") {
        Some(stem) => format!("{stem}.template.md"),
        None => format!("{answers}.template"),
    }
}

/// Every lab's manifest in `tree`, by lab number.
pub fn manifests(tree: &Path) -> Result<Vec<Manifest>, String> {
    let dir = tree.join(LABS_DIR);
    let mut found = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "lab") {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let manifest = manifest::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        found.push(manifest);
    }
    found.sort_by_key(|m| m.lab);
    Ok(found)
}

/// The source check `cargo xtask test` runs: every marker is well formed, names a part some
/// manifest declares, and every part has a region; every manifest reads.
pub fn markers_match_manifests() -> CheckResult {
    let root = crate::process::root();
    let mut problems = Vec::new();
    let manifests = manifests(&root).unwrap_or_else(|e| {
        problems.push(e);
        Vec::new()
    });
    let mut files = Vec::new();
    for dir in
        ["xen-lite/src", "pv-guest/src", "pv-guest/user/src", "hypercall-abi/src", "xtask/src"]
    {
        rust_files(&root.join(dir), &mut files);
    }
    let mut parts_seen = Vec::new();
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else { continue };
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        match markers::regions(&text) {
            Err(error) => problems.push(format!("{shown}: {error}")),
            Ok(regions) => {
                for region in regions.iter().filter(|r| r.part != "HIDDEN") {
                    let declared =
                        manifests.iter().any(|m| m.parts.iter().any(|(p, _)| *p == region.part));
                    if !declared {
                        problems.push(format!(
                            "{shown}:{}: LAB {} is in no manifest",
                            region.lines.0 + 1,
                            region.part
                        ));
                    }
                    let allowed = manifests
                        .iter()
                        .any(|m| m.allowed.contains(&shown) && region.lab() == Some(m.lab));
                    if !allowed {
                        problems.push(format!(
                            "{shown}: holds LAB {} but is not among lab {}'s allowed files",
                            region.part,
                            region.lab().unwrap_or(0)
                        ));
                    }
                    parts_seen.push(region.part.clone());
                }
            }
        }
    }
    for manifest in &manifests {
        for (part, _) in &manifest.parts {
            // A part of answers only (lab 0's numbers read in gdb, lab 7's predictions) has no
            // code to fill in.
            let code = manifest.items.iter().any(|i| {
                &i.part == part && !i.check.is_number() && !matches!(i.check, Check::Answer(_))
            });
            if code && !parts_seen.contains(part) {
                problems
                    .push(format!("lab {}: part {part} has no LAB {part} region", manifest.lab));
            }
        }
    }
    CheckResult { name: "lab markers match the manifests", examined: files.len(), problems }
}
