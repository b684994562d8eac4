//! Solution markers: how one tree is both the solution and, with the regions cut out, every
//! lab's handout.
//!
//! ```text
//! // LAB 2.1 BEGIN: lay out the frame the CPU would have pushed
//! // Hint: the error code, when there is one, is the lowest word.
//! ...the solution...
//! // LAB 2.1 END
//! ```
//!
//! The markers are comments, so the solution builds as if they were not there. In a handout a
//! region becomes its instruction and hints as comments, then what the student starts from:
//! the region's `// Handout:` lines uncommented if it has any (assembly uses them: a jump to a
//! documented slower path, so the handout still boots), else `todo!("LAB 2.1: <instruction>")`
//! (a Rust region is a whole function body, or its tail, so `todo!()` type-checks).
//!
//! A `// LAB HIDDEN BEGIN` ... `// LAB HIDDEN END` region (hidden tests) disappears from every
//! handout and is graded only in the TA's tree.

use std::fmt;

/// One marked region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// `n.k`, or `HIDDEN`.
    pub part: String,
    /// The instruction on the `BEGIN` line.
    pub instruction: String,
    /// The `// Hint:` lines at the top of the region.
    pub hints: Vec<String>,
    /// The `// Handout:` lines, uncommented (empty: a `todo!`).
    pub handout: Vec<String>,
    /// First and last line (0-based, the markers included).
    pub lines: (usize, usize),
    /// The `BEGIN` line's indentation.
    pub indent: String,
}

impl Region {
    /// The lab the region belongs to (`None` for hidden tests).
    pub fn lab(&self) -> Option<u32> {
        self.part.split('.').next()?.parse().ok()
    }
}

/// A malformed marker, with its line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

const BEGIN: &str = "// LAB ";

/// The regions of `source`, in order.
pub fn regions(source: &str) -> Result<Vec<Region>, MarkerError> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    let mut open: Option<Region> = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix(BEGIN) else {
            if let Some(region) = open.as_mut() {
                if let Some(hint) = trimmed.strip_prefix("// Hint:") {
                    region.hints.push(hint.trim().to_string());
                } else if let Some(code) = trimmed.strip_prefix("// Handout:") {
                    let indent = &line[..line.len() - trimmed.len()];
                    region
                        .handout
                        .push(format!("{indent}{}", code.strip_prefix(' ').unwrap_or(code)));
                }
            }
            continue;
        };
        let error = |what: String| MarkerError { line: i + 1, what };
        let (part, what) =
            rest.split_once(' ').ok_or_else(|| error("a marker needs BEGIN or END".into()))?;
        let valid_part = part == "HIDDEN"
            || part
                .split_once('.')
                .is_some_and(|(n, k)| n.parse::<u32>().is_ok() && k.parse::<u32>().is_ok());
        if !valid_part {
            return Err(error(format!("`{part}` is not a lab part (n.k) or HIDDEN")));
        }
        if let Some(instruction) = what.strip_prefix("BEGIN") {
            if let Some(region) = &open {
                return Err(error(format!("LAB {} BEGIN inside LAB {}", part, region.part)));
            }
            let instruction = instruction.trim_start_matches(':').trim().to_string();
            if instruction.is_empty() && part != "HIDDEN" {
                return Err(error(format!("LAB {part} BEGIN needs an instruction after a colon")));
            }
            open = Some(Region {
                part: part.to_string(),
                instruction,
                hints: Vec::new(),
                handout: Vec::new(),
                lines: (i, i),
                indent: line[..line.len() - trimmed.len()].to_string(),
            });
        } else if what.trim() == "END" {
            match open.take() {
                Some(mut region) if region.part == part => {
                    region.lines.1 = i;
                    found.push(region);
                }
                Some(region) => {
                    return Err(error(format!("LAB {part} END closes LAB {}", region.part)))
                }
                None => return Err(error(format!("LAB {part} END without a BEGIN"))),
            }
        } else {
            return Err(error(format!("`{what}`: a marker is BEGIN or END")));
        }
    }
    match open {
        Some(region) => Err(MarkerError {
            line: region.lines.0 + 1,
            what: format!("LAB {} BEGIN is never closed", region.part),
        }),
        None => Ok(found),
    }
}

