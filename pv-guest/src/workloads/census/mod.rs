//! `census`: Popek and Goldberg's question asked of this machine, one instruction at a time.
//!
//! A machine can be virtualised by trap-and-emulate if every *sensitive* instruction (one that
//! reads or changes the machine's control state, or behaves differently depending on it) is
//! *privileged* (traps when run outside the most privileged ring). The census runs each of the
//! instructions in [`ITEMS`], in the kernel's ring (ring 0 natively and under VMX or SVM, ring
//! 1 in `pv`) or in ring 3, and prints what happened, one `CENSUS` line each:
//!
//! ```text
//! CENSUS n=12 ring=kernel name=sgdt outcome=ran value=kernel's-table entries=0 instructions=14
//! ```
//!
//! - `outcome` is `ran` (the snippet reached its end) or the exception it raised (`#GP`,
//!   `#UD`, ...), caught by the kernel's own handler (`traps::catch`);
//! - `value` is what the instruction showed, in words that compare across modes: a ring, a
//!   flag, whether a table or an entry point is the kernel's own (inside its image) or not;
//! - `entries` is how many times the hypervisor was entered for it (VM exits included, the
//!   timer's not), beyond what an empty snippet costs: more than 0 means it trapped to the
//!   hypervisor and came back emulated. `instructions` is the same difference in the time-stamp
//!   counter, which counts instructions in the emulators (DESIGN §9).
//!
//! An instruction the hypervisor kills for (`pv` kills a ring-1 `cli`, `mov cr3`, `lgdt`, ...)
//! ends the run after its line was *not* printed: `cargo xtask census` boots again with
//! `census=N`, which starts at item N, and records the kill. `hlt` is left out (with nothing
//! to wake it, it would wait for ever natively) and so are `ltr` (a busy TSS faults on every
//! machine) and far `call`/`jmp` (AMD and Intel decode their 64-bit forms differently).

mod snippets;

use core::sync::atomic::Ordering;

use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::{HYPERVISOR_END, HYPERVISOR_START};
use hypercall_abi::page_table::ADDRESS_MASK;
use hypercall_abi::{vm_exit, StartInfo};

use crate::traps::{catch, catch_in_kernel, Caught};
use crate::{platform, println};
use snippets::{
    census_out, census_stack_top, Item, Ring, Show, ITEMS, KERNEL_IMAGE, OUT, OUT2, ROOT,
};

/// The exits xen-lite's own tick causes, whatever the guest does. (The census runs with the
/// guest's events off, so the rest of `vm_exit::TIMER_REASONS`, its `out` and `hlt`, can only
/// be the instruction's.)
const TICK_REASONS: [u16; 3] =
    [vm_exit::EXTERNAL_INTERRUPT, vm_exit::PREEMPTION_TIMER, vm_exit::INTERRUPT_WINDOW];

/// Entries into the hypervisor so far, VM exits included, the tick's not; `None` natively.
fn entries() -> Option<u64> {
    let s = platform::stats().ok()?;
    let timer: u64 = TICK_REASONS.iter().map(|&r| s.vm_exits[usize::from(r)]).sum();
    Some(s.entries_hypercall + s.entries_exception + s.entries_syscall + s.vm_exits_total() - timer)
}

/// The time-stamp counter: retired instructions in the emulators.
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter (CR4.TSD is clear in every mode).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Runs item `item` once: what it raised (vector 6 at its `ud2` is "ran"), and the entries and
/// instructions it took.
fn run(item: &Item) -> (Caught, Option<u64>, u64) {
    OUT.store(0, Ordering::Relaxed);
    OUT2.store(0, Ordering::Relaxed);
    // SAFETY: written only by the user snippets, which do not run now.
    unsafe { core::ptr::addr_of!(census_out).cast_mut().write_volatile([0, 0]) };
    let (before, start) = (entries(), rdtsc());
    let caught = match item.ring {
        Ring::Kernel => catch_in_kernel(item.start as usize as u64),
        Ring::User => catch(
            item.start as usize as u64,
            hypercall_abi::layout::selectors::FLAT_RING3_CS,
            core::ptr::addr_of!(census_stack_top) as u64,
            hypercall_abi::layout::selectors::FLAT_RING3_DS,
        ),
    };
    let (end, after) = (rdtsc(), entries());
    // The snippets may leave IF set (`sti`, `popf`): the census runs with events off.
    platform::events_disable();
    (caught, before.zip(after).map(|(b, a)| a - b), end - start)
}

/// Whether `caught` is the snippet's closing `ud2`: the instruction ran and the snippet reached
/// its end (an unknown instruction raises #UD too, but at itself).
fn reached_end(caught: &Caught) -> bool {
    // SAFETY: a #UD's rip is in a snippet, in the kernel's image, readable in every mode.
    caught.vector == 6 && unsafe { (caught.rip as *const [u8; 2]).read_unaligned() } == [0x0f, 0x0b]
}

/// The exception's name, as the census prints an outcome.
fn exception(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        3 => "#BP",
        6 => "#UD",
        13 => "#GP",
        14 => "#PF",
        _ => "#other",
    }
}

