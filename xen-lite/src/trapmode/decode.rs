//! What `mode=trap` decodes at a faulting guest `rip`: every privileged instruction the `hvm`
//! kernel executes in ring 1 (where each raises #GP), as one [`Instruction`] with its
//! operands and length. Everything else is `None`: the #GP is the guest's own (a bad pointer, a
//! bad segment) and is delivered to it, or, if it came from the kernel itself, kills the domain
//! naming the bytes. See: Intel SDM Vol. 2, revision 086, the opcode map (Appendix A) and each
//! instruction; Xen's `arch/x86/pv/emul-priv-op.c` decodes the same set for its pv guests.

use crate::decode::{memory_operand, prefixes, umip_instruction, Operand, UmipRead};

/// A privileged (or, under UMIP, sensitive) instruction, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `cli`.
    Cli,
    /// `sti`.
    Sti,
    /// `hlt`.
    Hlt,
    /// `in` or `out` of `size` bytes: at port `imm8`, or at the port in `dx` (`port: None`).
    Io {
        /// The immediate port, if the instruction has one.
        port: Option<u8>,
        /// Bytes: 1, 2 or 4.
        size: u8,
        /// `out` (else `in`).
        write: bool,
    },
    /// `lgdt m`.
    Lgdt(Operand),
    /// `lidt m`.
    Lidt(Operand),
    /// `lldt r/m16`.
    Lldt(Operand),
    /// `ltr r/m16`.
    Ltr(Operand),
    /// `mov r64, crN`.
    MovFromCr {
        /// The control register.
        cr: u8,
        /// The destination register.
        register: u8,
    },
    /// `mov crN, r64`.
    MovToCr {
        /// The control register.
        cr: u8,
        /// The source register.
        register: u8,
    },
    /// `clts`.
    Clts,
    /// `mov r64, drN`.
    MovFromDr {
        /// The debug register.
        dr: u8,
        /// The destination register.
        register: u8,
    },
    /// `mov drN, r64`.
    MovToDr {
        /// The debug register.
        dr: u8,
        /// The source register.
        register: u8,
    },
    /// `mov sreg, r/m16` (`segment`: 0 es, 2 ss, 3 ds, 4 fs, 5 gs).
    MovToSegment {
        /// The segment register, as ModRM's reg field numbers it.
        segment: u8,
        /// The selector's source.
        source: Operand,
    },
    /// `wrmsr`.
    Wrmsr,
    /// `rdmsr`.
    Rdmsr,
    /// `invlpg m`.
    Invlpg(Operand),
    /// `wbinvd` or `invd`.
    CacheFlush,
    /// `swapgs`.
    Swapgs,
    /// `iretq` (REX.W `cf`).
    Iretq,
    /// `sysretq` (REX.W `0f 07`).
    Sysretq,
    /// `lretq` (REX.W `cb`): a far return, as a kernel reloads CS with.
    Lretq,
    /// `sgdt`, `sidt`, `sldt`, `str` or `smsw`: they trap only with CR4.UMIP (`umip=on`).
    Umip(UmipRead, Operand),
}

/// An instruction and its length in bytes, prefixes included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What it is.
    pub instruction: Instruction,
    /// Bytes.
    pub length: u8,
}

/// A register operand of `size` bytes from the low three bits of `modrm` and REX.B.
fn register(modrm: u8, rex: u8, size: u8) -> Operand {
    Operand::Register { index: (modrm & 7) | ((rex & 1) << 3), size }
}

