//! The hypercall interface: numbers, sub-operations, argument records and error codes.
//!
//! Numbers follow Xen's `public/xen.h` where the meaning is the same, so a student can read the
//! two side by side. A guest calls hypercall `n` at `StartInfo::hypercall_page + 32 * n`; the
//! stub there (written by xen-lite) loads `n` into `rax` and enters the hypervisor by the
//! mode's transport (`int 0x82` in `pv`). Arguments go in `rdi, rsi, rdx, r10, r8` (Xen's
//! x86-64 order); the result comes back in `rax`: zero or a positive value on success, a
//! negative [`Errno`] on failure.

use core::mem::size_of;

use crate::record::{word, Record};
pub use crate::stats::{Stats, VM_EXIT_SLOTS};

/// Every hypercall xen-lite knows. Deliberately exhaustive (no `#[non_exhaustive]`): adding one
/// breaks xen-lite's dispatcher until it is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Hypercall {
    /// `set_trap_table(table: *const TrapInfo)`: install the virtual IDT (entries until
    /// `address == 0`, at most 256).
    SetTrapTable = 0,
    /// `mmu_update(requests: *const MmuUpdate, count, done: *mut u64)`: write page-table
    /// entries, each validated; stops at the first refused one and stores how many were
    /// applied in `*done` (if `done` is not null).
    MmuUpdate = 1,
    /// `stack_switch(ss, rsp)`: the ring-1 stack bounces from ring 3 start on.
    StackSwitch = 3,
    /// `set_callbacks(event, failsafe, syscall, no_delivery_start, no_delivery_end)`. The
    /// no-delivery window lies in the domain's memory and spans at most [`NO_DELIVERY_MAX`]
    /// bytes (both 0: none).
    SetCallbacks = 4,
    /// `set_timer_op(deadline_ns)`: one-shot timer event at system time `deadline_ns`; 0
    /// cancels.
    SetTimerOp = 15,
    /// `update_va_mapping(va, entry, flags)`: write the level-1 entry that maps `va` in the
    /// current address space (validated); `flags` is `UVMF_*`.
    UpdateVaMapping = 14,
    /// `xen_version()`: `major << 16 | minor`.
    XenVersion = 17,
    /// `console_io(CONSOLEIO_WRITE, len, buf)`: write to the domain's console.
    ConsoleIo = 18,
    /// `sched_op(cmd, arg)`: yield, block, shutdown.
    SchedOp = 29,
    /// `event_channel_op(cmd, arg0, arg1)`: bind a VIRQ, open a port, send.
    EventChannelOp = 32,
    /// `mmuext_op(ops: *const MmuextOp, count, done: *mut u64)`: pin and unpin tables, switch
    /// the base pointer, flush the TLB.
    MmuextOp = 26,
    /// `stats(buf: *mut Stats)`: copy this domain's counters out.
    Stats = 40,
    // LAB 1.5 BEGIN: add hypercall `DomainId = 48`, `domain_id()`, which returns the caller's domain id (it takes no arguments)
    // Hint: a variant of this enum is the whole ABI of a hypercall: its number, and (below) its place in `ALL` and its name.
    // Handout: // LAB 1.5: the new hypercall's variant goes here.
    /// `domain_id()`: the calling domain's id. 48 is the first number Xen leaves to each
    /// architecture, so it clashes with no hypercall Xen shares.
    DomainId = 48,
    // LAB 1.5 END
}

impl Hypercall {
    /// All hypercalls, for tables and tests.
    pub const ALL: &[Hypercall] = &[
        Hypercall::SetTrapTable,
        Hypercall::MmuUpdate,
        Hypercall::UpdateVaMapping,
        Hypercall::MmuextOp,
        Hypercall::StackSwitch,
        Hypercall::SetCallbacks,
        Hypercall::SetTimerOp,
        Hypercall::XenVersion,
        Hypercall::ConsoleIo,
        Hypercall::SchedOp,
        Hypercall::EventChannelOp,
        Hypercall::Stats,
        // LAB 1.5 BEGIN: list the new hypercall, so `from_number` decodes it
        // Handout: // LAB 1.5: the new hypercall goes here too.
        Hypercall::DomainId,
        // LAB 1.5 END
    ];

    /// Decodes a hypercall number.
    pub fn from_number(number: u64) -> Option<Hypercall> {
        Hypercall::ALL.iter().copied().find(|h| *h as u64 == number)
    }

