//! The guest's own command line: what to run and how to exit.
//!
//! `WORKLOAD [exit=N]`, e.g. `hello exit=3`. The workload names what the kernel does after
//! start of day (see `workloads`); `exit=` the shutdown code it reports when done (default 0;
//! workloads that check something report their own failures instead).

use core::fmt;

use hypercall_abi::cmdline::{self, CmdlineError};
use hypercall_abi::devices::GUEST_STATUS_MAX;

/// A privileged instruction the `privileged` workload executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `cli`
    Cli,
    /// `hlt`
    Hlt,
    /// `mov cr3, rax`
    MovCr3,
    /// `lgdt [rax]`
    Lgdt,
    /// `wrmsr`
    Wrmsr,
    /// `out 0x80, al`
    Out,
}

/// A user program's name (a bundle module), at most 31 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramName {
    bytes: [u8; 31],
    len: usize,
}

impl ProgramName {
    /// The name, if it fits.
    pub fn new(name: &str) -> Option<ProgramName> {
        let mut bytes = [0; 31];
        bytes.get_mut(..name.len())?.copy_from_slice(name.as_bytes());
        (!name.is_empty()).then_some(ProgramName { bytes, len: name.len() })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// What the kernel runs after start of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Print a greeting and shut down.
    Hello,
    /// Count timer ticks, sleeping in between (events, virtual timer, `block`).
    Counter,
    /// Find primes, printing progress (pure computation; preempted by xen-lite).
    Primes,
    /// Spin with events masked for a while: must not starve other domains.
    SpinMasked,
    /// `popf-wait`: restore IF with `popfq`, then wait for the timer (`mode=trap` cannot).
    PopfWait,
    /// Open an event port for domain `n` and wait for three events on it.
    Pong(u32),
    /// Send three events to port 1 of domain `n` (where `pong` listens).
    Ping(u32),
    /// The kernel's self-tests of hypercalls, bounces and events.
    Tests,
    /// Execute a privileged instruction (in ring 1: xen-lite kills the domain).
    Privileged(Instruction),
    /// Run the user program (bundle module) of this name in ring 3.
    Run(ProgramName),
    /// Start processes: `init` runs, one after the other, the programs named after it.
    Init,
    /// Raise #BP with no trap table (xen-lite kills the domain).
    NoHandler,
    /// Fault with a stack xen-lite cannot write a bounce frame to (killed).
    BadStack,
    /// Fault with the stack inside the kernel's own L4 (killed: never written).
    StackOnPageTable,
    /// Register a `stack_switch` stack inside its own (read-only) L4, then run `hello`: its
    /// first `syscall` cannot be bounced (pv: killed; xen-lite's fast path must survive it).
    SyscallStackOnPageTable,
    /// A benchmark: yield to the next domain, in a ring of this many domains all doing the same
    /// (`domain-switch=K`); domain 0 reports the cost per switch.
    DomainSwitch(u32),
    /// A benchmark: what delivering one timer event costs, from the difference between a spin
    /// loop with events masked and the same loop with the guest's 100 Hz tick on.
    EventCost,
    /// Load an empty IDT and raise #BP: a triple fault (vmx: killed with the exit reason;
    /// native: the machine resets; pv: `lidt` is privileged in ring 1).
    TripleFault,
    /// Map the page just past the domain's memory and read it (pv: refused; vmx: EPT
    /// violation, killed; native: it reads a neighbour's memory).
    BeyondMemory,
    /// The TLB's rules, seen from the guest: a changed PTE without `invlpg` keeps the old
    /// translation, `invlpg` makes the new one visible, and the MMU sets A and D (what shadow
    /// paging must reproduce, and the hardware does natively).
    ShadowTlb,
    /// Touches pages 1 GiB apart, more page-table reach than a small shadow pool holds between
    /// two CR3 loads, and reads each back: the shadow must recycle and stay correct.
    ShadowSweep,
    /// Copies an L4 entry into a slot xen-lite reserves and reads through it (`pv` under
    /// shadow paging: the guest's own page fault).
    ShadowReservedSlot,
    /// Popek and Goldberg's census: each of some fifty sensitive or privileged instructions, in
    /// the kernel's ring and in ring 3, from item `n` on (`census` or `census=N`; `cargo xtask
    /// census` starts again after an instruction the hypervisor kills for).
    Census(usize),
    /// One attack of the hostile table, by name (`workloads::attacks`).
    Attack(ProgramName),
    /// The bystander of `attack=read-guest-visible-stacks`: page faults with marked registers.
    SecretFaults,
    // LAB HIDDEN BEGIN
    /// The labs' hidden self-tests (`lab-hidden`), which handouts do not contain.
    LabHidden,
    // LAB HIDDEN END
    /// The seeded hypercall fuzzer: `fuzz=SEED:COUNT`.
    Fuzz {
        /// The seed.
        seed: u64,
        /// How many hypercalls.
        count: u64,
    },
}

/// Names, for messages.
pub const KNOWN: &str = "init PROGRAM..., hello, counter, primes, spin-masked, popf-wait, ping=DOMAIN, pong=DOMAIN, run=PROGRAM, tests, privileged=cli|hlt|cr3|lgdt|wrmsr|out, no-handler, bad-stack, stack-on-page-table, syscall-stack-on-page-table, beyond-memory, shadow-tlb, shadow-sweep, shadow-reserved-slot, census[=N], triple-fault, domain-switch=K, event-cost, attack=NAME, secret-faults, fuzz=SEED:COUNT";

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
            ArgsError::NoWorkload => write!(f, "no workload named (known: {KNOWN})"),
            ArgsError::UnknownWorkload(name) => {
                write!(f, "unknown workload '{name}' (known: {KNOWN})")
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
            let named = match (word.key, word.value) {
                ("exit", Some(value)) => {
                    exit_code = cmdline::parse_u64(value)
                        .filter(|&code| code <= u64::from(GUEST_STATUS_MAX))
                        .ok_or(ArgsError::BadOption(word.key))?
                        as u8;
                    continue;
                }
                ("init", None) => return Ok(Args { workload: Workload::Init, exit_code }),
                ("hello", None) => Workload::Hello,
                ("counter", None) => Workload::Counter,
                ("primes", None) => Workload::Primes,
                ("spin-masked", None) => Workload::SpinMasked,
                ("popf-wait", None) => Workload::PopfWait,
                ("tests", None) => Workload::Tests,
                ("no-handler", None) => Workload::NoHandler,
                ("bad-stack", None) => Workload::BadStack,
                ("stack-on-page-table", None) => Workload::StackOnPageTable,
                ("beyond-memory", None) => Workload::BeyondMemory,
                ("shadow-tlb", None) => Workload::ShadowTlb,
                ("shadow-sweep", None) => Workload::ShadowSweep,
                ("shadow-reserved-slot", None) => Workload::ShadowReservedSlot,
                ("census", None) => Workload::Census(0),
                ("census", Some(from)) => Workload::Census(
                    cmdline::parse_u64(from)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or(ArgsError::BadOption("census"))?,
                ),
                ("triple-fault", None) => Workload::TripleFault,
                ("event-cost", None) => Workload::EventCost,
                ("secret-faults", None) => Workload::SecretFaults,
                // LAB HIDDEN BEGIN
                ("lab-hidden", None) => Workload::LabHidden,
                // LAB HIDDEN END
                ("fuzz", Some(value)) => {
                    let (seed, count) =
                        value.split_once(':').ok_or(ArgsError::BadOption("fuzz"))?;
                    let number =
                        |text| cmdline::parse_u64(text).ok_or(ArgsError::BadOption("fuzz"));
                    Workload::Fuzz { seed: number(seed)?, count: number(count)? }
                }
                ("attack", Some(name)) => {
                    Workload::Attack(ProgramName::new(name).ok_or(ArgsError::BadOption("attack"))?)
                }
                ("syscall-stack-on-page-table", None) => Workload::SyscallStackOnPageTable,
                ("domain-switch", Some(count)) => Workload::DomainSwitch(
                    cmdline::parse_u64(count)
                        .and_then(|d| u32::try_from(d).ok())
                        .filter(|&d| d > 0)
                        .ok_or(ArgsError::BadOption("domain-switch"))?,
                ),
                ("ping", Some(domain)) | ("pong", Some(domain)) => {
                    let domain = cmdline::parse_u64(domain)
                        .and_then(|d| u32::try_from(d).ok())
                        .ok_or(ArgsError::BadOption(word.key))?;
                    if word.key == "ping" {
                        Workload::Ping(domain)
                    } else {
                        Workload::Pong(domain)
                    }
                }
                ("run", Some(name)) => {
                    Workload::Run(ProgramName::new(name).ok_or(ArgsError::BadOption("run"))?)
                }
                ("privileged", Some(name)) => Workload::Privileged(match name {
                    "cli" => Instruction::Cli,
                    "hlt" => Instruction::Hlt,
                    "cr3" => Instruction::MovCr3,
                    "lgdt" => Instruction::Lgdt,
                    "wrmsr" => Instruction::Wrmsr,
                    "out" => Instruction::Out,
                    _ => return Err(ArgsError::BadOption(word.key)),
                }),
                (name, None) if workload.is_none() => return Err(ArgsError::UnknownWorkload(name)),
                (key, _) => return Err(ArgsError::BadOption(key)),
            };
            if workload.replace(named).is_some() {
                return Err(ArgsError::BadOption(word.key));
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
        assert_eq!(
            Args::parse("privileged=cr3").unwrap().workload,
            Workload::Privileged(Instruction::MovCr3)
        );
        assert_eq!(Args::parse("spin-masked").unwrap().workload, Workload::SpinMasked);
        assert_eq!(Args::parse("ping=1").unwrap().workload, Workload::Ping(1));
        assert_eq!(Args::parse("pong=0").unwrap().workload, Workload::Pong(0));
        assert_eq!(
            Args::parse("run=hello").unwrap().workload,
            Workload::Run(ProgramName::new("hello").unwrap())
        );
        assert_eq!(Args::parse("run="), Err(ArgsError::BadOption("run")));
        assert_eq!(
            Args::parse("fuzz=7:100").unwrap().workload,
            Workload::Fuzz { seed: 7, count: 100 }
        );
        assert_eq!(Args::parse("fuzz=7"), Err(ArgsError::BadOption("fuzz")));
        assert_eq!(
            Args::parse("attack=event-storm").unwrap().workload,
            Workload::Attack(ProgramName::new("event-storm").unwrap())
        );
        assert_eq!(Args::parse("pong=x"), Err(ArgsError::BadOption("pong")));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(Args::parse(""), Err(ArgsError::NoWorkload));
        assert_eq!(Args::parse("bogus"), Err(ArgsError::UnknownWorkload("bogus")));
        assert_eq!(Args::parse("hello hello"), Err(ArgsError::BadOption("hello")));
        assert_eq!(Args::parse("hello exit=100"), Err(ArgsError::BadOption("exit")));
        assert_eq!(Args::parse("hello exit"), Err(ArgsError::BadOption("exit")));
        assert_eq!(Args::parse("privileged=mov"), Err(ArgsError::BadOption("privileged")));
        assert!(matches!(Args::parse("hello exit=\"3"), Err(ArgsError::Syntax(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, failure_persistence: None, ..Default::default() })]

        /// Host fuzzing of the guest's command-line parser: any line is a workload or a named
        /// error, never a panic (the line comes from the TA's or the fuzzer's bundle).
        #[test]
        fn any_line_parses_or_is_refused(line in "[ -~\t]{0,60}", seed in 0usize..5) {
            let prefixes = ["", "run=", "attack=", "fuzz=", "init "];
            let line = format!("{}{line}", prefixes[seed]);
            if let Ok(args) = Args::parse(&line) {
                proptest::prop_assert!(args.exit_code <= GUEST_STATUS_MAX);
            }
        }
    }

    #[test]
    fn the_link_address_matches_the_abi() {
        let script = include_str!("../kernel.ld");
        let base = format!("{:#x}", hypercall_abi::layout::GUEST_KERNEL_BASE);
        assert!(script.contains(&base), "kernel.ld must link at {base}");
        let user = format!("{:#010x}", hypercall_abi::elf::PF_XENLITE_USER | 7);
        assert!(script.contains(&user), "kernel.ld must flag the user segment with {user}");
    }
}
