//! The guest half of the hostile table (`cargo xtask test --filter hostile`): attacks on
//! xen-lite, one per name (`attack=NAME` on the guest command line).
//!
//! Each attack does one thing a hostile kernel (or, through [`catch`], its user code) could do,
//! and prints one line saying what came back: `attack NAME: returned EFAULT`, `attack NAME:
//! caught vector 13 in ring 3`, or a count. The xtask's table holds what each line must be;
//! this side judges nothing it need not, so a weakened xen-lite shows up as a different line
//! (or a missing kill) rather than as a guest that says "fine". Attacks whose outcome is a kill
//! print `... NOT CONTAINED` if control ever comes back.
//!
//! Every attack here has a reason in the review that found the escape (issue 11) or in Xen's
//! advisories; `lecture-notes/07-hostile-guests.md` explains each.

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::{
    Errno, Hypercall, MmuUpdate, MmuextOp, CONSOLEIO_WRITE, EVTCHNOP_ALLOC_UNBOUND,
    EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE,
    MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, VIRQ_TIMER,
};
use hypercall_abi::layout::selectors::{FLAT_RING1_DS, FLAT_RING3_CS, FLAT_RING3_DS};
use hypercall_abi::layout::{gfn_to_va, GUEST_KERNEL_BASE, HYPERVISOR_START, PAGE_SIZE, USER_END};
use hypercall_abi::page_table::{address, PRESENT, WRITABLE};
use hypercall_abi::StartInfo;

use crate::address_space::AddressSpace;
use crate::syscall::{SYS_EXIT, SYS_GETPID};
use crate::traps::{catch, catch_in_kernel, Caught};
use crate::{platform, println};

mod trap;

macro_rules! address {
    ($symbol:ident) => {
        core::ptr::addr_of!($symbol) as u64
    };
}

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_AC: u64 = 1 << 18;
const RFLAGS_IOPL3: u64 = 3 << 12;

/// An attack: its name and what it does.
struct Attack {
    name: &'static str,
    run: fn(&Context),
}

/// What every attack may need.
struct Context<'a> {
    info: &'a StartInfo,
    name: &'static str,
}

impl Context<'_> {
    /// Prints this attack's result line.
    fn say(&self, what: fmt::Arguments<'_>) {
        println!("attack {}: {what}", self.name);
    }

    /// Prints what a hypercall returned.
    fn returned(&self, result: Result<u64, Errno>) {
        self.say(format_args!("returned {}", Shown(result)));
    }

    /// The machine address of gfn `gfn` (direct paging).
    fn machine(&self, gfn: u64) -> u64 {
        self.info.pte_base + gfn * PAGE_SIZE
    }

    /// The gfn of the start-of-day L4.
    fn l4_gfn(&self) -> u64 {
        (self.info.pt_base - gfn_to_va(0)) / PAGE_SIZE
    }

    /// The gfn of the shared-info page.
    fn shared_gfn(&self) -> u64 {
        (self.info.shared_info - gfn_to_va(0)) / PAGE_SIZE
    }

    /// The machine address of the L2 that maps the direct map (L4 slot 511, L3 slot 510).
    fn direct_map_l2(&self) -> u64 {
        let l3 = address(peek(self.info.pt_base + 511 * 8));
        let l3_va = gfn_to_va((l3 - self.info.pte_base) / PAGE_SIZE);
        address(peek(l3_va + 510 * 8))
    }

    /// The machine address of the first L1 of the direct map.
    fn direct_map_l1(&self) -> u64 {
        let l2 = self.direct_map_l2();
        address(peek(gfn_to_va((l2 - self.info.pte_base) / PAGE_SIZE)))
    }

    /// A free frame of the domain, zeroed and unmapped from the direct map so it can be typed.
    fn spare_frame(&self) -> Option<u64> {
        let gfn = crate::frames::alloc()?;
        // SAFETY: a frame just allocated, mapped writable in the direct map.
        unsafe { core::ptr::write_bytes(gfn_to_va(gfn) as *mut u8, 0, PAGE_SIZE as usize) };
        platform::update_va_mapping(gfn_to_va(gfn), self.machine(gfn) | PRESENT).ok()?;
        Some(gfn)
    }

    /// Maps a spare frame writable again and frees it.
    fn return_frame(&self, gfn: u64) {
        let _ = platform::update_va_mapping(gfn_to_va(gfn), self.machine(gfn) | PRESENT | WRITABLE);
        crate::frames::free(gfn);
    }
}

/// A hypercall result as the table shows it: an errno's name, or the value in hex.
struct Shown(Result<u64, Errno>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(value) => write!(f, "{value:#x}"),
            Err(errno) => write!(f, "{errno:?}"),
        }
    }
}

fn call(hypercall: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    let value = platform::hypercall(hypercall as u64, args);
    Errno::from_return(value).map_or(Ok(value), Err)
}

fn peek(va: u64) -> u64 {
    // SAFETY: callers read their own mapped memory (page tables are mapped read-only).
    unsafe { (va as *const u64).read_volatile() }
}

/// Runs attack `name`; the domain's exit code (0: it ran to its end; the line tells the rest).
pub fn run(info: &StartInfo, name: &str) -> u8 {
    let Some(attack) = ATTACKS.iter().find(|a| a.name == name) else {
        println!("attack {name}: no such attack; known:");
        for attack in ATTACKS {
            println!("  {}", attack.name);
        }
        return 98;
    };
    (attack.run)(&Context { info, name: attack.name });
    0
}

