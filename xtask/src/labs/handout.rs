//! `cargo xtask handout --lab N[,M...] --out DIR`: the student's tree for labs `N, M...`, as a
//! fresh git repository with a single commit, so no solution is anywhere in its history.
//!
//! Every file git tracks is copied; in each, the regions of the chosen labs become what the
//! student starts from, and every hidden region disappears (`markers`), as does every file in a
//! directory named `hidden` (the grader's own scripts, such as lab 0's gdb checks); a lab's
//! answers file is its template. Other labs' solutions stay, so the handout builds and boots as
//! far as its own labs allow. `.lab-handout` records which labs it is for and the student's
//! seed (`params`); the grader reads it.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::markers;
use crate::process::root;

/// The file that marks a tree as a handout, and for which labs.
pub const HANDOUT_FILE: &str = ".lab-handout";

/// The files of `tree` git tracks or would (untracked but not ignored), relative to it.
pub fn tracked_files(tree: &Path) -> Result<Vec<String>, String> {
    let output = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(tree)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!("git ls-files failed in {}", tree.display()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect())
}

/// Whether `file` is in a directory named `hidden`: the TA's tree only.
pub fn is_hidden(file: &str) -> bool {
    file.split('/').rev().skip(1).any(|dir| dir == "hidden")
}

/// Copies `from` into `to` with the regions of `labs` cut (`markers::handout`); returns how
/// many regions were cut.
pub fn copy_tree(from: &Path, to: &Path, labs: &[u32]) -> Result<usize, String> {
    let mut cut = 0;
    for file in tracked_files(from)? {
        if is_hidden(&file) {
            continue;
        }
        let source = from.join(&file);
        let target = to.join(&file);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        // Deleted in the working tree: nothing to copy.
        let Ok(bytes) = fs::read(&source) else { continue };
        // Markers live in Rust sources (assembly too: it is in `global_asm!`); a note that shows
        // one as an example is not a region.
        let rust = file.ends_with(".rs");
        let text = String::from_utf8(bytes.clone()).ok().filter(|t| rust && t.contains("// LAB "));
        let bytes = match text {
            Some(text) => {
                let is_rust = rust;
                let before = markers::regions(&text).map_err(|e| format!("{file}: {e}"))?;
                cut += before
                    .iter()
                    .filter(|r| r.lab().is_some_and(|lab| labs.contains(&lab)))
                    .count();
                markers::handout(&text, labs, is_rust)
                    .map_err(|e| format!("{file}: {e}"))?
                    .into_bytes()
            }
            None => bytes,
        };
        fs::write(&target, bytes).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        let permissions = fs::metadata(&source).map_err(|e| e.to_string())?.permissions();
        fs::set_permissions(&target, permissions).map_err(|e| e.to_string())?;
    }
    Ok(cut)
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("git")
        .args(["-c", "user.name=xen-lite handout", "-c", "user.email=handout@xen-lite.invalid"])
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("git {} failed in {}", args.join(" "), dir.display()))
    }
}

/// Writes the handout of `labs` to `out`, for the student whose seed is `seed` (0: the
/// reference machine).
pub fn handout(labs: &[u32], seed: u64, out: &Path) -> Result<(), String> {
    let manifests = super::manifests(&root())?;
    for lab in labs {
        if !manifests.iter().any(|m| m.lab == *lab) {
            let known: Vec<String> = manifests.iter().map(|m| m.lab.to_string()).collect();
            return Err(format!("handout: there is no lab {lab} (labs: {})", known.join(", ")));
        }
    }
    if out.exists() && fs::read_dir(out).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!("handout: {} exists and is not empty", out.display()));
    }
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let cut = copy_tree(&root(), out, labs)?;
    // The tree holds each lab's model answers; the student gets the template.
    for manifest in manifests.iter().filter(|m| labs.contains(&m.lab)) {
        let Some(answers) = &manifest.answers else { continue };
        let template = super::answers_template(answers);
        let text = fs::read_to_string(root().join(&template))
            .map_err(|e| format!("handout: lab {}: cannot read {template}: {e}", manifest.lab))?;
        fs::write(out.join(answers), text).map_err(|e| e.to_string())?;
    }
    let list: Vec<String> = labs.iter().map(u32::to_string).collect();
    fs::write(out.join(HANDOUT_FILE), format!("labs {}\nseed {seed}\n", list.join(" ")))
        .map_err(|e| e.to_string())?;
    git(out, &["init", "-q", "-b", "main"])?;
    git(out, &["add", "-A"])?;
    let message = format!("Handout: xen-lite lab {}", list.join(", "));
    git(out, &["commit", "-q", "-m", &message])?;
    println!(
        "handout: labs {} written to {} ({cut} regions to fill in; one commit, no solution in it)",
        list.join(", "),
        out.display()
    );
    if seed != 0 {
        let p = super::params::Params::of(seed);
        println!(
            "handout: seed {seed}: lab 0 boots {} MiB per domain after {} bystander(s); lab 7 measures {} console writes",
            p.mem_mib, p.bystanders, p.console_writes
        );
    }
    println!("handout: the student runs `cargo xtask grade --lab {}` there", list.join(","));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_hidden;

    #[test]
    fn files_in_hidden_directories_stay_in_the_tas_tree() {
        assert!(is_hidden("xtask/gdb/hidden/lab0.py"));
        assert!(!is_hidden("xtask/gdb/xen_lite.py"));
        assert!(!is_hidden("hidden"), "a file named hidden is not a directory");
        assert!(!is_hidden("lecture-notes/labs/hidden-tests.md"));
    }
}
