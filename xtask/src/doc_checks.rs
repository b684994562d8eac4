//! Source checks that keep the tree readable as the lecture's text, run by `cargo xtask test`
//! (STYLE rules 15, 20 and 22):
//!
//! - every `path::item` reference in the lecture notes and README names a file that exists and
//!   an item that file defines (a `fn`, type, trait, constant, module, macro, field or variant;
//!   the segments before it must appear in the file too), reported with the note's file and
//!   line, so the notes cannot silently rot;
//! - no `//!` header uses a word of [`STALE_WORDS`] (words about a file's past or future): a
//!   header describes its file as it is;
//! - no source file of the kernels and the ABI is over 500 lines before its tests (the guest's
//!   workloads excepted), so each file stays one job a student can read;
//! - the page-table index formula and address mask are written once, in
//!   `hypercall-abi/src/page_table.rs`.

use std::fs;
use std::path::PathBuf;

use crate::checks::{rust_files, CheckResult};
use crate::process::root;

/// The crates whose sources these checks read.
const SOURCE_DIRS: [&str; 4] =
    ["xen-lite/src", "pv-guest/src", "pv-guest/user/src", "hypercall-abi/src"];

/// Every source file, with its path relative to the repository root.
fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let text = fs::read_to_string(&file).ok()?;
            let shown = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
            Some((shown, text))
        })
        .collect()
}

/// The code of a file before its `#[cfg(test)]` module.
fn before_tests(source: &str) -> &str {
    source.find("\n#[cfg(test)]").map_or(source, |at| &source[..at])
}

/// The `path::item` references in a Markdown text, with their line numbers:
/// `` `dir/file.rs::item` `` or `` `dir/file.rs` ``.
pub fn code_references(text: &str) -> Vec<(usize, String, Option<String>)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            let (path, item) = match span.split_once("::") {
                Some((path, item)) => (path, Some(item.to_string())),
                None => (span, None),
            };
            if path.contains('/') && path.ends_with(".rs") && !path.contains(' ') {
                found.push((number + 1, path.to_string(), item));
            }
        }
    }
    found
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let before = text[..at].chars().next_back().is_none_or(|c| !ident(c));
        let after = text[at + word.len()..].chars().next().is_none_or(|c| !ident(c));
        before && after
    })
}

/// Whether `source` defines `name`: as an item (`fn name`, `struct name`, ...), a macro, a
/// field (`name:` starting a line) or an enum variant (`Name,` / `Name {` / `Name(` starting a
/// line).
pub fn defines(source: &str, name: &str) -> bool {
    let keywords = ["fn", "struct", "enum", "trait", "const", "static", "type", "mod", "union"];
    let items = keywords.iter().any(|k| has_word(source, &format!("{k} {name}")));
    let macros = source.contains(&format!("macro_rules! {name}"));
    let members = source.lines().map(str::trim_start).any(|line| {
        let line = line.strip_prefix("pub ").unwrap_or(line);
        line.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with(':') && !rest.starts_with("::")
                || rest.starts_with(',')
                || rest.starts_with(" {")
                || rest.starts_with('(')
                || rest.starts_with(" =")
        })
    });
    items || macros || members
}

/// Whether `source` defines `name` or has an `impl` block for it (a type's methods may live
/// in another file than the type).
pub fn defines_or_implements(source: &str, name: &str) -> bool {
    defines(source, name)
        || source.lines().map(str::trim_start).any(|line| {
            (line.starts_with("impl") || line.starts_with("pub trait")) && has_word(line, name)
        })
}

/// Every `.md` file under `dir` (the notes, the labs' handouts and answers), recursively.
fn markdown_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// Checks the references of every note and the README.
pub fn note_references() -> CheckResult {
    let mut docs = Vec::new();
    markdown_files(&root().join("lecture-notes"), &mut docs);
    docs.sort();
    docs.push(root().join("README.md"));
    let mut examined = 0;
    let mut problems = Vec::new();
    for doc in docs {
        let Ok(text) = fs::read_to_string(&doc) else { continue };
        let shown = doc.strip_prefix(root()).unwrap_or(&doc).display().to_string();
        for (line, path, item) in code_references(&text) {
            examined += 1;
            let Ok(source) = fs::read_to_string(root().join(&path)) else {
                problems.push(format!("{shown}:{line}: `{path}` does not exist"));
                continue;
            };
            let Some(item) = item else { continue };
            let segments: Vec<&str> = item.split("::").collect();
            let (last, before) = segments.split_last().expect("split yields one segment");
            if !defines(&source, last) {
                problems
                    .push(format!("{shown}:{line}: `{path}::{item}`: {path} defines no `{last}`"));
            } else if let Some(missing) = before.iter().find(|s| !defines_or_implements(&source, s))
            {
                problems.push(format!(
                    "{shown}:{line}: `{path}::{item}`: {path} neither defines nor implements `{missing}`"
                ));
            }
        }
    }
    CheckResult { name: "lecture-note code references resolve", examined, problems }
}

