//! The answers file: its `## ` sections (written answers, judged by their own words) and its
//! `key = value` lines (numbers, judged against what the grader measured or read in gdb).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::grade::describe;
use super::manifest::{Check, Item, Manifest};

/// The text of section `## <title>` of an answers file, up to the next `## `.
pub fn section<'a>(text: &'a str, title: &str) -> Option<&'a str> {
    let heading = format!("## {title}");
    let start = text.lines().position(|l| l.trim() == heading)?;
    let body: Vec<&str> =
        text.lines().skip(start + 1).take_while(|l| !l.starts_with("## ")).collect();
    let from = text.find(&heading)? + heading.len();
    let len: usize = body.iter().map(|l| l.len() + 1).sum();
    text.get(from..(from + len).min(text.len()))
}

/// The words of `answer` on lines the template's section does not have: what the student
/// wrote, not the question.
pub fn own_words(answer: &str, template: &str) -> usize {
    let given: Vec<&str> = template.lines().map(str::trim).collect();
    answer
        .lines()
        .map(str::trim)
        .filter(|line| !given.contains(line))
        .map(|line| line.split_whitespace().count())
        .sum()
}

/// An answer counts when its section exists, no longer holds the template's `TODO`, and says
/// at least twenty words of its own (the template's question text does not count).
pub fn answer_verdict(tree: &Path, manifest: &Manifest, title: &str) -> (bool, String) {
    let Some(file) = &manifest.answers else {
        return (false, "the lab has no answers file".into());
    };
    let Ok(text) = fs::read_to_string(tree.join(file)) else {
        return (false, format!("{file} is missing"));
    };
    let template = fs::read_to_string(tree.join(super::answers_template(file))).unwrap_or_default();
    let asked = section(&template, title).unwrap_or("");
    match section(&text, title) {
        None => (false, format!("{file} has no section \"## {title}\"")),
        Some(body) if body.contains("TODO") => (false, "still says TODO".into()),
        Some(body) if own_words(body, asked) < 20 => {
            (false, "fewer than 20 words of your own".into())
        }
        Some(body) => (true, format!("{} words", own_words(body, asked))),
    }
}

/// The `key = value` lines of an answers file (anywhere in it, code blocks included).
pub fn answer_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            let key = key.trim();
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
            (!key.is_empty() && key.chars().all(plain))
                .then(|| (key.to_string(), value.trim().to_string()))
        })
        .collect()
}

/// A value: an integer, kept exact (an address read in gdb has 64 significant bits, more
/// than a float holds), or a measured average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// `0x1f`, `31`.
    Int(u64),
    /// `1234.5`.
    Real(f64),
}

impl Number {
    /// As a real number (for tolerances and the table's rounding).
    pub fn real(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Real(x) => x,
        }
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(n) if *n >= 16 => write!(f, "{n:#x} ({n})"),
            Number::Int(n) => write!(f, "{n}"),
            Number::Real(x) => write!(f, "{x}"),
        }
    }
}

/// A number as a student or a gdb script writes it: `0x1f`, `31`, `1234.5`.
pub fn number(text: &str) -> Option<Number> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(Number::Int),
        None => text
            .parse()
            .map(Number::Int)
            .ok()
            .or_else(|| text.parse().ok().filter(|x: &f64| x.is_finite()).map(Number::Real)),
    }
}

/// How many decimals the bench table prints `field` with (`bench::table`).
pub fn decimals(field: &str) -> usize {
    match field {
        "instructions" => 1,
        "transitions" => 2,
        _ => 3,
    }
}

