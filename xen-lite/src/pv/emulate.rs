//! The instructions xen-lite emulates for a `pv` guest kernel instead of killing it (Xen:
//! `arch/x86/pv/emul-priv-op.c`): the five UMIP reads.
//!
//! `sgdt`, `sidt`, `sldt`, `str` and `smsw` are not privileged: on a CPU without UMIP they run in
//! ring 1 and 3 and hand the guest the addresses of xen-lite's GDT and IDT (and, through the
//! GDT, of its TSS and stacks). With CR4.UMIP on (`cpu::set_umip`) they raise #GP outside
//! ring 0. A kernel may use them harmlessly (a CPU-feature probe, a debugger), so for ring 1
//! xen-lite answers with fixed values that reveal nothing, as Linux's UMIP emulation does for
//! user programs: both table bases 0 with limit 0, LDT and task-register selectors 0, and the
//! machine-status word of a long-mode kernel (PE, MP, ET, NE). User code (ring 3) gets its
//! #GP bounced to the guest kernel, whose policy it is.

use crate::decode::{umip_instruction, Operand, UmipInstruction, UmipRead};
use crate::entry::TrapFrame;

use crate::domain::Domain;

/// What `smsw` reports: CR0's PE, MP, ET and NE.
const MACHINE_STATUS_WORD: u64 = 0x33;

/// If `bytes` (read at the faulting `rip`) is a UMIP read that can be emulated, emulates it on
/// `frame` and returns its name. `None` leaves the #GP to be bounced.
pub fn umip_read(domain: &Domain, frame: &mut TrapFrame, bytes: &[u8]) -> Option<&'static str> {
    let UmipInstruction { read, operand, length } = umip_instruction(bytes)?;
    let next_rip = frame.rip.wrapping_add(u64::from(length));
    let (name, value, table) = match read {
        UmipRead::Sgdt => ("sgdt", 0, true),
        UmipRead::Sidt => ("sidt", 0, true),
        UmipRead::Sldt => ("sldt", 0, false),
        UmipRead::Str => ("str", 0, false),
        UmipRead::Smsw => ("smsw", MACHINE_STATUS_WORD, false),
    };
    match operand {
        Operand::Register { index, size } => {
            let register = register_mut(frame, index);
            *register = if size == 2 { (*register & !0xffff) | value } else { value };
        }
        Operand::Memory { .. } => {
            let address = operand.address(&registers(frame), next_rip)?;
            // A table register is 2 bytes of limit and 8 of base; a selector or word is 2.
            let mut stored = [0u8; 10];
            stored[..8].copy_from_slice(&value.to_le_bytes());
            let len = if table { 10 } else { 2 };
            domain.copy_to_guest(address, &stored[..len]).ok()?;
        }
    }
    frame.rip = next_rip;
    Some(name)
}

/// The general registers by their encoding number (rax = 0 ... r15 = 15).
fn registers(frame: &TrapFrame) -> [u64; 16] {
    let f = frame;
    [
        f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.r12,
        f.r13, f.r14, f.r15,
    ]
}

/// General register `index` of `frame`, by its encoding number.
fn register_mut(frame: &mut TrapFrame, index: u8) -> &mut u64 {
    let f = frame;
    match index & 15 {
        0 => &mut f.rax,
        1 => &mut f.rcx,
        2 => &mut f.rdx,
        3 => &mut f.rbx,
        4 => &mut f.rsp,
        5 => &mut f.rbp,
        6 => &mut f.rsi,
        7 => &mut f.rdi,
        8 => &mut f.r8,
        9 => &mut f.r9,
        10 => &mut f.r10,
        11 => &mut f.r11,
        12 => &mut f.r12,
        13 => &mut f.r13,
        14 => &mut f.r14,
        _ => &mut f.r15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_numbered_as_the_encoding_numbers_them() {
        let mut frame = TrapFrame { rcx: 1, rsp: 4, r9: 9, r15: 15, ..TrapFrame::default() };
        let numbered = registers(&frame);
        assert_eq!((numbered[1], numbered[4], numbered[9], numbered[15]), (1, 4, 9, 15));
        for index in 0..16u8 {
            *register_mut(&mut frame, index) = u64::from(index) + 100;
        }
        assert_eq!(registers(&frame), core::array::from_fn(|i| i as u64 + 100));
    }
}