/// What the item's snippet stored, in the census's words.
fn shown(show: Show, ring: Ring) -> Shown {
    let (word, second) = match ring {
        Ring::Kernel => (OUT.load(Ordering::Relaxed), OUT2.load(Ordering::Relaxed)),
        // SAFETY: the user snippet has finished; the words are plain memory.
        Ring::User => unsafe {
            let out = core::ptr::addr_of!(census_out).read_volatile();
            (out[0], out[1])
        },
    };
    let in_kernel = |address: u64| address >= KERNEL_IMAGE;
    match show {
        Show::Nothing => Shown::Text("-"),
        Show::Flags => Shown::Flags(word >> 9 & 1, word >> 12 & 3),
        Show::PopfIf => Shown::PopfIf(word >> 9 & 1, second >> 9 & 1),
        Show::Rpl => Shown::Number("RPL", word & 3),
        Show::Dpl => Shown::Number("DPL", word >> 13 & 3),
        Show::Hex => Shown::Hex(word & 0xffff_ffff),
        Show::Bits(mask) => Shown::Hex(word & mask),
        Show::TableBase | Show::KernelAddress if in_kernel(word) => Shown::Text("the-kernel's"),
        // xen-lite's own, in the range it reserves (its addresses change with every build).
        Show::TableBase | Show::KernelAddress
            if (HYPERVISOR_START..HYPERVISOR_END).contains(&word) =>
        {
            Shown::Text("the-hypervisor's")
        }
        Show::TableBase | Show::KernelAddress => Shown::Foreign(word),
        Show::Root if word & ADDRESS_MASK == ROOT.load(Ordering::Relaxed) => {
            Shown::Text("the-kernel's-root")
        }
        Show::Root => Shown::Foreign(word),
        Show::HypervisorBit => Shown::Number("hypervisor-bit", word >> 31 & 1),
    }
}

/// A value as a `CENSUS` line prints it (one word, no spaces).
enum Shown {
    Text(&'static str),
    Flags(u64, u64),
    PopfIf(u64, u64),
    Number(&'static str, u64),
    Hex(u64),
    Foreign(u64),
}

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Shown::Text(text) => f.write_str(text),
            Shown::Flags(interrupts, iopl) => write!(f, "IF={interrupts},IOPL={iopl}"),
            Shown::PopfIf(set, cleared) => write!(f, "IF-set={set},IF-cleared={cleared}"),
            Shown::Number(what, n) => write!(f, "{what}={n}"),
            Shown::Hex(word) => write!(f, "{word:#x}"),
            Shown::Foreign(word) => write!(f, "not-the-kernel's:{word:#x}"),
        }
    }
}

/// Runs of each instruction its cost is the least of.
const COST_RUNS: usize = 8;

/// Runs the census from item `from` on; each item's line is printed as soon as it has run.
pub fn census(info: &StartInfo, from: usize) -> Result<(), Errno> {
    let root = crate::page_tables::start_of_day_root(info);
    platform::load_root(root)?;
    ROOT.store(root & ADDRESS_MASK, Ordering::Relaxed);
    platform::events_disable();
    println!("census: {} instructions, starting at {from}", ITEMS.len());
    // What an empty snippet costs in each ring (the catch, the readings, the way in and out,
    // which under trap-and-emulate differ): subtracted from every item of that ring.
    let base = |ring: Ring| {
        let nop = ITEMS.iter().find(|i| i.ring == ring && i.name == "nop").unwrap_or(&ITEMS[0]);
        run(nop);
        let (_, entries, instructions) = (0..COST_RUNS)
            .map(|_| run(nop))
            .min_by_key(|run| run.2)
            .unwrap_or((Caught::default(), None, 0));
        (entries, instructions)
    };
    let (kernel_base, user_base) = (base(Ring::Kernel), base(Ring::User));
    for (n, item) in ITEMS.iter().enumerate().skip(from) {
        // The first run's outcome and value; the cost is the least of `COST_RUNS` more runs, so
        // that a timer's exit or interrupt landing inside one of them is not counted as the
        // instruction's (the timer's own entries are left out of `entries`, its instructions
        // cannot be).
        let (caught, _, _) = run(item);
        let value = reached_end(&caught).then(|| shown(item.show, item.ring));
        let (entries, instructions) = (0..COST_RUNS)
            .map(|_| run(item))
            .map(|(_, entries, instructions)| (entries, instructions))
            .min_by_key(|&(_, instructions)| instructions)
            .unwrap_or((None, 0));
        let ran = reached_end(&caught);
        let ring = if item.ring == Ring::Kernel { "kernel" } else { "user" };
        let (base_entries, base_instructions) =
            if item.ring == Ring::Kernel { kernel_base } else { user_base };
        let outcome = if ran { "ran" } else { exception(caught.vector) };
        let value = value.unwrap_or(Shown::Text("-"));
        let extra = entries.zip(base_entries).map_or(0, |(e, b)| e.saturating_sub(b));
        println!(
            "CENSUS n={n} ring={ring} name={} outcome={outcome} value={value} entries={extra} instructions={}",
            item.name,
            instructions.saturating_sub(base_instructions)
        );
    }
    println!("census: done");
    Ok(())
}
