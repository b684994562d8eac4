//! Names the privileged instruction at a faulting guest `rip`, and decodes the five
//! unprivileged reads of system state that CR4.UMIP turns into #GP.
//!
//! A `pv` guest kernel runs in ring 1, where every instruction that controls the machine
//! raises #GP instead of executing: that is what makes ring compression a virtualization
//! technique at all (Popek and Goldberg: sensitive instructions must trap). xen-lite reports
//! such an instruction by name when it kills the domain. Only the instructions a kernel
//! might plausibly execute are recognised; the rest are "an unprivileged #GP" and go to the
//! guest's own handler. See: Intel SDM Vol. 2, revision 086, opcode map (Appendix A).

/// The name of the privileged instruction at the start of `bytes`, if it is one.
pub fn privileged_instruction(bytes: &[u8]) -> Option<&'static str> {
    // Skip legacy prefixes (operand/address size, rep, segment, lock) and one REX prefix.
    let start = bytes.iter().position(|b| {
        !matches!(b, 0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0)
    })?;
    let bytes = &bytes[start..];
    let bytes = match bytes.first()? {
        0x40..=0x4f => &bytes[1..],
        _ => bytes,
    };
    let reg = |modrm: Option<&u8>| modrm.map(|m| (m >> 3) & 7);
    Some(match bytes.first()? {
        0xfa => "cli",
        0xfb => "sti",
        0xf4 => "hlt",
        0xe4 | 0xe5 | 0xec | 0xed => "in",
        0xe6 | 0xe7 | 0xee | 0xef => "out",
        0x6c | 0x6d => "ins",
        0x6e | 0x6f => "outs",
        0x0f => match bytes.get(1)? {
            0x00 => match reg(bytes.get(2))? {
                2 => "lldt",
                3 => "ltr",
                _ => return None,
            },
            0x01 => match bytes.get(2)? {
                0xf8 => "swapgs",
                0xc1 => "vmcall",
                0xd8..=0xdf => "svm instruction",
                modrm => match reg(Some(modrm))? {
                    2 if modrm >> 6 != 3 => "lgdt",
                    3 if modrm >> 6 != 3 => "lidt",
                    6 => "lmsw",
                    7 if modrm >> 6 != 3 => "invlpg",
                    _ => return None,
                },
            },
            0x06 => "clts",
            0x08 => "invd",
            0x09 => "wbinvd",
            0x20 | 0x22 => match reg(bytes.get(2))? {
                0 => "mov cr0",
                2 => "mov cr2",
                3 => "mov cr3",
                4 => "mov cr4",
                8 => "mov cr8",
                _ => "mov crN",
            },
            0x21 | 0x23 => "mov drN",
            0x30 => "wrmsr",
            0x32 => "rdmsr",
            0x07 => "sysret",
            0x35 => "sysexit",
            0x78 | 0x79 => "vmread/vmwrite",
            _ => return None,
        },
        _ => return None,
    })
}

/// An instruction that reads a descriptor-table register or CR0 without being privileged:
/// with CR4.UMIP set it raises #GP outside ring 0 (and xen-lite emulates it for a `pv` kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UmipRead {
    /// `sgdt m`: GDTR, 10 bytes.
    Sgdt,
    /// `sidt m`: IDTR, 10 bytes.
    Sidt,
    /// `sldt r/m`: the LDT selector.
    Sldt,
    /// `str r/m`: the task register's selector.
    Str,
    /// `smsw r/m`: the low bits of CR0.
    Smsw,
}

/// Where a decoded instruction stores its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// General register `index` (0 = rax ... 15 = r15); `size` bytes are written (2, or 8 for a
    /// zero-extended 32- or 64-bit destination).
    Register {
        /// The register number, as ModRM and REX encode it.
        index: u8,
        /// Bytes written.
        size: u8,
    },
    /// A memory operand: `[base + index * scale + displacement]`, or `rip`-relative.
    Memory {
        /// Base register, if any.
        base: Option<u8>,
        /// Index register and scale, if any.
        index: Option<(u8, u8)>,
        /// Signed displacement.
        displacement: i64,
        /// `[rip + displacement]`: relative to the next instruction.
        rip_relative: bool,
    },
}

impl Operand {
    /// The linear address of a memory operand, given the registers (by number) and the address
    /// of the next instruction.
    pub fn address(&self, registers: &[u64; 16], next_rip: u64) -> Option<u64> {
        let Operand::Memory { base, index, displacement, rip_relative } = *self else {
            return None;
        };
        let mut address = if rip_relative { next_rip } else { 0 };
        if let Some(base) = base {
            address = address.wrapping_add(registers[usize::from(base)]);
        }
        if let Some((index, scale)) = index {
            address = address.wrapping_add(registers[usize::from(index)] << scale);
        }
        Some(address.wrapping_add(displacement as u64))
    }
}

