//! Per-student parameters: `cargo xtask handout --seed S` records `S` in the handout's
//! `.lab-handout`, and everything that reads a tree's parameters (the grader, `cargo xtask gdb
//! --lab 0`, `cargo xtask bench`) derives the same [`Params`] from it, so two students with
//! different seeds boot different machines and must report different numbers.
//!
//! | parameter | seed 0 (the reference) | other seeds | what it changes |
//! |---|---|---|---|
//! | `mem_mib` | 16 | 16, 20, 24, 28 or 32 | lab 0: each domain's memory (`nr_pages`, machine addresses) |
//! | `bystanders` | 1 | 0, 1 or 2 | lab 0: `counter` domains booted before the one studied (its id, its memory's place) |
//! | `console_writes` | 64 | 40 ..= 103 | lab 7: operations of the `console-write` bench workload |
//! | `hidden_seed` | none (random) | derived | the hidden property tests' random generator (`XL_LAB_SEED`) |
//!
//! A tree without `.lab-handout` (the TA's tree) or a handout made without `--seed` is seed 0.

use std::fs;
use std::path::Path;

use super::handout::HANDOUT_FILE;

/// The environment variable that carries [`Params::hidden_seed`] to host tests.
pub const SEED_VARIABLE: &str = "XL_LAB_SEED";

/// One student's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The seed they come from.
    pub seed: u64,
    /// Memory per domain in lab 0's boot, MiB.
    pub mem_mib: u64,
    /// `counter` domains before lab 0's studied domain.
    pub bystanders: usize,
    /// Operations of lab 7's `console-write` workload.
    pub console_writes: u64,
    /// The hidden property tests' seed; `None`: proptest's own random one.
    pub hidden_seed: Option<u64>,
}

/// SplitMix64: a well-mixed 64-bit value from a counter, so neighbouring seeds share nothing.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Params {
    /// The parameters of `seed`.
    pub fn of(seed: u64) -> Params {
        if seed == 0 {
            return Params {
                seed,
                mem_mib: 16,
                bystanders: 1,
                console_writes: 64,
                hidden_seed: None,
            };
        }
        let r = mix(seed);
        Params {
            seed,
            mem_mib: 16 + 4 * (r % 5),
            bystanders: ((r >> 8) % 3) as usize,
            console_writes: 40 + (r >> 16) % 64,
            hidden_seed: Some(mix(r)),
        }
    }

    /// Lab 0's boot: `bystanders` counters, then the self-tests (the domain studied), with
    /// `mem_mib` each.
    pub fn lab0_boot(&self) -> (Vec<String>, Vec<String>) {
        let mut guests = vec!["counter".to_string(); self.bystanders];
        guests.push("tests".into());
        (guests, vec![format!("mem={}M", self.mem_mib)])
    }
}

/// The parameters of this tree (the workspace the xtask runs in).
pub fn here() -> Params {
    Params::of(tree_seed(&crate::process::root()))
}

/// The seed recorded in `tree`'s `.lab-handout` (`seed S` line), 0 if none.
pub fn tree_seed(tree: &Path) -> u64 {
    let text = fs::read_to_string(tree.join(HANDOUT_FILE)).unwrap_or_default();
    handout_seed(&text)
}

/// The `seed S` line of a `.lab-handout` file's text, 0 if none.
pub fn handout_seed(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("seed "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The `labs N M...` line of a `.lab-handout` file's text.
pub fn handout_labs(text: &str) -> Vec<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix("labs "))
        .map(|rest| rest.split_whitespace().filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_0_is_the_reference_machine() {
        let p = Params::of(0);
        assert_eq!((p.mem_mib, p.bystanders, p.console_writes, p.hidden_seed), (16, 1, 64, None));
    }

    #[test]
    fn seeds_are_deterministic_and_in_range() {
        for seed in 1..500 {
            let p = Params::of(seed);
            assert_eq!(p, Params::of(seed));
            assert!([16, 20, 24, 28, 32].contains(&p.mem_mib));
            assert!(p.bystanders <= 2);
            assert!((40..104).contains(&p.console_writes));
            assert!(p.hidden_seed.is_some());
        }
    }

    #[test]
    fn a_class_gets_different_machines() {
        let machines: std::collections::BTreeSet<(u64, usize)> =
            (1..=30).map(|s| (Params::of(s).mem_mib, Params::of(s).bystanders)).collect();
        assert!(machines.len() >= 10, "30 students share {} machines", machines.len());
        let writes: std::collections::BTreeSet<u64> =
            (1..=30).map(|s| Params::of(s).console_writes).collect();
        assert!(writes.len() >= 15);
    }

    #[test]
    fn the_handout_file_is_read_line_by_line() {
        let text = "labs 0 7\nseed 42\n";
        assert_eq!(handout_labs(text), vec![0, 7]);
        assert_eq!(handout_seed(text), 42);
        assert_eq!(handout_seed("labs 2\n"), 0);
        assert_eq!(handout_labs("seed 3\n"), Vec::<u32>::new());
    }

    #[test]
    fn lab0_boots_the_bystanders_first() {
        let p = Params { bystanders: 2, mem_mib: 20, ..Params::of(0) };
        let (guests, extra) = p.lab0_boot();
        assert_eq!(guests, ["counter", "counter", "tests"]);
        assert_eq!(extra, ["mem=20M"]);
    }
}
