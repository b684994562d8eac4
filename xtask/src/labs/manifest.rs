//! Lab manifests (`lecture-notes/labs/NN-name.lab`): what a lab is worth and how each point is
//! earned. One statement per line, words separated by spaces, `"quoted text"` for words with
//! spaces, `#` to the end of a line a comment:
//!
//! ```text
//! lab 2 "The syscall bounce"
//! allowed xen-lite/src/pv/bounce.rs xen-lite/src/pv/mod.rs
//! answers lecture-notes/labs/answers/02-syscall-bounce.md
//! part 2.1 "The bounce frame"
//!   host xen-lite pv::bounce::tests:: 10        # every host test whose name starts so passes
//!   boot pv-usertests/qemu 10                   # a boot test of `cargo xtask test`, by label
//!   selftest "a #PF from ring 3 is bounced" 5   # the pv self-tests print `ok <this>`
//!   answer "Why the virtual IF" 5               # a section of the answers file, filled in
//!   bench null-syscall syscall cr3 0 10         # pv in QEMU (quick bench): CR3 writes per op
//!   hidden host xen-lite pv::bounce::hidden:: 10  # in the TA's tree only (LAB HIDDEN regions)
//! ```
//!
//! Labs whose answers are numbers (the answers file's `key = value` lines) also have:
//!
//! ```text
//! script xtask/gdb/hidden/lab0.py          # the grader's gdb checks (lab 0): prints `lab0: key = value`
//!   gdb domain 10                          # `domain = N` equals what the script found on this seed's machine
//!   predict pv.entries pv console-write syscall entries 0% 5    # within 0% of the measured per-op count
//!   report measured.pv.instructions pv console-write syscall instructions 5  # equal, as the bench table prints it
//! ```
//!
//! `sized console-write syscall 5` boots the bench asking the workload for a number of operations
//! no handout uses and checks its line reports exactly that many (a hidden check that runs on
//! any build). `predict` and `report` read the quick bench in QEMU (`pv` or `native`), release build, as
//! `cargo xtask bench --quick` runs it; fields: `instructions`, `entries`, `exits`, `cr3`,
//! `transitions` (per operation).

use std::fmt;

/// How an item is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every host test of `krate` whose full name starts with `prefix` passes (at least one).
    Host {
        /// The package (`xen-lite`, `pv-guest`, `hypercall-abi`, `xtask`).
        krate: String,
        /// The test-name prefix (`pv::bounce::tests::`).
        prefix: String,
    },
    /// The boot test with this label (`name/emulator`) passes.
    Boot(String),
    /// The pv self-tests (`domain=tests`, in Bochs) print `ok <line>`.
    Selftest(String),
    /// The answers file has this section (`## <title>`), filled in.
    Answer(String),
    /// In the quick bench of pv mode in QEMU, operation `workload`/`path` has exactly `per_op`
    /// of `field` (`entries`, `cr3` or `exits`) per operation: an exact count.
    Bench {
        /// The bench workload (`null-syscall`).
        workload: String,
        /// Its path (`syscall`).
        path: String,
        /// Which count.
        field: String,
        /// How many per operation.
        per_op: u64,
    },
    /// Asked for a workload size no handout uses (`writes=`), the bench's `workload`/`path`
    /// line reports exactly that many operations: the workload runs what it is asked, not a
    /// number written into it.
    Sized {
        /// The workload (`console-write`).
        workload: String,
        /// Its path (`syscall`).
        path: String,
    },
    /// The answers file's `key = value` equals what the lab's gdb `script` read from the CPU on
    /// the student's machine (their seed's).
    Gdb(String),
    /// The answers file's `key = value` is within `tolerance` percent of the quick bench's
    /// per-operation `field` of `workload`/`path` in `mode` (a prediction).
    Predict {
        /// The answers file's key.
        key: String,
        /// The measured operation.
        at: BenchPoint,
        /// Percent either side.
        tolerance: u32,
    },
    /// The answers file's `key = value` is exactly the quick bench's per-operation `field`, as
    /// its table prints it (a reported measurement: exact counts expose an invented one).
    Report {
        /// The answers file's key.
        key: String,
        /// The measured operation.
        at: BenchPoint,
    },
}

