//! `cargo xtask bench`: the syscall-path comparison across pv, vmx, svm and native (DESIGN §9).
//!
//! Every mode the machine can run boots the same user program, `bench`
//! (`pv-guest/user/src/bin/bench.rs`), which prints one `BENCH ...` line per measurement: the
//! instructions it took (the guest's `rdtsc`, which counts retired instructions under QEMU's
//! `-icount shift=0,sleep=off,align=off` and under Bochs' `clock: sync=none`; both count one
//! instruction per emulated nanosecond here, so timer ticks land equally often) and what xen-lite's counters say it cost (entries, VM exits by reason, CR3 writes).
//! This module runs the boots, turns the lines into per-operation figures, and writes the table,
//! the ratios, the targets of the benchmark issue, `results.json`, `results.csv` and one SVG
//! chart per workload family.
//!
//! Counts, never time: an instruction count says nothing of what a `syscall`, an `iretq` or a VM
//! exit costs on silicon (each counts as one instruction), which is why the transitions are
//! reported beside it. Compare only within one emulator.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypercall_abi::Mode;

use crate::artifacts::{self, Artifacts};
use crate::cli::Emulator;
use crate::emulator::{self, Boot, End};
use crate::run::{check_emulator, disk_for};

/// What `cargo xtask bench` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Where the JSON, CSV and SVG files go.
    pub out: PathBuf,
    /// A twentieth of the operations, and the targets checked (what `cargo xtask test` runs).
    pub quick: bool,
    /// Per boot.
    pub timeout: Duration,
    /// Also run pv and native (and vmx or svm, if the host offers nested VMX or SVM) under QEMU+KVM, several
    /// times, and report cycles.
    pub kvm: bool,
    /// Operations of the `console-write` workload (lab 7's: the tree's seed sets it,
    /// `labs::params`).
    pub console_writes: u64,
    /// With `quick`: write the tables the lecture notes quote (`crate::figures`) into them.
    pub record: bool,
}

/// Runs per setup under KVM, for the median and spread of its cycle counts.
const KVM_RUNS: usize = 5;

/// One boot of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Where it runs.
    pub emulator: Emulator,
    /// How the guest runs.
    pub mode: Mode,
    /// On shadow page tables: `pv` with `paging=shadow` instead of direct paging, `svm` or
    /// `vmx` with `npt=off` or `ept=off` instead of nested ones.
    pub shadow: bool,
    /// `vmx` or `svm` with `console=uart`: the guest's console on the emulated 16550.
    pub uart: bool,
}

impl Setup {
    /// The mode as tables and files name it: `pv-shadow` for `pv` with `paging=shadow`,
    /// `svm-shadow` for `svm` with `npt=off`, `vmx-shadow` for `vmx` with `ept=off`.
    pub fn name(&self) -> &'static str {
        match (self.mode, self.shadow) {
            _ if self.uart && self.mode == Mode::Vmx => "vmx-uart",
            _ if self.uart => "svm-uart",
            (Mode::Pv, true) => "pv-shadow",
            (Mode::Svm, true) => "svm-shadow",
            (Mode::Vmx, true) => "vmx-shadow",
            (mode, _) => mode.name(),
        }
    }

    /// The words of xen-lite's command line that choose the mode.
    pub fn mode_words(&self) -> String {
        let off = match (self.mode, self.shadow) {
            (Mode::Pv, true) => " paging=shadow",
            (Mode::Svm, true) => " npt=off",
            (Mode::Vmx, true) => " ept=off",
            _ => "",
        };
        let uart = if self.uart { " console=uart" } else { "" };
        format!("mode={}{off}{uart}", self.mode.name())
    }
}

/// Every setup this machine can run: QEMU with icount runs pv (on direct and on shadow paging),
/// svm (on nested and on shadow page tables, and with its console on the emulated UART), trap
/// (trap-and-emulate, always on shadow tables) and native (its TCG has no VMX), Bochs the same
/// and vmx (svm in an AMD model).
pub const MATRIX: [Setup; 16] = [
    Setup { emulator: Emulator::Qemu, mode: Mode::Pv, shadow: false, uart: false },
    Setup { emulator: Emulator::Qemu, mode: Mode::Pv, shadow: true, uart: false },
    Setup { emulator: Emulator::Qemu, mode: Mode::Svm, shadow: false, uart: false },
    Setup { emulator: Emulator::Qemu, mode: Mode::Svm, shadow: true, uart: false },
    Setup { emulator: Emulator::Qemu, mode: Mode::Svm, shadow: false, uart: true },
    Setup { emulator: Emulator::Qemu, mode: Mode::Trap, shadow: false, uart: false },
    Setup { emulator: Emulator::Qemu, mode: Mode::Native, shadow: false, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Pv, shadow: false, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Pv, shadow: true, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Vmx, shadow: false, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Vmx, shadow: true, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Vmx, shadow: false, uart: true },
    Setup { emulator: Emulator::Bochs, mode: Mode::Svm, shadow: false, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Svm, shadow: true, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Trap, shadow: false, uart: false },
    Setup { emulator: Emulator::Bochs, mode: Mode::Native, shadow: false, uart: false },
];

/// pv mode in QEMU, the setup the labs' quick bench uses.
pub const QEMU_PV: Setup = MATRIX[0];

/// One `BENCH` line, as the guest printed it (totals over `ops` operations).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    /// Workload family (`null-syscall`, ...).
    pub workload: String,
    /// How each operation reaches the kernel (`syscall`, `int80`, ...).
    pub path: String,
    /// Operations measured.
    pub ops: u64,
    /// Retired instructions.
    pub instructions: u64,
    /// Entries into xen-lite not caused by its timer (VM exits included).
    pub entries: u64,
    /// VM exits among them.
    pub exits: u64,
    /// CR3 writes xen-lite made for them.
    pub cr3: u64,
    /// Entries and exits xen-lite's timer caused meanwhile.
    pub timer: u64,
    /// Page faults fixed in a shadow without the guest knowing (0 when absent: not shadowed).
    pub hidden: u64,
    /// Non-timer VM exits by basic reason.
    pub reasons: Vec<(u16, u64)>,
}