/// Decodes the privileged instruction at the start of `bytes` (up to 15 of them, read at the
/// guest's `rip`), in 64-bit mode. FS and GS overrides, a 32-bit address size, `rep` on port
/// I/O and the 32-bit forms of `iret`, `sysret` and `lret` are not decoded: a kernel has no use
/// for them, and a kill naming the bytes is clearer than a half-right emulation.
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    if let Some(umip) = umip_instruction(bytes) {
        let instruction = Instruction::Umip(umip.read, umip.operand);
        return Some(Decoded { instruction, length: umip.length });
    }
    let (at, operand_16, rex) = prefixes(bytes, &[])?;
    let wide = rex & 8 != 0;
    let io_size = if operand_16 { 2 } else { 4 };
    let one = |instruction| Some(Decoded { instruction, length: at as u8 + 1 });
    let io = |port, size, write| Instruction::Io { port, size, write };
    match *bytes.get(at)? {
        0xfa => return one(Instruction::Cli),
        0xfb => return one(Instruction::Sti),
        0xf4 => return one(Instruction::Hlt),
        0xec => return one(io(None, 1, false)),
        0xed => return one(io(None, io_size, false)),
        0xee => return one(io(None, 1, true)),
        0xef => return one(io(None, io_size, true)),
        opcode @ (0xe4..=0xe7) => {
            let port = *bytes.get(at + 1)?;
            let size = if opcode & 1 == 0 { 1 } else { io_size };
            let instruction = io(Some(port), size, opcode >= 0xe6);
            return Some(Decoded { instruction, length: at as u8 + 2 });
        }
        0xcf if wide => return one(Instruction::Iretq),
        0xcb if wide => return one(Instruction::Lretq),
        0x8e => {
            let modrm = *bytes.get(at + 1)?;
            let segment = (modrm >> 3) & 7;
            if segment == 1 || segment > 5 {
                return None; // CS cannot be loaded by mov; 6 and 7 do not exist
            }
            let (source, end) = if modrm >> 6 == 3 {
                (register(modrm, rex, 2), at + 2)
            } else {
                memory_operand(bytes, at + 2, rex, modrm)?
            };
            let instruction = Instruction::MovToSegment { segment, source };
            return Some(Decoded { instruction, length: end as u8 });
        }
        0x0f => {}
        _ => return None,
    }
    let second = *bytes.get(at + 1)?;
    let two = |instruction| Some(Decoded { instruction, length: at as u8 + 2 });
    match second {
        0x30 => return two(Instruction::Wrmsr),
        0x32 => return two(Instruction::Rdmsr),
        0x08 | 0x09 => return two(Instruction::CacheFlush),
        0x06 => return two(Instruction::Clts),
        0x07 if wide => return two(Instruction::Sysretq),
        0x00 | 0x01 | 0x20 | 0x21 | 0x22 | 0x23 => {}
        _ => return None,
    }
    let modrm = *bytes.get(at + 2)?;
    let (mode, reg) = (modrm >> 6, (modrm >> 3) & 7);
    if second == 0x01 && modrm == 0xf8 {
        return Some(Decoded { instruction: Instruction::Swapgs, length: at as u8 + 3 });
    }
    if matches!(second, 0x20..=0x23) {
        if mode != 3 {
            return None;
        }
        let number = reg | ((rex & 4) << 1);
        let register = (modrm & 7) | ((rex & 1) << 3);
        let instruction = match second {
            0x20 => Instruction::MovFromCr { cr: number, register },
            0x22 => Instruction::MovToCr { cr: number, register },
            0x21 => Instruction::MovFromDr { dr: number, register },
            _ => Instruction::MovToDr { dr: number, register },
        };
        return Some(Decoded { instruction, length: at as u8 + 3 });
    }
    let (operand, end) = if mode == 3 {
        (register(modrm, rex, 2), at + 3)
    } else {
        memory_operand(bytes, at + 3, rex, modrm)?
    };
    let memory = mode != 3;
    let instruction = match (second, reg) {
        (0x00, 2) => Instruction::Lldt(operand),
        (0x00, 3) => Instruction::Ltr(operand),
        (0x01, 2) if memory => Instruction::Lgdt(operand),
        (0x01, 3) if memory => Instruction::Lidt(operand),
        (0x01, 7) if memory => Instruction::Invlpg(operand),
        _ => return None,
    };
    Some(Decoded { instruction, length: end as u8 })
}

