//! A seeded hypercall fuzzer (`fuzz=SEED:COUNT`): COUNT hypercalls with random numbers and
//! arguments, biased toward the values that break hypervisors (boundaries, the domain's own
//! frames and page tables, the shared page, xen-lite's addresses, another domain's frames).
//! Run with `audit=on` beside a bystander, it asks xen-lite to survive every call with an errno
//! or a correct answer while the auditor checks the invariants after each one.
//!
//! The fuzzer is hostile to xen-lite, not to itself: page-table requests aim at frames and
//! slots set aside for fuzzing (scratch frames, unused slots), never at the entries the kernel
//! runs on, and after a call that changed its trap table, callbacks or mappings it puts its own
//! back. Everything else is fair game. The same seed makes the same calls.

use hypercall_abi::hypercall::{
    Errno, Hypercall, MmuUpdate, MmuextOp, Stats, CONSOLEIO_MAX, CONSOLEIO_WRITE,
    MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, MMU_BATCH_MAX, SCHEDOP_SHUTDOWN,
    SCHEDOP_YIELD,
};
use hypercall_abi::layout::{
    gfn_to_va, GUEST_DIRECT_MAP, GUEST_KERNEL_BASE, HYPERVISOR_END, HYPERVISOR_START, PAGE_SIZE,
    USER_END,
};
use hypercall_abi::page_table::{address, index, PRESENT};
use hypercall_abi::StartInfo;

use crate::{platform, println};

/// xorshift64*: small, fast, and the same on every run for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// Frames set aside for fuzzing: mapped read-only in the direct map, so they may be typed.
const SCRATCH: usize = 8;

/// Buffers the fuzzer points hypercalls at when it wants a valid pointer.
struct Buffers {
    records: [[u64; 2]; 4],
    done: u64,
    stats: [u64; Stats::WORDS],
    text: [u8; 16],
}

static mut BUFFERS: Buffers =
    Buffers { records: [[0; 2]; 4], done: 0, stats: [0; Stats::WORDS], text: [b'~'; 16] };

/// What the fuzzer knows about its domain.
struct Target<'a> {
    info: &'a StartInfo,
    scratch: [u64; SCRATCH],
    l4: u64,
    l2: u64,
}

