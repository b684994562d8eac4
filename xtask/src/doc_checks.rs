//! Source checks that keep the tree readable as the lecture's text, run by `cargo xtask test`
//! (STYLE rules 15, 20 and 22):
//!
//! - every `path::item` reference in the lecture notes and README names a file that exists and
//!   an item that file defines (a `fn`, type, trait, constant, module, macro, field, variant or
//!   re-export; the segments before it must appear in the file too), reported with the note's
//!   file and line, so the notes cannot silently rot. So does every crate path of ours
//!   (`xen_lite::pv::shadow::page_fault`: its modules lead to a file that defines the item), and
//!   every bare `Type::item` whose type is ours (`Shadow::flush`: something that defines or
//!   implements `Shadow` defines `flush`);
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
    let reexports = source
        .lines()
        .map(str::trim_start)
        .any(|line| line.starts_with("pub use ") && has_word(line, name));
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
    items || macros || members || reexports
}

/// The crates a note may name by crate path: `(name, source directory, root file)`.
const CRATES: [(&str, &str, &str); 4] = [
    ("xen_lite", "xen-lite/src", "main.rs"),
    ("pv_guest", "pv-guest/src", "main.rs"),
    ("hypercall_abi", "hypercall-abi/src", "lib.rs"),
    ("pv_user", "pv-guest/user/src", "lib.rs"),
];

/// A crate path of ours (`xen_lite::pv::shadow::page_fault`): the file its modules lead to and
/// the segments after them (`["page_fault"]`; none for a module). `None` for anything else.
pub fn crate_path_file(span: &str) -> Option<(String, Vec<String>)> {
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let mut segments = span.split("::");
    let krate = segments.next()?;
    let (_, dir, root_file) = CRATES.iter().find(|(name, _, _)| *name == krate)?;
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() || !rest.iter().all(|s| ident(s)) {
        return None;
    }
    let (mut file, mut modules) = (format!("{dir}/{root_file}"), dir.to_string());
    let mut items = Vec::new();
    for (at, segment) in rest.iter().enumerate() {
        let flat = format!("{modules}/{segment}.rs");
        let nested = format!("{modules}/{segment}/mod.rs");
        if root().join(&flat).is_file() {
            file = flat;
        } else if root().join(&nested).is_file() {
            file = nested;
        } else {
            items = rest[at..].iter().map(|s| s.to_string()).collect();
            break;
        }
        modules = format!("{modules}/{segment}");
    }
    Some((file, items))
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
    let sources = sources();
    for doc in &docs_again() {
        let Ok(text) = fs::read_to_string(doc) else { continue };
        let shown = doc.strip_prefix(root()).unwrap_or(doc).display().to_string();
        for (line, span) in backticked(&text) {
            if let Some((file, items)) = crate_path_file(&span) {
                examined += 1;
                let source = fs::read_to_string(root().join(&file)).unwrap_or_default();
                if let Some(problem) = missing_item(&source, &items) {
                    problems.push(format!("{shown}:{line}: `{span}` ({file}): {problem}"));
                }
            } else if let Some((ty, item)) = bare_reference(&span) {
                // A type of ours with one of its items, named without a path (`Shadow::flush`):
                // some file that defines or implements the type defines the item.
                let owners: Vec<&(String, String)> =
                    sources.iter().filter(|(_, text)| defines(before_tests(text), ty)).collect();
                if owners.is_empty() {
                    continue; // not ours (`Ordering::Relaxed`)
                }
                examined += 1;
                let found = sources.iter().any(|(_, text)| {
                    let code = before_tests(text);
                    defines_or_implements(code, ty) && defines(code, item)
                });
                if !found {
                    problems.push(format!(
                        "{shown}:{line}: `{span}`: `{ty}` is defined ({}) but nothing that defines or implements it defines `{item}`",
                        owners[0].0
                    ));
                }
            }
        }
    }
    CheckResult { name: "lecture-note code references resolve", examined, problems }
}

/// The notes and the README, as [`note_references`] reads them.
fn docs_again() -> Vec<PathBuf> {
    let mut docs = Vec::new();
    markdown_files(&root().join("lecture-notes"), &mut docs);
    docs.sort();
    docs.push(root().join("README.md"));
    docs
}

/// Every backticked span of `text`, with its line number.
fn backticked(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            found.push((number + 1, span.to_string()));
        }
    }
    found
}

/// `Type::item` written without a path: a capitalised type and one identifier (`Shadow::flush`,
/// `Fault::Hidden`); `None` for anything else (paths, calls, expressions).
pub fn bare_reference(span: &str) -> Option<(&str, &str)> {
    let (ty, item) = span.split_once("::")?;
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let typed = ty.chars().next().is_some_and(char::is_uppercase);
    (typed && ident(ty) && ident(item)).then_some((ty, item))
}

/// Why the `items` (after a crate path's modules) are not in `source`, or `None` if they are.
fn missing_item(source: &str, items: &[String]) -> Option<String> {
    let (last, before) = items.split_last()?;
    if !defines(before_tests(source), last) && !defines(source, last) {
        return Some(format!("defines no `{last}`"));
    }
    before
        .iter()
        .find(|s| !defines_or_implements(source, s))
        .map(|s| format!("neither defines nor implements `{s}`"))
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
    fn crate_paths_lead_to_their_files() {
        assert_eq!(
            crate_path_file("xen_lite::pv::shadow::page_fault"),
            Some(("xen-lite/src/pv/shadow.rs".into(), vec!["page_fault".into()]))
        );
        assert_eq!(
            crate_path_file("xen_lite::shadow::DomainShadow::page_fault"),
            Some((
                "xen-lite/src/shadow/mod.rs".into(),
                vec!["DomainShadow".into(), "page_fault".into()]
            ))
        );
        assert_eq!(
            crate_path_file("hypercall_abi::devices"),
            Some(("hypercall-abi/src/devices.rs".into(), vec![]))
        );
        assert_eq!(crate_path_file("core::mem::swap"), None, "not ours");
        assert_eq!(crate_path_file("xen_lite::pv::mod(x)"), None, "an expression");
        assert_eq!(missing_item("fn page_fault() {}", &["page_fault".into()]), None);
        assert!(missing_item("fn other() {}", &["page_fault".into()]).is_some());
    }

    #[test]
    fn bare_references_are_a_type_and_one_item() {
        assert_eq!(bare_reference("Shadow::flush"), Some(("Shadow", "flush")));
        assert_eq!(bare_reference("Fault::Hidden"), Some(("Fault", "Hidden")));
        assert_eq!(bare_reference("shadow::flush"), None, "a module path, not a type");
        assert_eq!(bare_reference("Shadow::flush()"), None, "a call");
        assert_eq!(bare_reference("Shadow::a::b"), None);
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
