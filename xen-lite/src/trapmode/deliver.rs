//! How control moves between the `hvm` kernel and its user code under `mode=trap`, as the CPU
//! would move it were the kernel in ring 0: interrupts and exceptions through the guest's own
//! IDT with the frame the hardware pushes ([`deliver`]), `syscall` to its LSTAR
//! ([`syscall`]), and the returns that trap in ring 1 because they name a ring-0 selector
//! ([`iretq`], [`sysretq`], [`lretq`]).
//!
//! The guest sees its own selectors (`0x08`, `0x10`) in every frame; the CPU runs it on
//! xen-lite's ring-1 pair. A gate's target must be a present 64-bit code descriptor of DPL 0
//! in the guest's GDT: it is presented at DPL 1, as Xen's `check_descriptor` presents a pv
//! kernel's. See: Intel SDM Vol. 3A, revision 086, 6.14 (64-bit interrupt handling) and the
//! IRET, SYSCALL and SYSRET pages of Vol. 2.

use hypercall_abi::layout::is_canonical;
use hypercall_abi::layout::selectors::{
    FLAT_RING1_CS, FLAT_RING1_DS, FLAT_RING3_CS, FLAT_RING3_DS,
};

use super::vcpu::{
    descriptor, Guest, Outcome, Refusal, VirtualCpu, EFER_SCE, GENERAL_PROTECTION, RFLAGS_IF,
};
use crate::entry::TrapFrame;

/// RFLAGS bits a guest may set through `iretq`, `sysretq` or `popfq` in ring 1: the arithmetic
/// flags, TF, DF, AC, ID and the reserved bit 1. IF is virtual; IOPL stays 0 (else ring 1
/// could reach ports), NT, VM and the virtual-interrupt bits stay clear.
pub const GUEST_FLAGS: u64 =
    0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 1 << 18 | 1 << 21;
/// Cleared on delivery through any gate: TF, NT, RF (and VM).
const CLEARED_ON_DELIVERY: u64 = 1 << 8 | 1 << 14 | 1 << 16 | 1 << 17;
/// #UD.
const INVALID_OPCODE: u8 = 6;

/// An event to deliver through the guest's IDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The vector.
    pub vector: u8,
    /// Its error code, for the exceptions that push one.
    pub error_code: Option<u64>,
    /// `int n` (also `int3`, `into`): the gate's DPL must admit the caller's ring.
    pub software: bool,
}

/// The ring the guest believes it runs in: 3 for its user code, 0 for its kernel (which the
/// CPU runs in ring 1).
pub fn guest_ring(regs: &TrapFrame) -> u64 {
    if regs.cs & 3 == 3 {
        3
    } else {
        0
    }
}