/// Parses a `BENCH` line (anything before `BENCH`, such as the `[dom0] ` prefix, is ignored).
pub fn parse_line(line: &str) -> Option<Line> {
    let rest = &line[line.find("BENCH ")? + "BENCH ".len()..];
    let mut out = Line::default();
    for word in rest.split_whitespace() {
        let (key, value) = word.split_once('=')?;
        let number = || value.parse::<u64>().ok();
        match key {
            "workload" => out.workload = value.to_string(),
            "path" => out.path = value.to_string(),
            "ops" => out.ops = number()?,
            "instructions" => out.instructions = number()?,
            "entries" => out.entries = number()?,
            "exits" => out.exits = number()?,
            "cr3" => out.cr3 = number()?,
            "timer" => out.timer = number()?,
            "hidden" => out.hidden = number()?,
            "reasons" if value == "none" => {}
            "reasons" => {
                for pair in value.split(',') {
                    let (reason, count) = pair.split_once('x')?;
                    out.reasons.push((reason.parse().ok()?, count.parse().ok()?));
                }
            }
            _ => return None,
        }
    }
    (out.ops > 0 && !out.workload.is_empty() && !out.path.is_empty()).then_some(out)
}

/// One measurement, per operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Where it ran.
    pub setup: Setup,
    /// What the guest printed (under KVM, `instructions` holds cycles: the median run's).
    pub line: Line,
    /// Under KVM: cycles per operation over repeated runs, `(median, lowest, highest)`. Time, not
    /// an instruction count; `None` in the emulators.
    pub cycles: Option<(f64, f64, f64)>,
}

impl Measurement {
    fn per_op(&self, total: u64) -> f64 {
        total as f64 / self.line.ops as f64
    }

    /// Retired instructions per operation.
    pub fn instructions(&self) -> f64 {
        self.per_op(self.line.instructions)
    }

    /// Entries into xen-lite per operation (not the timer's).
    pub fn entries(&self) -> f64 {
        self.per_op(self.line.entries)
    }

    /// VM exits per operation (not the timer's).
    pub fn exits(&self) -> f64 {
        self.per_op(self.line.exits)
    }

    /// CR3 writes per operation.
    pub fn cr3(&self) -> f64 {
        self.per_op(self.line.cr3)
    }

    /// Hidden shadow faults per operation.
    pub fn hidden(&self) -> f64 {
        self.per_op(self.line.hidden)
    }

    /// Privilege-level and VMX transitions per operation: every entry into xen-lite is two
    /// (in and out), plus the guest's own user-kernel crossings that did not go through
    /// xen-lite. A bounced `syscall` enters ring 0 and leaves into ring 1 (the entry's two),
    /// then returns to ring 3 directly (one more); a fast trap or a native `syscall` is two.
    pub fn transitions(&self) -> f64 {
        let crossings = crossings_per_op(&self.line.workload);
        let bounced = self.setup.mode == Mode::Pv && bounces(&self.line.workload, &self.line.path);
        let direct = if bounced { crossings / 2.0 } else { crossings };
        2.0 * self.entries() + direct
    }

    /// A name for the path, for tables and charts.
    pub fn label(&self) -> String {
        format!("{} {}", self.setup.name(), self.line.path)
    }
}

/// User-kernel crossings per operation by design of the workload (each system call or fault
/// is two: in and out).
fn crossings_per_op(workload: &str) -> f64 {
    match workload {
        "null-syscall" | "first-touch" | "context-switch" | "console-write" => 2.0,
        "fork-exit-wait" => 6.0, // fork, exit (in the child), wait
        _ => 0.0, // null-hypercall (one system call for all), domain-switch (in the kernel)
    }
}

/// Whether, in pv mode, the way into the guest kernel goes through xen-lite.
fn bounces(workload: &str, path: &str) -> bool {
    path != "int80" && workload != "null-hypercall" && workload != "domain-switch"
}

/// Runs the command.
pub fn bench(options: &BenchOptions) -> Result<u8, String> {
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        check_emulator(emulator)?;
    }
    if options.kvm {
        check_emulator(Emulator::Kvm)?;
    }
    // Optimised kernels: what is measured is the mechanism, not the debug build's overhead.
    let artifacts = artifacts::build(true)?;
    println!(
        "xtask: bench: {} setups, release build, {}; instruction counts from the emulators, not time",
        MATRIX.len(),
        if options.quick { "quick (1/20 of the operations)" } else { "full" }
    );
    let mut measurements = matrix(&artifacts, options)?;
    if !options.quick {
        for setup in MATRIX {
            println!(
                "xtask: bench: timer event delivery, {} mode in {}...",
                setup.name(),
                setup.emulator.name()
            );
            let cmdline = format!("{} domain=event-cost", setup.mode_words());
            let lines = boot_cmdline(&artifacts, setup, options, &cmdline, "events")?;
            measurements.extend(lines.into_iter().map(|line| Measurement {
                setup,
                line,
                cycles: None,
            }));
        }
        // Domains yield with a hypercall, which neither native nor trap mode has.
        let rings = MATRIX.iter().filter(|s| !matches!(s.mode, Mode::Native | Mode::Trap));
        for setup in rings {
            for domains in DOMAIN_COUNTS {
                println!(
                    "xtask: bench: {domains} {} domains yielding in {}...",
                    setup.name(),
                    setup.emulator.name()
                );
                let lines = boot_domain_switch(&artifacts, *setup, options, domains)?;
                measurements.extend(lines.into_iter().map(|line| Measurement {
                    setup: *setup,
                    line,
                    cycles: None,
                }));
            }
        }
    }
    if options.kvm {
        measurements.extend(kvm(&artifacts, options)?);
    }
    print!("{}", table(&measurements));
    print!("{}", ratios(&measurements));
    let targets = targets(&measurements);
    print!("{}", report_targets(&targets));
    write_files(&options.out, &measurements)?;
    if options.record {
        for (name, result) in crate::figures::check_or_record(&measurements, true) {
            result.map_err(|error| format!("{name}: {error}"))?;
        }
    }
    println!(
        "xtask: bench: wrote results.json, results.csv and the charts to {}",
        options.out.display()
    );
    Ok(0)
}