/// A decoded UMIP instruction: what it reads, where it stores, and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmipInstruction {
    /// What it reads.
    pub read: UmipRead,
    /// Where the result goes.
    pub operand: Operand,
    /// Bytes, prefixes included (the emulation skips them).
    pub length: u8,
}

/// Decodes `sgdt`, `sidt`, `sldt`, `str` or `smsw` in 64-bit mode at the start of `bytes`.
/// Instructions with an FS or GS override, a 32-bit address size, or a register operand
/// where only memory is legal are not decoded (`None`): xen-lite delivers their #GP unchanged.
/// See: Intel SDM Vol. 2, revision 086, 2.1-2.2 (ModRM, SIB, REX) and the five instructions.
pub fn umip_instruction(bytes: &[u8]) -> Option<UmipInstruction> {
    let (mut at, operand_16, rex) = prefixes(bytes, &[0xf0, 0xf2, 0xf3])?;
    let (opcode, modrm) = (bytes.get(at..at + 2)?, *bytes.get(at + 2)?);
    at += 3;
    let (reg, mode, rm) = ((modrm >> 3) & 7, modrm >> 6, modrm & 7);
    let read = match (opcode, reg) {
        ([0x0f, 0x01], 0) if mode != 3 => UmipRead::Sgdt,
        ([0x0f, 0x01], 1) if mode != 3 => UmipRead::Sidt,
        ([0x0f, 0x01], 4) => UmipRead::Smsw,
        ([0x0f, 0x00], 0) => UmipRead::Sldt,
        ([0x0f, 0x00], 1) => UmipRead::Str,
        _ => return None,
    };
    if mode == 3 {
        let size = if operand_16 { 2 } else { 8 };
        let operand = Operand::Register { index: rm | ((rex & 1) << 3), size };
        return Some(UmipInstruction { read, operand, length: at as u8 });
    }
    let (operand, at) = memory_operand(bytes, at, rex, modrm)?;
    Some(UmipInstruction { read, operand, length: at as u8 })
}

/// The prefixes at the start of `bytes` that an emulated instruction may carry, in 64-bit mode:
/// where the opcode starts, whether 0x66 (16-bit operands) was among them, and the REX prefix
/// (0 if none). Accepted: 0x66, the CS, SS, DS and ES overrides (which 64-bit mode ignores) and
/// those in `also`; FS/GS overrides and 0x67 (32-bit addresses) end the prefixes, so the opcode
/// check that follows refuses them. `None` if nothing follows.
pub fn prefixes(bytes: &[u8], also: &[u8]) -> Option<(usize, bool, u8)> {
    let mut at = 0;
    let mut operand_16 = false;
    while let Some(&prefix) = bytes.get(at) {
        match prefix {
            0x66 => operand_16 = true,
            0x2e | 0x36 | 0x3e | 0x26 => {}
            other if also.contains(&other) => {}
            _ => break,
        }
        at += 1;
    }
    let rex = match *bytes.get(at)? {
        rex @ 0x40..=0x4f => {
            at += 1;
            rex
        }
        _ => 0,
    };
    Some((at, operand_16, rex))
}

/// The memory operand whose ModRM byte (`modrm`, mode not 3) came just before `at` in `bytes`,
/// with the instruction's REX prefix (0 if none): the operand, and where the instruction ends.
pub fn memory_operand(bytes: &[u8], mut at: usize, rex: u8, modrm: u8) -> Option<(Operand, usize)> {
    let (mode, rm, rex_b) = (modrm >> 6, modrm & 7, (rex & 1) << 3);
    let (rex_x, mut base, mut index) = ((rex & 2) << 2, Some(rm | rex_b), None);
    let mut rip_relative = false;
    if rm == 4 {
        let sib = *bytes.get(at)?;
        at += 1;
        let (scale, sib_index, sib_base) = (sib >> 6, ((sib >> 3) & 7) | rex_x, sib & 7);
        index = (sib_index != 4).then_some((sib_index, scale));
        base = Some(sib_base | rex_b);
        if sib_base == 5 && mode == 0 {
            base = None; // [index * scale + disp32]
        }
    } else if rm == 5 && mode == 0 {
        (base, rip_relative) = (None, true);
    }
    let disp_len = match mode {
        1 => 1,
        2 => 4,
        _ if base.is_none() => 4,
        _ => 0,
    };
    let raw = bytes.get(at..at + disp_len)?;
    at += disp_len;
    let displacement = match disp_len {
        1 => i64::from(raw[0] as i8),
        4 => i64::from(i32::from_le_bytes(raw.try_into().ok()?)),
        _ => 0,
    };
    Some((Operand::Memory { base, index, displacement, rip_relative }, at))
}