    /// The handler's name without `do_`.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::SetTrapTable => "set_trap_table",
            Hypercall::MmuUpdate => "mmu_update",
            Hypercall::UpdateVaMapping => "update_va_mapping",
            Hypercall::MmuextOp => "mmuext_op",
            Hypercall::StackSwitch => "stack_switch",
            Hypercall::SetCallbacks => "set_callbacks",
            Hypercall::SetTimerOp => "set_timer_op",
            Hypercall::XenVersion => "xen_version",
            Hypercall::ConsoleIo => "console_io",
            Hypercall::SchedOp => "sched_op",
            Hypercall::EventChannelOp => "event_channel_op",
            Hypercall::Stats => "stats",
            // LAB 1.5 BEGIN: name the new hypercall `domain_id` (gdb's `xl-hypercall` and the exit summary print it)
            // Handout: // LAB 1.5: and its name here.
            Hypercall::DomainId => "domain_id",
            // LAB 1.5 END
        }
    }
}

/// Bytes per stub in the hypercall page.
pub const HYPERCALL_STUB_SIZE: u64 = 32;
/// Stubs in the hypercall page (numbers `0..HYPERCALL_PAGE_ENTRIES`).
pub const HYPERCALL_PAGE_ENTRIES: u64 = 4096 / HYPERCALL_STUB_SIZE;

// ANCHOR: hypercall_stub
/// The hypercall-page stub for `number` with the hypervisor's chosen `trap` instruction:
/// `mov eax, number; <trap>; ret`, padded with `int3`. The `pv` trap is `int 0x82`, the `vmx`
/// one `vmcall` (`0f 01 c1`). `trap` is at most 8 bytes.
pub fn hypercall_stub(number: u64, trap: &[u8]) -> [u8; HYPERCALL_STUB_SIZE as usize] {
    let mut stub = [0xcc; HYPERCALL_STUB_SIZE as usize];
    stub[0] = 0xb8;
    stub[1..5].copy_from_slice(&(number as u32).to_le_bytes());
    stub[5..5 + trap.len()].copy_from_slice(trap);
    stub[5 + trap.len()] = 0xc3;
    stub
}
// ANCHOR_END: hypercall_stub
/// The `pv` transport: the vector of `int 0x82` (gate DPL 1: ring 1 may use it, ring 3 may not).
pub const HYPERCALL_VECTOR: u8 = 0x82;
/// The vector of the `int 0x80` system call. A guest that registers it in its trap table with
/// DPL 3 gets a real IDT gate from ring 3 straight to its ring-1 handler (the *fast trap*, no
/// hypervisor entry); the same handler address as its `syscall` callback makes both paths
/// deliver the same frame.
pub const SYSCALL_VECTOR: u8 = 0x80;
/// The `vector` a bounced `syscall` carries in its trap frame (not a real IDT vector).
pub const SYSCALL_BOUNCE_VECTOR: u64 = 0x100;

/// `xen_version` of this xen-lite: 0.1.
pub const XEN_LITE_VERSION: u64 = 1;

/// Longest `set_callbacks` no-delivery window, in bytes: it covers the few instructions
/// between unmasking events and `iretq`, not a whole kernel (which would never take an event).
pub const NO_DELIVERY_MAX: u64 = 256;

/// `console_io` command: write.
pub const CONSOLEIO_WRITE: u64 = 0;
/// Longest `console_io` write accepted in one call.
pub const CONSOLEIO_MAX: u64 = 4096;

/// `sched_op` command: give up the CPU, stay runnable.
pub const SCHEDOP_YIELD: u64 = 0;
/// `sched_op` command: unmask events and sleep until one is pending.
pub const SCHEDOP_BLOCK: u64 = 1;
/// `sched_op` command: end the domain with exit code `arg` (0..=99).
pub const SCHEDOP_SHUTDOWN: u64 = 2;

/// `event_channel_op` command: `bind_virq(virq) -> port`.
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `event_channel_op` command: `send(domain, port)`: set `port` pending in `domain`.
pub const EVTCHNOP_SEND: u64 = 4;
/// `event_channel_op` command: `alloc_unbound(remote_domain) -> port`: a port that
/// `remote_domain` may send to.
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// Event ports per domain.
pub const NR_EVENT_PORTS: u64 = 64;
/// The virtual timer interrupt (raised when a `set_timer_op` deadline passes).
pub const VIRQ_TIMER: u64 = 0;
/// Number of VIRQs.
pub const NR_VIRQS: u64 = 1;