/// Words a `//!` header may not use: they describe a file's past or future, not the file.
const STALE_WORDS: [&str; 5] = ["for now", "so far", "later", "first step", "not yet"];

/// Lines of `source` whose `//!` text uses a stale word, with the word.
pub fn stale_header_lines(source: &str) -> Vec<(usize, &'static str)> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let text = line.trim_start().strip_prefix("//!")?.to_lowercase();
            STALE_WORDS.iter().find(|w| has_word(&text, w)).map(|w| (i + 1, *w))
        })
        .collect()
}

/// Checks every header of the kernels and the ABI.
pub fn headers_are_current() -> CheckResult {
    let files = sources();
    let mut problems = Vec::new();
    for (shown, source) in &files {
        for (line, word) in stale_header_lines(source) {
            problems.push(format!(
                "{shown}:{line}: the header says \"{word}\": describe the file as it is"
            ));
        }
    }
    CheckResult {
        name: "file headers describe their files as they are",
        examined: files.len(),
        problems,
    }
}

/// Longest a source file may be before its tests.
pub const MAX_LINES: usize = 500;

/// Checks that every source file (the guest's workloads excepted) is one readable job.
pub fn file_lengths() -> CheckResult {
    let files = sources();
    let mut problems = Vec::new();
    for (shown, source) in &files {
        let lines = before_tests(source).lines().count();
        if lines > MAX_LINES && !shown.starts_with("pv-guest/src/workloads/") {
            problems.push(format!("{shown}: {lines} lines before its tests (at most {MAX_LINES})"));
        }
    }
    CheckResult { name: "no source file over 500 lines", examined: files.len(), problems }
}

/// The page-table facts that have one home: the index formula and the address mask.
const PAGE_TABLE_FACTS: [&str; 3] = ["(12 + 9 * (level - 1))", "0x000f_ffff_ffff_f000", "& 0x1ff"];

/// Checks that the page-table facts are written only in `hypercall-abi/src/page_table.rs`.
pub fn page_table_facts_once() -> CheckResult {
    let files = sources();
    let mut problems = Vec::new();
    for (shown, source) in &files {
        if shown == "hypercall-abi/src/page_table.rs" {
            continue;
        }
        for (i, line) in before_tests(source).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(fact) = PAGE_TABLE_FACTS.iter().find(|f| code.contains(*f)) {
                problems.push(format!(
                    "{shown}:{}: `{fact}` is hypercall_abi::page_table's (use index/address/ADDRESS_MASK)",
                    i + 1
                ));
            }
        }
    }
    CheckResult { name: "page-table facts written once", examined: files.len(), problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_in_backticks_with_their_lines() {
        let text = "See `xen-lite/src/main.rs::kernel_main`,\nthen `hypercall-abi/src/bundle.rs` and `cargo xtask run`.";
        assert_eq!(
            code_references(text),
            [
                (1, "xen-lite/src/main.rs".to_string(), Some("kernel_main".to_string())),
                (2, "hypercall-abi/src/bundle.rs".to_string(), None)
            ]
        );
    }

    #[test]
    fn only_definitions_count() {
        let source = "pub struct Domains {\n    pub current: Option<usize>,\n}\nenum State {\n    Runnable,\n    Dead(u8),\n}\nfn schedule() { let bounce = 1; bounce::deliver(); }\nmacro_rules! kill { () => {} }\n";
        for name in ["Domains", "current", "Runnable", "Dead", "schedule", "kill"] {
            assert!(defines(source, name), "{name}");
        }
        for name in ["bounce", "deliver", "Option", "sched"] {
            assert!(!defines(source, name), "{name}");
        }
        assert!(defines_or_implements("impl<V: Vt> Hvm<V> {\n", "Hvm"));
        assert!(!defines_or_implements("let hvm = Hvm::new();\n", "Hvm"));
    }

    #[test]
    fn stale_words_in_headers_are_found() {
        let source = "//! The first step of the backend.\n//! Delivered at the next tick.\n// for now (not a header)\n//! Not yet: shadow paging.\n//! Translated.\n";
        assert_eq!(stale_header_lines(source), [(1, "first step"), (4, "not yet")]);
        assert!(stale_header_lines("//! Collateral, translator, relater.\n").is_empty());
    }

    #[test]
    fn only_the_code_before_the_tests_counts() {
        assert_eq!(before_tests("a\nb\n#[cfg(test)]\nmod tests {}\n").lines().count(), 2);
    }
}
