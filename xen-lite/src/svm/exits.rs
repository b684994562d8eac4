//! Why the guest left: the VMCB's exit fields, decoded into the backend-neutral [`Exit`] the
//! `hvm` run loop dispatches on.
//!
//! Every `#VMEXIT` writes an *exit code* (`exit_code`: an intercept, a nested page fault, or
//! `VMEXIT_INVALID` when `vmrun` refused the VMCB and no guest ran) and, for most codes, two
//! words of detail (`exit_info1`, `exit_info2`): the port, size and direction of an `in`/`out`
//! and the address after it; whether an MSR access was a write; the error code and the
//! guest-physical address of a nested page fault. An event the exit interrupted while the CPU
//! was delivering it (`exit_int_info`) is set up again for the next `vmrun` (`event_inj`).
//! Each code is counted in the `Stats::vm_exits` slot of the VMX reason that means the same
//! (`hypercall_abi::vm_exit::svm::slot`).
//!
//! See: AMD64 APM Vol. 2, revision 3.42, 15.6 (#VMEXIT), 15.7 (intercept operation), 15.10.2
//! (IN/OUT intercept information), 15.20 (event injection), Appendix C (exit codes).

use hypercall_abi::vm_exit::svm;

use hypercall_abi::page_table;

use super::npt;
use super::vmcb::{Control, Save, Vmcb, EVENT_VALID};
use crate::decode;
use crate::entry::TrapFrame;
use crate::hvm::{Exit, ExitInfo, Fatal};
use crate::memory_map::phys_to_virt;

/// IOIO's EXITINFO1 bit 0: `in` (else `out`).
const IOIO_IN: u64 = 1 << 0;
/// IOIO's EXITINFO1 bit 2: a string instruction (`ins`/`outs`).
const IOIO_STRING: u64 = 1 << 2;

/// After a `#VMEXIT`: copies the guest's `rax`, `rip`, `rsp` and `rflags` into `regs`, sets up
/// an interrupted event again (`injected`: what `event_inj` held at the `vmrun`), and reads why
/// it left. Returns it with whether an event is set up, and the address of the instruction
/// after the one that exited (for `skip_instruction`).
pub fn read(
    vmcb: &mut Vmcb,
    regs: &mut TrapFrame,
    next_rip_saved: bool,
    injected: u64,
) -> (ExitInfo, bool, u64) {
    let s = &vmcb.save;
    (regs.rax, regs.rip, regs.rsp, regs.rflags) = (s.rax, s.rip, s.rsp, s.rflags);
    let c = &mut vmcb.control;
    // An event the exit interrupted must be delivered again; the error code comes along (bits
    // 63:32 of both fields). Not the guest's own `int n`, `int3` or `into`, though: the saved
    // `rip` is that instruction, which raises the event again when the guest resumes (injected
    // as well, it would run twice). So an event is delivered again if xen-lite injected it at
    // this entry, or if the guest's next instruction does not raise one itself. (Bochs 2.7
    // reports a stale EXITINTINFO for an `int n` that an intercept interrupts: the last event
    // injected, or vector 0 if none was; its vector cannot be trusted, the instruction can.)
    let info = c.exit_int_info;
    let ours =
        info & EVENT_VALID != 0 && (info ^ injected) & 0x7ff == 0 && injected & EVENT_VALID != 0;
    let again =
        !ours && info & EVENT_VALID != 0 && raises_an_event(&vmcb.save, &vmcb.control, regs.rip);
    let c = &mut vmcb.control;
    let interrupted = info & EVENT_VALID != 0 && !again;
    c.event_inj = if interrupted { c.exit_int_info } else { 0 };
    let (code, info1, info2) = (c.exit_code, c.exit_info1, c.exit_info2);
    let mut exit = decode(code, info1, info2);
    let mut length = match code {
        svm::VMMCALL => 3,
        svm::CPUID | svm::MSR | svm::INVD | svm::WBINVD => 2,
        svm::HLT => 1,
        _ => 0,
    };
    if matches!(code, svm::CR3_READ | svm::CR3_WRITE | svm::INVLPG) {
        // No decode assists here (neither QEMU 7.2 nor Bochs 2.7 has them): the instruction is
        // read and decoded, through the shadow tables it was just fetched through.
        (exit, length) = decode_instruction(code, vmcb, regs);
    }
    let c = &mut vmcb.control;
    let next_rip = match code {
        svm::IOIO => info2, // the APM puts the next `rip` here for every CPU
        _ if next_rip_saved && c.next_rip != 0 => c.next_rip,
        _ => regs.rip + length,
    };
    let write = code == svm::MSR && info1 == 1;
    (ExitInfo { reason: svm::slot(code, write), exit }, interrupted, next_rip)
}