/// The attacks, by name.
static ATTACKS: &[Attack] = &[
    // Pointer arguments: xen-lite, wrapping, huge, non-canonical, the user half, another domain.
    Attack { name: "console-io-into-xen-lite", run: |c| c.returned(console(HYPERVISOR_START, 8)) },
    Attack { name: "console-io-wrapping", run: |c| c.returned(console(u64::MAX - 3, 8)) },
    Attack {
        name: "console-io-huge-length",
        run: |c| c.returned(console(GUEST_KERNEL_BASE, u64::MAX)),
    },
    Attack { name: "console-io-non-canonical", run: |c| c.returned(console(USER_END, 8)) },
    Attack { name: "console-io-user-half", run: |c| c.returned(console(0x40_0000, 8)) },
    Attack {
        name: "console-io-past-its-memory",
        run: |c| c.returned(console(gfn_to_va(c.info.nr_pages) - 4, 8)),
    },
    Attack {
        name: "stats-into-its-l4",
        run: |c| c.returned(call(Hypercall::Stats, [c.info.pt_base, 0, 0, 0, 0])),
    },
    Attack {
        name: "stats-into-xen-lite",
        run: |c| c.returned(call(Hypercall::Stats, [HYPERVISOR_START, 0, 0, 0, 0])),
    },
    Attack { name: "stats-into-the-switcher", run: stats_into_the_switcher },
    Attack {
        name: "trap-table-in-xen-lite",
        run: |c| c.returned(call(Hypercall::SetTrapTable, [HYPERVISOR_START, 0, 0, 0, 0])),
    },
    Attack {
        name: "trap-table-wrapping",
        run: |c| c.returned(call(Hypercall::SetTrapTable, [u64::MAX - 15, 0, 0, 0, 0])),
    },
    Attack { name: "trap-handler-in-user-half", run: trap_handler_in_user_half },
    Attack {
        name: "stack-switch-into-xen-lite",
        run: |c| {
            c.returned(call(
                Hypercall::StackSwitch,
                [u64::from(FLAT_RING1_DS), HYPERVISOR_START + 0x2000, 0, 0, 0],
            ))
        },
    },
    Attack {
        name: "stack-switch-wrapping",
        run: |c| c.returned(call(Hypercall::StackSwitch, [u64::from(FLAT_RING1_DS), 16, 0, 0, 0])),
    },
    Attack {
        name: "stack-switch-xen-lite-selector",
        run: |c| c.returned(call(Hypercall::StackSwitch, [0x10, c.info.stack_top, 0, 0, 0])),
    },
    Attack {
        name: "callback-in-xen-lite",
        run: |c| c.returned(call(Hypercall::SetCallbacks, [HYPERVISOR_START, 0, 0, 0, 0])),
    },
    Attack {
        name: "callback-window-past-its-memory",
        run: |c| c.returned(call(Hypercall::SetCallbacks, [0, 0, 0, GUEST_KERNEL_BASE, u64::MAX])),
    },
    Attack {
        name: "callback-window-over-the-kernel",
        run: |c| {
            c.returned(call(
                Hypercall::SetCallbacks,
                [0, 0, 0, GUEST_KERNEL_BASE, GUEST_KERNEL_BASE + (1 << 20)],
            ))
        },
    },
    Attack {
        name: "mmu-update-records-in-xen-lite",
        run: |c| c.returned(call(Hypercall::MmuUpdate, [HYPERVISOR_START, 1, 0, 0, 0])),
    },
    Attack {
        name: "mmu-update-records-wrapping",
        run: |c| c.returned(call(Hypercall::MmuUpdate, [u64::MAX - 15, 2, 0, 0, 0])),
    },
    Attack {
        name: "mmu-update-huge-count",
        run: |c| c.returned(call(Hypercall::MmuUpdate, [GUEST_KERNEL_BASE, u64::MAX, 0, 0, 0])),
    },
    Attack { name: "mmuext-done-in-xen-lite", run: |c| done_pointer(c, HYPERVISOR_START) },
    Attack { name: "mmuext-done-in-its-l4", run: |c| done_pointer(c, c.info.pt_base) },
    Attack { name: "mmuext-done-in-the-pinned-frame", run: done_in_the_frame_it_pins },
    Attack { name: "update-va-mapping-non-canonical", run: update_va_mapping_non_canonical },
    Attack {
        name: "update-va-mapping-xen-lite",
        run: |c| c.returned(call(Hypercall::UpdateVaMapping, [HYPERVISOR_START, 0, 0, 0, 0])),
    },
    Attack {
        name: "hypercall-unknown-number",
        run: |c| {
            c.returned(Errno::from_return(platform::hypercall(9999, [0; 5])).map_or(Ok(0), Err))
        },
    },
    // Typing the frames xen-lite writes, or that are already typed.
    Attack { name: "pin-shared-info-as-l1", run: |c| pin_shared_info(c, MMUEXT_PIN_L1_TABLE) },
    Attack { name: "pin-shared-info-as-l4", run: |c| pin_shared_info(c, MMUEXT_PIN_L4_TABLE) },
    Attack { name: "shared-info-under-an-l2-entry", run: |c| under_an_l2_entry(c, c.shared_gfn()) },
    Attack { name: "its-l4-under-an-l2-entry", run: |c| under_an_l2_entry(c, c.l4_gfn()) },
    Attack { name: "map-its-l1-writable", run: map_its_l1_writable },
    Attack {
        name: "new-baseptr-to-a-data-frame",
        run: |c| c.returned(ext(MMUEXT_NEW_BASEPTR, c.machine(c.info.first_free_gfn - 1) >> 12)),
    },
    Attack {
        name: "pin-another-domains-frame",
        run: |c| c.returned(ext(MMUEXT_PIN_L1_TABLE, c.machine(c.info.nr_pages) >> 12)),
    },
    Attack { name: "pin-a-xen-lite-frame", run: |c| c.returned(ext(MMUEXT_PIN_L1_TABLE, 1)) },
    // Flags across entries, and every software interrupt.
    Attack { name: "tf-across-a-hypercall", run: tf_across_a_hypercall },
    Attack {
        name: "mov-ss-delays-tf-into-int-0x82",
        run: |c| caught(c, catch_in_kernel(address!(attack_mov_ss_int))),
    },
    Attack {
        name: "df-before-a-page-fault",
        run: |c| caught(c, catch_in_kernel(address!(attack_df_fault))),
    },
    Attack {
        name: "tf-before-syscall",
        run: |c| flags_before(c, RFLAGS_TF, address!(attack_flag_syscall)),
    },
    Attack {
        name: "tf-before-int-0x80",
        run: |c| flags_before(c, RFLAGS_TF, address!(attack_flag_int80)),
    },
    Attack {
        name: "nt-before-syscall",
        run: |c| flags_before(c, RFLAGS_NT, address!(attack_flag_syscall)),
    },
    Attack {
        name: "ac-before-syscall",
        run: |c| flags_before(c, RFLAGS_AC, address!(attack_flag_syscall)),
    },
    Attack {
        name: "iopl-from-ring-3",
        run: |c| flags_before(c, RFLAGS_IOPL3, address!(attack_flag_cli)),
    },
    Attack { name: "iopl-from-ring-1", run: iopl_from_ring_1 },
    Attack { name: "int-n-from-ring-3", run: |c| every_int_n(c, 3) },
    Attack { name: "int-n-from-ring-1", run: |c| every_int_n(c, 1) },
    Attack { name: "every-selector-in-every-segment", run: every_selector },
    Attack { name: "far-jump-to-every-selector", run: far_jumps },
    Attack { name: "ldt-call-gate-into-ring-0", run: ldt_call_gate },
    Attack { name: "non-canonical-syscall-return", run: non_canonical_syscall_return },
    // What the CPU tables show, and what the stacks they name hold.
    Attack { name: "sgdt-in-ring-1", run: sgdt_in_ring_1 },
    Attack { name: "sgdt-in-ring-3", run: |c| caught(c, in_ring_3(address!(attack_user_sgdt))) },
    Attack { name: "read-guest-visible-stacks", run: read_guest_visible_stacks },
    // Events, timers, exhaustion.
    Attack {
        name: "event-send-bad-port",
        run: |c| c.returned(call(Hypercall::EventChannelOp, [EVTCHNOP_SEND, 1, 1000, 0, 0])),
    },
    Attack {
        name: "event-send-unbound-port",
        run: |c| c.returned(call(Hypercall::EventChannelOp, [EVTCHNOP_SEND, 1, 60, 0, 0])),
    },
    Attack {
        name: "event-send-no-such-domain",
        run: |c| c.returned(call(Hypercall::EventChannelOp, [EVTCHNOP_SEND, 7, 1, 0, 0])),
    },
    Attack { name: "event-bind-virq-twice", run: event_bind_virq_twice },
    Attack { name: "event-ports-exhausted", run: event_ports_exhausted },
    Attack { name: "event-storm", run: event_storm },
    Attack { name: "timer-storm", run: timer_storm },
    Attack {
        name: "shutdown-bad-code",
        run: |c| c.returned(call(Hypercall::SchedOp, [SCHEDOP_SHUTDOWN, 200, 0, 0, 0])),
    },
    Attack { name: "frames-exhausted-as-page-tables", run: frames_exhausted },
    // The exits a VMX guest can force.
    Attack { name: "wbinvd", run: |c| cache_flush(c, false) },
    Attack { name: "invd", run: |c| cache_flush(c, true) },
    Attack { name: "xsetbv", run: xsetbv },
    Attack { name: "vmxon", run: vmxon },
    Attack { name: "pit-abuse", run: pit_abuse },
    // `mode=trap`: privileged instructions with operands the virtual CPU must refuse.
    Attack { name: "lgdt-non-canonical", run: trap::lgdt_non_canonical },
    Attack { name: "far-return-to-data", run: trap::far_return_to_data },
    Attack { name: "ring0-descriptor", run: trap::ring0_descriptor },
    Attack { name: "wrmsr-sysenter", run: trap::wrmsr_sysenter },
    Attack { name: "efer-long-mode-off", run: trap::efer_long_mode_off },
    Attack { name: "ltr-data", run: trap::ltr_data },
    // The SVM instructions an svm guest's ring 0 can execute (EFER.SVME is set for it, since
    // `vmrun` requires it): each must be intercepted, and kill naming it.
    Attack { name: "vmrun", run: |c| svm_instruction(c, address!(attack_vmrun)) },
    Attack { name: "vmload", run: |c| svm_instruction(c, address!(attack_vmload)) },
    Attack { name: "vmsave", run: |c| svm_instruction(c, address!(attack_vmsave)) },
    Attack { name: "stgi", run: |c| svm_instruction(c, address!(attack_stgi)) },
    Attack { name: "clgi", run: |c| svm_instruction(c, address!(attack_clgi)) },
    Attack { name: "skinit", run: |c| svm_instruction(c, address!(attack_skinit)) },
    Attack { name: "invlpga", run: |c| svm_instruction(c, address!(attack_invlpga)) },
];