/// Every setup of the matrix once, in order.
fn matrix(artifacts: &Artifacts, options: &BenchOptions) -> Result<Vec<Measurement>, String> {
    let mut measurements = Vec::new();
    for (index, setup) in MATRIX.iter().enumerate() {
        println!(
            "xtask: bench [{}/{}] {} mode in {}...",
            index + 1,
            MATRIX.len(),
            setup.name(),
            setup.emulator.name()
        );
        let lines = boot(artifacts, *setup, options)?;
        measurements.extend(lines.into_iter().map(|line| Measurement {
            setup: *setup,
            line,
            cycles: None,
        }));
    }
    Ok(measurements)
}

/// The quick matrix on the release build, as `cargo xtask bench --quick` measures it, without
/// its report: what `cargo xtask notes` compares the notes' tables with.
pub fn quick_measurements(options: &BenchOptions) -> Result<Vec<Measurement>, String> {
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        check_emulator(emulator)?;
    }
    matrix(&artifacts::build(true)?, options)
}

/// Boots one setup running the `bench` program and returns its `BENCH` lines.
pub fn boot(
    artifacts: &Artifacts,
    setup: Setup,
    options: &BenchOptions,
) -> Result<Vec<Line>, String> {
    let scale = if options.quick { " scale=quick" } else { "" };
    let writes = options.console_writes;
    let cmdline = format!("{} domain=\"init bench{scale} writes={writes}\"", setup.mode_words());
    boot_cmdline(artifacts, setup, options, &cmdline, "bench")
}

/// Whether the host's KVM offers nested VMX or SVM (`kvm_intel` or `kvm_amd` loaded with
/// `nested=Y`).
fn nested(module: &str) -> bool {
    std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested"))
        .is_ok_and(|v| matches!(v.trim(), "Y" | "y" | "1"))
}

/// The `bench` program under QEMU+KVM, [`KVM_RUNS`] times per mode: the guest's `rdtsc` now
/// counts real cycles, so each measurement gets the median and the spread over the runs. The
/// counters (entries, exits, CR3 writes) are counts as everywhere.
fn kvm(artifacts: &Artifacts, options: &BenchOptions) -> Result<Vec<Measurement>, String> {
    let mut modes = vec![Mode::Pv, Mode::Native];
    if nested("kvm_intel") {
        modes.push(Mode::Vmx);
    }
    if nested("kvm_amd") {
        modes.push(Mode::Svm);
    }
    let mut out = Vec::new();
    for mode in modes {
        let setup = Setup { emulator: Emulator::Kvm, mode, shadow: false, uart: false };
        let mut runs: Vec<Vec<Line>> = Vec::new();
        for run in 1..=KVM_RUNS {
            println!("xtask: bench: {} mode under KVM, run {run}/{KVM_RUNS}...", mode.name());
            let writes = options.console_writes;
            let cmdline = format!("mode={} domain=\"init bench writes={writes}\"", mode.name());
            runs.push(boot_cmdline(artifacts, setup, options, &cmdline, "kvm")?);
        }
        for (index, line) in runs[0].iter().enumerate() {
            let mut per_op: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(index))
                .map(|l| l.instructions as f64 / l.ops as f64)
                .collect();
            per_op.sort_by(f64::total_cmp);
            let median = per_op[per_op.len() / 2];
            let (low, high) = (per_op[0], per_op[per_op.len() - 1]);
            out.push(Measurement { setup, line: line.clone(), cycles: Some((median, low, high)) });
        }
    }
    Ok(out)
}

/// The domain counts the domain-switch workload runs with.
pub const DOMAIN_COUNTS: [u32; 3] = [2, 4, 8];

/// Boots `domains` domains of 8 MiB yielding to each other in a ring (the guest kernel's
/// `domain-switch` workload); returns dom0's `BENCH` line.
pub fn boot_domain_switch(
    artifacts: &Artifacts,
    setup: Setup,
    options: &BenchOptions,
    domains: u32,
) -> Result<Vec<Line>, String> {
    let mut cmdline = format!("{} mem=8M", setup.mode_words());
    for _ in 0..domains {
        cmdline.push_str(&format!(" domain=domain-switch={domains}"));
    }
    boot_cmdline(artifacts, setup, options, &cmdline, &format!("switch{domains}"))
}

fn boot_cmdline(
    artifacts: &Artifacts,
    setup: Setup,
    options: &BenchOptions,
    cmdline: &str,
    what: &str,
) -> Result<Vec<Line>, String> {
    let label = format!("bench-{what}-{}-{}", setup.name(), setup.emulator.name());
    let dir = emulator::private_dir(&label)?;
    let disk = disk_for(artifacts, &dir, &artifacts::standard_bundle(artifacts, cmdline)?)?;
    let outcome = emulator::boot(&Boot {
        emulator: setup.emulator,
        disk: &disk,
        dir: &dir,
        timeout: options.timeout,
        echo: false,
        icount: true,
        amd: setup.mode == Mode::Svm,
    })?;
    if outcome.end != End::Status(0) {
        return Err(format!(
            "bench: {label} did not end with status 0 ({:?}); console in {}",
            outcome.end,
            dir.display()
        ));
    }
    // Only domain 0 reports (in the domain-switch ring every domain runs the workload).
    let lines: Vec<Line> = outcome
        .console
        .lines()
        .filter(|line| line.starts_with("[dom0] "))
        .filter_map(parse_line)
        .collect();
    if lines.is_empty() {
        return Err(format!("bench: no BENCH lines from {label}; console in {}", dir.display()));
    }
    Ok(lines)
}

