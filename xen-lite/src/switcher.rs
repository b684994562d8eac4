//! The switcher: the only part of xen-lite that a `pv` guest's address space contains.
//!
//! Ring 1 is *supervisor* to the MMU, so any page of xen-lite mapped in a guest's page tables is
//! a page the guest kernel can read (and, if writable, write). xen-lite therefore runs on its
//! own page tables and maps into every guest only what the CPU itself must reach while the
//! guest's CR3 is loaded, on the way in and on the way out (DESIGN §4, invariant 1):
//!
//! | pages                                  | guest rights | why the CPU needs them                |
//! |----------------------------------------|--------------|---------------------------------------|
//! | entry code (`entry.rs`, `.text.switcher`) | read, execute | the first and last instructions of every entry run before / after the CR3 switch |
//! | IDT                                    | read         | the CPU reads the gate on every interrupt |
//! | GDT and TSS                            | read         | segment loads; TSS.RSP0 / IST stack pointers. Descriptors are created *accessed* so the CPU never writes them |
//! | `HYPERVISOR_CR3`, `SYSCALL_STACK`      | read         | the entry code loads xen-lite's CR3 and, for `syscall`, the entry stack's top from them |
//! | entry stack (TSS.RSP0) and #DF stack   | read, write  | the CPU pushes the interrupt frame there |
//! | `SYSCALL_FAST`                         | read         | the `syscall` fast path: where the running domain's syscalls are bounced (its callback, stack, virtual IF) |
//! | `SYSCALL_SCRATCH`                      | read, write  | `syscall` does not switch stacks: the entry code parks the user's `rsp` and `rip` here, and counts fast bounces and NMIs |
//! | #PF, #DB, NMI, #MC stacks (IST 2-5)    | read, write  | these can arrive in the `syscall` entry, on a guest's stack, so they need stacks of xen-lite's |
//!
//! Everything else — xen-lite's code and data, its map of physical memory, other domains — is
//! simply absent. All of it sits in xen-lite's image, in one level-4 slot; every guest's L4 gets
//! that slot pointing at a small tree (built once, owned by xen-lite, never mappable by a guest)
//! that maps these pages and nothing else. The guest can read the switcher but can change
//! nothing in it that matters, and can read nothing of another domain's in it (DESIGN §4,
//! invariant 6): the entry stack holds only the frame of the context being entered or resumed
//! (the handler runs on a private stack, [`HANDLER_STACK`]); a frame that lands on an IST
//! stack is moved to the private stack and wiped there at once (`entry.rs`); and what the
//! `syscall` entry and the NMI entry leave behind (two registers in the scratch page, an NMI's
//! frame) is wiped whenever another domain is about to run ([`scrub_before_switch`]).
//!
//! The price: every entry from a guest writes CR3 twice (to xen-lite's tables and back), and
//! without PCIDs each write flushes the TLB. `Stats::cr3_writes` counts them.
//!
//! Except the commonest one. A user's `syscall` needs nothing of xen-lite's private state to be
//! bounced: only where the guest wants it (its callback and stack) and its virtual IF. The
//! *fast path* at the top of `syscall_entry` builds the bounce frame on the guest's stack and
//! `iretq`s into the guest's callback without leaving the guest's address space: one entry, no
//! CR3 write. It needs three things mapped: [`SYSCALL_FAST`] (read-only: a guest that could
//! change it would choose where ring 0 writes), the scratch page, and a page-fault stack, since
//! the writes go through the guest's own page tables at CPL 0 and a guest may have made its
//! stack unwritable: the fault then lands on xen-lite's stack, and `trap::handle_trap` replays
//! the call through the slow path, which checks everything and names the rule broken. A pending
//! event is not delivered on the way (the slow path would); it waits for the next entry, at most
//! one timer tick.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::page_table::{self, PRESENT, WRITABLE};

use crate::frame::Frame;
use crate::memory_map::{l4_index, phys_to_virt, IMAGE_BASE};
use crate::paging::translate;
use crate::stack::Stack;

/// A value alone on its own page(s), so it can be mapped without its neighbours.
#[repr(C, align(4096))]
pub struct PageAligned<T>(pub T);

impl<T> PageAligned<T> {
    /// The page range `[start, end)` the value occupies.
    pub fn pages(&self) -> (u64, u64) {
        let start = core::ptr::from_ref(self) as u64;
        (start, start + core::mem::size_of::<Self>() as u64)
    }
}