impl Target<'_> {
    fn machine(&self, gfn: u64) -> u64 {
        self.info.pte_base + gfn * PAGE_SIZE
    }

    /// The machine address of the direct-map entry that maps `gfn`.
    fn direct_map_slot(&self, gfn: u64) -> u64 {
        let va = gfn_to_va(gfn);
        let l2_va = gfn_to_va((self.l2 - self.info.pte_base) / PAGE_SIZE);
        // SAFETY: the kernel's own L2, mapped readable in the direct map.
        let l1 = unsafe { ((l2_va + index(va, 2) as u64 * 8) as *const u64).read_volatile() };
        address(l1) + index(va, 1) as u64 * 8
    }

    /// A pointer worth trying.
    fn pointer(&self, rng: &mut Rng, valid: u64) -> u64 {
        let end = gfn_to_va(self.info.nr_pages);
        let choices = [
            valid,
            valid,
            0,
            1,
            u64::MAX,
            u64::MAX - 7,
            1 << 63,
            USER_END,
            USER_END - 8,
            0x40_0000,
            HYPERVISOR_START,
            HYPERVISOR_END - 8,
            GUEST_DIRECT_MAP - 8,
            end - 8,
            end,
            self.info.pt_base,
            self.info.shared_info,
            self.info.hypercall_page,
            GUEST_KERNEL_BASE,
            gfn_to_va(self.scratch[0]),
            valid & 0x0000_ffff_ffff_ffff, // the non-canonical twin
            rng.next(),
        ];
        rng.pick(&choices)
    }

    /// A pointer for xen-lite to write through: the same, less the pages whose overwriting
    /// would end the fuzzer rather than test xen-lite (its code, its hypercall page, its
    /// shared page); xen-lite must refuse the page tables among the rest.
    fn output(&self, rng: &mut Rng, valid: u64) -> u64 {
        let end = gfn_to_va(self.info.nr_pages);
        let choices = [
            valid,
            valid,
            0,
            u64::MAX - 7,
            USER_END - 8,
            HYPERVISOR_START,
            end - 8,
            end,
            self.info.pt_base,
            gfn_to_va(self.scratch[0]),
            valid & 0x0000_ffff_ffff_ffff,
        ];
        rng.pick(&choices)
    }

    /// A machine frame number worth trying.
    fn frame(&self, rng: &mut Rng) -> u64 {
        let base = self.info.pte_base >> 12;
        let choices = [
            self.scratch[rng.below(SCRATCH as u64) as usize] + base,
            self.scratch[rng.below(SCRATCH as u64) as usize] + base,
            self.l4 >> 12,
            self.l2 >> 12,
            (self.info.shared_info - GUEST_DIRECT_MAP) / PAGE_SIZE + base,
            (self.info.pt_base - GUEST_DIRECT_MAP) / PAGE_SIZE + base,
            base + self.info.nr_pages, // the next domain's first frame
            base.wrapping_sub(1),      // the frame before
            1,                         // xen-lite's
            0,
            rng.next() >> 12,
        ];
        rng.pick(&choices)
    }

    /// A page-table entry worth trying.
    fn entry(&self, rng: &mut Rng) -> u64 {
        let random = rng.next() & 0xfff;
        let flags = rng.pick(&[0u64, 1, 3, 7, 0x83, 0x63, 1 << 63 | 3, random]);
        if rng.below(8) == 0 {
            return rng.next();
        }
        (self.frame(rng) << 12) | flags
    }

    /// A slot the fuzzer may write: in a scratch frame, or an unused one of its own tables.
    fn slot(&self, rng: &mut Rng) -> u64 {
        let slot = rng.below(512) * 8;
        let choices = [
            self.machine(self.scratch[rng.below(SCRATCH as u64) as usize]) + slot,
            self.l2 + (500 + rng.below(12)) * 8, // unused: the direct map needs the first slots
            self.l4 + (256 + rng.below(16)) * 8, // xen-lite's reserved slots
            self.l4 + rng.below(200) * 8,        // the empty user half of the kernel's L4
            (self.frame(rng) << 12) + slot,
        ];
        rng.pick(&choices) | rng.pick(&[0, 0, 0, 1, 2, 7])
    }
}

/// Outcomes by kind, for the report.
#[derive(Default)]
struct Tally {
    ok: u64,
    errnos: [u64; 16],
}

const ERRNOS: [Errno; 11] = Errno::ALL;

/// Runs `count` hypercalls from `seed`; the domain's exit code (0: it got through all of them).
pub fn run(info: &StartInfo, seed: u64, count: u64) -> u8 {
    let mut rng = Rng(seed.max(1));
    let Some(target) = prepare(info) else {
        println!("fuzz: cannot set aside scratch frames");
        return 1;
    };
    // Events stay masked: a call that replaced the callbacks must not have an upcall delivered
    // to them before `restore` puts the kernel's back.
    platform::events_disable();
    let mut tally = Tally::default();
    for _ in 0..count {
        let result = one_call(&target, &mut rng);
        match Errno::from_return(result) {
            Some(errno) => {
                let index = ERRNOS.iter().position(|&e| e == errno).unwrap_or(15);
                tally.errnos[index] += 1;
            }
            None => tally.ok += 1,
        }
    }
    println!("fuzz: {count} calls (seed {seed}): {} answered, errnos:", tally.ok);
    for (errno, &n) in ERRNOS.iter().zip(&tally.errnos).filter(|(_, n)| **n > 0) {
        println!("fuzz:   {errno:?} {n}");
    }
    println!("fuzz: done, the kernel still runs");
    0
}

