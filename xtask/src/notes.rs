//! Generated blocks in the lecture notes: what a command prints (a gdb walkthrough's transcript,
//! the census table), kept in a note between two marker lines. The command's `--record` writes
//! the block into the English chapter and into its Korean twin in `lecture-notes/ko/`; a run
//! without it, as `cargo xtask test` makes, compares the block with what it printed and fails
//! with the lines that differ. `cargo xtask notes --update` records every block at once.

use std::fs;
use std::path::PathBuf;

use crate::process::root;

/// A block of a note: the note (workspace-relative) and the lines that open and close it.
pub struct Block {
    pub note: &'static str,
    pub begin: &'static str,
    pub end: &'static str,
    /// How to record it again, for the message a stale block gets.
    pub command: &'static str,
    /// Shown in a text fence (a transcript); else as Markdown (a table).
    pub fenced: bool,
}

impl Block {
    /// The block as the English note shows it, without its text fence.
    pub fn shown(&self) -> Result<String, String> {
        let text = read(self.note)?;
        let inside = text.split(self.begin).nth(1).and_then(|rest| rest.split(self.end).next());
        let inside =
            inside.ok_or_else(|| format!("{} lacks the markers {}", self.note, self.begin))?;
        let inside = inside.trim();
        if !self.fenced {
            return Ok(inside.to_string());
        }
        Ok(inside.trim_start_matches("```text").trim_end_matches("```").trim().to_string())
    }

    /// Writes `body` as the block of the note and of its Korean twin, when that exists.
    pub fn write(&self, body: &str) -> Result<(), String> {
        for note in self.notes() {
            let text = read(&note)?;
            let updated = self.replaced(&text, body).map_err(|e| format!("{note}: {e}"))?;
            fs::write(root().join(&note), updated)
                .map_err(|e| format!("cannot write {note}: {e}"))?;
            println!("xtask: {} written to {note}", self.what());
        }
        Ok(())
    }

    /// Whether the note shows `ran` (what the command printed now); the differing lines if not.
    /// Run folders' names (`target/runs/NAME/`) are not compared: they change with every run.
    pub fn compare(&self, ran: &str) -> Result<(), String> {
        let shown = self.shown()?;
        let ran: Vec<String> = lines(ran).map(mask_run_folder).collect();
        let noted: Vec<String> = lines(&shown).map(mask_run_folder).collect();
        match diff(&ran, &noted) {
            None => Ok(()),
            Some(diff) => Err(format!(
                "the {} in {} is stale; record it again with `{}`\n{diff}",
                self.what(),
                self.note,
                self.command
            )),
        }
    }

    /// The English note and, when it exists, its Korean twin.
    fn notes(&self) -> Vec<String> {
        let korean = self.note.replacen("lecture-notes/", "lecture-notes/ko/", 1);
        let mut notes = vec![self.note.to_string()];
        if root().join(&korean).is_file() {
            notes.push(korean);
        }
        notes
    }

    /// `text` with the block replaced by `body` (in a text fence if it is `fenced`).
    fn replaced(&self, text: &str, body: &str) -> Result<String, String> {
        let from = text.find(self.begin).ok_or_else(|| format!("no line {}", self.begin))?;
        let to = text[from..].find(self.end).map(|at| from + at);
        let to = to.ok_or_else(|| format!("no line {} after {}", self.end, self.begin))?;
        let body = lines(body).collect::<Vec<_>>().join("\n");
        let body = if self.fenced { format!("```text\n{body}\n```") } else { body };
        Ok(format!("{}{}\n{body}\n{}", &text[..from], self.begin, &text[to..]))
    }

    /// What the block holds, for messages: the word after `<!--` in its opening line.
    fn what(&self) -> &str {
        self.begin.trim_start_matches("<!-- ").split(':').next().unwrap_or("block")
    }
}