/// A CPU table xen-lite changes while it runs (the IDT's fast-trap gate, TSS.RSP1).
pub struct CpuTable<T>(core::cell::UnsafeCell<T>);

// SAFETY: xen-lite runs on one CPU, and changes these tables only in its handlers, with
// interrupts off; the CPU reads them only while delivering an interrupt, never concurrently
// with a change.
unsafe impl<T> Sync for CpuTable<T> {}

impl<T> CpuTable<T> {
    /// Wraps a table.
    pub const fn new(value: T) -> Self {
        CpuTable(core::cell::UnsafeCell::new(value))
    }

    /// The table, for loading it into the CPU.
    pub fn get(&self) -> &T {
        // SAFETY: see the `Sync` impl: no change happens while this reference is used.
        unsafe { &*self.0.get() }
    }

    /// Changes the table.
    pub fn update(&self, change: impl FnOnce(&mut T)) {
        // SAFETY: see the `Sync` impl; no other reference is held across this call.
        change(unsafe { &mut *self.0.get() })
    }
}

/// xen-lite's CR3, read by the entry code while a guest's CR3 is still loaded.
pub static HYPERVISOR_CR3: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));
/// The top of the entry stack, for the `syscall` entry (which, unlike an interrupt, does not
/// switch stacks by itself). Read-only to guests: a guest that could change it would choose
/// where ring 0 pushes.
pub static SYSCALL_STACK: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));
/// What the `syscall` entry keeps while it runs on a guest's stack. Guests may write this page;
/// the two registers are only live within the entry code, and a guest that changes the count
/// only misreports its own `Stats::entries_syscall`.
#[repr(C)]
pub struct SyscallScratch {
    /// The user's `rsp`.
    pub user_rsp: AtomicU64,
    /// The user's `rip` (what `syscall` put in `rcx`), to recover from a fault in the fast path.
    pub user_rip: AtomicU64,
    /// System calls the fast path bounced since xen-lite last looked (`take_fast_bounces`).
    pub fast_bounces: AtomicU64,
    /// NMIs taken (and ignored: xen-lite has no NMI source) since boot.
    pub nmis: AtomicU64,
}

/// See [`SyscallScratch`].
pub static SYSCALL_SCRATCH: PageAligned<SyscallScratch> = PageAligned(SyscallScratch {
    user_rsp: AtomicU64::new(0),
    user_rip: AtomicU64::new(0),
    fast_bounces: AtomicU64::new(0),
    nmis: AtomicU64::new(0),
});

/// Where the `syscall` fast path bounces the running domain's system calls: its registered
/// syscall callback, the top of its `stack_switch` stack (16-byte aligned; 0 = no fast path:
/// take the slow one), and the guest address of its virtual IF (`SharedInfo.vcpu.upcall_mask`).
/// Read-only to guests; xen-lite sets it whenever it returns into a domain.
#[repr(C)]
pub struct SyscallFast {
    /// The guest's syscall callback (ring 1).
    pub callback: AtomicU64,
    /// The ring-1 stack top, or 0 for the slow path.
    pub stack: AtomicU64,
    /// Guest-virtual address of its `upcall_mask` byte.
    pub mask: AtomicU64,
}

/// See [`SyscallFast`].
pub static SYSCALL_FAST: PageAligned<SyscallFast> = PageAligned(SyscallFast {
    callback: AtomicU64::new(0),
    stack: AtomicU64::new(0),
    mask: AtomicU64::new(0),
});

/// Points the fast path at a domain's callback, stack and virtual IF, or turns it off (`None`).
pub fn set_fast_syscall(target: Option<(u64, u64, u64)>) {
    let (callback, stack, mask) = target.unwrap_or((0, 0, 0));
    SYSCALL_FAST.0.callback.store(callback, Ordering::Relaxed);
    SYSCALL_FAST.0.mask.store(mask, Ordering::Relaxed);
    SYSCALL_FAST.0.stack.store(stack & !0xf, Ordering::Relaxed);
}

/// System calls the fast path bounced since the last call (for the running domain's stats).
pub fn take_fast_bounces() -> u64 {
    SYSCALL_SCRATCH.0.fast_bounces.swap(0, Ordering::Relaxed)
}

/// The user context of a `syscall` whose fast path faulted: `(rip, rsp)` as the entry saved them.
pub fn interrupted_syscall() -> (u64, u64) {
    (
        SYSCALL_SCRATCH.0.user_rip.load(Ordering::Relaxed),
        SYSCALL_SCRATCH.0.user_rsp.load(Ordering::Relaxed),
    )
}

