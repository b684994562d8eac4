//! xen-lite's interrupt descriptor table.
//!
//! Every vector has a stub (`entry.rs`), but only these gates are present:
//!
//! | vectors      | DPL | why                                                              |
//! |--------------|-----|------------------------------------------------------------------|
//! | 0-31         | 0   | exceptions; #DF, #PF, #DB, NMI and #MC on IST stacks (`gdt.rs`)   |
//! | 3 (#BP), 4 (#OF) | 3 | `int3` and `into` are legal in user code: they must reach the  |
//! |              |     | handler as #BP/#OF, not as #GP                                   |
//! | 0x20         | 0   | the timer (IRQ 0 of the 8259 PIC, remapped)                      |
//! | 0x82         | 1   | hypercalls: ring 1 may `int 0x82`, ring 3 gets #GP               |
//! | 0x80         | 3   | only while the running `pv` domain registered it: a *trap* gate  |
//! |              |     | from ring 3 straight to its ring-1 handler ([`set_fast_trap`])   |
//!
//! Any other vector is not present, so a stray interrupt raises #NP whose error code names it.
//! All of xen-lite's own gates are interrupt gates (IF cleared on entry): xen-lite never runs
//! with interrupts on, except in the idle loop. See: Intel SDM Vol. 3A, revision 086, 6.12.1.1 (gate DPL checks
//! for `int n`) and 6.14.1.

use hypercall_abi::hypercall::{HYPERCALL_VECTOR, SYSCALL_VECTOR};
use spin::Once;
use x86::bits64::segmentation::Descriptor64;
use x86::dtables::DescriptorTablePointer;
use x86::segmentation::{BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder};
use x86::Ring;

use crate::entry::{nmi_entry_address, stub_address, EXCEPTION_VECTORS};
use crate::gdt::{
    DEBUG_IST, DOUBLE_FAULT_IST, GUEST_KERNEL_CS, HYPERVISOR_CS, MACHINE_CHECK_IST, NMI_IST,
    PAGE_FAULT_IST,
};
use crate::instructions;
use crate::switcher::{CpuTable, PageAligned};
use crate::timer::{SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::trap::Vector;

static IDT: Once<PageAligned<CpuTable<[Descriptor64; 256]>>> = Once::new();

/// The page the IDT occupies (the CPU reads it while a guest's CR3 is loaded).
pub fn table_pages() -> (u64, u64) {
    IDT.get().expect("idt::init runs at boot").pages()
}

/// The gate DPL for a present vector, or `None` for a vector left not-present.
fn gate_dpl(vector: u8) -> Option<Ring> {
    match vector {
        Vector::BREAKPOINT | Vector::OVERFLOW => Some(Ring::Ring3),
        v if v < EXCEPTION_VECTORS => Some(Ring::Ring0),
        TIMER_VECTOR | SPURIOUS_VECTOR => Some(Ring::Ring0),
        HYPERCALL_VECTOR => Some(Ring::Ring1),
        _ => None,
    }
}

/// The IST slot a vector's gate names: the vectors that can arrive where no good stack is (a
/// double fault; a page fault, #DB, NMI or #MC in the `syscall` entry, on a guest's stack).
fn ist_slot(vector: u8) -> Option<u8> {
    match vector {
        Vector::DOUBLE_FAULT => Some(DOUBLE_FAULT_IST),
        Vector::PAGE_FAULT => Some(PAGE_FAULT_IST),
        Vector::DEBUG => Some(DEBUG_IST),
        Vector::NMI => Some(NMI_IST),
        Vector::MACHINE_CHECK => Some(MACHINE_CHECK_IST),
        _ => None,
    }
}

/// The IDT's address, for a VMCS's host-state area.
pub fn base() -> u64 {
    core::ptr::from_ref(IDT.get().expect("idt::init runs at boot").0.get()) as u64
}

/// Builds the IDT and loads it.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = [Descriptor64::NULL; 256];
        for vector in 0..=255u8 {
            let Some(dpl) = gate_dpl(vector) else { continue };
            // An NMI never reaches Rust: its entry counts it and returns (`entry.rs`).
            let entry =
                if vector == Vector::NMI { nmi_entry_address() } else { stub_address(vector) };
            let mut gate = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
                HYPERVISOR_CS,
                entry,
            )
            .present()
            .dpl(dpl);
            if let Some(ist) = ist_slot(vector) {
                gate = gate.ist(ist);
            }
            idt[usize::from(vector)] = gate.finish();
        }
        PageAligned(CpuTable::new(idt))
    });
    let pointer = DescriptorTablePointer::new_from_slice(idt.0.get());
    // SAFETY: `IDT` is a static written once; every present gate points at a generated stub
    // that saves state and calls `trap::handle_trap`.
    unsafe { instructions::lidt(&pointer) };
}

/// Installs (or, with `None`, removes) the `int 0x80` fast trap: a trap gate of DPL 3 straight
/// to the running domain's ring-1 handler. A *trap* gate, because an interrupt gate would clear
/// the real IF, and ring 1 could never set it again (`sti` is privileged, and `iretq` at CPL 1 >
/// IOPL leaves IF alone): the domain could no longer be preempted.
pub fn set_fast_trap(handler: Option<u64>) {
    let gate = match handler {
        Some(address) => <DescriptorBuilder as GateDescriptorBuilder<u64>>::trap_gate_descriptor(
            GUEST_KERNEL_CS,
            address,
        )
        .present()
        .dpl(Ring::Ring3)
        .finish(),
        None => Descriptor64::NULL,
    };
    IDT.get()
        .expect("idt::init runs at boot")
        .0
        .update(|idt| idt[usize::from(SYSCALL_VECTOR)] = gate);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_gates_are_reachable_from_outer_rings() {
        assert_eq!(gate_dpl(3), Some(Ring::Ring3));
        assert_eq!(gate_dpl(13), Some(Ring::Ring0));
        assert_eq!(gate_dpl(0x82), Some(Ring::Ring1), "hypercalls: ring 1 only");
        assert_eq!(gate_dpl(0x80), None, "no fast trap yet");
        assert_eq!(gate_dpl(0x21), None);
    }

    #[test]
    fn every_vector_that_can_hit_the_syscall_entry_has_a_stack_of_its_own() {
        for vector in [1, 2, 8, 14, 18] {
            assert!(ist_slot(vector).is_some(), "vector {vector}");
        }
        assert_eq!(ist_slot(13), None, "#GP arrives on the entry stack or xen-lite's own");
    }
}