/// A `mov` between CR3 and a general register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr3Move {
    /// `mov cr3, r64` (else `mov r64, cr3`).
    pub write: bool,
    /// The general register, by its encoding number.
    pub register: u8,
    /// Bytes.
    pub length: u8,
}

/// Decodes `mov cr3, r64` or `mov r64, cr3` (`[REX] 0f 22/20 /r`, mode 3, reg 3) at the start of
/// `bytes`: what SVM intercepts without decode assists. See: SDM Vol. 2, MOV (control registers).
pub fn cr3_move(bytes: &[u8]) -> Option<Cr3Move> {
    let (rex, at) = match bytes.first()? {
        &rex @ 0x40..=0x4f => (rex, 1),
        _ => (0, 0),
    };
    let [0x0f, direction, modrm] = *bytes.get(at..at + 3)? else { return None };
    if !matches!(direction, 0x20 | 0x22) || modrm >> 6 != 3 || (modrm >> 3) & 7 != 3 || rex & 4 != 0
    {
        return None; // not CR3 (REX.R would name CR11)
    }
    let register = (modrm & 7) | ((rex & 1) << 3);
    Some(Cr3Move { write: direction == 0x22, register, length: at as u8 + 3 })
}

/// Decodes `invlpg m` (`[REX] 0f 01 /7`, a memory operand) at the start of `bytes`: the operand
/// and the length. Segment overrides and a 32-bit address size are not decoded (`None`).
pub fn invlpg(bytes: &[u8]) -> Option<(Operand, u8)> {
    let (rex, at) = match bytes.first()? {
        &rex @ 0x40..=0x4f => (rex, 1),
        _ => (0, 0),
    };
    let [0x0f, 0x01, modrm] = *bytes.get(at..at + 3)? else { return None };
    if modrm >> 6 == 3 || (modrm >> 3) & 7 != 7 {
        return None;
    }
    let (operand, end) = memory_operand(bytes, at + 3, rex, modrm)?;
    Some((operand, end as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_instructions_are_named() {
        let cases: [(&[u8], &str); 14] = [
            (&[0xfa], "cli"),
            (&[0xfb], "sti"),
            (&[0xf4], "hlt"),
            (&[0x0f, 0x22, 0xd8], "mov cr3"), // mov cr3, rax
            (&[0x0f, 0x20, 0xe0], "mov cr4"), // mov rax, cr4
            (&[0x0f, 0x01, 0x10], "lgdt"),    // lgdt [rax]
            (&[0x0f, 0x01, 0x18], "lidt"),    // lidt [rax]
            (&[0x0f, 0x00, 0xd8], "ltr"),     // ltr ax
            (&[0x0f, 0x30], "wrmsr"),
            (&[0x0f, 0x32], "rdmsr"),
            (&[0xe6, 0x80], "out"),          // out 0x80, al
            (&[0xec], "in"),                 // in al, dx
            (&[0x0f, 0x01, 0x38], "invlpg"), // invlpg [rax]
            (&[0x0f, 0x09], "wbinvd"),
        ];
        for (bytes, name) in cases {
            assert_eq!(privileged_instruction(bytes), Some(name), "{bytes:02x?}");
        }
    }

    #[test]
    fn prefixes_are_skipped() {
        assert_eq!(privileged_instruction(&[0x66, 0xef]), Some("out"), "out dx, ax");
        assert_eq!(privileged_instruction(&[0x41, 0x0f, 0x22, 0xd8]), Some("mov cr3"), "REX.B");
        assert_eq!(privileged_instruction(&[0xf3, 0x6e]), Some("outs"), "rep outsb");
    }

    #[test]
    fn ordinary_instructions_are_not() {
        for bytes in [
            &[0x90][..],
            &[0x48, 0x89, 0xc8],
            &[0xcd, 0x82],
            &[0x0f, 0x05],
            &[0x0f, 0x01, 0xd0],
            &[],
            &[0x66],
        ] {
            assert_eq!(privileged_instruction(bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn umip_instructions_decode_with_their_operands() {
        let memory = |base, index, displacement| Operand::Memory {
            base,
            index,
            displacement,
            rip_relative: false,
        };
        let cases: [(&[u8], UmipRead, Operand, u8); 9] = [
            (&[0x0f, 0x01, 0x00], UmipRead::Sgdt, memory(Some(0), None, 0), 3), // sgdt [rax]
            (&[0x0f, 0x01, 0x4c, 0x24, 0x08], UmipRead::Sidt, memory(Some(4), None, 8), 5), // sidt [rsp+8]
            (&[0x41, 0x0f, 0x01, 0x45, 0xf0], UmipRead::Sgdt, memory(Some(13), None, -16), 5), // sgdt [r13-16]
            (&[0x0f, 0x01, 0x04, 0x8b], UmipRead::Sgdt, memory(Some(3), Some((1, 2)), 0), 4), // sgdt [rbx+rcx*4]
            (&[0x0f, 0x00, 0xc8], UmipRead::Str, Operand::Register { index: 0, size: 8 }, 3), // str eax
            (
                &[0x66, 0x41, 0x0f, 0x00, 0xc1],
                UmipRead::Sldt,
                Operand::Register { index: 9, size: 2 },
                5,
            ), // sldt r9w
            (&[0x0f, 0x01, 0xe0], UmipRead::Smsw, Operand::Register { index: 0, size: 8 }, 3), // smsw eax
            (
                &[0x0f, 0x00, 0x0c, 0x25, 0x00, 0x10, 0, 0],
                UmipRead::Str,
                memory(None, None, 0x1000),
                8,
            ), // str [0x1000]
            (
                &[0x0f, 0x01, 0x05, 0x10, 0, 0, 0],
                UmipRead::Sgdt,
                Operand::Memory { base: None, index: None, displacement: 0x10, rip_relative: true },
                7,
            ),
        ];
        for (bytes, read, operand, length) in cases {
            assert_eq!(
                umip_instruction(bytes),
                Some(UmipInstruction { read, operand, length }),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn umip_operands_resolve_like_the_cpu() {
        let mut registers = [0u64; 16];
        registers[3] = 0x1000; // rbx
        registers[1] = 0x20; // rcx
        let sgdt = umip_instruction(&[0x0f, 0x01, 0x44, 0x8b, 0xf8]).unwrap(); // [rbx+rcx*4-8]
        assert_eq!(sgdt.operand.address(&registers, 0), Some(0x1000 + 0x80 - 8));
        let relative = umip_instruction(&[0x0f, 0x01, 0x05, 0x10, 0, 0, 0]).unwrap();
        assert_eq!(relative.operand.address(&registers, 0x5000), Some(0x5010));
        let str = umip_instruction(&[0x0f, 0x00, 0xc8]).unwrap();
        assert_eq!(str.operand.address(&registers, 0), None, "a register operand");
    }

    #[test]
    fn what_is_not_ours_to_emulate_is_not_decoded() {
        for bytes in [
            &[0x0f, 0x01, 0xc0][..],   // sgdt with a register operand: #UD, not UMIP
            &[0x65, 0x0f, 0x01, 0x00], // sgdt gs:[rax]
            &[0x67, 0x0f, 0x01, 0x00], // 32-bit address size
            &[0x0f, 0x01, 0x10],       // lgdt
            &[0x0f, 0x01, 0x44],       // truncated
            &[0x0f, 0x00],
        ] {
            assert_eq!(umip_instruction(bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn cr3_moves_and_invlpg_decode() {
        let write = cr3_move(&[0x0f, 0x22, 0xd8]); // mov cr3, rax
        assert_eq!(write, Some(Cr3Move { write: true, register: 0, length: 3 }));
        let read = cr3_move(&[0x41, 0x0f, 0x20, 0xdf]); // mov r15, cr3
        assert_eq!(read, Some(Cr3Move { write: false, register: 15, length: 4 }));
        assert_eq!(cr3_move(&[0x0f, 0x22, 0xe0]), None, "mov cr4, rax");
        assert_eq!(cr3_move(&[0x44, 0x0f, 0x22, 0xd8]), None, "REX.R: cr11");
        // invlpg [rdi]
        let (operand, length) = invlpg(&[0x0f, 0x01, 0x3f]).unwrap();
        assert_eq!(length, 3);
        let mut registers = [0; 16];
        registers[7] = 0x40_1000;
        assert_eq!(operand.address(&registers, 0), Some(0x40_1000));
        // invlpg [r8 + rcx * 8 + 0x10]: REX.B and REX.X, a SIB, a disp8
        let (operand, length) = invlpg(&[0x43, 0x0f, 0x01, 0x7c, 0xc8, 0x10]).unwrap();
        registers[8] = 0x1000;
        registers[9] = 2;
        assert_eq!((operand.address(&registers, 0), length), (Some(0x1000 + 16 + 0x10), 6));
        assert_eq!(invlpg(&[0x0f, 0x01, 0xf8]), None, "swapgs: a register form");
    }
}