/// Whether the student's `given` earns the item, against what was `found` (measured or read
/// by gdb): gdb answers and reports exactly (reports as the table prints them), predictions
/// within their tolerance.
pub fn judge(check: &Check, given: &str, found: Number) -> (bool, String) {
    let Some(exact) = number(given) else {
        return (false, format!("`{given}` is not a number"));
    };
    let (value, shown, found) = (exact.real(), found, found.real());
    match check {
        Check::Predict { tolerance, .. } => {
            let off = if found == 0.0 {
                if value == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                100.0 * (value - found).abs() / found.abs()
            };
            let ok = off <= f64::from(*tolerance);
            let verdict = if ok { "within" } else { "outside" };
            (ok, format!("you predicted {given}, measured {found}: {off:.1}% off, {verdict} {tolerance}%"))
        }
        Check::Report { at, .. } => {
            let places = decimals(&at.field);
            let (mine, real) = (format!("{value:.places$}"), format!("{found:.places$}"));
            let ok = mine == real;
            (
                ok,
                if ok {
                    format!("{real}, as measured")
                } else {
                    format!("you reported {mine}; the bench measures {real}")
                },
            )
        }
        _ => {
            // What gdb reads is an integer: equal to the last bit.
            let ok = matches!((exact, shown), (Number::Int(a), Number::Int(b)) if a == b);
            (
                ok,
                if ok {
                    format!("{given}: correct")
                } else {
                    format!("you answered {given}; the CPU says {shown}")
                },
            )
        }
    }
}

/// The verdict of a `gdb`, `predict` or `report` item: the answers file's value against
/// `found` (`runner::numbers`: item description → the value, or why there is none).
pub fn number_verdict(
    tree: &Path,
    manifest: &Manifest,
    item: &Item,
    found: &BTreeMap<String, Result<Number, String>>,
) -> (bool, String) {
    let Some(file) = &manifest.answers else {
        return (false, "the lab has no answers file".into());
    };
    let Ok(text) = fs::read_to_string(tree.join(file)) else {
        return (false, format!("{file} is missing"));
    };
    let key = match &item.check {
        Check::Gdb(key) | Check::Predict { key, .. } | Check::Report { key, .. } => key,
        _ => return (false, "not a number item".into()),
    };
    let values = answer_values(&text);
    let given = match values.get(key.as_str()) {
        None => return (false, format!("{file} has no line `{key} = ...`")),
        Some(v) if v.is_empty() || v.contains("TODO") => {
            return (false, format!("`{key}` is not answered yet"))
        }
        Some(v) => v,
    };
    match found.get(&describe(&item.check)) {
        None => (false, "not measured".into()),
        Some(Err(why)) => (false, why.clone()),
        Some(Ok(real)) => judge(&item.check, given, *real),
    }
}

/// `text` with the value of every `key = value` line in `values` replaced (the model answers'
/// numbers, re-read by `cargo xtask grade --record`); returns the new text and the keys changed.
pub fn with_values(text: &str, values: &BTreeMap<String, String>) -> (String, Vec<String>) {
    let mut changed = Vec::new();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end_matches('\n');
        let replaced = trimmed.split_once('=').and_then(|(key, old)| {
            let new = values.get(key.trim())?;
            // The same number written another way (`18`, `0x12`) stays as the author wrote it.
            let same = old.trim() == new || number(old).is_some_and(|o| Some(o) == number(new));
            (!same).then(|| format!("{} = {new}", key.trim_end()))
        });
        match replaced {
            Some(new) => {
                changed.push(trimmed.split('=').next().unwrap_or("").trim().to_string());
                out.push_str(&new);
                out.push_str(&line[trimmed.len()..]);
            }
            None => out.push_str(line),
        }
    }
    (out, changed)
}

