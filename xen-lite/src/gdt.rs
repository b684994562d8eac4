//! xen-lite's global descriptor table and task-state segment.
//!
//! In 64-bit mode segments no longer limit memory; what remains is privilege: the code
//! segment's DPL *is* the current ring, and the TSS tells the CPU which stack to switch to when
//! an interrupt raises the privilege level (RSP0) or when a vector asks for a known-good stack
//! (IST). See: Intel SDM Vol. 3A, revision 086, 3.4.5 and 8.7.
//!
//! | index | selector | descriptor                                     |
//! |------:|---------:|------------------------------------------------|
//! | 0     | `0x00`   | null                                           |
//! | 1     | `0x08`   | xen-lite code: ring 0, 64-bit                  |
//! | 2     | `0x10`   | xen-lite data: ring 0                          |
//! | 3     | `0x19`   | guest kernel code: ring 1, 64-bit (`pv`)       |
//! | 4     | `0x21`   | guest kernel data: ring 1 (`pv`)               |
//! | 5     | `0x2b`   | user data: ring 3                              |
//! | 6     | `0x33`   | user code: ring 3, 64-bit                      |
//! | 7-8   | `0x38`   | TSS (a 16-byte system descriptor)              |
//!
//! A selector's low two bits are its requested privilege level: a ring-1 selector ends in 1.
//! TSS.RSP0 points at [`HYPERVISOR_STACK`]: every entry from ring 1 or ring 3 lands there.

use spin::Once;
use x86::bits64::segmentation::Descriptor64;
use x86::bits64::task::TaskStateSegment;
use x86::dtables::DescriptorTablePointer;
use x86::segmentation::{
    BuildDescriptor, CodeSegmentType, DataSegmentType, Descriptor, DescriptorBuilder,
    GateDescriptorBuilder, SegmentDescriptorBuilder, SegmentSelector,
};
use x86::Ring;

use crate::instructions;
use crate::stack::Stack;
use crate::switcher::{CpuTable, PageAligned};

/// Selector of xen-lite's code segment.
pub const HYPERVISOR_CS: SegmentSelector = SegmentSelector::new(1, Ring::Ring0);
/// Selector of xen-lite's data segment.
pub const HYPERVISOR_DS: SegmentSelector = SegmentSelector::new(2, Ring::Ring0);
/// Selector of the guest kernel's code segment (ring 1).
pub const GUEST_KERNEL_CS: SegmentSelector = SegmentSelector::new(3, Ring::Ring1);
/// Selector of the guest kernel's data and stack segment (ring 1).
pub const GUEST_KERNEL_DS: SegmentSelector = SegmentSelector::new(4, Ring::Ring1);
/// Selector of user data and stack (ring 3).
pub const USER_DS: SegmentSelector = SegmentSelector::new(5, Ring::Ring3);
/// Selector of user code (ring 3).
pub const USER_CS: SegmentSelector = SegmentSelector::new(6, Ring::Ring3);
// The guest-visible selectors are part of the ABI; the table must agree with it.
const _: () = {
    use hypercall_abi::layout::selectors::*;
    assert!(GUEST_KERNEL_CS.bits() == FLAT_RING1_CS && GUEST_KERNEL_DS.bits() == FLAT_RING1_DS);
    assert!(USER_CS.bits() == FLAT_RING3_CS && USER_DS.bits() == FLAT_RING3_DS);
};

/// Selector of the TSS.
pub const TSS_SELECTOR: SegmentSelector = SegmentSelector::new(7, Ring::Ring0);

/// IST slot (1-based, as the IDT gate encodes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;
/// IST slot of the page-fault stack. A page fault in ring 0 normally pushes its frame on the
/// stack in use; the `syscall` fast path (`entry.rs`) runs on a guest's stack, which the guest
/// may have left unwritable, so a fault there must land on a stack of xen-lite's own.
pub const PAGE_FAULT_IST: u8 = 2;
/// IST slot of the #DB stack: a `syscall` with TF set raises #DB at CPL 0 on the first
/// instruction of `syscall_entry`, still on the user's stack (Intel and Bochs; Xen XSA-204).
pub const DEBUG_IST: u8 = 3;
/// IST slot of the NMI stack: an NMI can arrive on any instruction, that one included.
pub const NMI_IST: u8 = 4;
/// IST slot of the #MC stack, for the same reason.
pub const MACHINE_CHECK_IST: u8 = 5;
const STACK_SIZE: usize = 16 * 1024;

