//! Names the privileged instruction at a faulting guest `rip`.
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
}