/// The table, grouped by emulator.
pub fn table(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    let kvm: Vec<&Measurement> =
        measurements.iter().filter(|m| m.setup.emulator == Emulator::Kvm).collect();
    if !kvm.is_empty() {
        let _ = writeln!(
            out,
            "\nkvm (QEMU+KVM): per operation, CYCLES (time on this host), median of {KVM_RUNS} runs [lowest..highest]"
        );
        for m in kvm {
            let (median, low, high) = m.cycles.unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<16} {:<20} {:>8} {:>10.1} cycles [{low:.1}..{high:.1}]  entries {:.3}  VM exits {:.3}  CR3 {:.3}",
                m.line.workload,
                m.label(),
                m.line.ops,
                median,
                m.entries(),
                m.exits(),
                m.cr3()
            );
        }
    }
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        let rows: Vec<&Measurement> =
            measurements.iter().filter(|m| m.setup.emulator == emulator).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{} ({}): per operation, COUNTS not time",
            emulator.name(),
            match emulator {
                Emulator::Bochs => "clock: sync=none, ips=1000000000",
                _ => "-icount shift=0,sleep=off,align=off",
            }
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<20} {:>8} {:>14} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "workload",
            "path",
            "ops",
            "instructions",
            "entries",
            "VM exits",
            "CR3",
            "hidden",
            "transitions"
        );
        for m in rows {
            let _ = writeln!(
                out,
                "  {:<16} {:<20} {:>8} {:>14.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11.2}",
                m.line.workload,
                m.label(),
                m.line.ops,
                m.instructions(),
                m.entries(),
                m.exits(),
                m.cr3(),
                m.hidden(),
                m.transitions()
            );
        }
        let by_reason: Vec<String> = measurements
            .iter()
            .filter(|m| m.setup.emulator == emulator && !m.line.reasons.is_empty())
            .map(|m| {
                let reasons: Vec<String> = m
                    .line
                    .reasons
                    .iter()
                    .map(|&(slot, count)| {
                        let name = hypercall_abi::vm_exit::name_in(m.setup.mode, slot);
                        format!("{name} {:.3}", count as f64 / m.line.ops as f64)
                    })
                    .collect();
                format!("    {:<16} {:<20} {}", m.line.workload, m.label(), reasons.join(", "))
            })
            .collect();
        if !by_reason.is_empty() {
            let _ = writeln!(out, "  VM exits by reason, per operation (not the timer's):");
            for line in by_reason {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// The three ways to virtualise memory side by side, per emulator: pv on validated direct paging
/// and on shadow paging (`paging=shadow`), svm and vmx on shadow page tables (`npt=off`,
/// `ept=off`) and on nested ones, native for scale.
fn paging_ratios(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    let rows = [
        ("fork + exit + wait", "fork-exit-wait", "syscall"),
        ("first-touch page fault", "first-touch", "page-fault"),
        ("process context switch", "context-switch", "yield"),
        ("PTE update, batch 1", "pte-update", "batch-1"),
    ];
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        let setups = [
            ("direct (pv)", Setup { emulator, mode: Mode::Pv, shadow: false, uart: false }),
            ("shadow (pv)", Setup { emulator, mode: Mode::Pv, shadow: true, uart: false }),
            (
                "shadow (svm npt=off)",
                Setup { emulator, mode: Mode::Svm, shadow: true, uart: false },
            ),
            ("NPT (svm)", Setup { emulator, mode: Mode::Svm, shadow: false, uart: false }),
            (
                "shadow (vmx ept=off)",
                Setup { emulator, mode: Mode::Vmx, shadow: true, uart: false },
            ),
            ("EPT (vmx)", Setup { emulator, mode: Mode::Vmx, shadow: false, uart: false }),
            ("native", Setup { emulator, mode: Mode::Native, shadow: false, uart: false }),
        ];
        for (what, workload, path) in rows {
            let costs: Vec<String> = setups
                .iter()
                .filter_map(|(name, setup)| {
                    let m = measurements.iter().find(|m| {
                        m.setup == *setup && m.line.workload == workload && m.line.path == path
                    })?;
                    Some(format!(
                        "{name} {:.0} ({:.2} entries, {:.2} hidden)",
                        m.instructions(),
                        m.entries(),
                        m.hidden()
                    ))
                })
                .collect();
            if costs.len() > 1 {
                let _ = writeln!(
                    out,
                    "  {:<6} direct vs shadow vs NPT/EPT, {what}: {}",
                    emulator.name(),
                    costs.join(", ")
                );
            }
        }
    }
    out
}

/// One console byte (the `console-write` workload: a one-byte `write` each) through the
/// `console_io` hypercall and through the emulated UART (`console=uart`), per emulator and mode.
fn console_ratios(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    for (emulator, mode) in [(Emulator::Bochs, Mode::Vmx), (Emulator::Qemu, Mode::Svm)] {
        let find = |uart: bool| {
            measurements.iter().find(|m| {
                m.setup == Setup { emulator, mode, shadow: false, uart }
                    && m.line.workload == "console-write"
                    && m.line.path == "syscall"
            })
        };
        if let (Some(call), Some(uart)) = (find(false), find(true)) {
            let _ = writeln!(
                out,
                "  {:<6} {} console, one byte per write: console_io {:.0} ({:.2} exits), emulated UART {:.0} ({:.2} exits): {:.2}x",
                emulator.name(),
                mode.name(),
                call.instructions(),
                call.exits(),
                uart.instructions(),
                uart.exits(),
                uart.instructions() / call.instructions()
            );
        }
    }
    out
}

/// The measurement of `workload` by `path` in `mode` on `emulator`, if there is one.
fn find<'a>(
    measurements: &'a [Measurement],
    emulator: Emulator,
    mode: Mode,
    workload: &str,
    path: &str,
) -> Option<&'a Measurement> {
    measurements.iter().find(|m| {
        m.setup.emulator == emulator
            && m.setup.mode == mode
            && !m.setup.shadow
            && !m.setup.uart
            && m.line.workload == workload
            && m.line.path == path
    })
}