fn console(buffer: u64, len: u64) -> Result<u64, Errno> {
    call(Hypercall::ConsoleIo, [CONSOLEIO_WRITE, len, buffer, 0, 0])
}

fn ext(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let (_, result) = platform::mmuext_op(&[MmuextOp { cmd, arg }]);
    result.map(|()| 0)
}

/// `stats` aimed at the IDT, a page of xen-lite's that every guest maps read-only (needs
/// `umip=off` to find it with `sidt`).
fn stats_into_the_switcher(c: &Context) {
    c.returned(call(Hypercall::Stats, [platform::idt_base(), 0, 0, 0, 0]));
}

/// A trap table whose one handler lies in the user half.
fn trap_handler_in_user_half(c: &Context) {
    let table = [0x0e_u64, 0x40_0000, 0, 0]; // vector 14 at 0x400000, then the terminator
    c.returned(call(Hypercall::SetTrapTable, [table.as_ptr() as u64, 0, 0, 0, 0]));
    crate::platform::install_traps().expect("the kernel's own trap table is valid");
}

/// A batch whose `done` pointer cannot be written: it must be refused before anything is
/// applied (the pin below must still be possible afterwards).
fn done_pointer(c: &Context, done: u64) {
    let Some(gfn) = c.spare_frame() else { return c.say(format_args!("no spare frame")) };
    let op = MmuextOp { cmd: MMUEXT_PIN_L1_TABLE, arg: c.machine(gfn) >> 12 };
    let result = call(Hypercall::MmuextOp, [core::ptr::from_ref(&op) as u64, 1, done, 0, 0]);
    let applied = ext(MMUEXT_PIN_L1_TABLE, op.arg) != Ok(0);
    let _ = ext(MMUEXT_UNPIN_TABLE, op.arg);
    c.say(format_args!(
        "returned {}, {}",
        Shown(result),
        if applied { "the pin was applied anyway" } else { "nothing applied" }
    ));
    c.return_frame(gfn);
}