/// Taken on a double fault, so a kernel-stack overflow still gets reported. (Always fatal: the
/// run ends, so what it leaves there is never seen by a guest.)
static DOUBLE_FAULT_STACK: Stack<STACK_SIZE> = Stack::new();
/// The stacks of the IST vectors that can return (#PF, #DB, NMI, #MC), one page each, side by
/// side so `trap_common` can tell with one range check that a frame is on one of them. Guests
/// map them (the CPU pushes there with a guest's CR3 loaded), so nothing may stay there: the
/// entry code moves each frame to xen-lite's private handler stack and wipes the page
/// (DESIGN §4, invariant 6).
pub static IST_STACKS: Stack<{ IST_PAGES * 4096 }> = Stack::new();
/// The IST vectors with a page in [`IST_STACKS`], in page order.
const IST_PAGE_SLOTS: [u8; IST_PAGES] = [PAGE_FAULT_IST, DEBUG_IST, NMI_IST, MACHINE_CHECK_IST];
const IST_PAGES: usize = 4;
/// The stack every entry from an outer ring (1 or 3) starts on (TSS.RSP0).
static HYPERVISOR_STACK: Stack<STACK_SIZE> = Stack::new();

/// The top of IST slot `ist`'s page in [`IST_STACKS`].
pub fn ist_top(ist: u8) -> u64 {
    let page =
        IST_PAGE_SLOTS.iter().position(|&slot| slot == ist).expect("an IST slot with a page");
    IST_STACKS.bottom() + (page as u64 + 1) * 4096
}