/// The CR3 an entry resumes with (what `trap::handle_trap` returns to `trap_return`): the
/// resumed domain's, or xen-lite's. Private to xen-lite.
pub static RETURN_CR3: AtomicU64 = AtomicU64::new(0);

/// Bytes in [`HANDLER_STACK`].
pub const HANDLER_STACK_SIZE: usize = 64 * 1024;
/// The private stack xen-lite's handlers run on after an entry from a guest.
pub static HANDLER_STACK: Stack<HANDLER_STACK_SIZE> = Stack::new();
/// [`HANDLER_STACK`]'s top, for the entry code.
pub static HANDLER_STACK_TOP: AtomicU64 = AtomicU64::new(0);

/// Where the frame of an entry from ring 1 or 3 sits: the top of the entry stack (TSS.RSP0).
/// `trap_return` moves a frame here before it returns into a guest from anywhere else.
pub static ENTRY_FRAME: AtomicU64 = AtomicU64::new(0);

/// Where `trap_return` puts a frame that resumes the switcher itself at CPL 0 on a guest's CR3
/// (after a harmless #DB on an entry's first instruction): the top of the #DB IST page.
pub static DEBUG_RETURN_FRAME: AtomicU64 = AtomicU64::new(0);

/// Records xen-lite's CR3 (and makes it the return CR3 until a guest runs).
pub fn set_hypervisor_cr3(cr3: u64) {
    HYPERVISOR_CR3.0.store(cr3, Ordering::SeqCst);
    RETURN_CR3.store(cr3, Ordering::SeqCst);
    HANDLER_STACK_TOP.store(HANDLER_STACK.top(), Ordering::SeqCst);
    let frame = core::mem::size_of::<crate::entry::TrapFrame>() as u64;
    ENTRY_FRAME.store(crate::gdt::hypervisor_stack_top() - frame, Ordering::SeqCst);
    let debug_top = crate::gdt::ist_top(crate::gdt::DEBUG_IST);
    DEBUG_RETURN_FRAME.store(debug_top - frame, Ordering::SeqCst);
    SYSCALL_STACK.0.store(crate::gdt::hypervisor_stack_top(), Ordering::SeqCst);
}

/// xen-lite's CR3.
pub fn hypervisor_cr3() -> u64 {
    HYPERVISOR_CR3.0.load(Ordering::SeqCst)
}

/// The CR3 the next return from an entry loads.
pub fn set_return_cr3(cr3: u64) {
    RETURN_CR3.store(cr3, Ordering::SeqCst);
}

/// The CR3 the next return from an entry loads.
pub fn return_cr3() -> u64 {
    RETURN_CR3.load(Ordering::SeqCst)
}

/// NMIs the NMI entry counted since boot.
pub fn nmi_count() -> u64 {
    SYSCALL_SCRATCH.0.nmis.load(Ordering::Relaxed)
}

/// Wipes what the running domain may have left in pages every domain maps, before another one
/// runs: the user `rsp`/`rip` the `syscall` entry parked in the scratch page, an NMI's frame on
/// its IST page, and the frame of a #DB the switcher returned from (every other IST frame is
/// wiped by the entry code as it arrives, and the entry stack's frame slot is rewritten by
/// `trap_return` with the next domain's own).
pub fn scrub_before_switch() {
    SYSCALL_SCRATCH.0.user_rsp.store(0, Ordering::Relaxed);
    SYSCALL_SCRATCH.0.user_rip.store(0, Ordering::Relaxed);
    for ist in [crate::gdt::NMI_IST, crate::gdt::DEBUG_IST] {
        let top = crate::gdt::ist_top(ist);
        let words = core::mem::size_of::<crate::entry::TrapFrame>() / 8;
        let frame = (top - words as u64 * 8) as *mut u64;
        // SAFETY: the top words of an IST page, a static of xen-lite's that only the CPU and
        // `trap_return` write (a frame); an NMI arriving during the wipe pushes its frame
        // again, below no live data, and the next switch wipes it.
        unsafe { core::ptr::write_bytes(frame, 0, words) };
    }
}