/// `source` as the handout of `labs` shows it: their regions replaced by what the student
/// starts from, every hidden region removed, every other lab's region left as it is (its
/// markers included, so a later handout can still cut it).
pub fn handout(source: &str, labs: &[u32], is_rust: bool) -> Result<String, MarkerError> {
    let regions = regions(source)?;
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    let mut next = 0;
    for region in &regions {
        let cut = region.part == "HIDDEN" || region.lab().is_some_and(|lab| labs.contains(&lab));
        if !cut {
            continue;
        }
        out.extend(lines[next..region.lines.0].iter().map(|l| l.to_string()));
        next = region.lines.1 + 1;
        if region.part == "HIDDEN" {
            continue;
        }
        let indent = &region.indent;
        out.push(format!("{indent}// LAB {}: your code here.", region.part));
        out.push(format!("{indent}// Instruction: {}", region.instruction));
        out.extend(region.hints.iter().map(|hint| format!("{indent}// Hint: {hint}")));
        if !region.handout.is_empty() {
            out.extend(region.handout.iter().cloned());
        } else if is_rust {
            let text = region.instruction.replace('\\', "\\\\").replace('"', "\\\"");
            out.push(format!("{indent}todo!(\"LAB {}: {text}\")", region.part));
        } else {
            return Err(MarkerError {
                line: region.lines.0 + 1,
                what: format!("LAB {} in a non-Rust file needs `// Handout:` lines", region.part),
            });
        }
    }
    out.extend(lines[next..].iter().map(|l| l.to_string()));
    let mut text = out.join("\n");
    if source.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test sources write a marker `#LAB`, so that a search of the tree for unbalanced
    /// markers does not find these deliberately broken ones.
    fn m(source: &str) -> String {
        source.replace("#LAB ", "// LAB ")
    }

    const SOURCE: &str = "fn frame() -> u64 {\n    #LAB 2.1 BEGIN: build the frame\n    // Hint: five words.\n    let x = 5;\n    x\n    #LAB 2.1 END\n}\nfn other() {\n    #LAB 1.1 BEGIN: other lab\n    one();\n    #LAB 1.1 END\n}\n#LAB HIDDEN BEGIN\n#[test]\nfn secret() {}\n#LAB HIDDEN END\n";

    #[test]
    fn regions_are_found_with_their_instructions_and_hints() {
        let regions = regions(&m(SOURCE)).unwrap();
        assert_eq!(regions.len(), 3);
        assert_eq!(regions[0].part, "2.1");
        assert_eq!(regions[0].lab(), Some(2));
        assert_eq!(regions[0].instruction, "build the frame");
        assert_eq!(regions[0].hints, ["five words."]);
        assert_eq!(regions[0].lines, (1, 5));
        assert_eq!(regions[2].lab(), None);
    }

    #[test]
    fn a_handout_cuts_its_labs_and_every_hidden_region() {
        let text = handout(&m(SOURCE), &[2], true).unwrap();
        assert!(text.contains(&m(
            "    #LAB 2.1: your code here.\n    // Instruction: build the frame\n    // Hint: five words.\n    todo!(\"LAB 2.1: build the frame\")\n}"
        )));
        assert!(!text.contains("let x = 5"), "no solution left");
        assert!(text.contains(&m("#LAB 1.1 BEGIN: other lab\n    one();")), "other labs stay");
        assert!(!text.contains("secret"), "hidden tests go");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn assembly_regions_start_from_their_handout_lines() {
        let asm = "    #LAB 2.3 BEGIN: the fast path\n    // Handout: jmp slow_path\n    mov rax, 1\n    #LAB 2.3 END\n";
        assert_eq!(
            handout(&m(asm), &[2], false).unwrap(),
            m("    #LAB 2.3: your code here.\n    // Instruction: the fast path\n    jmp slow_path\n")
        );
        let bare = "#LAB 2.3 BEGIN: x\nmov rax, 1\n#LAB 2.3 END\n";
        assert!(handout(&m(bare), &[2], false).is_err());
    }

    #[test]
    fn malformed_markers_are_named_with_their_line() {
        let cases = [
            ("#LAB 2.1 BEGIN: a\n", "never closed"),
            ("#LAB 2.1 END\n", "without a BEGIN"),
            ("#LAB 2.1 BEGIN: a\n#LAB 2.2 END\n", "closes LAB 2.1"),
            ("#LAB two BEGIN: a\n", "not a lab part"),
            ("#LAB 2.1 BEGIN\n#LAB 2.1 END\n", "needs an instruction"),
            ("#LAB 2.1 BEGIN: a\n#LAB 2.2 BEGIN: b\n", "inside LAB 2.1"),
        ];
        for (source, what) in cases {
            let error = regions(&m(source)).unwrap_err();
            assert!(error.to_string().contains(what), "{source:?}: {error}");
        }
    }

    #[test]
    fn the_solution_is_the_source_untouched() {
        assert_eq!(handout(&m(SOURCE), &[], true).unwrap().matches("LAB 2.1").count(), 2);
        assert!(!handout(&m(SOURCE), &[], true).unwrap().contains("secret"));
    }
}