/// `cargo xtask notes [--update]`: every generated block of the notes (the gdb walkthroughs'
/// transcripts, the census table, the bench tables) made again and compared with the notes, or with `update`
/// written into them. 0 when every block is current (or written).
pub fn notes(update: bool) -> Result<u8, String> {
    let mut stale = 0;
    for (label, mode, extra) in crate::gdb::WALKTHROUGHS {
        println!("xtask: notes: {label}...");
        let session = crate::gdb::walkthrough_session(mode, extra, update, false);
        if crate::gdb::gdb(&session)? != 0 {
            stale += 1;
        }
    }
    println!("xtask: notes: the census...");
    let census = crate::census::CensusOptions {
        out: root().join("target/census"),
        timeout: crate::cli::DEFAULT_TIMEOUT,
        record: update,
    };
    if crate::census::census(&census)? != 0 {
        stale += 1;
    }
    println!("xtask: notes: the bench tables (cargo xtask bench --quick)...");
    let bench = crate::bench::BenchOptions {
        out: root().join("target/bench-quick"),
        quick: true,
        timeout: crate::cli::DEFAULT_TIMEOUT,
        kvm: false,
        console_writes: crate::labs::params::Params::of(0).console_writes,
        record: false,
    };
    let measurements = crate::bench::quick_measurements(&bench)?;
    for (name, result) in crate::figures::check_or_record(&measurements, update) {
        match result {
            Ok(verdict) => println!("xtask: notes: {name}: {verdict}"),
            Err(error) => {
                println!("xtask: notes: {name}: {error}");
                stale += 1;
            }
        }
    }
    let verb = if update { "written" } else { "current" };
    if stale == 0 {
        println!("xtask: notes: every generated block is {verb}");
        Ok(0)
    } else {
        println!("xtask: notes: {stale} block(s) failed or stale (above); `cargo xtask notes --update` records them");
        Ok(1)
    }
}

/// The non-empty lines of `text`, without trailing blanks.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_end).filter(|l| !l.is_empty())
}

fn read(note: &str) -> Result<String, String> {
    let path: PathBuf = root().join(note);
    fs::read_to_string(&path).map_err(|e| format!("cannot read {note}: {e}"))
}

/// `line` with the name of a run folder (`target/runs/gdb-19369-0/`) replaced by `…`.
pub fn mask_run_folder(line: &str) -> String {
    const RUNS: &str = "target/runs/";
    let Some(at) = line.find(RUNS) else { return line.to_string() };
    let name_from = at + RUNS.len();
    let name_to = line[name_from..].find('/').map_or(line.len(), |end| name_from + end);
    format!("{}…{}", &line[..name_from], &line[name_to..])
}

/// Up to six differing lines from the first difference on, `-` for the note and `+` for the
/// run, or `None` when the two are the same.
pub fn diff(ran: &[String], noted: &[String]) -> Option<String> {
    let first = ran.iter().zip(noted).position(|(a, b)| a != b);
    let first = match first {
        None if ran.len() == noted.len() => return None,
        at => at.unwrap_or(ran.len().min(noted.len())),
    };
    let mut out = format!(
        "first difference at its line {} (the note has {} lines, this run {}):",
        first + 1,
        noted.len(),
        ran.len()
    );
    let mut shown = 0;
    for at in first..ran.len().max(noted.len()) {
        let (a, b) = (ran.get(at), noted.get(at));
        if a == b {
            continue;
        }
        if let Some(b) = b {
            out.push_str(&format!("\n  - {b}"));
        }
        if let Some(a) = a {
            out.push_str(&format!("\n  + {a}"));
        }
        shown += 1;
        if shown == 6 {
            out.push_str("\n  …");
            break;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn run_folders_are_masked_and_nothing_else() {
        assert_eq!(
            mask_run_folder("(target/runs/gdb-19369-0/serial.log, last 3 of 78 lines)"),
            "(target/runs/…/serial.log, last 3 of 78 lines)"
        );
        assert_eq!(mask_run_folder("cr3 0x1000"), "cr3 0x1000");
    }

    #[test]
    fn a_diff_shows_both_sides_from_the_first_difference() {
        let noted = owned(&["== 1", "rip 0x10", "ok"]);
        assert_eq!(diff(&noted, &noted), None);
        let ran = owned(&["== 1", "rip 0x20", "ok", "extra"]);
        let shown = diff(&ran, &noted).unwrap();
        assert!(
            shown.starts_with("first difference at its line 2 (the note has 3 lines, this run 4)")
        );
        assert!(shown.contains("\n  - rip 0x10\n  + rip 0x20\n  + extra"), "{shown}");
    }

    #[test]
    fn a_block_is_replaced_between_its_markers_only() {
        let block = Block {
            note: "n.md",
            begin: "<!-- t: b -->",
            end: "<!-- end -->",
            command: "c",
            fenced: true,
        };
        let text = "intro\n<!-- t: b -->\n```text\nold\n```\n<!-- end -->\nafter\n";
        let replaced = block.replaced(text, "new 1\n\nnew 2  \n").unwrap();
        assert_eq!(
            replaced,
            "intro\n<!-- t: b -->\n```text\nnew 1\nnew 2\n```\n<!-- end -->\nafter\n"
        );
        assert!(block.replaced("no markers", "x").is_err());
        assert_eq!(block.what(), "t");
    }
}