/// Sets aside the scratch frames (zeroed, mapped read-only) and finds its tables.
fn prepare(info: &StartInfo) -> Option<Target<'_>> {
    let mut scratch = [0; SCRATCH];
    for gfn in scratch.iter_mut() {
        *gfn = crate::frames::alloc()?;
        // SAFETY: a frame just allocated, mapped writable in the direct map.
        unsafe { core::ptr::write_bytes(gfn_to_va(*gfn) as *mut u8, 0, PAGE_SIZE as usize) };
        let machine = info.pte_base + *gfn * PAGE_SIZE;
        let _ = platform::update_va_mapping(gfn_to_va(*gfn), machine | PRESENT);
    }
    let l4 = info.pte_base + (info.pt_base - GUEST_DIRECT_MAP);
    // SAFETY: the kernel's own tables, mapped read-only (pv) or writable (hvm) in the direct map.
    let peek = |va: u64| address(unsafe { (va as *const u64).read_volatile() });
    let l3 = peek(info.pt_base + 511 * 8);
    let l2 = peek(gfn_to_va((l3 - info.pte_base) / PAGE_SIZE) + 510 * 8);
    Some(Target { info, scratch, l4, l2 })
}

/// One random hypercall; returns what it returned. Puts back what it must to go on.
fn one_call(t: &Target<'_>, rng: &mut Rng) -> u64 {
    let buffers = core::ptr::addr_of_mut!(BUFFERS);
    // SAFETY: one CPU, one fuzzer; the buffers are only read by xen-lite during the call.
    let (records, done, stats, text) = unsafe {
        (
            (*buffers).records.as_mut_ptr() as u64,
            core::ptr::addr_of_mut!((*buffers).done) as u64,
            (*buffers).stats.as_mut_ptr() as u64,
            (*buffers).text.as_ptr() as u64,
        )
    };
    let number = if rng.below(10) < 8 { rng.pick(Hypercall::ALL) as u64 } else { rng.below(70) };
    let small = |rng: &mut Rng| rng.pick(&[0u64, 1, 2, 3, 7, 63, 64, 255, 256, 1 << 32, u64::MAX]);
    let mut args = [0u64; 5];
    let hypercall = Hypercall::from_number(number);
    match hypercall {
        Some(Hypercall::MmuUpdate) => {
            for i in 0..4 {
                let record = [t.slot(rng), t.entry(rng)];
                // SAFETY: as above.
                unsafe { (*buffers).records[i] = record };
            }
            let count = rng.pick(&[0, 1, 2, 4, 5, MMU_BATCH_MAX, MMU_BATCH_MAX + 1, u64::MAX]);
            args = [t.pointer(rng, records), count, t.output(rng, done), 0, 0];
        }
        Some(Hypercall::MmuextOp) => {
            for i in 0..4 {
                let mut cmd = rng.below(12);
                let mut arg = t.frame(rng);
                if cmd == MMUEXT_NEW_BASEPTR
                    && t.scratch.iter().any(|&g| g + (t.info.pte_base >> 12) == arg)
                {
                    arg = t.l4 >> 12; // a scratch frame would validate as an empty L4 and run
                }
                if rng.below(16) == 0 {
                    (cmd, arg) = (rng.next(), rng.next());
                }
                // SAFETY: as above.
                unsafe { (*buffers).records[i] = [cmd, arg] };
            }
            let count = rng.pick(&[0, 1, 2, 4, 5, u64::MAX]);
            args = [t.pointer(rng, records), count, t.output(rng, done), 0, 0];
        }
        Some(Hypercall::UpdateVaMapping) => {
            let va = gfn_to_va(t.scratch[rng.below(SCRATCH as u64) as usize]);
            args = [t.pointer(rng, va), t.entry(rng), rng.below(4), 0, 0];
            if args[0] != va && Some(args[0]) != Some(va & 0x0000_ffff_ffff_ffff) {
                args[0] = rng.pick(&[HYPERVISOR_START, USER_END, 0x40_0000, u64::MAX, va]);
            }
        }
        Some(Hypercall::ConsoleIo) => {
            // Valid text only with length 0, so the console stays readable; bad pointers with
            // a length that would print.
            let len = rng.pick(&[0, CONSOLEIO_MAX + 1, u64::MAX, 8]);
            let bad = rng.pick(&[
                0,
                u64::MAX - 3,
                USER_END,
                HYPERVISOR_START,
                gfn_to_va(t.info.nr_pages) - 4,
            ]);
            let buffer = if len == 8 { bad } else { text };
            args = [rng.pick(&[CONSOLEIO_WRITE, 0, 5, u64::MAX]), len, buffer, 0, 0];
        }
        Some(Hypercall::SchedOp) => {
            let command = rng.pick(&[SCHEDOP_YIELD, SCHEDOP_SHUTDOWN, 3, 9, u64::MAX]);
            let arg = if command == SCHEDOP_SHUTDOWN { 100 + rng.below(1000) } else { small(rng) };
            args = [command, arg, 0, 0, 0];
        }
        Some(Hypercall::Stats) => args = [t.output(rng, stats), 0, 0, 0, 0],
        Some(Hypercall::SetTimerOp) => {
            let random = rng.next();
            args = [rng.pick(&[0, 1, u64::MAX, random]), 0, 0, 0, 0];
        }
        Some(Hypercall::EventChannelOp) => args = [rng.below(9), small(rng), small(rng), 0, 0],
        _ => {
            for arg in args.iter_mut() {
                *arg = if rng.below(2) == 0 { t.pointer(rng, records) } else { small(rng) };
            }
        }
    }
    let result = platform::hypercall(number, args);
    restore(t, hypercall, result);
    result
}

