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
            let register = frame.register_mut(index);
            *register = if size == 2 { (*register & !0xffff) | value } else { value };
        }
        Operand::Memory { .. } => {
            let address = operand.address(&frame.registers(), next_rip)?;
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
