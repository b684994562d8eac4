//! Source checks that keep the project's own rules (STYLE.md), run by `cargo xtask test`:
//!
//! - every `unsafe` block in the kernels and the ABI says why, in a `// SAFETY:` comment in the
//!   comment lines right above it (STYLE rule 8);
//! - the guest kernel outside the hvm platform (`platform/hvm.rs`, `platform/hvm/`) calls no
//!   CPL-0-only function of the `x86` crate (STYLE rule 7: in ring 1 they fault; the `pv`
//!   flavour's privileged layer is the hypercall);
//! - nothing in the guest outside `src/platform/` and the one line in `main.rs` that picks the
//!   platform file is conditional on the flavour (DESIGN §6).

use std::fs;
use std::path::{Path, PathBuf};

use crate::process::root;

/// The result of one check: how many things it looked at, and what is wrong.
pub struct CheckResult {
    /// A name for reports.
    pub name: &'static str,
    /// Items examined.
    pub examined: usize,
    /// One line per violation.
    pub problems: Vec<String>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// How an `unsafe` block starts (spelled in two pieces so this file does not match itself).
const UNSAFE_BLOCK: &str = concat!("unsafe", " {");

/// Lines with an `unsafe` block whose comment lines above carry no `SAFETY:`.
pub fn undocumented_unsafe(source: &str) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let opens_block = code.contains(UNSAFE_BLOCK) && !code.contains("unsafe fn");
        if !opens_block || line.contains("SAFETY:") {
            continue;
        }
        let comments_above =
            lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("//"));
        let documented = comments_above.clone().any(|l| l.contains("SAFETY:"));
        // A block opened inside a statement continues the statement's comment (`let x = unsafe {`).
        if !documented {
            missing.push(i + 1);
        }
    }
    missing
}

/// Checks every `unsafe` block of the kernels and the ABI.
pub fn safety_comments() -> CheckResult {
    let mut files = Vec::new();
    for crate_dir in ["xen-lite/src", "pv-guest/src", "pv-guest/user/src", "hypercall-abi/src"] {
        rust_files(&root().join(crate_dir), &mut files);
    }
    let mut examined = 0;
    let mut problems = Vec::new();
    for file in files {
        let Ok(source) = fs::read_to_string(&file) else { continue };
        examined += source.matches(UNSAFE_BLOCK).count();
        for line in undocumented_unsafe(&source) {
            let shown = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
            problems.push(format!(
                "{shown}:{line}: unsafe block without a `// SAFETY:` comment above it"
            ));
        }
    }
    CheckResult { name: "every unsafe block has a SAFETY comment", examined, problems }
}

/// `x86` crate paths whose functions need ring 0.
const RING_0_ONLY: [&str; 8] = [
    "x86::controlregs",
    "x86::msr",
    "x86::dtables::l",
    "x86::irq",
    "x86::io",
    "x86::halt",
    "x86::tlb",
    "x86::task::load_tr",
];

/// Lines of `source` that call a ring-0-only `x86` function.
pub fn ring_0_calls(source: &str) -> Vec<usize> {
    let code = |line: &str| line.split("//").next().unwrap_or("").to_string();
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| RING_0_ONLY.iter().any(|path| code(line).contains(path)))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Lines of `source` that test the flavour features.
pub fn flavour_conditionals(source: &str) -> Vec<usize> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains("feature = \"pv\"") || line.contains("feature = \"hvm\""))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Checks the guest's flavour boundary: ring-0 calls only in the hvm platform, flavour tests
/// only where the platform is chosen.
pub fn flavour_boundary() -> CheckResult {
    let mut files = Vec::new();
    rust_files(&root().join("pv-guest/src"), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let Ok(source) = fs::read_to_string(file) else { continue };
        let shown = file.strip_prefix(root()).unwrap_or(file).display().to_string();
        let in_platform = shown.starts_with("pv-guest/src/platform/");
        let in_hvm_platform = shown == "pv-guest/src/platform/hvm.rs"
            || shown.starts_with("pv-guest/src/platform/hvm/");
        if !in_hvm_platform {
            for line in ring_0_calls(&source) {
                problems.push(format!(
                    "{shown}:{line}: calls a ring-0-only x86 function outside the hvm platform"
                ));
            }
        }
        if !in_platform && shown != "pv-guest/src/main.rs" {
            for line in flavour_conditionals(&source) {
                problems.push(format!(
                    "{shown}:{line}: flavour-conditional code outside src/platform/"
                ));
            }
        }
    }
    CheckResult { name: "the guest's flavour boundary holds", examined: files.len(), problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_blocks_need_a_safety_comment_above() {
        let source = "fn a() {\n    // SAFETY: fine.\n    unsafe { x() };\n    unsafe { y() };\n    // SAFETY: the pointer is valid.\n    // More words.\n    let v = unsafe { *p };\n}\nunsafe fn z() {}\n";
        assert_eq!(undocumented_unsafe(source), [4]);
    }

    #[test]
    fn ring_0_calls_and_flavour_tests_are_found() {
        let source = "let a = x86::io::inb(1);\n// x86::msr::rdmsr in a comment\nlet b = 1;\n#[cfg(feature = \"pv\")]\n";
        assert_eq!(ring_0_calls(source), [1]);
        assert_eq!(flavour_conditionals(source), [4]);
    }
}