/// One number of the quick bench: `field` of `workload`/`path` in `mode` (QEMU, release).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchPoint {
    /// `pv` or `native`.
    pub mode: String,
    /// The workload (`console-write`).
    pub workload: String,
    /// Its path (`syscall`).
    pub path: String,
    /// `instructions`, `entries`, `exits`, `cr3` or `transitions`.
    pub field: String,
}

/// The per-operation fields a `predict` or `report` can name.
pub const FIELDS: [&str; 5] = ["instructions", "entries", "exits", "cr3", "transitions"];

impl Check {
    /// Whether the item reads the answers file's `key = value` lines rather than code.
    pub fn is_number(&self) -> bool {
        matches!(self, Check::Gdb(_) | Check::Predict { .. } | Check::Report { .. })
    }
}

/// One graded item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The part it belongs to (`2.1`).
    pub part: String,
    /// How it is checked.
    pub check: Check,
    /// What it is worth.
    pub points: u32,
    /// Only in the TA's tree: a handout leaves its tests out.
    pub hidden: bool,
}

/// A lab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Its number.
    pub lab: u32,
    /// Its title.
    pub title: String,
    /// The files a student may change.
    pub allowed: Vec<String>,
    /// The answers file, if the lab has one.
    pub answers: Option<String>,
    /// The grader's gdb script for `gdb` items (in a `hidden` directory: not in handouts).
    pub script: Option<String>,
    /// `(part, title)` in order.
    pub parts: Vec<(String, String)>,
    /// Every item, in order.
    pub items: Vec<Item>,
}

impl Manifest {
    /// Points the lab is worth.
    pub fn total(&self) -> u32 {
        self.items.iter().map(|i| i.points).sum()
    }
}

/// A manifest that cannot be read, with its line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// The words of a line: spaces separate, `"..."` groups, `#` starts a comment.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => return Err("a quoted word is never closed".into()),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