/// A batch whose `done` lies in the very frame it pins: writable when the batch starts, a page
/// table when it ends. xen-lite cannot report the count and kills the domain.
fn done_in_the_frame_it_pins(c: &Context) {
    let Some(gfn) = c.spare_frame() else { return c.say(format_args!("no spare frame")) };
    let op = MmuextOp { cmd: MMUEXT_PIN_L1_TABLE, arg: c.machine(gfn) >> 12 };
    let done = gfn_to_va(gfn) + 0x800;
    let result = call(Hypercall::MmuextOp, [core::ptr::from_ref(&op) as u64, 1, done, 0, 0]);
    c.say(format_args!(
        "NOT CONTAINED: returned {} with `done` in a new page table",
        Shown(result)
    ));
}

/// `update_va_mapping` of a non-canonical address whose canonical twin is a direct-map page:
/// refused, or the twin's entry would change.
fn update_va_mapping_non_canonical(c: &Context) {
    let Some(scratch) = crate::frames::alloc() else { return c.say(format_args!("no frame")) };
    let twin = gfn_to_va(scratch) & 0x0000_ffff_ffff_ffff;
    let result = call(Hypercall::UpdateVaMapping, [twin, c.machine(c.l4_gfn()) | PRESENT, 0, 0, 0]);
    let moved = peek(gfn_to_va(scratch)) != 0 || result.is_ok();
    let _ =
        platform::update_va_mapping(gfn_to_va(scratch), c.machine(scratch) | PRESENT | WRITABLE);
    c.say(format_args!(
        "returned {}{}",
        Shown(result),
        if moved { ", the canonical twin's entry changed" } else { "" }
    ));
    crate::frames::free(scratch);
}

/// The escape of the review: make the shared-info page look like a page table (every word a
/// harmless entry, no writable mapping left) and pin it. xen-lite's writes into it would then
/// be unvalidated entries.
fn pin_shared_info(c: &Context, cmd: u64) {
    let (va, frame) = (c.info.shared_info, c.machine(c.shared_gfn()));
    let words = 512usize;
    // SAFETY: the shared page is mapped writable in the direct map (until the next line).
    let saved_mask = unsafe { (va as *const u8).add(1).read_volatile() };
    for i in 0..words {
        // SAFETY: as above; every word becomes "not present" (upcall_mask stays set: 0x100).
        unsafe { (va as *mut u64).add(i).write_volatile(if i == 0 { 0x100 } else { 0 }) };
    }
    let remap = platform::update_va_mapping(va, frame | PRESENT);
    let result = ext(cmd, frame >> 12);
    if result.is_ok() {
        let _ = ext(MMUEXT_UNPIN_TABLE, frame >> 12);
    }
    let _ = platform::update_va_mapping(va, frame | PRESENT | WRITABLE);
    // SAFETY: mapped writable again.
    unsafe { (va as *mut u8).add(1).write_volatile(saved_mask) };
    c.say(format_args!(
        "returned {} (read-only remap: {})",
        Shown(result),
        Shown(remap.map(|()| 0))
    ));
}

/// An unused entry of the direct map's L2 pointed at frame `gfn`, which would make it an L1.
fn under_an_l2_entry(c: &Context, gfn: u64) {
    let l2 = c.direct_map_l2();
    let entry = c.machine(gfn) | PRESENT;
    let (_, result) = platform::mmu_update(&[MmuUpdate { ptr: l2 + 500 * 8, val: entry }]);
    if result.is_ok() {
        let _ = platform::mmu_update(&[MmuUpdate { ptr: l2 + 500 * 8, val: 0 }]);
    }
    c.returned(result.map(|()| 0));
}

/// The direct map's first L1 mapped writable at a spare address.
fn map_its_l1_writable(c: &Context) {
    let Some(scratch) = crate::frames::alloc() else { return c.say(format_args!("no frame")) };
    let result =
        platform::update_va_mapping(gfn_to_va(scratch), c.direct_map_l1() | PRESENT | WRITABLE);
    let _ =
        platform::update_va_mapping(gfn_to_va(scratch), c.machine(scratch) | PRESENT | WRITABLE);
    crate::frames::free(scratch);
    c.returned(result.map(|()| 0));
}

/// Prints what a caught snippet raised.
fn caught(c: &Context, caught: Caught) {
    c.say(format_args!(
        "caught vector {} in ring {}, error code {:#x}",
        caught.vector,
        caught.cs & 3,
        caught.error_code
    ));
}

fn in_ring_3(rip: u64) -> Caught {
    catch(rip, FLAT_RING3_CS, address!(attack_user_stack_top), FLAT_RING3_DS)
}

/// A ring-3 snippet (`flag_*`) sets `flags` with `popfq`, then runs its instruction.
fn flags_before(c: &Context, flags: u64, snippet: u64) {
    let slot = address!(attack_user_flags) as *mut u64;
    // SAFETY: a word of this kernel's user section (mapped writable), read only by the snippet.
    unsafe { slot.write_volatile(flags | 0x202) };
    let what = in_ring_3(snippet);
    if what.vector == crate::traps::SYSCALL_VECTOR {
        c.say(format_args!("exited with status {}", what.error_code));
    } else {
        caught(c, what);
    }
}