/// Undoes what a successful call changed that the fuzzer needs: its trap table, stack and
/// callbacks; its scratch mappings; anything pinned; slots it may have filled.
fn restore(t: &Target<'_>, hypercall: Option<Hypercall>, result: u64) {
    if Errno::from_return(result).is_some() && hypercall != Some(Hypercall::MmuUpdate) {
        return; // refused: nothing changed (a batch may have applied a prefix)
    }
    match hypercall {
        Some(Hypercall::SetTrapTable | Hypercall::StackSwitch | Hypercall::SetCallbacks) => {
            platform::install_traps().expect("the kernel's own trap table is valid");
        }
        Some(Hypercall::UpdateVaMapping) => scratch_mappings(t),
        Some(Hypercall::MmuextOp) => {
            for &gfn in &t.scratch {
                let frame = t.machine(gfn) >> 12;
                for _ in 0..4 {
                    let (_, result) =
                        platform::mmuext_op(&[MmuextOp { cmd: MMUEXT_UNPIN_TABLE, arg: frame }]);
                    if result.is_err() {
                        break;
                    }
                }
            }
            // Unpinning its own L4 leaves it typed (it is CR3); pin it again for the next round.
            let l4 = MmuextOp { cmd: MMUEXT_PIN_L4_TABLE, arg: t.l4 >> 12 };
            let _ = platform::mmuext_op(&[l4]);
            scratch_mappings(t);
        }
        Some(Hypercall::MmuUpdate) => {
            // Clear every slot the records named that is one of its own unused ones.
            // SAFETY: one CPU; the records were the call's input.
            let records = unsafe { (*core::ptr::addr_of!(BUFFERS)).records };
            for [ptr, _] in records {
                let own_unused = (t.l2 + 500 * 8..t.l2 + 4096).contains(&(ptr & !7))
                    || (t.l4..t.l4 + 200 * 8).contains(&(ptr & !7));
                if own_unused {
                    let _ = platform::mmu_update(&[MmuUpdate { ptr: ptr & !7, val: 0 }]);
                }
            }
            scratch_mappings(t);
        }
        _ => {}
    }
}

/// Maps every scratch frame back read-only at its own direct-map address, in one batch.
fn scratch_mappings(t: &Target<'_>) {
    let records: [MmuUpdate; SCRATCH] = core::array::from_fn(|i| {
        let gfn = t.scratch[i];
        MmuUpdate { ptr: t.direct_map_slot(gfn), val: t.machine(gfn) | PRESENT }
    });
    let _ = platform::mmu_update(&records);
}