/// The guest-visible stacks xen-lite's CPU tables point at, as `(name, bottom, top)`: what the
/// auditor checks and what a domain switch scrubs.
pub fn guest_visible_stacks() -> [(&'static str, u64, u64); 5] {
    let page = |ist| (ist_top(ist) - 4096, ist_top(ist));
    [
        ("entry stack (TSS.RSP0)", HYPERVISOR_STACK.bottom(), HYPERVISOR_STACK.top()),
        ("#PF stack (IST 2)", page(PAGE_FAULT_IST).0, page(PAGE_FAULT_IST).1),
        ("#DB stack (IST 3)", page(DEBUG_IST).0, page(DEBUG_IST).1),
        ("NMI stack (IST 4)", page(NMI_IST).0, page(NMI_IST).1),
        ("#MC stack (IST 5)", page(MACHINE_CHECK_IST).0, page(MACHINE_CHECK_IST).1),
    ]
}

/// Top of [`HYPERVISOR_STACK`].
pub fn hypervisor_stack_top() -> u64 {
    HYPERVISOR_STACK.top()
}

/// The table, laid out as the hardware reads it.
#[repr(C, packed)]
struct Gdt {
    null: Descriptor,
    code: Descriptor,
    data: Descriptor,
    guest_code: Descriptor,
    guest_data: Descriptor,
    user_data: Descriptor,
    user_code: Descriptor,
    tss: Descriptor64,
}

static TSS: Once<PageAligned<CpuTable<TaskStateSegment>>> = Once::new();
static GDT: Once<PageAligned<Gdt>> = Once::new();

/// Sets TSS.RSP1: the stack the CPU switches to when ring 3 enters ring 1 through the fast
/// trap (the running domain's `stack_switch` stack).
pub fn set_ring1_stack(rsp: u64) {
    TSS.get().expect("gdt::init runs at boot").0.update(|tss| tss.set_rsp(Ring::Ring1, rsp));
}

/// The addresses of the GDT and the TSS, for a VMCS's host-state area.
pub fn bases() -> (u64, u64) {
    let gdt = GDT.get().expect("gdt::init runs at boot");
    let tss = TSS.get().expect("gdt::init runs at boot");
    (core::ptr::from_ref(&gdt.0) as u64, core::ptr::from_ref(tss.0.get()) as u64)
}

/// The pages a guest must see (see `switcher.rs`): GDT, TSS, the entry stack, the #DF stack,
/// the other IST stacks.
pub fn switcher_pages() -> [(u64, u64); 5] {
    let gdt = GDT.get().expect("gdt::init runs at boot").pages();
    let tss = TSS.get().expect("gdt::init runs at boot").pages();
    [
        gdt,
        tss,
        (HYPERVISOR_STACK.bottom(), HYPERVISOR_STACK.top()),
        (DOUBLE_FAULT_STACK.bottom(), DOUBLE_FAULT_STACK.top()),
        (IST_STACKS.bottom(), IST_STACKS.top()),
    ]
}

/// A flat 64-bit code segment for `ring`. Created *accessed*, so loading it never makes the CPU
/// write the GDT (which guests map read-only).
fn code_descriptor(ring: Ring) -> Descriptor {
    DescriptorBuilder::code_descriptor(0, 0xfffff, CodeSegmentType::ExecuteReadAccessed)
        .present()
        .dpl(ring)
        .l()
        .limit_granularity_4kb()
        .finish()
}

/// A flat data segment for `ring`, created *accessed* for the same reason.
fn data_descriptor(ring: Ring) -> Descriptor {
    DescriptorBuilder::data_descriptor(0, 0xfffff, DataSegmentType::ReadWriteAccessed)
        .present()
        .dpl(ring)
        .limit_granularity_4kb()
        .finish()
}

/// Builds the GDT and TSS, loads them and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let top = DOUBLE_FAULT_STACK.top();
        tss.set_ist(usize::from(DOUBLE_FAULT_IST - 1), top);
        for ist in IST_PAGE_SLOTS {
            tss.set_ist(usize::from(ist - 1), ist_top(ist));
        }
        tss.set_rsp(Ring::Ring0, hypervisor_stack_top());
        // No I/O permission bitmap: its offset points past the TSS limit, so `in`/`out` from
        // any ring above IOPL (0) raise #GP. Left at 0, the CPU would read the TSS's own first
        // bytes as the bitmap and let ring 1 reach some ports.
        tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
        PageAligned(CpuTable::new(tss))
    });
    let tss_base = core::ptr::from_ref(tss.0.get()) as u64;
    let tss_limit = core::mem::size_of::<TaskStateSegment>() as u64 - 1;
    let gdt = GDT.call_once(|| {
        PageAligned(Gdt {
            null: Descriptor::NULL,
            code: code_descriptor(Ring::Ring0),
            data: data_descriptor(Ring::Ring0),
            guest_code: code_descriptor(Ring::Ring1),
            guest_data: data_descriptor(Ring::Ring1),
            user_data: data_descriptor(Ring::Ring3),
            user_code: code_descriptor(Ring::Ring3),
            tss: <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(
                tss_base, tss_limit, true,
            )
            .present()
            .dpl(Ring::Ring0)
            .finish(),
        })
    });
    let pointer = DescriptorTablePointer::new(&gdt.0);
    // SAFETY: `GDT` and `TSS` are statics initialised once and never changed afterwards; the
    // selectors below name the descriptors just built.
    unsafe {
        instructions::lgdt(&pointer);
        instructions::load_segments(HYPERVISOR_CS, HYPERVISOR_DS);
        instructions::ltr(TSS_SELECTOR);
    }
    instructions::clear_ldtr();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_encode_long_mode_ring_0_segments() {
        // Access byte 0x9b: present, DPL 0, code, execute/read, accessed. Flags 0xa: 4 KiB
        // granularity, L.
        assert_eq!(code_descriptor(Ring::Ring0).as_u64(), 0x00af_9b00_0000_ffff);
        // Access byte 0x93: present, DPL 0, data, read/write, accessed. Flags 0x8: 4 KiB.
        assert_eq!(data_descriptor(Ring::Ring0).as_u64(), 0x008f_9300_0000_ffff);
        // DPL lives in access-byte bits 5-6: 0xbb is code at DPL 1, 0xf3 data at DPL 3.
        assert_eq!(code_descriptor(Ring::Ring1).as_u64(), 0x00af_bb00_0000_ffff);
        assert_eq!(data_descriptor(Ring::Ring3).as_u64(), 0x008f_f300_0000_ffff);
        assert_eq!(HYPERVISOR_CS.bits(), 0x08);
        assert_eq!((GUEST_KERNEL_CS.bits(), GUEST_KERNEL_DS.bits()), (0x19, 0x21));
        assert_eq!((USER_DS.bits(), USER_CS.bits()), (0x2b, 0x33));
        assert_eq!(TSS_SELECTOR.bits(), 0x38);
        assert_eq!(core::mem::size_of::<Gdt>(), 72);
        assert_eq!(core::mem::size_of::<PageAligned<Gdt>>(), 4096, "a page of its own");
    }
}