/// The auditor's check of invariant 6 (`pv::audit`): the IST pages hold nothing (the entry
/// code moves each frame off and wipes it; an NMI's frame, and a #DB frame the switcher returned
/// from, may stay on their pages until the next switch), the entry stack nothing below its
/// frame slot, and, when another domain runs next, the scratch page no user registers and the
/// NMI and #DB pages no frame. `whole`: every word of every
/// stack; otherwise only the IST frame slots, the only words an entry writes (cheap enough for
/// every timer tick).
pub fn audit_stacks(switched: bool, whole: bool) -> Result<(), crate::pv::audit::Violation> {
    use crate::pv::audit::Violation;
    let frame = core::mem::size_of::<crate::entry::TrapFrame>() as u64;
    for (index, (stack, bottom, top)) in crate::gdt::guest_visible_stacks().into_iter().enumerate()
    {
        let kept = [crate::gdt::NMI_IST, crate::gdt::DEBUG_IST].map(crate::gdt::ist_top);
        let end = if index == 0 || (kept.contains(&top) && !switched) { top - frame } else { top };
        let start = if whole { bottom } else { end.saturating_sub(frame).max(bottom) };
        let words = ((end - start) / 8) as usize;
        // SAFETY: words of one of xen-lite's own stacks (statics), mapped in its address space;
        // only read.
        let slice = unsafe { core::slice::from_raw_parts(start as *const u64, words) };
        if let Some(at) = slice.iter().position(|&word| word != 0) {
            let address = start + at as u64 * 8;
            return Err(Violation::StackNotClean { stack, address, value: slice[at] });
        }
    }
    let parked = [
        ("syscall scratch (user rsp)", &SYSCALL_SCRATCH.0.user_rsp),
        ("syscall scratch (user rip)", &SYSCALL_SCRATCH.0.user_rip),
    ];
    for (stack, word) in parked.into_iter().filter(|_| switched) {
        let value = word.load(Ordering::Relaxed);
        if value != 0 {
            return Err(Violation::StackNotClean { stack, address: word.as_ptr() as u64, value });
        }
    }
    Ok(())
}

/// The pages a guest sees, with their rights: `(start, end, writable)`.
fn regions() -> [(u64, u64, bool); 10] {
    let [gdt, tss, rsp0, df, ist] = crate::gdt::switcher_pages();
    [
        (crate::entry::switcher_text().0, crate::entry::switcher_text().1, false),
        (crate::idt::table_pages().0, crate::idt::table_pages().1, false),
        (gdt.0, tss.1.max(gdt.1), false),
        (HYPERVISOR_CR3.pages().0, HYPERVISOR_CR3.pages().1, false),
        (SYSCALL_STACK.pages().0, SYSCALL_STACK.pages().1, false),
        (SYSCALL_FAST.pages().0, SYSCALL_FAST.pages().1, false),
        (SYSCALL_SCRATCH.pages().0, SYSCALL_SCRATCH.pages().1, true),
        (rsp0.0, rsp0.1, true),
        (df.0, df.1, true),
        (ist.0, ist.1, true),
    ]
}

/// Builds the tree every guest L4 points to in xen-lite's image slot; returns `(slot, entry)`.
/// `alloc` gives zeroed frames.
pub fn build_guest_slot(mut alloc: impl FnMut() -> Frame) -> (usize, u64) {
    let slot = l4_index(IMAGE_BASE);
    let l3 = alloc();
    for (start, end, writable) in regions() {
        let mut va = start & !0xfff;
        while va < end {
            assert_eq!(l4_index(va), slot, "switcher page {va:#x} outside xen-lite's image slot");
            let phys =
                translate(va).unwrap_or_else(|| panic!("switcher page {va:#x} is not mapped"));
            map(l3, va, phys, if writable { PRESENT | WRITABLE } else { PRESENT }, &mut alloc);
            va += 4096;
        }
    }
    (slot, l3.addr() | PRESENT | WRITABLE)
}

/// Maps `va` to `phys` under the L3 table `l3`, creating L2 and L1 tables as needed.
fn map(l3: Frame, va: u64, phys: u64, flags: u64, alloc: &mut impl FnMut() -> Frame) {
    let mut table = l3.addr();
    for level in [3u32, 2] {
        let entry = table_entry(table, page_table::index(va, level));
        // SAFETY: `entry` points into a table frame this function allocated (or the L3 given).
        let current = unsafe { entry.read() };
        table = if current & PRESENT == 0 {
            let next = alloc().addr();
            // SAFETY: as above; intermediate entries allow everything, the leaf decides.
            unsafe { entry.write(next | PRESENT | WRITABLE) };
            next
        } else {
            page_table::address(current)
        };
    }
    // SAFETY: `table` is an L1 frame this function allocated.
    unsafe { *table_entry(table, page_table::index(va, 1)) = phys | flags };
}

fn table_entry(table: u64, index: usize) -> *mut u64 {
    (phys_to_virt(table) as *mut u64).wrapping_add(index)
}