/// `mmu_update` request: `ptr` is the machine address of the entry (8-byte aligned; the low
/// bits hold the command, only [`MMU_NORMAL_PT_UPDATE`]), `val` the new entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the entry, with the command in bits 0-2.
    pub ptr: u64,
    /// The new entry (machine address and flags).
    pub val: u64,
}

const _: () = assert!(size_of::<MmuUpdate>() == 16);

impl Record for MmuUpdate {
    type Bytes = [u8; 16];
    const ZERO: [u8; 16] = [0; 16];

    #[inline]
    fn decode(bytes: &[u8; 16]) -> Self {
        MmuUpdate { ptr: word(bytes, 0), val: word(bytes, 8) }
    }

    #[inline]
    fn encode(&self) -> [u8; 16] {
        two_words(self.ptr, self.val)
    }
}

/// Two little-endian words, as most records are.
#[inline]
fn two_words(first: u64, second: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&first.to_le_bytes());
    out[8..].copy_from_slice(&second.to_le_bytes());
    out
}

/// `mmu_update` command: write a page-table entry.
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// Longest batch `mmu_update` and `mmuext_op` take in one call.
pub const MMU_BATCH_MAX: u64 = 512;

/// `mmuext_op` operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MmuextOp {
    /// One of the `MMUEXT_*` commands.
    pub cmd: u64,
    /// A machine frame number (pin, unpin, new base pointer) or a virtual address (invlpg).
    pub arg: u64,
}

const _: () = assert!(size_of::<MmuextOp>() == 16);

impl Record for MmuextOp {
    type Bytes = [u8; 16];
    const ZERO: [u8; 16] = [0; 16];

    #[inline]
    fn decode(bytes: &[u8; 16]) -> Self {
        MmuextOp { cmd: word(bytes, 0), arg: word(bytes, 8) }
    }

    #[inline]
    fn encode(&self) -> [u8; 16] {
        two_words(self.cmd, self.arg)
    }
}

/// `mmuext_op`: pin a frame as a level-1 table (level 2, 3, 4: the next three numbers).
pub const MMUEXT_PIN_L1_TABLE: u64 = 0;
/// `mmuext_op`: pin as a level-4 table.
pub const MMUEXT_PIN_L4_TABLE: u64 = 3;
/// `mmuext_op`: unpin a table.
pub const MMUEXT_UNPIN_TABLE: u64 = 4;
/// `mmuext_op`: switch to the address space whose level-4 table is frame `arg`.
pub const MMUEXT_NEW_BASEPTR: u64 = 5;
/// `mmuext_op`: flush this CPU's TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u64 = 6;
/// `mmuext_op`: flush the TLB entry for address `arg`.
pub const MMUEXT_INVLPG_LOCAL: u64 = 7;

/// `update_va_mapping` flag: flush the whole TLB afterwards.
pub const UVMF_TLB_FLUSH: u64 = 1;
/// `update_va_mapping` flag: flush the entry for `va` afterwards.
pub const UVMF_INVLPG: u64 = 2;

/// Negative return values. See: Linux `asm-generic/errno-base.h` (the numbers Xen uses too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    /// Not allowed for this domain.
    EPERM = 1,
    /// No such object (a port or VIRQ that is not bound).
    ENOENT = 2,
    /// No such domain.
    ESRCH = 3,
    /// No child process to wait for.
    ECHILD = 10,
    /// Out of memory.
    ENOMEM = 12,
    /// The caller may not do this to that object.
    EACCES = 13,
    /// A guest pointer that is not in the domain's memory.
    EFAULT = 14,
    /// Already in use.
    EBUSY = 16,
    /// A bad argument.
    EINVAL = 22,
    /// Out of slots.
    ENOSPC = 28,
    /// No such hypercall or sub-command.
    ENOSYS = 38,
}

impl Errno {
    /// Every errno, in number order.
    pub const ALL: [Errno; 11] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::ESRCH,
        Errno::ECHILD,
        Errno::ENOMEM,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EINVAL,
        Errno::ENOSPC,
        Errno::ENOSYS,
    ];

    /// The value a hypercall returns in `rax`: `-errno` as `u64`.
    pub const fn to_return(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decodes a hypercall return value, if it is an error.
    pub fn from_return(value: u64) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.to_return() == value)
    }
}