/// Delivers `event` to the guest as the CPU would: the gate from its IDT, the stack from its
/// TSS for an event from user code, the frame pushed there with its own selectors and the
/// virtual IF, and `regs` at the handler in (real) ring 1. A fault while pushing is returned
/// for the caller to deal with (the CPU would raise a double fault).
pub fn deliver(
    cpu: &mut VirtualCpu,
    regs: &mut TrapFrame,
    event: Event,
    guest: &mut impl Guest,
) -> Result<(), Outcome> {
    let memory = Outcome::Memory;
    let vector = u64::from(event.vector);
    let gp = |code: u64| Outcome::Raise { vector: GENERAL_PROTECTION, error_code: code };
    if vector * 16 + 15 > u64::from(cpu.idtr.limit) {
        return Err(gp(vector * 8 + 2));
    }
    let mut gate = [0u8; 16];
    guest.read(cpu.idtr.base + vector * 16, &mut gate).map_err(memory)?;
    let (kind, dpl, present) = (gate[5] & 0xf, u64::from(gate[5] >> 5) & 3, gate[5] & 0x80 != 0);
    if !present || !matches!(kind, 0xe | 0xf) {
        return Err(gp(vector * 8 + 2));
    }
    let from_user = guest_ring(regs) == 3;
    if event.software && from_user && dpl < 3 {
        return Err(gp(vector * 8 + 2));
    }
    let target = u16::from_le_bytes([gate[2], gate[3]]);
    check_kernel_code(cpu, guest, target)?;
    let handler = u64::from(u16::from_le_bytes([gate[0], gate[1]]))
        | u64::from(u16::from_le_bytes([gate[6], gate[7]])) << 16
        | u64::from(u32::from_le_bytes(gate[8..12].try_into().unwrap_or_default())) << 32;
    let ist = gate[4] & 7;
    let stack = if ist != 0 {
        tss_word(cpu, guest, 0x24 + 8 * (u64::from(ist) - 1))?
    } else if from_user {
        tss_word(cpu, guest, 4)?
    } else {
        regs.rsp
    };
    let shown_flags = (regs.rflags & GUEST_FLAGS) | if cpu.interrupts { RFLAGS_IF } else { 0 };
    let (shown_cs, shown_ss) =
        if from_user { (regs.cs, regs.ss) } else { (u64::from(cpu.cs), u64::from(cpu.ss)) };
    let mut words = [0u64; 6];
    let mut len = 0;
    if let Some(code) = event.error_code {
        words[0] = code;
        len = 1;
    }
    for word in [regs.rip, shown_cs, shown_flags, regs.rsp, shown_ss] {
        words[len] = word;
        len += 1;
    }
    let rsp = (stack & !0xf).wrapping_sub(len as u64 * 8);
    let mut bytes = [0u8; 48];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(&words[..len]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    guest.write(rsp, &bytes[..len * 8]).map_err(memory)?;
    regs.rip = handler;
    (regs.cs, regs.ss, regs.rsp) = (FLAT_RING1_CS.into(), FLAT_RING1_DS.into(), rsp);
    regs.rflags = (regs.rflags & GUEST_FLAGS & !CLEARED_ON_DELIVERY) | RFLAGS_IF;
    cpu.cs = target;
    if from_user {
        cpu.ss = 0; // a change of ring to 0 loads a null SS
    }
    if kind == 0xe {
        cpu.interrupts = false; // an interrupt gate
    }
    Ok(())
}

/// The word at `offset` in the guest's TSS (RSP0 at 4, IST1 at 0x24).
fn tss_word(cpu: &VirtualCpu, guest: &mut impl Guest, offset: u64) -> Result<u64, Outcome> {
    if cpu.tr == 0 {
        return Err(Outcome::Kill {
            instruction: "delivery from user code",
            rule: "the kernel must load a TSS (ltr) before user code runs",
            value: 0,
        });
    }
    let mut bytes = [0; 8];
    guest.read(cpu.tss_base + offset, &mut bytes).map_err(Outcome::Memory)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Whether `selector` names a present 64-bit code descriptor of DPL 0 in the guest's GDT: the
/// only kind of kernel code xen-lite runs (in ring 1).
fn check_kernel_code(
    cpu: &VirtualCpu,
    guest: &mut impl Guest,
    selector: u16,
) -> Result<(), Outcome> {
    let bytes = descriptor(cpu, guest, selector, false).map_err(Outcome::Memory)?;
    let Some(bytes) = bytes else {
        return Err(Outcome::Raise {
            vector: GENERAL_PROTECTION,
            error_code: u64::from(selector & !3),
        });
    };
    let access = bytes[5];
    let long = bytes[6] & 0x20 != 0;
    // Present, DPL 0, code or data, executable, 64-bit.
    if access & 0xf8 != 0x98 || !long {
        return Err(Outcome::Kill {
            instruction: "a gate or far return",
            rule: "kernel code must be a present 64-bit code descriptor of DPL 0 (shown to the CPU at DPL 1)",
            value: u64::from(selector),
        });
    }
    Ok(())
}

/// Pops `N` words from the guest's stack.
fn pop<const N: usize>(regs: &TrapFrame, guest: &mut impl Guest) -> Result<[u64; N], Refusal> {
    let mut bytes = [0u8; 40];
    guest.read(regs.rsp, &mut bytes[..N * 8])?;
    let mut words = [0; N];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
    }
    Ok(words)
}

/// `iretq` in ring 1 to the guest's kernel (a ring-0 selector, which is why it trapped), or to
/// its user code when the frame was bad (the CPU's #GP is then the guest's to take).
pub fn iretq(cpu: &mut VirtualCpu, regs: &mut TrapFrame, guest: &mut impl Guest) -> Outcome {
    let [rip, cs, rflags, rsp, ss] = match pop::<5>(regs, guest) {
        Ok(words) => words,
        Err(refusal) => return Outcome::Memory(refusal),
    };
    if !is_canonical(rip) {
        return Outcome::Raise { vector: GENERAL_PROTECTION, error_code: 0 };
    }
    if cs & 3 == 3 {
        if (cs, ss) != (FLAT_RING3_CS.into(), FLAT_RING3_DS.into()) {
            return Outcome::Raise { vector: GENERAL_PROTECTION, error_code: cs & !3 };
        }
        (regs.cs, regs.ss) = (cs, ss);
    } else {
        if let Err(outcome) = check_kernel_code(cpu, guest, cs as u16) {
            return outcome;
        }
        (regs.cs, regs.ss) = (FLAT_RING1_CS.into(), FLAT_RING1_DS.into());
        (cpu.cs, cpu.ss) = (cs as u16, ss as u16);
    }
    cpu.interrupts = rflags & RFLAGS_IF != 0 || cs & 3 == 3;
    (regs.rip, regs.rsp) = (rip, rsp);
    regs.rflags = (rflags & GUEST_FLAGS) | RFLAGS_IF;
    Outcome::Done
}

/// `sysretq` in ring 1: to user code at `rcx` with `r11`'s flags, on the selectors STAR names,
/// which must be the ones xen-lite's GDT holds for ring 3.
pub fn sysretq(cpu: &mut VirtualCpu, regs: &mut TrapFrame) -> Outcome {
    let base = (cpu.star >> 48) as u16;
    let (cs, ss) = (u64::from(base + 16) | 3, u64::from(base + 8) | 3);
    if (cs, ss) != (FLAT_RING3_CS.into(), FLAT_RING3_DS.into()) {
        return Outcome::Kill {
            instruction: "sysretq",
            rule: "STAR[63:48] must name the user selectors 0x2b and 0x33 (base 0x20)",
            value: cpu.star,
        };
    }
    if !is_canonical(regs.rcx) {
        return Outcome::Raise { vector: GENERAL_PROTECTION, error_code: 0 };
    }
    (regs.rip, regs.cs, regs.ss) = (regs.rcx, cs, ss);
    regs.rflags = (regs.r11 & GUEST_FLAGS) | RFLAGS_IF;
    cpu.interrupts = true;
    Outcome::Done
}

/// `lretq` in ring 1 to kernel code (how a kernel reloads CS after `lgdt`).
pub fn lretq(cpu: &mut VirtualCpu, regs: &mut TrapFrame, guest: &mut impl Guest) -> Outcome {
    let [rip, cs] = match pop::<2>(regs, guest) {
        Ok(words) => words,
        Err(refusal) => return Outcome::Memory(refusal),
    };
    if cs & 3 != 0 {
        return Outcome::Kill {
            instruction: "lretq",
            rule: "a far return in the kernel goes to kernel code (a ring-0 selector)",
            value: cs,
        };
    }
    if let Err(outcome) = check_kernel_code(cpu, guest, cs as u16) {
        return outcome;
    }
    if !is_canonical(rip) {
        return Outcome::Raise { vector: GENERAL_PROTECTION, error_code: 0 };
    }
    cpu.cs = cs as u16;
    (regs.rip, regs.rsp) = (rip, regs.rsp + 16);
    Outcome::Done
}

/// A user `syscall` (it reached xen-lite's LSTAR): into the guest kernel's LSTAR as the CPU
/// would have entered it, `rcx` and `r11` holding the user's `rip` and flags, FMASK applied to
/// the flags the kernel sees.
pub fn syscall(cpu: &mut VirtualCpu, regs: &mut TrapFrame) -> Outcome {
    if cpu.efer & EFER_SCE == 0 {
        return Outcome::Raise { vector: INVALID_OPCODE, error_code: 0 };
    }
    let user_flags = (regs.rflags & GUEST_FLAGS) | RFLAGS_IF;
    (regs.rcx, regs.r11) = (regs.rip, user_flags);
    let kernel_flags = user_flags & !cpu.fmask;
    cpu.interrupts = kernel_flags & RFLAGS_IF != 0;
    let selector = (cpu.star >> 32) as u16 & !3;
    (cpu.cs, cpu.ss) = (selector, selector + 8);
    regs.rip = cpu.lstar;
    (regs.cs, regs.ss) = (FLAT_RING1_CS.into(), FLAT_RING1_DS.into());
    regs.rflags = (kernel_flags & GUEST_FLAGS) | RFLAGS_IF;
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trapmode::vcpu::tests::Flat;
    use crate::trapmode::vcpu::TableRegister;

    /// A guest with a GDT at 0x1000 (0x08 kernel code, 0x10 kernel data, 0x38 a TSS at 0x2000
    /// whose RSP0 is 0x9000) and an IDT at 0x3000 (vector 14: interrupt gate to 0x4000, DPL 0;
    /// vector 0x80: trap gate to 0x4100, DPL 3).
    fn machine() -> (VirtualCpu, Flat) {
        let mut guest = Flat::new(0x10000);
        let mut cpu = VirtualCpu::at_boot();
        cpu.gdtr = TableRegister { limit: 0x47, base: 0x1000 };
        guest.put(0x1008, &0x00af_9b00_0000_ffffu64.to_le_bytes());
        guest.put(0x1010, &0x00cf_9300_0000_ffffu64.to_le_bytes());
        cpu.idtr = TableRegister { limit: 0xfff, base: 0x3000 };
        let gate = |offset: u64, kind: u8, dpl: u8| {
            let mut g = [0u8; 16];
            g[0..2].copy_from_slice(&(offset as u16).to_le_bytes());
            g[2..4].copy_from_slice(&0x08u16.to_le_bytes());
            g[5] = 0x80 | dpl << 5 | kind;
            g[6..8].copy_from_slice(&((offset >> 16) as u16).to_le_bytes());
            g
        };
        guest.put(0x3000 + 14 * 16, &gate(0x4000, 0xe, 0));
        guest.put(0x3000 + 0x80 * 16, &gate(0x4100, 0xf, 3));
        (cpu.tr, cpu.tss_base) = (0x38, 0x2000);
        guest.put(0x2004, &0x9000u64.to_le_bytes());
        (cpu, guest)
    }

    #[test]
    fn a_page_fault_from_user_code_lands_on_rsp0_with_the_hardware_frame() {
        let (mut cpu, mut guest) = machine();
        cpu.interrupts = true;
        let mut regs = TrapFrame {
            rip: 0x40_1234,
            cs: FLAT_RING3_CS.into(),
            rflags: 0x246 | 3 << 12, // IOPL is never shown: ring 3 cannot have it
            rsp: 0x7ff0,
            ss: FLAT_RING3_DS.into(),
            ..TrapFrame::default()
        };
        let event = Event { vector: 14, error_code: Some(6), software: false };
        deliver(&mut cpu, &mut regs, event, &mut guest).unwrap();
        assert_eq!(regs.rsp, 0x9000 - 48);
        let frame: Vec<u64> = (0..6).map(|i| guest.word(0x9000 - 48 + i * 8)).collect();
        assert_eq!(frame, [6, 0x40_1234, 0x33, 0x246, 0x7ff0, 0x2b]);
        assert_eq!((regs.rip, regs.cs, regs.ss), (0x4000, 0x19, 0x21));
        assert!(!cpu.interrupts, "an interrupt gate clears the virtual IF");
        assert_eq!(regs.rflags & RFLAGS_IF, RFLAGS_IF, "the real IF stays on");
    }

    #[test]
    fn from_the_kernel_the_frame_shows_its_own_selectors_and_the_virtual_if() {
        let (mut cpu, mut guest) = machine();
        cpu.interrupts = false;
        let mut regs = TrapFrame {
            rip: 0x4500,
            cs: 0x19,
            rflags: 0x202,
            rsp: 0x8008,
            ss: 0x21,
            ..TrapFrame::default()
        };
        deliver(
            &mut cpu,
            &mut regs,
            Event { vector: 14, error_code: Some(0), software: false },
            &mut guest,
        )
        .unwrap();
        let frame: Vec<u64> = (0..6).map(|i| guest.word(0x8000 - 48 + i * 8)).collect();
        assert_eq!(frame, [0, 0x4500, 0x08, 0x002, 0x8008, 0x10], "aligned down to 16 first");
    }

    #[test]
    fn int_0x80_needs_a_dpl_3_gate_and_a_missing_gate_is_a_gp() {
        let (mut cpu, mut guest) = machine();
        cpu.interrupts = true; // user code runs with IF on
        let user = TrapFrame {
            rip: 0x40_0000,
            cs: 0x33,
            rflags: 0x202,
            rsp: 0x7000,
            ss: 0x2b,
            ..TrapFrame::default()
        };
        let mut regs = user;
        deliver(
            &mut cpu,
            &mut regs,
            Event { vector: 0x80, error_code: None, software: true },
            &mut guest,
        )
        .unwrap();
        assert_eq!(regs.rip, 0x4100);
        assert!(cpu.interrupts, "a trap gate leaves IF alone");
        let mut regs = user;
        let refused = deliver(
            &mut cpu,
            &mut regs,
            Event { vector: 14, error_code: None, software: true },
            &mut guest,
        );
        assert_eq!(refused, Err(Outcome::Raise { vector: 13, error_code: 14 * 8 + 2 }));
        let refused = deliver(
            &mut cpu,
            &mut regs,
            Event { vector: 0x81, error_code: None, software: true },
            &mut guest,
        );
        assert_eq!(refused, Err(Outcome::Raise { vector: 13, error_code: 0x81 * 8 + 2 }));
    }

    #[test]
    fn a_gate_into_anything_but_dpl_0_code_is_a_kill() {
        let (mut cpu, mut guest) = machine();
        guest.put(0x1008, &0x00af_fb00_0000_ffffu64.to_le_bytes()); // DPL 3 code
        let mut regs = TrapFrame { cs: 0x19, rsp: 0x8000, ..TrapFrame::default() };
        let outcome = deliver(
            &mut cpu,
            &mut regs,
            Event { vector: 14, error_code: Some(0), software: false },
            &mut guest,
        );
        assert!(matches!(outcome, Err(Outcome::Kill { value: 0x08, .. })), "{outcome:?}");
    }

    #[test]
    fn iretq_to_the_kernel_restores_the_virtual_if_and_runs_it_in_ring_1() {
        let (mut cpu, mut guest) = machine();
        for (i, word) in [0x4600u64, 0x08, 0x246, 0x8800, 0x10].iter().enumerate() {
            guest.put(0x7000 + i as u64 * 8, &word.to_le_bytes());
        }
        let mut regs = TrapFrame { rsp: 0x7000, cs: 0x19, ss: 0x21, ..TrapFrame::default() };
        assert_eq!(iretq(&mut cpu, &mut regs, &mut guest), Outcome::Done);
        assert_eq!((regs.rip, regs.cs, regs.rsp, regs.ss), (0x4600, 0x19, 0x8800, 0x21));
        assert!(cpu.interrupts);
        // Ring 0 through a data descriptor: a kill, not ring 0.
        guest.put(0x7008, &0x10u64.to_le_bytes());
        let mut regs = TrapFrame { rsp: 0x7000, cs: 0x19, ..TrapFrame::default() };
        assert!(matches!(
            iretq(&mut cpu, &mut regs, &mut guest),
            Outcome::Kill { value: 0x10, .. }
        ));
    }

    #[test]
    fn syscall_and_sysretq_follow_star_lstar_and_fmask() {
        let mut cpu = VirtualCpu::at_boot();
        (cpu.star, cpu.lstar, cpu.fmask) =
            (0x0020_0008_0000_0000, 0xffff_ffff_8010_2000, RFLAGS_IF | 1 << 8);
        cpu.efer |= EFER_SCE;
        let mut regs =
            TrapFrame { rip: 0x40_0010, cs: 0x33, rflags: 0x346, ss: 0x2b, ..TrapFrame::default() };
        assert_eq!(syscall(&mut cpu, &mut regs), Outcome::Done);
        assert_eq!((regs.rip, regs.rcx, regs.r11), (0xffff_ffff_8010_2000, 0x40_0010, 0x346));
        assert_eq!((cpu.cs, cpu.ss, cpu.interrupts), (0x08, 0x10, false));
        assert_eq!(regs.rflags & (1 << 8), 0, "FMASK cleared TF");
        assert_eq!(sysretq(&mut cpu, &mut regs), Outcome::Done);
        assert_eq!((regs.rip, regs.cs, regs.ss), (0x40_0010, 0x33, 0x2b));
        cpu.star = 0x0008_0008_0000_0000;
        assert!(matches!(
            sysretq(&mut cpu, &mut regs),
            Outcome::Kill { instruction: "sysretq", .. }
        ));
        cpu.efer &= !EFER_SCE;
        assert_eq!(syscall(&mut cpu, &mut regs), Outcome::Raise { vector: 6, error_code: 0 });
    }
}