/// The ratios that answer the user's questions, per emulator.
pub fn ratios(measurements: &[Measurement]) -> String {
    let mut out = String::from("\nratios (instructions per operation, same emulator):\n");
    /// One side of a ratio: mode, workload, path.
    type Side = (Mode, &'static str, &'static str);
    let questions: [(&str, Side, Side); 13] = [
        (
            "trap-and-emulate syscall vs native syscall",
            (Mode::Trap, "null-syscall", "syscall"),
            (Mode::Native, "null-syscall", "syscall"),
        ),
        (
            "trap-and-emulate fork vs native fork",
            (Mode::Trap, "fork-exit-wait", "syscall"),
            (Mode::Native, "fork-exit-wait", "syscall"),
        ),
        (
            "trap-and-emulate first touch vs native first touch",
            (Mode::Trap, "first-touch", "page-fault"),
            (Mode::Native, "first-touch", "page-fault"),
        ),
        (
            "bounced pv syscall vs native syscall",
            (Mode::Pv, "null-syscall", "syscall"),
            (Mode::Native, "null-syscall", "syscall"),
        ),
        (
            "pv fast trap vs native int 0x80",
            (Mode::Pv, "null-syscall", "int80"),
            (Mode::Native, "null-syscall", "int80"),
        ),
        (
            "vmx syscall vs native syscall",
            (Mode::Vmx, "null-syscall", "syscall"),
            (Mode::Native, "null-syscall", "syscall"),
        ),
        (
            "pv hypercall vs vmx hypercall",
            (Mode::Pv, "null-hypercall", "hypercall"),
            (Mode::Vmx, "null-hypercall", "hypercall"),
        ),
        (
            "svm syscall vs native syscall",
            (Mode::Svm, "null-syscall", "syscall"),
            (Mode::Native, "null-syscall", "syscall"),
        ),
        (
            "pv hypercall vs svm hypercall",
            (Mode::Pv, "null-hypercall", "hypercall"),
            (Mode::Svm, "null-hypercall", "hypercall"),
        ),
        (
            "vmx hypercall vs svm hypercall",
            (Mode::Vmx, "null-hypercall", "hypercall"),
            (Mode::Svm, "null-hypercall", "hypercall"),
        ),
        (
            "vmx fork vs svm fork",
            (Mode::Vmx, "fork-exit-wait", "syscall"),
            (Mode::Svm, "fork-exit-wait", "syscall"),
        ),
        (
            "vmx first touch vs svm first touch",
            (Mode::Vmx, "first-touch", "page-fault"),
            (Mode::Svm, "first-touch", "page-fault"),
        ),
        (
            "vmx context switch vs svm context switch",
            (Mode::Vmx, "context-switch", "yield"),
            (Mode::Svm, "context-switch", "yield"),
        ),
    ];
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        for (question, (m1, w1, p1), (m2, w2, p2)) in questions {
            let (Some(a), Some(b)) = (
                find(measurements, emulator, m1, w1, p1),
                find(measurements, emulator, m2, w2, p2),
            ) else {
                continue;
            };
            let _ = writeln!(
                out,
                "  {:<6} {question}: {:.2}x ({:.1} vs {:.1})",
                emulator.name(),
                a.instructions() / b.instructions(),
                a.instructions(),
                b.instructions()
            );
        }
    }
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        for mode in [Mode::Pv, Mode::Vmx, Mode::Svm] {
            let costs: Vec<String> = DOMAIN_COUNTS
                .iter()
                .filter_map(|k| {
                    find(measurements, emulator, mode, "domain-switch", &format!("yield-{k}"))
                        .map(|m| format!("{k} domains {:.0}", m.instructions()))
                })
                .collect();
            if !costs.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<6} {} domain switch, instructions per switch: {}",
                    emulator.name(),
                    mode.name(),
                    costs.join(", ")
                );
            }
        }
    }
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        for mode in [Mode::Pv, Mode::Vmx, Mode::Svm, Mode::Trap, Mode::Native] {
            let costs: Vec<String> = ["batch-1", "batch-8", "batch-64", "batch-512"]
                .iter()
                .filter_map(|path| {
                    find(measurements, emulator, mode, "pte-update", path)
                        .map(|m| format!("{} {:.0}", &path[6..], m.instructions()))
                })
                .collect();
            if !costs.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<6} {} page-table update, instructions per PTE by batch size: {}",
                    emulator.name(),
                    mode.name(),
                    costs.join(", ")
                );
            }
        }
    }
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        let costs: Vec<String> = [Mode::Pv, Mode::Vmx, Mode::Svm, Mode::Trap, Mode::Native]
            .iter()
            .filter_map(|&mode| {
                find(measurements, emulator, mode, "event-delivery", "timer")
                    .map(|m| format!("{} {:.0}", mode.name(), m.instructions()))
            })
            .collect();
        if !costs.is_empty() {
            let _ = writeln!(
                out,
                "  {:<6} timer event delivered to the guest's handler, instructions per event: {}",
                emulator.name(),
                costs.join(", ")
            );
        }
    }
    out.push_str(&paging_ratios(measurements));
    out.push_str(&console_ratios(measurements));
    out.push_str(
        "  not measured here: KVM cycles (this machine's /dev/kvm cannot run the images)\n",
    );
    out
}

/// A target of the benchmark issue and how far the measurement is from it.
#[derive(Debug, PartialEq)]
pub struct Target {
    /// What is promised.
    pub what: String,
    /// Whether it holds.
    pub holds: bool,
    /// The measured value(s).
    pub measured: String,
    /// Whether it is a transition count (checked by `cargo xtask test`) rather than an
    /// instruction ratio (reported).
    pub counts_transitions: bool,
}