/// One entry of the virtual IDT given to `set_trap_table`. Written by the guest, copied in and
/// checked by xen-lite at the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception or interrupt vector.
    pub vector: u8,
    /// Bits 0-1: the highest ring allowed to raise this vector with `int n` (the gate's DPL);
    /// 3 lets ring 3 use `int3` or `int 0x80`.
    pub flags: u8,
    /// Reserved, zero.
    pub reserved: [u8; 6],
    /// Handler address (ring 1); 0 ends the table.
    pub address: u64,
}

const _: () = assert!(size_of::<TrapInfo>() == 16);

impl Record for TrapInfo {
    type Bytes = [u8; 16];
    const ZERO: [u8; 16] = [0; 16];

    #[inline]
    fn decode(bytes: &[u8; 16]) -> Self {
        TrapInfo { vector: bytes[0], flags: bytes[1], reserved: [0; 6], address: word(bytes, 8) }
    }

    #[inline]
    fn encode(&self) -> [u8; 16] {
        let mut out = two_words(0, self.address);
        out[..2].copy_from_slice(&[self.vector, self.flags]);
        out[2..8].copy_from_slice(&self.reserved);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_xen_and_round_trip() {
        assert_eq!(Hypercall::SetTrapTable as u64, 0);
        assert_eq!(Hypercall::ConsoleIo as u64, 18);
        assert_eq!(Hypercall::SchedOp as u64, 29);
        assert_eq!(Hypercall::EventChannelOp as u64, 32);
        for &h in Hypercall::ALL {
            assert_eq!(Hypercall::from_number(h as u64), Some(h));
            assert!((h as u64) < 64, "fits Stats (and so the 128-entry hypercall page)");
        }
        assert_eq!(Hypercall::MmuUpdate as u64, 1);
        assert_eq!(Hypercall::MmuextOp as u64, 26);
        assert_eq!(Hypercall::from_number(2), None, "set_gdt is not offered");
    }

    /// Lab 1.5's ABI half: written without naming the variant, so it builds (and fails) in the
    /// handout too.
    #[test]
    fn domain_id_is_hypercall_48() {
        let found = Hypercall::from_number(48);
        assert_eq!(found.map(Hypercall::name), Some("domain_id"), "hypercall 48 must decode");
        assert!(Hypercall::ALL.iter().filter(|h| **h as u64 == 48).count() == 1);
    }

    #[test]
    fn stats_words_round_trip_in_layout_order() {
        let mut stats = Stats::new();
        stats.hypercalls[18] = 7;
        stats.bounces[14] = 2;
        stats.cr3_writes = 9;
        stats.vm_exits[18] = 4;
        stats.vm_exits[VM_EXIT_SLOTS - 1] = 1;
        stats.shadow_invalidations = 3;
        let words = stats.to_words();
        assert_eq!((words[18], words[64 + 14], words[101], words[104 + 18]), (7, 2, 9, 4));
        assert_eq!((words[104 + VM_EXIT_SLOTS - 1], words[Stats::WORDS - 1]), (1, 3));
        assert_eq!(core::mem::offset_of!(Stats, shadow_invalidations), (Stats::WORDS - 1) * 8);
        assert_eq!(stats.vm_exits_total(), 5);
        assert_eq!(core::mem::offset_of!(Stats, cr3_writes), 101 * 8);
        assert_eq!(Stats::from_words(&words), stats);
    }

    #[test]
    fn stubs_load_the_number_trap_and_return() {
        let stub = hypercall_stub(18, &[0xcd, HYPERCALL_VECTOR]);
        assert_eq!(stub[..8], [0xb8, 18, 0, 0, 0, 0xcd, 0x82, 0xc3]);
        assert!(stub[8..].iter().all(|&b| b == 0xcc));
        let stub = hypercall_stub(29, &[0x0f, 0x01, 0xc1]);
        assert_eq!(stub[..9], [0xb8, 29, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]);
    }

    #[test]
    fn errno_values_are_negative_returns() {
        assert_eq!(Errno::ENOSYS.to_return(), (-38i64) as u64);
        assert_eq!(Errno::from_return((-22i64) as u64), Some(Errno::EINVAL));
        assert_eq!(Errno::from_return(0), None);
        assert_eq!(HYPERCALL_PAGE_ENTRIES, 128);
    }
}
