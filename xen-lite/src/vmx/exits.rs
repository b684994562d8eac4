//! Why the guest left: the VMCS exit-information fields, decoded into the backend-neutral
//! [`Exit`] the `hvm` run loop dispatches on.
//!
//! Every VM exit records a *basic exit reason* (bits 15:0 of the exit-reason field; bit 31 set
//! when the VM entry itself failed after it started loading guest state) and, for most reasons,
//! an *exit qualification* with the details: the port, size and direction of an `in`/`out`, the
//! access that caused an EPT violation. An event the exit interrupted while the CPU was
//! delivering it (IDT-vectoring information) is set up again for the next entry. A VM entry
//! that fails before loading guest state records no exit reason at all: [`entry_failed`] turns
//! its status and VM-instruction error into a fatal exit.
//!
//! See: Intel SDM Vol. 3C, revision 086, 27.8 (entry failures), 28.2 (exit information);
//! Vol. 3D, Appendix C (basic exit reasons).

use x86::vmx::vmcs::{control, guest, ro};

use hypercall_abi::hypercall::VM_EXIT_SLOTS;
use hypercall_abi::vm_exit;

use super::{vmcs, Vcpu};
use crate::entry::TrapFrame;
use crate::hvm::{Exit, ExitInfo, Fatal};
use crate::instructions::VmxStatus;

/// What a VM entry that failed with `status` (no guest ran) means for the run loop.
pub fn entry_failed(status: VmxStatus) -> ExitInfo {
    let what = match status {
        VmxStatus::FailValid => vmcs::last_error(),
        _ => "VMfailInvalid: no valid current VMCS",
    };
    let detail = vmcs::read(ro::VM_INSTRUCTION_ERROR);
    ExitInfo {
        reason: VM_EXIT_SLOTS as u16 - 1,
        exit: Exit::Fatal(Fatal::EntryFailed { what, detail }),
    }
}

/// After a VM exit: copies the guest's `rip`, `rsp` and `rflags` into `regs` (for messages) and
/// reads why it left.
pub fn read(vcpu: &mut Vcpu, regs: &mut TrapFrame) -> ExitInfo {
    regs.rip = vmcs::read(guest::RIP);
    regs.rsp = vmcs::read(guest::RSP);
    regs.rflags = vmcs::read(guest::RFLAGS);
    exit_info(vcpu, regs)
}

/// Reads why the guest left, after a VM exit.
fn exit_info(vcpu: &mut Vcpu, regs: &TrapFrame) -> ExitInfo {
    let raw = vmcs::read(ro::EXIT_REASON);
    let reason = raw as u16;
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    // An event the exit interrupted (IDT-vectoring information) must be delivered again.
    let vectoring = vmcs::read(ro::IDT_VECTORING_INFO);
    vcpu.injecting = vectoring & (1 << 31) != 0;
    if vcpu.injecting {
        vmcs::write(control::VMENTRY_INTERRUPTION_INFO_FIELD, vectoring & !(1 << 12));
        if vectoring & (1 << 11) != 0 {
            let code = vmcs::read(ro::IDT_VECTORING_ERR_CODE);
            vmcs::write(control::VMENTRY_EXCEPTION_ERR_CODE, code);
        }
        let length = vmcs::read(ro::VMEXIT_INSTRUCTION_LEN);
        vmcs::write(control::VMENTRY_INSTRUCTION_LEN, length);
    }
    let exit = if raw & (1 << 31) != 0 {
        let what = match reason {
            vm_exit::INVALID_GUEST_STATE => entry_failure_detail(qualification),
            vm_exit::MSR_LOADING => "an MSR in the VM-entry MSR-load area",
            _ => "machine check during VM entry",
        };
        Exit::Fatal(Fatal::EntryFailed { what, detail: qualification })
    } else {
        match reason {
            vm_exit::EXTERNAL_INTERRUPT => {
                Exit::HostInterrupt(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u8)
            }
            vm_exit::TRIPLE_FAULT => Exit::Fatal(Fatal::TripleFault),
            vm_exit::INTERRUPT_WINDOW => Exit::InterruptWindow,
            vm_exit::PREEMPTION_TIMER => Exit::TimeUp,
            vm_exit::CPUID => Exit::Cpuid,
            vm_exit::HLT => Exit::Halt,
            vm_exit::VMCALL => Exit::Hypercall,
            vm_exit::IO_INSTRUCTION if qualification & (1 << 4) == 0 => Exit::Io {
                port: (qualification >> 16) as u16,
                size: (qualification & 7) as u8 + 1,
                write: qualification & (1 << 3) == 0,
            },
            vm_exit::INVD | vm_exit::WBINVD => Exit::CacheFlush,
            // Shadow paging (`ept=off`): the exit qualification names the register, the page.
            vm_exit::CR_ACCESS if qualification & 0xf == 3 => {
                let register = ((qualification >> 8) & 0xf) as u8;
                match (qualification >> 4) & 3 {
                    0 => Exit::Cr3Write { value: regs.registers()[usize::from(register)] },
                    1 => Exit::Cr3Read { register },
                    _ => Exit::Fatal(Fatal::Unexpected { reason, qualification }),
                }
            }
            vm_exit::INVLPG => Exit::Invlpg { address: qualification },
            vm_exit::EXCEPTION_OR_NMI
                if vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) & 0x7ff == (3 << 8) | 14 =>
            {
                let error_code = vmcs::read(ro::VMEXIT_INTERRUPTION_ERR_CODE);
                Exit::PageFault { address: qualification, error_code }
            }
            vm_exit::RDMSR => Exit::Msr { write: false },
            vm_exit::WRMSR => Exit::Msr { write: true },
            vm_exit::EPT_VIOLATION => Exit::Fatal(Fatal::BeyondMemory {
                tables: "EPT violation",
                gpa: vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL),
                linear: (qualification & (1 << 7) != 0).then(|| vmcs::read(ro::GUEST_LINEAR_ADDR)),
                access: match qualification & 7 {
                    q if q & 2 != 0 => "write",
                    q if q & 4 != 0 => "instruction fetch",
                    _ => "read",
                },
            }),
            _ => Exit::Fatal(Fatal::Unexpected { reason, qualification }),
        }
    };
    ExitInfo { reason, exit }
}

/// Why a VM entry failed *after* the processor started loading guest state (exit reason with
/// bit 31 set): the exit qualification of reason 33 in words. See: SDM Vol. 3C, 27.8.
pub const fn entry_failure_detail(qualification: u64) -> &'static str {
    match qualification {
        0 => "a guest-state field is invalid (not further specified)",
        2 => "a PDPTE could not be loaded",
        3 => "an NMI was injected while NMIs are blocked",
        4 => "the VMCS link pointer is invalid",
        _ => "unknown entry-failure qualification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_failures_read_as_words() {
        assert_eq!(entry_failure_detail(4), "the VMCS link pointer is invalid");
        assert_eq!(entry_failure_detail(9), "unknown entry-failure qualification");
    }
}