/// Reads a manifest.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    let mut seen_lab = false;
    for (i, line) in text.lines().enumerate() {
        let error = |what: String| ManifestError { line: i + 1, what };
        let mut words = words(line).map_err(error)?;
        if words.is_empty() {
            continue;
        }
        let hidden = words[0] == "hidden";
        if hidden {
            words.remove(0);
        }
        let points = |words: &[String]| -> Result<u32, ManifestError> {
            let last = words.last().ok_or_else(|| error("missing points".into()))?;
            last.parse().map_err(|_| error(format!("`{last}` is not a number of points")))
        };
        let point = |w: &[String]| -> Result<BenchPoint, ManifestError> {
            if !["pv", "native"].contains(&w[0].as_str()) {
                return Err(error(format!("mode `{}`: the quick bench runs pv or native", w[0])));
            }
            if !FIELDS.contains(&w[3].as_str()) {
                return Err(error(format!("field `{}`: one of {}", w[3], FIELDS.join(", "))));
            }
            Ok(BenchPoint {
                mode: w[0].clone(),
                workload: w[1].clone(),
                path: w[2].clone(),
                field: w[3].clone(),
            })
        };
        let check = match (words[0].as_str(), words.len()) {
            ("lab", 3) => {
                manifest.lab = words[1]
                    .parse()
                    .map_err(|_| error(format!("lab `{}` is not a number", words[1])))?;
                manifest.title = words[2].clone();
                seen_lab = true;
                None
            }
            ("allowed", n) if n > 1 => {
                manifest.allowed.extend(words[1..].iter().cloned());
                None
            }
            ("answers", 2) => {
                manifest.answers = Some(words[1].clone());
                None
            }
            ("script", 2) => {
                manifest.script = Some(words[1].clone());
                None
            }
            ("part", 3) => {
                let part = &words[1];
                let lab_of = part.split('.').next().and_then(|n| n.parse::<u32>().ok());
                if !seen_lab || lab_of != Some(manifest.lab) {
                    return Err(error(format!(
                        "part `{part}` is not a part of lab {}",
                        manifest.lab
                    )));
                }
                manifest.parts.push((part.clone(), words[2].clone()));
                None
            }
            ("host", 4) => Some(Check::Host { krate: words[1].clone(), prefix: words[2].clone() }),
            ("boot", 3) => Some(Check::Boot(words[1].clone())),
            ("selftest", 3) => Some(Check::Selftest(words[1].clone())),
            ("answer", 3) => Some(Check::Answer(words[1].clone())),
            ("bench", 6) => {
                let field = words[3].clone();
                if !["entries", "cr3", "exits"].contains(&field.as_str()) {
                    return Err(error(format!("bench field `{field}`: entries, cr3 or exits")));
                }
                let per_op = words[4]
                    .parse()
                    .map_err(|_| error(format!("`{}` is not a count per operation", words[4])))?;
                Some(Check::Bench {
                    workload: words[1].clone(),
                    path: words[2].clone(),
                    field,
                    per_op,
                })
            }
            ("gdb", 3) => Some(Check::Gdb(words[1].clone())),
            ("sized", 4) => {
                Some(Check::Sized { workload: words[1].clone(), path: words[2].clone() })
            }
            ("predict", 8) => {
                let tolerance = words[6]
                    .strip_suffix('%')
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| error(format!("tolerance `{}`: a percentage", words[6])))?;
                Some(Check::Predict { key: words[1].clone(), at: point(&words[2..6])?, tolerance })
            }
            ("report", 7) => {
                Some(Check::Report { key: words[1].clone(), at: point(&words[2..6])? })
            }
            (word, _) => {
                return Err(error(format!(
                    "`{word}` with {} words is not a manifest statement",
                    words.len()
                )))
            }
        };
        if let Some(check) = check {
            let answered = matches!(check, Check::Answer(_)) || check.is_number();
            if answered && manifest.answers.is_none() {
                return Err(error("an `answer` item needs an `answers` file first".into()));
            }
            if matches!(check, Check::Gdb(_)) && manifest.script.is_none() {
                return Err(error("a `gdb` item needs a `script` first".into()));
            }
            let part = manifest.parts.last().map(|(p, _)| p.clone());
            let part = part.ok_or_else(|| error("an item before any `part`".into()))?;
            manifest.items.push(Item { part, check, points: points(&words)?, hidden });
        }
    }
    if !seen_lab {
        return Err(ManifestError { line: 1, what: "no `lab N \"title\"` line".into() });
    }
    if manifest.allowed.is_empty() {
        return Err(ManifestError { line: 1, what: "no `allowed` files".into() });
    }
    // A lab of exact numbers is graded on the student's own build (`grade`), which has no
    // hidden regions: only checks that need none (its gdb script, a hidden `hidden` file; a
    // bench run at a size the handout never asks) may be hidden.
    let numbers = manifest.items.iter().any(|i| i.check.is_number());
    let own_build = |c: &Check| matches!(c, Check::Gdb(_) | Check::Sized { .. });
    if numbers && manifest.items.iter().any(|i| i.hidden && !own_build(&i.check)) {
        return Err(ManifestError {
            line: 1,
            what: "a lab with gdb, predict or report items is graded on the student's own build: only its gdb and sized items may be hidden".into(),
        });
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "# a lab\nlab 2 \"The syscall bounce\"\nallowed a/b.rs c/d.rs\nanswers answers/02.md\npart 2.1 \"The frame\"\n  host xen-lite pv::bounce::tests:: 10\n  boot pv-usertests/qemu 10 # comment\n  selftest \"a #PF is bounced\" 5\npart 2.2 \"Why\"\n  answer \"Why the virtual IF\" 5\n  hidden host xen-lite pv::bounce::hidden:: 7\n";

    #[test]
    fn a_manifest_reads_into_parts_and_items() {
        let m = parse(LAB).unwrap();
        assert_eq!((m.lab, m.title.as_str()), (2, "The syscall bounce"));
        assert_eq!(m.allowed, ["a/b.rs", "c/d.rs"]);
        assert_eq!(m.answers.as_deref(), Some("answers/02.md"));
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.items.len(), 5);
        assert_eq!(m.items[2].check, Check::Selftest("a #PF is bounced".into()));
        assert_eq!(
            (m.items[4].part.as_str(), m.items[4].hidden, m.items[4].points),
            ("2.2", true, 7)
        );
        assert_eq!(m.total(), 37);
    }

    #[test]
    fn number_items_read_their_key_and_measurement() {
        let m = parse("lab 7 \"M\"\nallowed a\nanswers a.md\nscript s.py\npart 7.1 \"p\"\n  gdb domain 10\n  predict pv.cr3 pv console-write syscall cr3 0% 5\n  report r native console-write syscall instructions 3\n").unwrap();
        assert_eq!(m.script.as_deref(), Some("s.py"));
        assert_eq!(m.items[0].check, Check::Gdb("domain".into()));
        let at = BenchPoint {
            mode: "pv".into(),
            workload: "console-write".into(),
            path: "syscall".into(),
            field: "cr3".into(),
        };
        assert_eq!(m.items[1].check, Check::Predict { key: "pv.cr3".into(), at, tolerance: 0 });
        assert!(
            matches!(&m.items[2].check, Check::Report { key, at } if key == "r" && at.mode == "native")
        );
        assert!(m.items.iter().all(|i| i.check.is_number()));
        assert_eq!(m.total(), 18);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let cases = [
            ("lab 2 \"x\"\nallowed a\nhost xen-lite p 1\n", "line 3: an item before any `part`"),
            (
                "lab 2 \"x\"\nallowed a\npart 3.1 \"y\"\n",
                "line 3: part `3.1` is not a part of lab 2",
            ),
            (
                "lab 2 \"x\"\nallowed a\npart 2.1 \"y\"\nboot t ten\n",
                "line 4: `ten` is not a number",
            ),
            ("lab 2 \"x\"\nallowed a\npart 2.1 \"y\"\nanswer \"s\" 1\n", "needs an `answers` file"),
            ("lab 2 \"x\nallowed a\n", "line 1: a quoted word is never closed"),
            ("allowed a\n", "no `lab N"),
            ("lab 2 \"x\"\n", "no `allowed` files"),
            ("lab 2 \"x\"\nallowed a\nfrobnicate 1\n", "line 3: `frobnicate`"),
            (
                "lab 7 \"x\"\nallowed a\nanswers a\npart 7.1 \"y\"\npredict k vmx w p entries 5% 1\n",
                "line 5: mode `vmx`",
            ),
            (
                "lab 7 \"x\"\nallowed a\nanswers a\npart 7.1 \"y\"\nreport k pv w p speed 1\n",
                "line 5: field `speed`",
            ),
            (
                "lab 7 \"x\"\nallowed a\nanswers a\npart 7.1 \"y\"\npredict k pv w p cr3 five 1\n",
                "line 5: tolerance `five`",
            ),
            ("lab 0 \"x\"\nallowed a\nanswers a\npart 0.1 \"y\"\ngdb k 1\n", "needs a `script`"),
            (
                "lab 7 \"x\"\nallowed a\nanswers a\npart 7.1 \"y\"\nreport k pv w p cr3 1\nhidden host k t 1\n",
                "only its gdb and sized items may be hidden",
            ),
        ];
        for (text, what) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(what), "{text:?}: {error}");
        }
    }
}
