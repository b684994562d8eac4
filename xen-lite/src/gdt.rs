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
//! | 3-4   | `0x18`   | TSS (a 16-byte system descriptor)              |

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

/// Selector of xen-lite's code segment.
pub const HYPERVISOR_CS: SegmentSelector = SegmentSelector::new(1, Ring::Ring0);
/// Selector of xen-lite's data segment.
pub const HYPERVISOR_DS: SegmentSelector = SegmentSelector::new(2, Ring::Ring0);
/// Selector of the TSS.
pub const TSS_SELECTOR: SegmentSelector = SegmentSelector::new(3, Ring::Ring0);

/// IST slot (1-based, as the IDT gate encodes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;
const STACK_SIZE: usize = 16 * 1024;

/// A stack the CPU switches to by itself; 16-byte aligned as the ABI wants.
#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Taken on a double fault, so a kernel-stack overflow still gets reported.
static DOUBLE_FAULT_STACK: Stack = Stack([0; STACK_SIZE]);

/// The table, laid out as the hardware reads it.
#[repr(C, packed)]
struct Gdt {
    null: Descriptor,
    code: Descriptor,
    data: Descriptor,
    tss: Descriptor64,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<Gdt> = Once::new();

/// The descriptor of xen-lite's 64-bit ring-0 code segment.
fn code_descriptor() -> Descriptor {
    DescriptorBuilder::code_descriptor(0, 0xfffff, CodeSegmentType::ExecuteRead)
        .present()
        .dpl(Ring::Ring0)
        .l()
        .limit_granularity_4kb()
        .finish()
}

/// The descriptor of xen-lite's ring-0 data segment.
fn data_descriptor() -> Descriptor {
    DescriptorBuilder::data_descriptor(0, 0xfffff, DataSegmentType::ReadWrite)
        .present()
        .dpl(Ring::Ring0)
        .limit_granularity_4kb()
        .finish()
}

/// Builds the GDT and TSS, loads them and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let top = DOUBLE_FAULT_STACK.0.as_ptr_range().end as u64;
        tss.set_ist(usize::from(DOUBLE_FAULT_IST - 1), top);
        tss
    });
    let tss_base = core::ptr::from_ref(tss) as u64;
    let tss_limit = core::mem::size_of::<TaskStateSegment>() as u64 - 1;
    let gdt = GDT.call_once(|| Gdt {
        null: Descriptor::NULL,
        code: code_descriptor(),
        data: data_descriptor(),
        tss: <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(
            tss_base, tss_limit, true,
        )
        .present()
        .dpl(Ring::Ring0)
        .finish(),
    });
    let pointer = DescriptorTablePointer::new(gdt);
    // SAFETY: `GDT` and `TSS` are statics initialised once and never changed afterwards; the
    // selectors below name the descriptors just built.
    unsafe {
        instructions::lgdt(&pointer);
        instructions::load_segments(HYPERVISOR_CS, HYPERVISOR_DS);
        instructions::ltr(TSS_SELECTOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_encode_long_mode_ring_0_segments() {
        // Access byte 0x9a: present, DPL 0, code, execute/read. Flags 0xa: 4 KiB granularity, L.
        assert_eq!(code_descriptor().as_u64(), 0x00af_9a00_0000_ffff);
        // Access byte 0x92: present, DPL 0, data, read/write. Flags 0x8: 4 KiB granularity.
        assert_eq!(data_descriptor().as_u64(), 0x008f_9200_0000_ffff);
        assert_eq!(HYPERVISOR_CS.bits(), 0x08);
        assert_eq!(TSS_SELECTOR.bits(), 0x18);
        assert_eq!(core::mem::size_of::<Gdt>(), 40);
    }
}