/// Reads up to 15 bytes of the guest's code at `rip` ([`guest_code_byte`] each), stopping at
/// the first unmapped one.
fn fetch(save: &Save, control: &Control, rip: u64) -> ([u8; 15], usize) {
    let mut bytes = [0u8; 15];
    for (n, byte) in bytes.iter_mut().enumerate() {
        match guest_code_byte(save, control, rip.wrapping_add(n as u64)) {
            Some(value) => *byte = value,
            None => return (bytes, n),
        }
    }
    (bytes, bytes.len())
}

/// Whether the guest instruction at `rip` is an `int n`, `int3` or `into`.
fn raises_an_event(save: &Save, control: &Control, rip: u64) -> bool {
    matches!(guest_code_byte(save, control, rip), Some(0xcd | 0xcc | 0xce))
}

/// The byte of guest code at guest-virtual `va`, through the guest's tables: the shadow ones
/// (machine addresses, xen-lite's) or, under nested paging, the guest's own, each table and the
/// page found through the nested tables. `None` if not mapped.
fn guest_code_byte(save: &Save, control: &Control, va: u64) -> Option<u8> {
    let machine = if control.np_enable & npt::NP_ENABLE == 0 {
        page_table::walk(&MachineTables, save.cr3, va, 1).ok()?.translate(va)
    } else {
        let tables = NestedTables { n_cr3: control.n_cr3 };
        let gpa = page_table::walk(&tables, save.cr3, va, 1).ok()?.translate(va);
        tables.machine(gpa)?
    };
    // SAFETY: a frame of this domain (the shadow and the nested tables map nothing else), in
    // the direct map; only read.
    Some(unsafe { (phys_to_virt(machine) as *const u8).read_volatile() })
}

/// The guest's own tables, at guest-physical addresses, read through the nested tables.
struct NestedTables {
    n_cr3: u64,
}

impl NestedTables {
    /// The machine address of guest-physical `gpa`, if the nested tables map it.
    fn machine(&self, gpa: u64) -> Option<u64> {
        Some(page_table::walk(&MachineTables, self.n_cr3, gpa, 1).ok()?.translate(gpa))
    }
}

impl page_table::Tables for NestedTables {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        let machine = self.machine(table + index as u64 * 8)?;
        // SAFETY: a word of the domain's memory (the nested tables map nothing else).
        Some(unsafe { (phys_to_virt(machine) as *const u64).read_volatile() })
    }
}

/// Tables in machine memory, read through xen-lite's direct map.
struct MachineTables;

impl page_table::Tables for MachineTables {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        // SAFETY: `table` is a shadow or nested table of xen-lite's (a root it set, and what the
        // entries of its own tables name); entry `index` < 512 lies in it.
        Some(unsafe { (phys_to_virt(table + index as u64 * 8) as *const u64).read_volatile() })
    }
}

/// Shadow paging's three instruction intercepts, decoded from the instruction itself: the exit
/// and the instruction's length.
fn decode_instruction(code: u64, vmcb: &Vmcb, regs: &TrapFrame) -> (Exit, u64) {
    let (bytes, len) = fetch(&vmcb.save, &vmcb.control, regs.rip);
    let bytes = &bytes[..len];
    let undecoded = |what| {
        Exit::Fatal(Fatal::Refused { instruction: what, why: "a form xen-lite does not decode" })
    };
    if code == svm::INVLPG {
        return match decode::invlpg(bytes) {
            Some((operand, length)) => {
                let next = regs.rip + u64::from(length);
                let address = operand.address(&regs.registers(), next).unwrap_or(0);
                (Exit::Invlpg { address }, u64::from(length))
            }
            None => (undecoded("invlpg"), 0),
        };
    }
    match decode::cr3_move(bytes) {
        Some(m) if m.write => {
            let value = regs.registers()[usize::from(m.register)];
            (Exit::Cr3Write { value }, u64::from(m.length))
        }
        Some(m) => (Exit::Cr3Read { register: m.register }, u64::from(m.length)),
        None => (undecoded("mov to or from CR3"), 0),
    }
}