/// TF set in ring 1 across `int 0x82`: the single step must arrive in the guest, not kill
/// xen-lite.
fn tf_across_a_hypercall(c: &Context) {
    caught(c, catch_in_kernel(address!(attack_tf_hypercall)));
}

/// `popfq` with IOPL 3 in ring 1 (ignored at CPL 1 > IOPL 0), then `in`: xen-lite kills.
fn iopl_from_ring_1(c: &Context) {
    let what = catch_in_kernel(address!(attack_iopl_in));
    c.say(format_args!("NOT CONTAINED: `in` after popfq with IOPL 3 came back ({:?})", what));
}

/// `int n` for every vector from ring `ring`: every gate xen-lite did not open to that ring must
/// be #GP with error code n*8+2 (QEMU 7.2: n*16+2, a known bug), never a handler.
fn every_int_n(c: &Context, ring: u8) {
    let (mut gp, mut other, mut qemu_codes) = (0, 0, 0);
    for vector in 0..=255u64 {
        // Ring 3's own gates (int3, into, the fast trap) and, from ring 1, the hypercall gate.
        let open = matches!(vector, 3 | 4 | 0x80) || (ring == 1 && vector == 0x82);
        if open {
            continue;
        }
        let table = if ring == 3 { address!(attack_user_int_n) } else { address!(attack_int_n) };
        let rip = table + vector * 16;
        let what = if ring == 3 { in_ring_3(rip) } else { catch_in_kernel(rip) };
        let code_ok = what.error_code == vector * 8 + 2;
        qemu_codes += u64::from(what.error_code == vector * 16 + 2);
        if what.vector == 13
            && what.cs & 3 == u64::from(ring)
            && (code_ok || what.error_code == vector * 16 + 2)
        {
            gp += 1;
        } else {
            if other < 4 {
                println!(
                    "  int {vector:#x}: vector {} error code {:#x} ring {}",
                    what.vector,
                    what.error_code,
                    what.cs & 3
                );
            }
            other += 1;
        }
    }
    c.say(format_args!(
        "{gp} vectors #GP, {other} otherwise ({qemu_codes} with QEMU's error code)"
    ));
}

/// Every selector of the GDT, at every RPL, loaded into `ds`, `es`, `fs`, `gs` and `ss` from
/// ring 1. Only the guest's own selectors may load; xen-lite's (DPL 0) and the TSS never.
fn every_selector(c: &Context) {
    let (mut loaded, mut refused, mut breaches) = (0, 0, 0);
    let saved: [u16; 4];
    // SAFETY: reads the data segment registers, to put them back afterwards.
    unsafe {
        let (ds, es, fs, gs): (u16, u16, u16, u16);
        asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs", out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs);
        saved = [ds, es, fs, gs];
    }
    for selector in 0..0x50u64 {
        for register in 0..5u64 {
            TARGET.store(selector | register << 16, Ordering::Relaxed);
            let what = catch_in_kernel(address!(attack_load_segment));
            let ok = what.vector == 6; // reached the `ud2` after the load
            let index = selector >> 3;
            let rpl = selector & 3;
            // Intel SDM Vol. 2, MOV: what CPL 1 may load (64-bit mode).
            let allowed = match (index, register) {
                (0, 4) => rpl == 1,         // a null ss, if RPL = CPL
                (0, _) => true,             // a null data selector
                (3 | 4, 0..=3) => rpl <= 1, // ring-1 code (readable) and data
                (4, 4) => rpl == 1,         // ss: ring-1 data, RPL = DPL = CPL
                (5 | 6, 0..=3) => true,     // user data and (readable) code, DPL 3
                _ => false,                 // xen-lite's, the TSS, past the limit
            };
            if ok {
                loaded += 1;
                if !allowed {
                    breaches += 1;
                    println!("  selector {selector:#x} loaded into segment register {register}");
                }
            } else {
                refused += 1;
            }
        }
    }
    // SAFETY: the selectors this kernel ran with before.
    unsafe {
        asm!("mov ds, {0:x}", "mov es, {1:x}", "mov fs, {2:x}", "mov gs, {3:x}", in(reg) saved[0], in(reg) saved[1], in(reg) saved[2], in(reg) saved[3]);
    }
    c.say(format_args!("{loaded} loads, {refused} refused, {breaches} not allowed by the SDM"));
}

/// `jmp far` from ring 1 to every selector at every RPL: only the guest's own code segment
/// (RPL <= 1) may be reached; xen-lite's code segment, the TSS and user code must fault.
fn far_jumps(c: &Context) {
    let (mut landed, mut breaches) = (0, 0);
    let own_code = u64::from(platform::KERNEL_CS & !3);
    for selector in 0..0x50u64 {
        TARGET.store(selector, Ordering::Relaxed);
        let what = catch_in_kernel(address!(attack_far_jump));
        // Past the selector checks: it lands (#UD at the label, or #PF where an AMD CPU's
        // 32-bit offset points); refused: #GP, #NP or #TS at the jump.
        if !matches!(what.vector, 10 | 11 | 13) {
            landed += 1;
            if selector & !3 != own_code || selector & 3 > 1 {
                breaches += 1;
                println!(
                    "  jmp far to {selector:#x}: vector {} at rip {:#x} in ring {}",
                    what.vector,
                    what.rip,
                    what.cs & 3
                );
            }
        }
    }
    c.say(format_args!("{landed} landed, {breaches} outside its own code segment"));
}

