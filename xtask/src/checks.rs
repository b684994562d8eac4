//! Source checks that keep the project's own rules (STYLE.md), run by `cargo xtask test`:
//!
//! - every `unsafe` block in the kernels and the ABI says why, in a `// SAFETY:` comment in the
//!   comment lines right above it (STYLE rule 8);
//! - the guest kernel outside the hvm platform (`platform/hvm.rs`, `platform/hvm/`) calls no
//!   CPL-0-only function of the `x86` crate (STYLE rule 7: in ring 1 they fault; the `pv`
//!   flavour's privileged layer is the hypercall);
//! - nothing in the guest outside `src/platform/` and `main.rs` (which refuses a build with no
//!   flavour or two) is conditional on the flavour (DESIGN §6), and nothing outside
//!   `src/platform/` tests a platform constant (`platform::NAME` in an `if`, `while`, `match`,
//!   `&&`, `||` or `then`): a flavour difference is behaviour behind the platform interface
//!   (STYLE rule 25);
//! - the page-table hypercall records (`MmuUpdate`, `MmuextOp`) are named only in
//!   `src/platform/` and in the workloads that speak the pv ABI on purpose (`src/workloads/`);
//!   the kernel asks for page-table changes by intent.

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

/// Every `.rs` file under `dir`, recursively, appended to `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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