/// Checks the targets on every emulator where the needed measurements exist.
pub fn targets(measurements: &[Measurement]) -> Vec<Target> {
    let mut out = Vec::new();
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        // (Instruction targets are about the emulators' counts; KVM rows hold cycles.)
        let get = |mode, workload, path| find(measurements, emulator, mode, workload, path);
        let e = emulator.name();
        if let Some(pv) = get(Mode::Pv, "null-syscall", "syscall") {
            out.push(Target {
                what: format!("{e}: a bounced pv syscall costs exactly 1 hypervisor entry"),
                holds: pv.line.entries == pv.line.ops,
                measured: format!("{:.3} entries per syscall", pv.entries()),
                counts_transitions: true,
            });
            out.push(Target {
                what: format!("{e}: a bounced pv syscall costs 0 CR3 writes"),
                holds: pv.line.cr3 == 0,
                measured: format!("{:.3} CR3 writes per syscall", pv.cr3()),
                counts_transitions: true,
            });
            if let Some(native) = get(Mode::Native, "null-syscall", "syscall") {
                let ratio = pv.instructions() / native.instructions();
                out.push(Target {
                    what: format!(
                        "{e}: a bounced pv syscall takes at most 1.5x native syscall instructions"
                    ),
                    holds: ratio <= 1.5,
                    measured: format!("{ratio:.2}x"),
                    counts_transitions: false,
                });
            }
        }
        if let Some(pv) = get(Mode::Pv, "null-syscall", "int80") {
            out.push(Target {
                what: format!("{e}: the pv fast trap costs 0 hypervisor entries"),
                holds: pv.line.entries == 0,
                measured: format!("{:.3} entries per call", pv.entries()),
                counts_transitions: true,
            });
            if let Some(native) = get(Mode::Native, "null-syscall", "int80") {
                let ratio = pv.instructions() / native.instructions();
                out.push(Target {
                    what: format!(
                        "{e}: the pv fast trap is within 5% of native int 0x80 instructions"
                    ),
                    holds: (ratio - 1.0).abs() <= 0.05,
                    measured: format!("{ratio:.3}x"),
                    counts_transitions: false,
                });
            }
        }
        for mode in [Mode::Vmx, Mode::Svm] {
            let m = mode.name();
            for path in ["syscall", "int80"] {
                if let Some(hvm) = get(mode, "null-syscall", path) {
                    out.push(Target {
                        what: format!("{e}: {m} has 0 VM exits per {path} system call"),
                        holds: hvm.line.exits == 0,
                        measured: format!("{:.3} VM exits per call", hvm.exits()),
                        counts_transitions: true,
                    });
                }
            }
            if let Some(hvm) = get(mode, "null-hypercall", "hypercall") {
                out.push(Target {
                    what: format!("{e}: {m} has 1 VM exit per hypercall"),
                    holds: hvm.line.exits == hvm.line.ops,
                    measured: format!("{:.3} VM exits per hypercall", hvm.exits()),
                    counts_transitions: true,
                });
            }
            let hvm = get(mode, "null-syscall", "syscall");
            if let (Some(hvm), Some(native)) = (hvm, get(Mode::Native, "null-syscall", "syscall")) {
                let ratio = hvm.instructions() / native.instructions();
                out.push(Target {
                    what: format!(
                        "{e}: a syscall under {m} is within 1% of native syscall instructions"
                    ),
                    holds: (ratio - 1.0).abs() <= 0.01,
                    measured: format!("{ratio:.3}x"),
                    counts_transitions: false,
                });
            }
        }
    }
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        let one = find(measurements, emulator, Mode::Pv, "pte-update", "batch-1");
        let many = find(measurements, emulator, Mode::Pv, "pte-update", "batch-512");
        if let (Some(one), Some(many)) = (one, many) {
            let ratio = many.instructions() / one.instructions();
            out.push(Target {
                what: format!(
                    "{}: batched mmu_update at 512 costs at most 1/4 per PTE of batch size 1",
                    emulator.name()
                ),
                holds: ratio <= 0.25,
                measured: format!(
                    "{ratio:.3} ({:.1} vs {:.1} instructions per PTE)",
                    many.instructions(),
                    one.instructions()
                ),
                counts_transitions: false,
            });
        }
    }
    out.extend(xen_2003_targets(measurements));
    out
}

/// The targets of the pv performance issue (Xen's 2003 shape): pv against native in
/// instructions, per emulator, wherever both were measured (the timer event only in the full
/// bench). Reported as holds or MISSED; none is relaxed to meet a number.
fn xen_2003_targets(measurements: &[Measurement]) -> Vec<Target> {
    let mut out = Vec::new();
    for emulator in [Emulator::Qemu, Emulator::Bochs] {
        let e = emulator.name();
        let get = |mode, workload, path| find(measurements, emulator, mode, workload, path);
        let against_native = [
            ("fork + exit + wait", "fork-exit-wait", "syscall", 2.0),
            ("a first-touch page fault", "first-touch", "page-fault", 1.9),
            ("a process context switch", "context-switch", "yield", 2.0),
        ];
        for (what, workload, path, limit) in against_native {
            if let (Some(pv), Some(native)) =
                (get(Mode::Pv, workload, path), get(Mode::Native, workload, path))
            {
                let ratio = pv.instructions() / native.instructions();
                out.push(Target {
                    what: format!(
                        "{e}: {what} in pv costs at most {limit:.1}x native instructions"
                    ),
                    holds: ratio <= limit,
                    measured: format!(
                        "{ratio:.2}x ({:.0} vs {:.0})",
                        pv.instructions(),
                        native.instructions()
                    ),
                    counts_transitions: false,
                });
            }
        }
        let absolute = [
            ("a null hypercall", "null-hypercall", "hypercall", 150.0, "per call"),
            ("a PTE update alone", "pte-update", "batch-1", 300.0, "per PTE"),
            ("a PTE update in a batch of 512", "pte-update", "batch-512", 60.0, "per PTE"),
            ("a timer event delivered", "event-delivery", "timer", 500.0, "per event"),
        ];
        for (what, workload, path, limit, unit) in absolute {
            if let Some(pv) = get(Mode::Pv, workload, path) {
                out.push(Target {
                    what: format!("{e}: {what} in pv costs at most {limit:.0} instructions {unit}"),
                    holds: pv.instructions() <= limit,
                    measured: format!("{:.1}", pv.instructions()),
                    counts_transitions: false,
                });
            }
        }
        let above_native =
            [("a bounced pv syscall", "syscall", 20.0), ("the pv fast trap", "int80", 3.0)];
        for (what, path, limit) in above_native {
            let pv = get(Mode::Pv, "null-syscall", path);
            if let (Some(pv), Some(native)) = (pv, get(Mode::Native, "null-syscall", path)) {
                let above = pv.instructions() - native.instructions();
                out.push(Target {
                    what: format!("{e}: {what} costs at most native + {limit:.0} instructions"),
                    holds: above <= limit,
                    measured: format!("native + {above:.1}"),
                    counts_transitions: false,
                });
            }
        }
    }
    out
}