/// A call gate into ring 0 in a descriptor table the guest writes: linear page 0, where LDTR
/// points if nobody loads it (the reset value: base 0, limit 0xffff). Through it, `call far`
/// would run this kernel's code at CPL 0. xen-lite clears LDTR at boot, so the selector
/// (LDT index 0) is #GP.
fn ldt_call_gate(c: &Context) {
    let result = (|| {
        let mut space = AddressSpace::new(c.info)?;
        let gfn = space.map_new(0, true)?;
        let target = address!(attack_ring0_landing);
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(target as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&0x08u16.to_le_bytes()); // xen-lite's code segment
        gate[5] = 0xec; // present, DPL 3, 64-bit call gate
        gate[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes());
        // SAFETY: a frame just mapped for this space, reachable through the direct map.
        unsafe { core::ptr::copy_nonoverlapping(gate.as_ptr(), gfn_to_va(gfn) as *mut u8, 16) };
        space.activate()?;
        let what = catch_in_kernel(address!(attack_ldt_call));
        platform::load_root(c.machine(c.l4_gfn()))?;
        space.destroy();
        Ok::<Caught, Errno>(what)
    })();
    match result {
        Ok(what) => caught(c, what),
        Err(errno) => c.say(format_args!("could not set up: {errno:?}")),
    }
}

/// The CVE-2012-0217 set-up: a `syscall` in the last two bytes of the user half returns to
/// 0x8000_0000_0000. The kernel must end the program, not fault on its own `iretq`.
fn non_canonical_syscall_return(c: &Context) {
    const TOP: u64 = USER_END - PAGE_SIZE;
    let result = (|| {
        let mut space = AddressSpace::new(c.info)?;
        let gfn = space.map_new(TOP, true)?;
        // SAFETY: a frame just mapped for this space, reachable through the direct map.
        unsafe {
            let page = gfn_to_va(gfn) as *mut u8;
            page.add(PAGE_SIZE as usize - 2).write_volatile(0x0f); // syscall
            page.add(PAGE_SIZE as usize - 1).write_volatile(0x05);
        }
        space.activate()?;
        let what = catch(USER_END - 2, FLAT_RING3_CS, TOP + 0x800, FLAT_RING3_DS);
        let kernel_l4 = c.machine(c.l4_gfn());
        platform::load_root(kernel_l4)?;
        space.destroy();
        Ok::<Caught, Errno>(what)
    })();
    match result {
        Ok(what) => c.say(format_args!(
            "caught vector {} in ring {} at rip {:#x}",
            what.vector,
            what.cs & 3,
            what.rip
        )),
        Err(errno) => c.say(format_args!("could not set up: {errno:?}")),
    }
}

/// `sgdt` in ring 1: with UMIP, xen-lite emulates it and shows nothing of its own.
fn sgdt_in_ring_1(c: &Context) {
    let mut pointer = [0u8; 10];
    // SAFETY: `sgdt` stores 10 bytes to the buffer (emulated under UMIP).
    unsafe { asm!("sgdt [{}]", in(reg) pointer.as_mut_ptr()) };
    let limit = u16::from_le_bytes([pointer[0], pointer[1]]);
    let base = u64::from_le_bytes(pointer[2..10].try_into().unwrap_or_default());
    c.say(format_args!("base {base:#x} limit {limit:#x}"));
}

/// Marks the registers of the bystander's faults (`secret-faults`).
pub const SECRET: u64 = 0x5ec7_e7da_7a00_0000;

/// Finds xen-lite's stacks through `sgdt` (needs `umip=off`: the reviewer's machine had no
/// UMIP) and the TSS, then reads the top of each, again and again while another domain takes
/// page faults with [`SECRET`] in every register: no word of it may ever be there.
fn read_guest_visible_stacks(c: &Context) {
    let mut pointer = [0u8; 10];
    // SAFETY: `sgdt` stores 10 bytes to the buffer.
    unsafe { asm!("sgdt [{}]", in(reg) pointer.as_mut_ptr()) };
    let gdt = u64::from_le_bytes(pointer[2..10].try_into().unwrap_or_default());
    if gdt == 0 {
        return c.say(format_args!("sgdt shows no GDT (UMIP is on): nothing to find"));
    }
    let (low, high) = (peek(gdt + 0x38), peek(gdt + 0x40));
    let tss = (low >> 16 & 0xff_ffff) | (low >> 56 & 0xff) << 24 | (high & 0xffff_ffff) << 32;
    // RSP0 at offset 4; IST1..IST7 at 0x24 + 8 * (n - 1). Unaligned: read byte-wise.
    let field = |offset: u64| {
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: the TSS is mapped read-only in every guest (that is the finding).
            *byte = unsafe { ((tss + offset + i as u64) as *const u8).read_volatile() };
        }
        u64::from_le_bytes(bytes)
    };
    let tops = [field(4), field(0x2c), field(0x34), field(0x3c), field(0x44)];
    let (mut scans, mut foreign) = (0, 0);
    while scans < 300 {
        for top in tops.into_iter().filter(|&t| t != 0) {
            for at in (top - 512..top).step_by(8) {
                if peek(at) & !0xff_ffff == SECRET {
                    foreign += 1;
                }
            }
        }
        scans += 1;
        platform::yield_cpu();
    }
    c.say(format_args!("{foreign} words of another domain in {scans} scans of 5 stacks"));
}

/// The bystander of `read-guest-visible-stacks`: page faults (caught and bounced) with
/// [`SECRET`] in its registers, yielding between them.
pub fn secret_faults() {
    for _ in 0..300 {
        for _ in 0..4 {
            let _ = catch_in_kernel(address!(attack_secret_fault));
        }
        platform::yield_cpu();
    }
    println!("secret-faults: 1200 faults taken");
}

fn event_bind_virq_twice(c: &Context) {
    let first = call(Hypercall::EventChannelOp, [EVTCHNOP_BIND_VIRQ, VIRQ_TIMER, 0, 0, 0]);
    let second = call(Hypercall::EventChannelOp, [EVTCHNOP_BIND_VIRQ, VIRQ_TIMER, 0, 0, 0]);
    c.say(format_args!("returned {} then {}", Shown(first.map(|_| 0)), Shown(second)));
}