/// How `value` is written back for `check`: gdb answers as the script prints them, reported
/// counts as the bench table does.
pub fn written(check: &Check, value: Number) -> Option<String> {
    match (check, value) {
        (Check::Gdb(_), Number::Int(n)) if n >= 16 => Some(format!("{n:#x}")),
        (Check::Gdb(_), _) => Some(format!("{value}")),
        (Check::Report { at, .. }, _) => {
            let places = decimals(&at.field);
            Some(format!("{:.places$}", value.real()))
        }
        _ => None, // a prediction is the model's reasoning, not a measurement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_answers_are_read_and_judged() {
        let text = "## Answers\n\n```text\ndomain = 1\nkernel_cr3 = 0x4d1000\nnote = TODO\n```\nnot = a key = x\n";
        let values = answer_values(text);
        assert_eq!(values["domain"], "1");
        assert_eq!(number(&values["kernel_cr3"]), Some(Number::Int(0x4d1000)));
        assert!(!values.contains_key("not = a key"));
        let gdb = Check::Gdb("kernel_cr3".into());
        assert!(judge(&gdb, "0x4d1000", Number::Int(0x4d1000)).0);
        assert!(judge(&gdb, "5050368", Number::Int(0x4d1000)).0, "decimal is the same number");
        let (ok, why) = judge(&gdb, "0x4d2000", Number::Int(0x4d1000));
        assert!(!ok && why.contains("0x4d1000"), "{why}");
        assert!(!judge(&gdb, "about 5", Number::Int(5)).0);
        // 64-bit addresses are compared exactly: a float would call these two equal.
        let rip = Number::Int(0xffff_ffff_8016_8035);
        assert!(!judge(&gdb, "0xffffffff80168000", rip).0);
        assert!(judge(&gdb, "0xffffffff80168035", rip).0);
    }

    #[test]
    fn recorded_values_replace_only_their_lines() {
        let text = "## A\n```text\ndomain = 1\nuser_rsp = 0x10\nother = 3\n```\n";
        let values: BTreeMap<String, String> =
            [("domain".to_string(), "2".to_string()), ("user_rsp".to_string(), "16".to_string())]
                .into();
        let (out, changed) = with_values(text, &values);
        assert_eq!(out, "## A\n```text\ndomain = 2\nuser_rsp = 0x10\nother = 3\n```\n");
        assert_eq!(changed, ["domain"]);
        assert_eq!(written(&Check::Gdb("k".into()), Number::Int(4096)).as_deref(), Some("0x1000"));
        assert_eq!(written(&Check::Gdb("k".into()), Number::Int(10)).as_deref(), Some("10"));
        let rip = Number::Int(0xffff_ffff_8016_8035);
        assert_eq!(written(&Check::Gdb("k".into()), rip).as_deref(), Some("0xffffffff80168035"));
    }

    #[test]
    fn predictions_have_a_tolerance_and_reports_none() {
        let at = super::super::manifest::BenchPoint {
            mode: "pv".into(),
            workload: "w".into(),
            path: "p".into(),
            field: "instructions".into(),
        };
        let predict = Check::Predict { key: "k".into(), at: at.clone(), tolerance: 20 };
        let real = Number::Real;
        assert!(judge(&predict, "1100", real(1000.0)).0);
        assert!(!judge(&predict, "1300", real(1000.0)).0);
        let exact = Check::Predict { key: "k".into(), at: at.clone(), tolerance: 0 };
        assert!(judge(&exact, "2", real(2.0)).0 && !judge(&exact, "1", real(0.0)).0);
        let report = Check::Report { key: "k".into(), at };
        assert!(judge(&report, "1234.5", real(1234.5)).0);
        assert!(judge(&report, "1234.50", real(1234.5)).0);
        let (ok, why) = judge(&report, "1234.6", real(1234.5));
        assert!(!ok && why.contains("1234.5"), "{why}");
    }

    #[test]
    fn answer_sections_are_found_and_bounded() {
        let text = "# Lab 2\n## Why\nBecause.\nMore.\n## Next\nTODO\n";
        assert_eq!(section(text, "Why").map(str::trim), Some("Because.\nMore."));
        assert_eq!(section(text, "Next").map(str::trim), Some("TODO"));
        assert_eq!(section(text, "Absent"), None);
    }

    #[test]
    fn the_question_is_not_the_answer() {
        let template = "Why is the sky blue? Say which wavelengths scatter and why.\n\nTODO\n";
        let lazy = "Why is the sky blue? Say which wavelengths scatter and why.\n\n";
        assert_eq!(own_words(lazy, template), 0);
        let real = format!("{lazy}Short wavelengths scatter more (Rayleigh), so blue light\nreaches us from every direction.\n");
        assert_eq!(own_words(&real, template), 13);
    }
}
