//! xen-lite's interrupt descriptor table.
//!
//! Vectors 0-31 (the exceptions) point at the stubs `entry.rs` generates; every other vector is
//! left not-present for now, so a stray interrupt raises #NP whose error code names the vector.
//! All gates are interrupt gates (IF cleared on entry) with DPL 0: neither ring 1 nor ring 3 may
//! raise them with `int n`. See: Intel SDM Vol. 3A, revision 086, 6.14.1.

use spin::Once;
use x86::bits64::segmentation::Descriptor64;
use x86::dtables::DescriptorTablePointer;
use x86::segmentation::{BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder};
use x86::Ring;

use crate::entry::{stub_address, EXCEPTION_VECTORS};
use crate::gdt::{DOUBLE_FAULT_IST, HYPERVISOR_CS};
use crate::instructions;
use crate::trap::Vector;

static IDT: Once<[Descriptor64; 256]> = Once::new();

/// Builds the IDT and loads it.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = [Descriptor64::NULL; 256];
        for vector in 0..EXCEPTION_VECTORS {
            let mut gate = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
                HYPERVISOR_CS,
                stub_address(vector),
            )
            .present()
            .dpl(Ring::Ring0);
            if vector == Vector::DOUBLE_FAULT {
                gate = gate.ist(DOUBLE_FAULT_IST);
            }
            idt[usize::from(vector)] = gate.finish();
        }
        idt
    });
    let pointer = DescriptorTablePointer::new_from_slice(idt);
    // SAFETY: `IDT` is a static written once; every present gate points at a generated stub
    // that saves state and calls `trap::handle_trap`.
    unsafe { instructions::lidt(&pointer) };
}