/// The targets, one line each.
pub fn report_targets(targets: &[Target]) -> String {
    let mut out = String::from("\ntargets:\n");
    for t in targets {
        let verdict = if t.holds { "holds " } else { "MISSED" };
        let _ = writeln!(out, "  {verdict} {}: {}", t.what, t.measured);
    }
    out
}

/// `results.json`, `results.csv` and one SVG chart per workload family into `dir`.
fn write_files(dir: &Path, measurements: &[Measurement]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("results.json", json(measurements))?;
    write("results.csv", csv(measurements))?;
    let mut families: Vec<&str> = measurements.iter().map(|m| m.line.workload.as_str()).collect();
    families.dedup();
    families.sort_unstable();
    families.dedup();
    for family in families {
        write(&format!("{family}.svg"), svg(family, measurements))?;
    }
    Ok(())
}

/// The keys of one result, in order (JSON and CSV share them).
const KEYS: [&str; 11] = [
    "emulator",
    "mode",
    "path",
    "workload",
    "ops",
    "instructions_per_op",
    "hypervisor_entries_per_op",
    "vm_exits_per_op",
    "cr3_writes_per_op",
    "hidden_faults_per_op",
    "transitions_per_op",
];

fn values(m: &Measurement) -> [String; 11] {
    [
        m.setup.emulator.name().to_string(),
        m.setup.name().to_string(),
        m.line.path.clone(),
        m.line.workload.clone(),
        m.line.ops.to_string(),
        format!("{:.3}", m.instructions()),
        format!("{:.4}", m.entries()),
        format!("{:.4}", m.exits()),
        format!("{:.4}", m.cr3()),
        format!("{:.4}", m.hidden()),
        format!("{:.3}", m.transitions()),
    ]
}

/// One JSON object per measurement, in an array.
pub fn json(measurements: &[Measurement]) -> String {
    let mut out = String::from("[\n");
    for (i, m) in measurements.iter().enumerate() {
        let fields: Vec<String> = KEYS
            .iter()
            .zip(values(m))
            .enumerate()
            .map(|(k, (key, value))| {
                if k < 4 {
                    format!("\"{key}\": \"{value}\"")
                } else {
                    format!("\"{key}\": {value}")
                }
            })
            .collect();
        let mut fields = fields;
        if let Some((median, low, high)) = m.cycles {
            // Under KVM `rdtsc` counts cycles: there is no instruction count to report.
            fields[5] = "\"instructions_per_op\": null".into();
            fields.push(format!("\"cycles_per_op\": {median:.1}"));
            fields.push(format!("\"cycles_spread\": [{low:.1}, {high:.1}]"));
        }
        let comma = if i + 1 < measurements.len() { "," } else { "" };
        let _ = writeln!(out, "  {{{}}}{comma}", fields.join(", "));
    }
    out.push_str("]\n");
    out
}

/// A header line and one line per measurement.
pub fn csv(measurements: &[Measurement]) -> String {
    let mut out = KEYS.join(",");
    out.push('\n');
    for m in measurements {
        out.push_str(&values(m).join(","));
        out.push('\n');
    }
    out
}

