//! The guest's own command line: what to run and how to exit.
//!
//! `WORKLOAD [exit=N]`, e.g. `hello exit=3`. The workload names what the kernel does after
//! start of day; `exit=` the shutdown code it reports when done (default 0).

use core::fmt;

use hypercall_abi::cmdline::{self, CmdlineError};
use hypercall_abi::devices::GUEST_STATUS_MAX;

/// What the kernel runs after start of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Print a greeting and shut down.
    Hello,
}

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    /// What to run.
    pub workload: Workload,
    /// Code to shut down with.
    pub exit_code: u8,
}

/// What is wrong with the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError<'a> {
    /// The words do not parse.
    Syntax(CmdlineError),
    /// No workload named.
    NoWorkload,
    /// A workload this kernel does not have.
    UnknownWorkload(&'a str),
    /// An option it does not know, or a value out of range.
    BadOption(&'a str),
}

impl fmt::Display for ArgsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Syntax(error) => write!(f, "{error}"),
            ArgsError::NoWorkload => write!(f, "no workload named (known: hello)"),
            ArgsError::UnknownWorkload(name) => {
                write!(f, "unknown workload '{name}' (known: hello)")
            }
            ArgsError::BadOption(word) => {
                write!(f, "bad option '{word}' (known: exit=0..={GUEST_STATUS_MAX})")
            }
        }
    }
}

impl Args {
    /// Parses `WORKLOAD [exit=N]`.
    pub fn parse(line: &str) -> Result<Args, ArgsError<'_>> {
        let mut workload = None;
        let mut exit_code = 0;
        for word in cmdline::words(line) {
            let word = word.map_err(ArgsError::Syntax)?;
            match (word.key, word.value) {
                ("exit", Some(value)) => {
                    exit_code = cmdline::parse_u64(value)
                        .filter(|&code| code <= u64::from(GUEST_STATUS_MAX))
                        .ok_or(ArgsError::BadOption(word.key))?
                        as u8;
                }
                ("hello", None) if workload.is_none() => workload = Some(Workload::Hello),
                (name, None) if workload.is_none() => return Err(ArgsError::UnknownWorkload(name)),
                (key, _) => return Err(ArgsError::BadOption(key)),
            }
        }
        Ok(Args { workload: workload.ok_or(ArgsError::NoWorkload)?, exit_code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_and_exit_code_parse() {
        assert_eq!(Args::parse("hello"), Ok(Args { workload: Workload::Hello, exit_code: 0 }));
        assert_eq!(
            Args::parse("hello exit=3"),
            Ok(Args { workload: Workload::Hello, exit_code: 3 })
        );
        assert_eq!(Args::parse("exit=0x10 hello").unwrap().exit_code, 16);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(Args::parse(""), Err(ArgsError::NoWorkload));
        assert_eq!(Args::parse("bogus"), Err(ArgsError::UnknownWorkload("bogus")));
        assert_eq!(Args::parse("hello hello"), Err(ArgsError::BadOption("hello")));
        assert_eq!(Args::parse("hello exit=100"), Err(ArgsError::BadOption("exit")));
        assert_eq!(Args::parse("hello exit"), Err(ArgsError::BadOption("exit")));
        assert!(matches!(Args::parse("hello exit=\"3"), Err(ArgsError::Syntax(_))));
    }

    #[test]
    fn the_link_address_matches_the_abi() {
        let script = include_str!("../kernel.ld");
        let base = format!("{:#x}", hypercall_abi::layout::GUEST_KERNEL_BASE);
        assert!(script.contains(&base), "kernel.ld must link at {base}");
    }
}