/// The instruction's name, for counters and kill lines.
pub fn name(instruction: &Instruction) -> &'static str {
    match instruction {
        Instruction::Cli => "cli",
        Instruction::Sti => "sti",
        Instruction::Hlt => "hlt",
        Instruction::Io { write: true, .. } => "out",
        Instruction::Io { write: false, .. } => "in",
        Instruction::Lgdt(_) => "lgdt",
        Instruction::Lidt(_) => "lidt",
        Instruction::Lldt(_) => "lldt",
        Instruction::Ltr(_) => "ltr",
        Instruction::MovFromCr { .. } => "mov from crN",
        Instruction::MovToCr { .. } => "mov to crN",
        Instruction::MovToSegment { .. } => "mov to a segment register",
        Instruction::Clts => "clts",
        Instruction::MovFromDr { .. } => "mov from drN",
        Instruction::MovToDr { .. } => "mov to drN",
        Instruction::Wrmsr => "wrmsr",
        Instruction::Rdmsr => "rdmsr",
        Instruction::Invlpg(_) => "invlpg",
        Instruction::CacheFlush => "wbinvd",
        Instruction::Swapgs => "swapgs",
        Instruction::Iretq => "iretq",
        Instruction::Sysretq => "sysretq",
        Instruction::Lretq => "lretq",
        Instruction::Umip(read, _) => match read {
            UmipRead::Sgdt => "sgdt",
            UmipRead::Sidt => "sidt",
            UmipRead::Sldt => "sldt",
            UmipRead::Str => "str",
            UmipRead::Smsw => "smsw",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> (Instruction, u8) {
        let d = decode(bytes).unwrap_or_else(|| panic!("{bytes:x?} not decoded"));
        (d.instruction, d.length)
    }

    #[test]
    fn the_one_byte_instructions_and_port_io() {
        assert_eq!(decoded(&[0xfa]), (Instruction::Cli, 1));
        assert_eq!(decoded(&[0xfb, 0xf4]), (Instruction::Sti, 1));
        assert_eq!(decoded(&[0xf4]), (Instruction::Hlt, 1));
        let io = |port, size, write| Instruction::Io { port, size, write };
        assert_eq!(decoded(&[0xee]), (io(None, 1, true), 1)); // out dx, al
        assert_eq!(decoded(&[0xec]), (io(None, 1, false), 1)); // in al, dx
        assert_eq!(decoded(&[0xef]), (io(None, 4, true), 1)); // out dx, eax
        assert_eq!(decoded(&[0x66, 0xed]), (io(None, 2, false), 2)); // in ax, dx
        assert_eq!(decoded(&[0xe6, 0x21]), (io(Some(0x21), 1, true), 2)); // out 0x21, al
        assert_eq!(decoded(&[0xe5, 0x40]), (io(Some(0x40), 4, false), 2)); // in eax, 0x40
        assert_eq!(decode(&[0xf3, 0x6e]), None); // rep outsb
    }

    #[test]
    fn control_registers_with_their_registers() {
        // mov cr3, rax; mov rbx, cr0; mov cr4, r9 (REX.B); mov rax, cr8 (REX.R)
        assert_eq!(decoded(&[0x0f, 0x22, 0xd8]), (Instruction::MovToCr { cr: 3, register: 0 }, 3));
        assert_eq!(
            decoded(&[0x0f, 0x20, 0xc3]),
            (Instruction::MovFromCr { cr: 0, register: 3 }, 3)
        );
        assert_eq!(
            decoded(&[0x41, 0x0f, 0x22, 0xe1]),
            (Instruction::MovToCr { cr: 4, register: 9 }, 4)
        );
        assert_eq!(
            decoded(&[0x44, 0x0f, 0x20, 0xc0]),
            (Instruction::MovFromCr { cr: 8, register: 0 }, 4)
        );
        assert_eq!(decode(&[0x0f, 0x22, 0x18]), None); // a memory form does not exist
    }

    #[test]
    fn descriptor_tables_and_segments() {
        let at_rax =
            Operand::Memory { base: Some(0), index: None, displacement: 0, rip_relative: false };
        assert_eq!(decoded(&[0x0f, 0x01, 0x10]), (Instruction::Lgdt(at_rax), 3)); // lgdt [rax]
        assert_eq!(decoded(&[0x0f, 0x01, 0x18]), (Instruction::Lidt(at_rax), 3)); // lidt [rax]
        let ax = Operand::Register { index: 0, size: 2 };
        assert_eq!(decoded(&[0x0f, 0x00, 0xd8]), (Instruction::Ltr(ax), 3)); // ltr ax
        assert_eq!(decoded(&[0x0f, 0x00, 0xd0]), (Instruction::Lldt(ax), 3)); // lldt ax
        let move_to = |segment| Instruction::MovToSegment { segment, source: ax };
        assert_eq!(decoded(&[0x8e, 0xd0]), (move_to(2), 2)); // mov ss, ax
        assert_eq!(decoded(&[0x8e, 0xd8]), (move_to(3), 2)); // mov ds, ax
        assert_eq!(decode(&[0x8e, 0xc8]), None); // mov cs, ax
        let rip_plus_16 =
            Operand::Memory { base: None, index: None, displacement: 16, rip_relative: true };
        assert_eq!(
            decoded(&[0x0f, 0x01, 0x3d, 16, 0, 0, 0]),
            (Instruction::Invlpg(rip_plus_16), 7)
        );
    }

    #[test]
    fn returns_need_their_64_bit_forms() {
        assert_eq!(decoded(&[0x48, 0xcf]), (Instruction::Iretq, 2));
        assert_eq!(decoded(&[0x48, 0x0f, 0x07]), (Instruction::Sysretq, 3));
        assert_eq!(decoded(&[0x48, 0xcb]), (Instruction::Lretq, 2));
        assert_eq!(decode(&[0xcf]), None); // iretd
        assert_eq!(decode(&[0x0f, 0x07]), None); // sysretd
        assert_eq!(decoded(&[0x0f, 0x01, 0xf8]), (Instruction::Swapgs, 3));
        assert_eq!(decoded(&[0x0f, 0x30]), (Instruction::Wrmsr, 2));
        assert_eq!(decoded(&[0x0f, 0x32]), (Instruction::Rdmsr, 2));
        assert_eq!(decoded(&[0x0f, 0x09]), (Instruction::CacheFlush, 2));
        assert_eq!(decoded(&[0x0f, 0x06]), (Instruction::Clts, 2));
        assert_eq!(
            decoded(&[0x0f, 0x21, 0xf8]),
            (Instruction::MovFromDr { dr: 7, register: 0 }, 3)
        );
        assert_eq!(decoded(&[0x0f, 0x23, 0xc1]), (Instruction::MovToDr { dr: 0, register: 1 }, 3));
    }

    #[test]
    fn umip_reads_come_from_the_shared_decoder() {
        let (instruction, length) = decoded(&[0x0f, 0x01, 0x00]); // sgdt [rax]
        assert_eq!((name(&instruction), length), ("sgdt", 3));
        assert_eq!(decode(&[0x90]), None);
        assert_eq!(decode(&[]), None);
    }
}