/// A horizontal bar chart of instructions per operation for one workload family: one bar per
/// emulator, mode and path; a log axis when the bars span more than a factor of 20.
pub fn svg(family: &str, measurements: &[Measurement]) -> String {
    let rows: Vec<&Measurement> =
        measurements.iter().filter(|m| m.line.workload == family).collect();
    let max = rows.iter().map(|m| m.instructions()).fold(1.0, f64::max);
    let min = rows.iter().map(|m| m.instructions()).filter(|v| *v > 0.0).fold(max, f64::min);
    let log = max / min.max(1.0) > 20.0;
    let scale = |v: f64| {
        let width = 480.0;
        if log {
            width * (v.max(1.0)).ln() / max.ln().max(1.0)
        } else {
            width * v / max
        }
    };
    let height = 40 + 24 * rows.len();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"monospace\" font-size=\"12\">\n"
    );
    let _ = writeln!(
        out,
        "  <text x=\"10\" y=\"18\">{family}: instructions per operation ({} axis; counts, not time)</text>",
        if log { "log" } else { "linear" }
    );
    for (i, m) in rows.iter().enumerate() {
        let y = 30 + 24 * i;
        let _ = writeln!(
            out,
            "  <text x=\"10\" y=\"{}\">{} {}</text>\n  <rect x=\"200\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"#4878a8\"/>\n  <text x=\"{:.1}\" y=\"{}\">{:.1}</text>",
            y + 12,
            m.setup.emulator.name(),
            m.label(),
            scale(m.instructions()),
            205.0 + scale(m.instructions()),
            y + 12,
            m.instructions()
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        workload: &str,
        path: &str,
        ops: u64,
        instructions: u64,
        entries: u64,
        cr3: u64,
    ) -> Line {
        Line {
            workload: workload.into(),
            path: path.into(),
            ops,
            instructions,
            entries,
            cr3,
            ..Line::default()
        }
    }

    #[test]
    fn bench_lines_parse_with_their_prefix() {
        let parsed = parse_line(
            "[dom0] BENCH workload=null-hypercall path=hypercall ops=1000 instructions=465569 entries=1000 exits=1000 cr3=0 timer=9 reasons=18x1000,30x2",
        )
        .unwrap();
        assert_eq!(parsed.workload, "null-hypercall");
        assert_eq!((parsed.ops, parsed.instructions, parsed.exits), (1000, 465569, 1000));
        assert_eq!(parsed.reasons, vec![(18, 1000), (30, 2)]);
        assert_eq!(parsed.hidden, 0, "no hidden= field: not shadowed");
        let shadowed = parse_line(
            "BENCH workload=first-touch path=page-fault ops=10 instructions=90000 entries=30 exits=0 cr3=60 timer=0 hidden=20 reasons=none",
        )
        .unwrap();
        assert_eq!((shadowed.entries, shadowed.hidden), (30, 20));
        assert_eq!(parse_line("[dom0] bench: done"), None);
        assert_eq!(parse_line("BENCH workload=x path=y ops=0"), None, "no operations");
        assert_eq!(parse_line("BENCH workload=x path=y ops=5 bogus=1"), None);
    }

    #[test]
    fn per_operation_figures_and_transitions() {
        let pv = Measurement {
            setup: Setup { emulator: Emulator::Bochs, mode: Mode::Pv, shadow: false, uart: false },
            line: line("null-syscall", "syscall", 1000, 1_060_000, 1000, 2000),
            cycles: None,
        };
        assert_eq!(pv.instructions(), 1060.0);
        assert_eq!(pv.cr3(), 2.0);
        // In through xen-lite (2), then iretq 1 -> 3 (1).
        assert_eq!(pv.transitions(), 3.0);
        let trap = Measurement {
            setup: Setup { emulator: Emulator::Bochs, mode: Mode::Pv, shadow: false, uart: false },
            line: line("null-syscall", "int80", 1000, 165_000, 0, 0),
            cycles: None,
        };
        assert_eq!(trap.transitions(), 2.0);
        let native = Measurement {
            setup: Setup {
                emulator: Emulator::Bochs,
                mode: Mode::Native,
                shadow: false,
                uart: false,
            },
            line: line("null-syscall", "syscall", 1000, 163_000, 0, 0),
            cycles: None,
        };
        let all = [pv, trap, native];
        let targets = targets(&all);
        let cr3 = targets.iter().find(|t| t.what.contains("0 CR3 writes")).unwrap();
        assert!(!cr3.holds && cr3.counts_transitions);
        let entry = targets.iter().find(|t| t.what.contains("exactly 1 hypervisor entry")).unwrap();
        assert!(entry.holds);
        let ratio = targets.iter().find(|t| t.what.contains("1.5x")).unwrap();
        assert!(!ratio.holds && ratio.measured == "6.50x");
        assert!(ratios(&all).contains("bounced pv syscall vs native syscall: 6.50x"));
    }

    #[test]
    fn the_xen_2003_targets_hold_or_are_missed_by_the_measured_value() {
        let at = |mode, workload: &str, path: &str, ops, instructions| Measurement {
            setup: Setup { emulator: Emulator::Bochs, mode, shadow: false, uart: false },
            line: line(workload, path, ops, instructions, 0, 0),
            cycles: None,
        };
        let all = [
            at(Mode::Pv, "fork-exit-wait", "syscall", 10, 600_000),
            at(Mode::Native, "fork-exit-wait", "syscall", 10, 300_000),
            at(Mode::Pv, "pte-update", "batch-1", 100, 30_001),
            at(Mode::Pv, "null-syscall", "int80", 1000, 133_000),
            at(Mode::Native, "null-syscall", "int80", 1000, 130_000),
        ];
        let targets = xen_2003_targets(&all);
        let fork = targets.iter().find(|t| t.what.contains("fork")).unwrap();
        assert!(fork.holds, "exactly 2.0x holds: {}", fork.measured);
        assert_eq!(fork.measured, "2.00x (60000 vs 30000)");
        let pte = targets.iter().find(|t| t.what.contains("PTE update alone")).unwrap();
        assert!(!pte.holds && pte.measured == "300.0", "300.01 misses 300: {}", pte.measured);
        let trap = targets.iter().find(|t| t.what.contains("fast trap")).unwrap();
        assert!(trap.holds && trap.measured == "native + 3.0");
        assert!(
            !targets.iter().any(|t| t.what.contains("timer event")),
            "no target for what was not measured"
        );
    }

    #[test]
    fn files_carry_every_key() {
        let m = Measurement {
            setup: Setup {
                emulator: Emulator::Qemu,
                mode: Mode::Native,
                shadow: false,
                uart: false,
            },
            line: line("first-touch", "page-fault", 50, 74_620, 0, 0),
            cycles: None,
        };
        let json = json(std::slice::from_ref(&m));
        for key in KEYS {
            assert!(json.contains(&format!("\"{key}\"")), "{key}");
        }
        assert!(json.contains("\"instructions_per_op\": 1492.400"));
        let csv = csv(std::slice::from_ref(&m));
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("qemu,native,page-fault,first-touch,50,"));
        assert!(svg("first-touch", std::slice::from_ref(&m)).contains("<rect"));
        // Under KVM the figure is time: cycles, with the spread, and no instruction count.
        let kvm = Measurement {
            setup: Setup { emulator: Emulator::Kvm, mode: Mode::Pv, shadow: false, uart: false },
            cycles: Some((120.5, 118.0, 131.25)),
            ..m
        };
        let json = super::json(std::slice::from_ref(&kvm));
        assert!(json.contains("\"instructions_per_op\": null"));
        assert!(json.contains("\"cycles_per_op\": 120.5, \"cycles_spread\": [118.0, 131.2]"));
        assert!(table(&[kvm]).contains("CYCLES (time on this host)"));
    }
}