/// Ports until there are none: `ENOSPC`, never a crash or a port number out of range.
fn event_ports_exhausted(c: &Context) {
    let mut ports = 0;
    let last = loop {
        match call(Hypercall::EventChannelOp, [EVTCHNOP_ALLOC_UNBOUND, 0, 0, 0, 0]) {
            Ok(port) if port < 64 => ports += 1,
            other => break other,
        }
        if ports > 100 {
            break Ok(u64::MAX);
        }
    };
    c.say(format_args!("{ports} ports, then returned {}", Shown(last)));
}

/// Twenty thousand events to itself on a port it keeps masked off: the run goes on.
fn event_storm(c: &Context) {
    let Ok(port) = call(Hypercall::EventChannelOp, [EVTCHNOP_ALLOC_UNBOUND, 0, 0, 0, 0]) else {
        return c.say(format_args!("no port"));
    };
    let mut errors = 0;
    for _ in 0..20_000 {
        errors +=
            u32::from(call(Hypercall::EventChannelOp, [EVTCHNOP_SEND, 0, port, 0, 0]).is_err());
    }
    c.say(format_args!("20000 sends, {errors} errors"));
}

/// Timers in the past, far future and zero, a thousand times, yielding between.
fn timer_storm(c: &Context) {
    let mut errors = 0;
    for i in 0..1000u64 {
        let deadline = [1, u64::MAX, 0][(i % 3) as usize];
        errors += u32::from(call(Hypercall::SetTimerOp, [deadline, 0, 0, 0, 0]).is_err());
        let _ = call(Hypercall::SchedOp, [SCHEDOP_YIELD, 0, 0, 0, 0]);
    }
    let _ = call(Hypercall::SetTimerOp, [0, 0, 0, 0, 0]);
    c.say(format_args!("1000 timers, {errors} errors"));
}

/// Pins every free frame as an L1, until the domain has none: xen-lite's frame table is
/// sized for the domain, so the guest runs out of its own memory, not xen-lite's.
fn frames_exhausted(c: &Context) {
    let mut pinned = [0u64; 64];
    let mut count = 0;
    let mut failures = 0;
    while count < pinned.len() {
        let Some(gfn) = c.spare_frame() else { break };
        if ext(MMUEXT_PIN_L1_TABLE, c.machine(gfn) >> 12).is_ok() {
            pinned[count] = gfn;
            count += 1;
        } else {
            failures += 1;
            c.return_frame(gfn);
        }
    }
    for &gfn in &pinned[..count] {
        failures += u32::from(ext(MMUEXT_UNPIN_TABLE, c.machine(gfn) >> 12).is_err());
        c.return_frame(gfn);
    }
    c.say(format_args!("{count} frames pinned and unpinned, {failures} failures"));
}

/// `wbinvd` or `invd` in the vmx guest's ring 0: must exit (and be skipped), as xen-lite's
/// counters show.
fn cache_flush(c: &Context, invalidate: bool) {
    let reason = if invalidate { 13 } else { 54 };
    let exits = || platform::stats().map(|s| s.vm_exits[reason]).unwrap_or(u64::MAX);
    let before = exits();
    // SAFETY: deliberately sensitive; under VMX it exits, natively it flushes (or, for `invd`,
    // discards) the caches of a machine with no devices caching anything we need.
    unsafe {
        if invalidate {
            asm!("invd");
        } else {
            asm!("wbinvd");
        }
    }
    let after = exits();
    c.say(format_args!("ran; {} VM exit(s) for it", after.wrapping_sub(before)));
}

/// `xsetbv` in the vmx guest: an exit xen-lite does not emulate, so a kill naming it.
fn xsetbv(c: &Context) {
    caught(c, catch_in_kernel(address!(attack_xsetbv)));
}

/// `vmxon` in the vmx guest (whose CPUID hides VMX): an exit, and a kill.
fn vmxon(c: &Context) {
    caught(c, catch_in_kernel(address!(attack_vmxon)));
}

/// An SVM instruction in the svm guest's ring 0 (`rax` = guest-physical 0, a page of its own):
/// an intercept, and a kill. Elsewhere it raises #UD, which the snippet's catcher reports.
fn svm_instruction(c: &Context, snippet: u64) {
    caught(c, catch_in_kernel(snippet));
}

/// The virtual PIT's command port with every mode byte, then reads of its counters: the
/// device model must refuse what it does not model (a kill naming the value), never crash.
fn pit_abuse(c: &Context) {
    for command in 0..=255u8 {
        // SAFETY: port I/O to the (virtual) PIT; natively this reprograms a timer nobody uses
        // (the native kernel's tick is bound later, or not at all for this workload).
        unsafe { asm!("out 0x43, al", in("al") command) };
    }
    c.say(format_args!("256 PIT commands written"));
}

/// What `attack_load_segment` loads (selector | register << 16) and `attack_far_jump` jumps to.
static TARGET: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.attack_snippets, "ax"
    .global attack_tf_hypercall, attack_mov_ss_int, attack_df_fault, attack_iopl_in, attack_int_n, attack_load_segment
    .global attack_far_jump, attack_far_landed, attack_secret_fault, attack_xsetbv, attack_vmxon
    .global attack_vmrun, attack_vmload, attack_vmsave, attack_stgi, attack_clgi, attack_skinit, attack_invlpga
    .global attack_ldt_call, attack_ring0_landing
attack_tf_hypercall:
    mov eax, {xen_version}
    pushfq
    or qword ptr [rsp], {tf}
    popfq
    int 0x82
    nop
    nop
    ud2
attack_mov_ss_int:                      // CVE-2018-8897's shape: `mov ss` delays the single
    mov eax, {xen_version}              // step past the `int`, so it arrives at CPL 0 on the
    pushfq                              // first instruction of xen-lite's stub
    or qword ptr [rsp], {tf}
    popfq
    mov cx, ss
    mov ss, cx
    int 0x82
    nop
    nop
    ud2