/// `source` with its comments and the insides of its string and character literals blanked
/// (newlines kept, so line numbers stay): the code a check should look at, and nothing a
/// comment, a log string or an assembly template says.
pub fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && is_ident(chars[i - 1]);
        // The end (exclusive) of a comment or literal starting here, if one does.
        let end = if c == '/' && next == Some('/') {
            Some(chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |n| i + n))
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            loop {
                match (chars.get(j), chars.get(j + 1)) {
                    (Some('/'), Some('*')) => (depth, j) = (depth + 1, j + 2),
                    (Some('*'), Some('/')) if depth == 1 => break Some(j + 2),
                    (Some('*'), Some('/')) => (depth, j) = (depth - 1, j + 2),
                    (Some(_), _) => j += 1,
                    (None, _) => break Some(chars.len()),
                }
            }
        } else if c == 'r' && !after_ident && matches!(next, Some('"' | '#')) {
            // A raw string: r"...", r#"..."#, and so on.
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) == Some(&'"') {
                let close: Vec<char> =
                    core::iter::once('"').chain("#".repeat(hashes).chars()).collect();
                let body = i + 2 + hashes;
                (body..chars.len())
                    .find(|&j| chars[j..].starts_with(&close))
                    .map(|j| j + close.len())
                    .or(Some(chars.len()))
            } else {
                None
            }
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            Some((j + 1).min(chars.len()))
        } else if c == '\'' && next == Some('\\') {
            chars[i + 2..].iter().position(|&c| c == '\'').map(|n| i + 3 + n)
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            Some(i + 3) // 'x'; anything else is a lifetime or a label
        } else {
            None
        };
        match end {
            Some(end) => {
                out.extend(chars[i..end].iter().map(|&c| blank(c)));
                i = end;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Where identifier `word` occurs in `code` as a whole word: its byte offsets.
fn word_offsets<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).map(|(at, _)| at).filter(move |&at| {
        let before = code[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = code[at + word.len()..].chars().next().is_none_or(|c| !is_ident(c));
        before && after
    })
}

/// Whether the code of one statement or expression tests something: an `if`, `while` or
/// `match` (a `match` guard included), a binary `&&` or `||`, or a `bool::then`.
fn is_condition(code: &str) -> bool {
    let keyword = ["if", "while", "match"].iter().any(|k| word_offsets(code, k).next().is_some());
    // A binary operator has an operand on its left; a closure's `||` or a `&&` reference does
    // not.
    let binary = |op: &str| {
        code.match_indices(op).any(|(at, _)| {
            let left = code[..at].trim_end();
            let last = left.chars().next_back();
            last.is_some_and(|c| !"=(,{;|&!".contains(c)) && !left.ends_with("move")
        })
    };
    keyword
        || binary("&&")
        || binary("||")
        || code.contains(".then(")
        || code.contains(".then_some(")
}

/// Lines of `source` that use a platform constant (`platform::NAME`, the name in capitals) in a
/// condition: a flavour difference tested outside the platform instead of being behaviour
/// behind it (STYLE rule 25). The condition is the code around the use, out to the nearest
/// `;`, `{` or `}` on either side.
pub fn platform_constant_conditions(source: &str) -> Vec<usize> {
    let code = code_only(source);
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut lines = Vec::new();
    for at in word_offsets(&code, "platform") {
        let rest = &code[at + "platform".len()..];
        let Some(name) = rest.strip_prefix("::") else { continue };
        let name: String = name.chars().take_while(|&c| is_ident(c)).collect();
        let constant = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !constant {
            continue;
        }
        let boundary = |c: char| matches!(c, ';' | '{' | '}');
        let start = code[..at].rfind(boundary).map_or(0, |b| b + 1);
        let end = code[at..].find(boundary).map_or(code.len(), |b| at + b);
        if is_condition(&code[start..end]) {
            lines.push(line_of(&code, at));
        }
    }
    lines.dedup();
    lines
}

/// The hypercall record types of the page-table hypercalls: only the platform and the
/// workloads that speak the pv ABI on purpose may name them; the kernel asks for its
/// page-table changes by intent (`platform::set_ptes`, `pin_table`, `load_root`...).
const HYPERCALL_RECORDS: [&str; 2] = ["MmuUpdate", "MmuextOp"];

/// Lines of `source` whose code names a [`HYPERCALL_RECORDS`] type.
pub fn hypercall_records(source: &str) -> Vec<usize> {
    let code = code_only(source);
    let mut lines: Vec<usize> = HYPERCALL_RECORDS
        .iter()
        .flat_map(|record| {
            word_offsets(&code, record).map(|at| line_of(&code, at)).collect::<Vec<_>>()
        })
        .collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// Checks the guest's flavour boundary: ring-0 calls only in the hvm platform, flavour tests
/// only where the platform is chosen, platform constants never tested outside it, and the
/// page-table hypercall records only in the platform and the ABI-speaking workloads.
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
        if !in_platform {
            for line in platform_constant_conditions(&source) {
                problems.push(format!(
                    "{shown}:{line}: a platform constant tested outside src/platform/ (make the difference a platform item)"
                ));
            }
        }
        if !in_platform && !shown.starts_with("pv-guest/src/workloads/") {
            for line in hypercall_records(&source) {
                problems.push(format!(
                    "{shown}:{line}: names a page-table hypercall record outside src/platform/ and src/workloads/"
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

    #[test]
    fn code_only_blanks_comments_and_literals() {
        let source =
            "let a = \"if {\"; // if x\nlet c = '{'; /* ; */ let r = r#\"}\"#; 'a: loop {}\n";
        let code = "let a =       ;        \nlet c =    ;         let r =       ; 'a: loop {}\n";
        assert_eq!(code_only(source), code);
    }

    #[test]
    fn platform_constants_in_conditions_are_found() {
        let source = "fn f() {\n    if !platform::KERNEL_WRITES_PAGE_TABLES {\n        g();\n    }\n    let x = a\n        && crate::platform::FAST;\n    platform::FLAG.then(|| 1);\n}\n";
        assert_eq!(platform_constant_conditions(source), [2, 6, 7]);
    }

    #[test]
    fn platform_constants_used_as_values_are_not() {
        let source = "fn f() {\n    let cs = platform::KERNEL_CS;\n    println!(\"{}\", crate::platform::FLAVOUR);\n    if ready() {\n        frame.ss = u64::from(platform::KERNEL_SS);\n    }\n    let f = || platform::KERNEL_CS;\n    // if platform::KERNEL_CS\n    if platform::events_pending() {}\n}\n";
        assert_eq!(platform_constant_conditions(source), Vec::<usize>::new());
    }

    #[test]
    fn hypercall_records_are_found_in_code_only() {
        let source = "use hypercall_abi::hypercall::MmuUpdate;\n// MmuextOp in a comment\nlet op = MmuextOp { cmd, arg };\nlet w = PteWrite { slot, entry };\nlet s = \"MmuUpdate\"; struct MmuUpdates;\n";
        assert_eq!(hypercall_records(source), [1, 3]);
    }
}