/// What exit `code` with its two information words means.
fn decode(code: u64, info1: u64, info2: u64) -> Exit {
    let refused = |instruction| {
        Exit::Fatal(Fatal::Refused {
            instruction,
            why: "an SVM instruction (xen-lite offers no nested virtualisation)",
        })
    };
    match code {
        svm::INTR => Exit::HostInterruptPending,
        svm::PAGE_FAULT => Exit::PageFault { address: info2, error_code: info1 & 0xffff_ffff },
        svm::VINTR => Exit::InterruptWindow,
        svm::CPUID => Exit::Cpuid,
        svm::HLT => Exit::Halt,
        svm::VMMCALL => Exit::Hypercall,
        svm::IOIO if info1 & IOIO_STRING == 0 => Exit::Io {
            port: (info1 >> 16) as u16,
            size: match (info1 >> 4) & 7 {
                1 => 1,
                2 => 2,
                _ => 4,
            },
            write: info1 & IOIO_IN == 0,
        },
        svm::INVD | svm::WBINVD => Exit::CacheFlush,
        svm::MSR => Exit::Msr { write: info1 == 1 },
        svm::SHUTDOWN => Exit::Fatal(Fatal::TripleFault),
        svm::NPF => Exit::Fatal(Fatal::BeyondMemory {
            tables: "nested page fault",
            gpa: info2,
            linear: None,
            access: npt::access(info1),
        }),
        svm::VMRUN => refused("vmrun"),
        svm::VMLOAD => refused("vmload"),
        svm::VMSAVE => refused("vmsave"),
        svm::STGI => refused("stgi"),
        svm::CLGI => refused("clgi"),
        svm::SKINIT => refused("skinit"),
        svm::INVLPGA => refused("invlpga"),
        svm::INVALID => Exit::Fatal(Fatal::EntryFailed {
            what:
                "vmrun refused the VMCB (VMEXIT_INVALID: a guest-state or control field is illegal)",
            detail: code,
        }),
        _ => Exit::Fatal(Fatal::UnexpectedCode { code, name: svm::name(code), info1, info2 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_exits_decode_port_size_and_direction() {
        // `out 0x20, al`: port 0x20, 8-bit, out.
        let exit = decode(svm::IOIO, (0x20 << 16) | (1 << 4), 0);
        assert_eq!(exit, Exit::Io { port: 0x20, size: 1, write: true });
        // `in eax, dx` with dx = 0x3f8: 32-bit, in.
        let exit = decode(svm::IOIO, (0x3f8 << 16) | (1 << 6) | 1, 0);
        assert_eq!(exit, Exit::Io { port: 0x3f8, size: 4, write: false });
        // `outsb` is not emulated.
        assert!(matches!(decode(svm::IOIO, (0x20 << 16) | 0x14, 0), Exit::Fatal(_)));
    }

    #[test]
    fn svm_instructions_and_unknown_codes_are_fatal_with_their_names() {
        let Exit::Fatal(fatal) = decode(svm::CLGI, 0, 0) else { panic!() };
        assert!(fatal.to_string().starts_with("clgi: an SVM instruction"));
        let Exit::Fatal(fatal) = decode(0x7d, 1, 2) else { panic!() };
        assert_eq!(
            fatal.to_string(),
            "unexpected #VMEXIT 0x7d (unknown exit code), EXITINFO1 0x1, EXITINFO2 0x2"
        );
        let Exit::Fatal(fatal) = decode(svm::NPF, 0x6, 0x200_0000) else { panic!() };
        assert_eq!(
            fatal.to_string(),
            "nested page fault: write of guest-physical 0x2000000, outside the domain's memory"
        );
    }
}