attack_df_fault:                        // DF survives interrupt delivery: xen-lite must clear it
    std                                 // before its own string copies
    movabs rax, [0x1000]
    ud2
attack_iopl_in:
    pushfq
    or qword ptr [rsp], {iopl}
    popfq
    in al, 0x80
    ud2
attack_load_segment:                    // TARGET: selector | register << 16
    mov rax, [rip + {target}]
    mov rcx, rax
    shr rcx, 16
    cmp ecx, 1
    jb 10f
    je 11f
    cmp ecx, 3
    jb 12f
    je 13f
    mov ss, ax
    ud2
10: mov ds, ax
    ud2
11: mov es, ax
    ud2
12: mov fs, ax
    ud2
13: mov gs, ax
    ud2
attack_far_jump:                        // TARGET: the selector
    mov rax, [rip + {target}]
    lea rcx, [rip + attack_far_landed]
    sub rsp, 16
    mov [rsp], rcx
    mov [rsp + 8], ax
    .byte 0x48, 0xff, 0x2c, 0x24        // rex.w jmp far [rsp]: m16:64 (Intel)
    ud2
attack_far_landed:
    ud2
attack_ldt_call:                        // call far through LDT entry 0 (selector 0x7)
    sub rsp, 16
    mov qword ptr [rsp], 0
    mov word ptr [rsp + 8], 0x7
    .byte 0x48, 0xff, 0x1c, 0x24        // rex.w call far [rsp]
    ud2
attack_ring0_landing:                   // only reached at CPL 0: an escape
    mov rax, cr3
    ud2
attack_xsetbv:                          // CR4.OSXSAVE on, then XCR0 = x87 only (its reset value)
    mov rax, cr4
    or rax, 1 << 18
    mov cr4, rax
    xor ecx, ecx
    mov eax, 1
    xor edx, edx
    xsetbv
    ud2
attack_vmxon:
    vmxon [rip + {target}]
    ud2
attack_vmrun:
    xor eax, eax
    vmrun rax
    ud2
attack_vmload:
    xor eax, eax
    vmload rax
    ud2
attack_vmsave:
    xor eax, eax
    vmsave rax
    ud2
attack_stgi:
    stgi
    ud2
attack_clgi:
    clgi
    ud2
attack_skinit:
    xor eax, eax
    skinit eax
    ud2
attack_invlpga:
    xor eax, eax
    xor ecx, ecx
    invlpga rax, ecx
    ud2
attack_secret_fault:                    // every register but rsp holds SECRET | n
    movabs rax, {secret} + 0
    movabs rbx, {secret} + 1
    movabs rcx, {secret} + 2
    movabs rdx, {secret} + 3
    movabs rsi, {secret} + 4
    movabs rdi, {secret} + 5
    movabs rbp, {secret} + 6
    movabs r8, {secret} + 8
    movabs r9, {secret} + 9
    movabs r10, {secret} + 10
    movabs r11, {secret} + 11
    movabs r12, {secret} + 12
    movabs r13, {secret} + 13
    movabs r14, {secret} + 14
    movabs r15, {secret} + 15
    movabs [0x1000], rax                // not mapped: #PF, bounced to this kernel
    ud2

    .macro int_n_table
    .set vector, 0
    .rept 256
        .balign 16
        .byte 0xcd, vector              // int n
        ud2
        .set vector, vector + 1
    .endr
    .endm
    .balign 16
attack_int_n:                           // 256 snippets of 16 bytes: int n; ud2
    int_n_table

    .section .user.attacks, "awx"
    .balign 4096
    .global attack_user_sgdt, attack_flag_syscall, attack_flag_int80, attack_flag_cli
    .global attack_user_stack_top, attack_user_int_n
    .balign 16
attack_user_int_n:
    int_n_table
attack_user_sgdt:
    sgdt [rip + attack_user_stack]
    ud2
attack_flag_syscall:                    // getpid by syscall with FLAGS set, then exit(0)
    mov eax, {getpid}
    push qword ptr [rip + attack_user_flags]
    popfq
    syscall
    nop
    nop
    push 2
    popfq
    xor edi, edi
    mov eax, {exit}
    syscall
    ud2
attack_flag_int80:
    mov eax, {getpid}
    push qword ptr [rip + attack_user_flags]
    popfq
    int 0x80
    nop
    nop
    push 2
    popfq
    xor edi, edi
    mov eax, {exit}
    int 0x80
    ud2
attack_flag_cli:
    push qword ptr [rip + attack_user_flags]
    popfq
    cli
    ud2
    .balign 8
attack_user_flags:                      // the flags the snippets set (`flags_before`)
    .quad 0
    .balign 16
attack_user_stack:
    .space 2048
attack_user_stack_top:
    "#,
    tf = const RFLAGS_TF,
    iopl = const RFLAGS_IOPL3,
    xen_version = const Hypercall::XenVersion as u64,
    target = sym TARGET,
    secret = const SECRET,
    getpid = const SYS_GETPID,
    exit = const SYS_EXIT,
);

unsafe extern "C" {
    static attack_tf_hypercall: u8;
    static attack_df_fault: u8;
    static attack_mov_ss_int: u8;
    static attack_iopl_in: u8;
    static attack_int_n: u8;
    static attack_load_segment: u8;
    static attack_far_jump: u8;
    static attack_secret_fault: u8;
    static attack_xsetbv: u8;
    static attack_vmxon: u8;
    static attack_vmrun: u8;
    static attack_vmload: u8;
    static attack_vmsave: u8;
    static attack_stgi: u8;
    static attack_clgi: u8;
    static attack_skinit: u8;
    static attack_invlpga: u8;
    static attack_ldt_call: u8;
    static attack_ring0_landing: u8;
    static attack_user_sgdt: u8;
    static attack_flag_syscall: u8;
    static attack_flag_int80: u8;
    static attack_flag_cli: u8;
    static attack_user_stack_top: u8;
    static attack_user_int_n: u8;
    static attack_user_flags: u8;
}
