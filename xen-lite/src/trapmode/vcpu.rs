//! The virtual CPU of `mode=trap`: the system state the `hvm` kernel believes it has ring 0
//! for ([`VirtualCpu`]), and the emulation of each privileged instruction against it
//! ([`emulate`]). Pure: the guest's memory is reached through [`Guest`], which xen-lite
//! implements over the domain's pmap and its own page tables, and the host tests over a flat
//! array.
//!
//! What is virtual and what is real while the guest runs in ring 1:
//!
//! | state | virtual (here) | real |
//! |---|---|---|
//! | IF | [`VirtualCpu::interrupts`] | always 1: `cli` and `sti` trap, and the timer must preempt |
//! | CS, SS | the selectors the guest loaded (`0x08`, `0x10`) | xen-lite's ring-1 pair (`FLAT_RING1_CS`/`DS`) |
//! | GDTR, IDTR, LDTR, TR | what `lgdt`, `lidt`, `lldt`, `ltr` loaded | xen-lite's tables |
//! | CR0, CR2, CR4, EFER | the guest's values | xen-lite's |
//! | CR3 | the guest's tables (guest-physical) | the shadow root (`crate::shadow`) |
//! | the `syscall` MSRs | STAR, LSTAR, FMASK | xen-lite's entry (`syscall` bounces) |
//! | GS base | `swapgs` swaps the kernel one in | loaded into the CPU |

use hypercall_abi::layout::is_canonical;

use super::decode::Instruction;
use crate::decode::{Operand, UmipRead};
use crate::entry::TrapFrame;
use crate::hvm::Exit;

/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// CR0.PE and CR0.PG: long mode needs both.
const CR0_PE_PG: u64 = 1 | 1 << 31;
/// CR0.TS.
const CR0_TS: u64 = 1 << 3;
/// CR4.PAE: long mode needs it.
const CR4_PAE: u64 = 1 << 5;
/// EFER.SCE, EFER.LME, EFER.LMA.
pub const EFER_SCE: u64 = 1;
const EFER_LONG_MODE: u64 = 1 << 8 | 1 << 10;

/// A descriptor-table register: limit and base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableRegister {
    /// The last valid byte offset.
    pub limit: u16,
    /// The linear address of the table.
    pub base: u64,
}

/// What the guest kernel believes about the CPU it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualCpu {
    /// The virtual IF.
    pub interrupts: bool,
    /// The code and stack selectors the kernel loaded (what its frames show).
    pub cs: u16,
    /// See `cs`.
    pub ss: u16,
    /// The control registers the guest reads back.
    pub cr0: u64,
    /// The fault address of the last page fault delivered.
    pub cr2: u64,
    /// See `cr0`.
    pub cr4: u64,
    /// EFER as the guest wrote it.
    pub efer: u64,
    /// The guest's GDT and IDT.
    pub gdtr: TableRegister,
    /// See `gdtr`.
    pub idtr: TableRegister,
    /// The LDT selector (only 0: no LDTs).
    pub ldtr: u16,
    /// The task register's selector, and the TSS base it named.
    pub tr: u16,
    /// See `tr`.
    pub tss_base: u64,
    /// The `syscall` MSRs.
    pub star: u64,
    /// See `star`.
    pub lstar: u64,
    /// See `star`.
    pub fmask: u64,
    /// IA32_KERNEL_GS_BASE: what `swapgs` swaps in.
    pub kernel_gs_base: u64,
    /// The debug registers DR0 to DR7 as the guest wrote them (kept, never loaded: a guest's
    /// breakpoints would fire in xen-lite too).
    pub dr: [u64; 8],
}

impl VirtualCpu {
    /// The CPU as a 64-bit kernel finds it at its entry point: long mode, paging, interrupts
    /// off, the boot selectors 0x08 and 0x10 (as under VMX and natively).
    pub const fn at_boot() -> VirtualCpu {
        VirtualCpu {
            interrupts: false,
            cs: 0x08,
            ss: 0x10,
            cr0: 0x8001_0033, // PG, WP, NE, ET, MP, PE
            cr2: 0,
            cr4: CR4_PAE,
            efer: EFER_LONG_MODE | 1 << 11, // LME, LMA, NXE
            gdtr: TableRegister { limit: 0, base: 0 },
            idtr: TableRegister { limit: 0, base: 0 },
            ldtr: 0,
            tr: 0,
            tss_base: 0,
            star: 0,
            lstar: 0,
            fmask: 0,
            kernel_gs_base: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
        }
    }
}

/// Why a guest-memory access could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The guest's own tables refuse it: the page fault the CPU would raise.
    PageFault {
        /// The linear address.
        address: u64,
        /// The error code.
        error_code: u64,
    },
    /// The guest's tables name memory beyond the domain's: a kill.
    Beyond {
        /// The linear address.
        address: u64,
    },
}

/// The guest's memory by guest-virtual address, as its kernel reaches it (supervisor accesses
/// through its own page tables), and the one piece of real state an emulation changes.
pub trait Guest {
    /// Reads `bytes.len()` bytes at `va`.
    fn read(&mut self, va: u64, bytes: &mut [u8]) -> Result<(), Refusal>;
    /// Writes `bytes` at `va`.
    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), Refusal>;
    /// Loads `base` into the real GS base and returns the one it replaces (`swapgs`).
    fn swap_gs_base(&mut self, base: u64) -> u64;
}

/// What an emulation asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, `rip` past it: the guest runs on.
    Done,
    /// For the run loop (`crate::hvm`), with `rip` still at the instruction: the backend
    /// moves it past when the loop says so.
    Exit(Exit),
    /// The CPU would raise this exception instead; it goes to the guest's own handler.
    Raise {
        /// The vector.
        vector: u8,
        /// Its error code (0 where the vector has none).
        error_code: u64,
    },
    /// The guest's memory refused an access the instruction makes.
    Memory(Refusal),
    /// The domain dies: what it tried, the rule, the value.
    Kill {
        /// The instruction.
        instruction: &'static str,
        /// The rule it broke.
        rule: &'static str,
        /// The offending value.
        value: u64,
    },
}

/// #GP.
pub const GENERAL_PROTECTION: u8 = 13;

/// The 16-bit selector an `lldt`, `ltr` or `mov sreg` operand holds.
fn selector(
    operand: Operand,
    regs: &TrapFrame,
    next: u64,
    guest: &mut impl Guest,
) -> Result<u16, Refusal> {
    match operand {
        Operand::Register { index, .. } => Ok(regs.registers()[usize::from(index)] as u16),
        Operand::Memory { .. } => {
            let mut bytes = [0; 2];
            let address = operand.address(&regs.registers(), next).unwrap_or(0);
            guest.read(address, &mut bytes)?;
            Ok(u16::from_le_bytes(bytes))
        }
    }
}

/// The 8 bytes of the descriptor `selector` names in the guest's GDT (and, for a system
/// descriptor, the 8 after them): `None` if it lies beyond the table's limit.
pub fn descriptor(
    cpu: &VirtualCpu,
    guest: &mut impl Guest,
    selector: u16,
    wide: bool,
) -> Result<Option<[u8; 16]>, Refusal> {
    let offset = u64::from(selector & !7);
    let last = offset + if wide { 15 } else { 7 };
    if selector & 4 != 0 || last > u64::from(cpu.gdtr.limit) {
        return Ok(None);
    }
    let mut bytes = [0; 16];
    let len = if wide { 16 } else { 8 };
    guest.read(cpu.gdtr.base.wrapping_add(offset), &mut bytes[..len])?;
    Ok(Some(bytes))
}

/// Emulates `instruction` (`length` bytes at `regs.rip`) on `cpu` and `regs`.
pub fn emulate(
    cpu: &mut VirtualCpu,
    instruction: Instruction,
    length: u8,
    regs: &mut TrapFrame,
    guest: &mut impl Guest,
) -> Outcome {
    match emulate_in(cpu, instruction, length, regs, guest) {
        Ok(outcome) => outcome,
        Err(refusal) => Outcome::Memory(refusal),
    }
}

fn emulate_in(
    cpu: &mut VirtualCpu,
    instruction: Instruction,
    length: u8,
    regs: &mut TrapFrame,
    guest: &mut impl Guest,
) -> Result<Outcome, Refusal> {
    let next = regs.rip.wrapping_add(u64::from(length));
    let address = |operand: Operand, regs: &TrapFrame| operand.address(&regs.registers(), next);
    let kill = |instruction, rule, value| Ok(Outcome::Kill { instruction, rule, value });
    match instruction {
        Instruction::Cli => return Ok(interrupt_flag(cpu, false, regs, next, guest)),
        Instruction::Sti => return Ok(interrupt_flag(cpu, true, regs, next, guest)),
        Instruction::Hlt => return Ok(Outcome::Exit(Exit::Halt)),
        Instruction::Io { port, size, write } => {
            let port = port.map_or(regs.rdx as u16, u16::from);
            return Ok(Outcome::Exit(Exit::Io { port, size, write }));
        }
        Instruction::Lgdt(operand) | Instruction::Lidt(operand) => {
            let mut bytes = [0; 10];
            guest.read(address(operand, regs).unwrap_or(0), &mut bytes)?;
            let limit = u16::from_le_bytes([bytes[0], bytes[1]]);
            let base = u64::from_le_bytes(bytes[2..].try_into().unwrap_or_default());
            let (name, table) = match instruction {
                Instruction::Lgdt(_) => ("lgdt", &mut cpu.gdtr),
                _ => ("lidt", &mut cpu.idtr),
            };
            if !is_canonical(base) {
                return kill(name, "a table base must be canonical", base);
            }
            *table = TableRegister { limit, base };
        }
        Instruction::Lldt(operand) => {
            let selector = selector(operand, regs, next, guest)?;
            if selector & !3 != 0 {
                return kill(
                    "lldt",
                    "xen-lite virtualises no LDT: only the null selector",
                    selector.into(),
                );
            }
            cpu.ldtr = 0;
        }
        Instruction::Ltr(operand) => {
            let selector = selector(operand, regs, next, guest)?;
            let Some(mut bytes) = descriptor(cpu, guest, selector, true)? else {
                return Ok(raise_gp(selector));
            };
            // Present, system, type 9 (an available 64-bit TSS).
            if bytes[5] & 0x9f != 0x89 {
                return Ok(raise_gp(selector));
            }
            let base = u64::from(u16::from_le_bytes([bytes[2], bytes[3]]))
                | u64::from(bytes[4]) << 16
                | u64::from(bytes[7]) << 24
                | u64::from(u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default())) << 32;
            if !is_canonical(base) {
                return kill("ltr", "a TSS base must be canonical", base);
            }
            bytes[5] |= 2; // busy, as the CPU marks it
            guest.write(cpu.gdtr.base + u64::from(selector & !7) + 5, &bytes[5..6])?;
            (cpu.tr, cpu.tss_base) = (selector, base);
        }
        Instruction::MovFromCr { .. } | Instruction::MovToCr { .. } | Instruction::Clts => {
            return Ok(control_register(cpu, instruction, regs, next))
        }
        Instruction::MovFromDr { dr, register } if dr < 8 => {
            *regs.register_mut(register) = cpu.dr[usize::from(dr)];
        }
        Instruction::MovToDr { dr, register } if dr < 8 => {
            cpu.dr[usize::from(dr)] = regs.registers()[usize::from(register)];
        }
        Instruction::MovFromDr { dr, .. } | Instruction::MovToDr { dr, .. } => {
            return kill("mov drN", "only DR0 to DR7 exist", dr.into())
        }
        Instruction::MovToSegment { segment, source } => {
            let selector = selector(source, regs, next, guest)?;
            if segment == 2 {
                cpu.ss = selector; // the real SS stays xen-lite's ring-1 one
            }
            // DS, ES, FS and GS: 64-bit code ignores their bases and limits.
        }
        Instruction::Wrmsr => return Ok(Outcome::Exit(Exit::Msr { write: true })),
        Instruction::Rdmsr => return Ok(Outcome::Exit(Exit::Msr { write: false })),
        Instruction::Invlpg(operand) => {
            let address = address(operand, regs).unwrap_or(0);
            return Ok(Outcome::Exit(Exit::Invlpg { address }));
        }
        Instruction::CacheFlush => return Ok(Outcome::Exit(Exit::CacheFlush)),
        Instruction::Swapgs => cpu.kernel_gs_base = guest.swap_gs_base(cpu.kernel_gs_base),
        Instruction::Iretq => return Ok(super::deliver::iretq(cpu, regs, guest)),
        Instruction::Sysretq => return Ok(super::deliver::sysretq(cpu, regs)),
        Instruction::Lretq => return Ok(super::deliver::lretq(cpu, regs, guest)),
        Instruction::Umip(read, operand) => store_umip(cpu, read, operand, regs, next, guest)?,
    }
    regs.rip = next;
    Ok(Outcome::Done)
}

/// `cli` (`set` false) or `sti` (`set` true): the virtual IF, and `rip` past the instruction.
/// `sti` holds interrupts off for one more instruction, so `sti; hlt` sleeps with none lost:
/// emulated as one, it is a `hlt` whose wake-up is already allowed (`rip` left at the `hlt`).
fn interrupt_flag(
    cpu: &mut VirtualCpu,
    set: bool,
    regs: &mut TrapFrame,
    next: u64,
    guest: &mut impl Guest,
) -> Outcome {
    // LAB 6.2 BEGIN: emulate `cli` and `sti` on the virtual IF, then move `rip` to `next`; for `sti` directly followed by `hlt` (byte 0xf4 at `next`), return the halt instead
    // Hint: the real IF stays 1 whatever the guest does: only `cpu.interrupts` changes.
    // Hint: read the byte at `next` with `guest.read`; if the read fails, it is not a `hlt`.
    // Hint: for `sti; hlt`, leave `rip` at the `hlt` and return `Outcome::Exit(Exit::Halt)`: the run loop moves it past the `hlt` and sleeps until an interrupt.
    cpu.interrupts = set;
    regs.rip = next;
    let mut following = [0];
    if set && guest.read(next, &mut following).is_ok() && following[0] == 0xf4 {
        return Outcome::Exit(Exit::Halt);
    }
    Outcome::Done
    // LAB 6.2 END
}

/// `mov` to or from a control register, or `clts`, ending before `next`: CR0, CR2 and CR4 are
/// the virtual CPU's; CR3 goes to the run loop, which has the shadow.
fn control_register(
    cpu: &mut VirtualCpu,
    instruction: Instruction,
    regs: &mut TrapFrame,
    next: u64,
) -> Outcome {
    // LAB 6.3 BEGIN: emulate `mov crN, r64`, `mov r64, crN` and `clts` against `cpu`, moving `rip` to `next`; a CR3 access is `Outcome::Exit` for the run loop (with `rip` left alone), and anything the virtual CPU refuses an `Outcome::Kill` naming the rule and the value
    // Hint: the rules: CR0 keeps PE and PG (`CR0_PE_PG`), CR4 keeps PAE (`CR4_PAE`); only CR0, CR2, CR3 and CR4 exist here.
    // Hint: `regs.registers()[usize::from(register)]` reads a register by its number, `*regs.register_mut(register) = value` writes one.
    // Hint: `clts` clears CR0.TS (`CR0_TS`).
    let kill = |instruction, rule, value| Outcome::Kill { instruction, rule, value };
    let only = "only CR0, CR2, CR3 and CR4 are virtual";
    match instruction {
        Instruction::MovFromCr { cr, register } => {
            let value = match cr {
                0 => cpu.cr0,
                2 => cpu.cr2,
                3 => return Outcome::Exit(Exit::Cr3Read { register }),
                4 => cpu.cr4,
                _ => return kill("mov from crN", only, cr.into()),
            };
            *regs.register_mut(register) = value;
        }
        Instruction::MovToCr { cr, register } => {
            let value = regs.registers()[usize::from(register)];
            match cr {
                0 if value & CR0_PE_PG != CR0_PE_PG => {
                    return kill("mov to cr0", "long mode needs PE and PG", value)
                }
                0 => cpu.cr0 = value,
                2 => cpu.cr2 = value,
                3 => return Outcome::Exit(Exit::Cr3Write { value }),
                4 if value & CR4_PAE == 0 => {
                    return kill("mov to cr4", "long mode needs PAE", value)
                }
                4 => cpu.cr4 = value,
                _ => return kill("mov to crN", only, cr.into()),
            }
        }
        _ => cpu.cr0 &= !CR0_TS, // clts
    }
    regs.rip = next;
    Outcome::Done
    // LAB 6.3 END
}

/// #GP with `selector` as its error code, as a bad `ltr` raises.
fn raise_gp(selector: u16) -> Outcome {
    Outcome::Raise { vector: GENERAL_PROTECTION, error_code: u64::from(selector & !3) }
}

/// `sgdt`, `sidt`, `sldt`, `str`, `smsw` under UMIP: the guest's own values, as ring 0 would
/// have read them.
fn store_umip(
    cpu: &VirtualCpu,
    read: UmipRead,
    operand: Operand,
    regs: &mut TrapFrame,
    next: u64,
    guest: &mut impl Guest,
) -> Result<(), Refusal> {
    // LAB 6.4 BEGIN: store what `read` shows of the virtual CPU (GDTR, IDTR, LDTR, TR or CR0) where `operand` says: a register (2 bytes of it, or all 8), or memory (10 bytes of limit and base for a table register, 2 bytes for the rest)
    // Hint: a table register is stored as its 16-bit limit, then its 64-bit base, little-endian.
    // Hint: `operand.address(&regs.registers(), next)` is a memory operand's address; `guest.write` stores there (its refusal is the guest's page fault: return it with `?`).
    // Hint: a 2-byte register destination keeps the register's upper 48 bits.
    let (table, value) = match read {
        UmipRead::Sgdt => (Some(cpu.gdtr), 0),
        UmipRead::Sidt => (Some(cpu.idtr), 0),
        UmipRead::Sldt => (None, u64::from(cpu.ldtr)),
        UmipRead::Str => (None, u64::from(cpu.tr)),
        UmipRead::Smsw => (None, cpu.cr0),
    };
    match (operand, table) {
        (Operand::Register { index, size }, _) => {
            let register = regs.register_mut(index);
            *register = if size == 2 { (*register & !0xffff) | (value & 0xffff) } else { value };
        }
        (Operand::Memory { .. }, Some(table)) => {
            let mut bytes = [0; 10];
            bytes[..2].copy_from_slice(&table.limit.to_le_bytes());
            bytes[2..].copy_from_slice(&table.base.to_le_bytes());
            guest.write(operand.address(&regs.registers(), next).unwrap_or(0), &bytes)?;
        }
        (Operand::Memory { .. }, None) => {
            let bytes = (value as u16).to_le_bytes();
            guest.write(operand.address(&regs.registers(), next).unwrap_or(0), &bytes)?;
        }
    }
    Ok(())
    // LAB 6.4 END
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::trapmode::decode::decode;

    /// Guest memory for the tests: `bytes` at virtual 0 on, nothing else mapped.
    pub struct Flat {
        pub bytes: Vec<u8>,
        pub gs_base: u64,
    }

    impl Flat {
        pub fn new(size: usize) -> Flat {
            Flat { bytes: vec![0; size], gs_base: 0 }
        }

        pub fn put(&mut self, va: u64, data: &[u8]) {
            self.bytes[va as usize..va as usize + data.len()].copy_from_slice(data);
        }

        pub fn word(&self, va: u64) -> u64 {
            u64::from_le_bytes(self.bytes[va as usize..va as usize + 8].try_into().unwrap())
        }
    }

    impl Guest for Flat {
        fn read(&mut self, va: u64, bytes: &mut [u8]) -> Result<(), Refusal> {
            let end = va as usize + bytes.len();
            let from = self
                .bytes
                .get(va as usize..end)
                .ok_or(Refusal::PageFault { address: va, error_code: 0 })?;
            bytes.copy_from_slice(from);
            Ok(())
        }

        fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), Refusal> {
            let end = va as usize + bytes.len();
            let to = self
                .bytes
                .get_mut(va as usize..end)
                .ok_or(Refusal::PageFault { address: va, error_code: 2 })?;
            to.copy_from_slice(bytes);
            Ok(())
        }

        fn swap_gs_base(&mut self, base: u64) -> u64 {
            core::mem::replace(&mut self.gs_base, base)
        }
    }

    /// Decodes `code` (placed at `rip`) and emulates it.
    pub fn run(
        cpu: &mut VirtualCpu,
        regs: &mut TrapFrame,
        guest: &mut Flat,
        code: &[u8],
    ) -> Outcome {
        guest.put(regs.rip, code);
        let decoded = decode(code).expect("decodes");
        emulate(cpu, decoded.instruction, decoded.length, regs, guest)
    }

    #[test]
    fn cli_and_sti_move_only_the_virtual_if() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x10, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfb, 0x90]), Outcome::Done);
        assert!(cpu.interrupts);
        assert_eq!(regs.rip, 0x11);
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfa]), Outcome::Done);
        assert!(!cpu.interrupts);
        // `sti; hlt` is one halt with interrupts allowed, rip at the `hlt`.
        regs.rip = 0x20;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfb, 0xf4]), Outcome::Exit(Exit::Halt));
        assert!(cpu.interrupts);
        assert_eq!(regs.rip, 0x21);
    }

    #[test]
    fn lgdt_and_lidt_load_the_virtual_tables_and_refuse_a_non_canonical_base() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut pointer = [0u8; 10];
        pointer[..2].copy_from_slice(&0x3fu16.to_le_bytes());
        pointer[2..].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
        guest.put(0x80, &pointer);
        let mut regs = TrapFrame { rax: 0x80, rip: 0x10, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0x10]), Outcome::Done);
        assert_eq!(cpu.gdtr, TableRegister { limit: 0x3f, base: 0xffff_8000_0000_1000 });
        assert_eq!(regs.rip, 0x13);
        pointer[2..].copy_from_slice(&0x8000_0000_0000_0000u64.to_le_bytes());
        guest.put(0x80, &pointer);
        let outcome = run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0x18]);
        assert_eq!(
            outcome,
            Outcome::Kill {
                instruction: "lidt",
                rule: "a table base must be canonical",
                value: 1 << 63
            }
        );
        assert_eq!(cpu.idtr, TableRegister::default(), "nothing loaded");
    }

    #[test]
    fn ltr_reads_the_tss_descriptor_marks_it_busy_and_refuses_anything_else() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x200));
        cpu.gdtr = TableRegister { limit: 0x47, base: 0x100 };
        // Selector 0x38: a present, available 64-bit TSS at 0x1234_5678_9abc_def0 & canonical.
        let tss: [u8; 16] =
            [0x67, 0, 0xf0, 0xde, 0xbc, 0x89, 0, 0x9a, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        guest.put(0x138, &tss);
        let mut regs = TrapFrame { rax: 0x38, rip: 0x10, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0xd8]), Outcome::Done);
        assert_eq!((cpu.tr, cpu.tss_base), (0x38, 0xffff_ffff_9abc_def0));
        assert_eq!(guest.bytes[0x13d], 0x8b, "busy");
        // Loading it again: busy is not available, #GP(0x38) as the CPU raises.
        regs.rip = 0x10;
        let gp = Outcome::Raise { vector: GENERAL_PROTECTION, error_code: 0x38 };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0xd8]), gp);
        // Beyond the limit.
        regs.rax = 0x48;
        let gp = Outcome::Raise { vector: GENERAL_PROTECTION, error_code: 0x48 };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0xd8]), gp);
    }

    #[test]
    fn control_registers_are_virtual_but_cr3_goes_to_the_run_loop() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x10, rax: 0x8000_0031, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x22, 0xc0]), Outcome::Done); // mov cr0, rax
        assert_eq!(cpu.cr0, 0x8000_0031);
        cpu.cr2 = 0xdead_0000;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x20, 0xd3]), Outcome::Done); // mov rbx, cr2
        assert_eq!(regs.rbx, 0xdead_0000);
        let before = regs.rip;
        assert_eq!(
            run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x22, 0xd8]),
            Outcome::Exit(Exit::Cr3Write { value: 0x8000_0031 })
        );
        assert_eq!(regs.rip, before, "the run loop moves it on");
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x06]), Outcome::Done); // clts
        assert_eq!(cpu.cr0, 0x8000_0031 & !8);
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x21, 0xf8]), Outcome::Done); // mov rax, dr7
        assert_eq!(regs.rax, 0x400);
        regs.rax = 0x11; // paging off
        assert!(matches!(
            run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x22, 0xc0]),
            Outcome::Kill { instruction: "mov to cr0", .. }
        ));
    }

    #[test]
    fn port_io_names_its_port() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x10, rdx: 0x3f8, ..TrapFrame::default() };
        let out = Exit::Io { port: 0x3f8, size: 1, write: true };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xee]), Outcome::Exit(out));
        let inb = Exit::Io { port: 0x21, size: 1, write: false };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xe4, 0x21]), Outcome::Exit(inb));
    }

    #[test]
    fn umip_reads_return_the_virtual_values_and_swapgs_swaps_the_real_base() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        cpu.idtr = TableRegister { limit: 0xfff, base: 0xffff_ffff_8010_0000 };
        let mut regs = TrapFrame { rip: 0x10, rax: 0x80, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0x08]), Outcome::Done); // sidt [rax]
        assert_eq!(&guest.bytes[0x80..0x82], &[0xff, 0x0f]);
        assert_eq!(guest.word(0x82), 0xffff_ffff_8010_0000);
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0xe0]), Outcome::Done); // smsw eax
        assert_eq!(regs.rax, cpu.cr0);
        cpu.kernel_gs_base = 0x5000;
        guest.gs_base = 0x7000;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0xf8]), Outcome::Done);
        assert_eq!((guest.gs_base, cpu.kernel_gs_base), (0x5000, 0x7000));
    }

    #[test]
    fn only_the_null_ldt_is_accepted() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x10, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0xd0]), Outcome::Done);
        regs.rax = 0x28;
        assert!(matches!(
            run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0xd0]),
            Outcome::Kill { instruction: "lldt", value: 0x28, .. }
        ));
    }

    // LAB HIDDEN BEGIN
    #[test]
    fn hidden_sti_runs_on_unless_a_hlt_follows() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x40, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfb, 0x90]), Outcome::Done);
        assert_eq!((regs.rip, cpu.interrupts), (0x41, true));
        // `cli; hlt` is no combined halt: the cli is done, the hlt traps on its own.
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfa, 0xf4]), Outcome::Done);
        assert_eq!((regs.rip, cpu.interrupts), (0x42, false));
        // An `sti` at the last byte of memory: the byte after cannot be read, so no halt.
        regs.rip = 0xff;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0xfb]), Outcome::Done);
        assert_eq!((regs.rip, cpu.interrupts), (0x100, true));
    }

    #[test]
    fn hidden_control_register_rules() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        let mut regs = TrapFrame { rip: 0x10, rcx: 0x6f0, ..TrapFrame::default() };
        let rule = |outcome| {
            matches!(outcome, Outcome::Kill { instruction: "mov to cr4", value: 0x6d0, .. })
        };
        regs.rcx = 0x6d0; // no PAE
        assert!(rule(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x22, 0xe1])), "mov cr4, rcx");
        assert_eq!(cpu.cr4, 0x20, "nothing loaded");
        assert_eq!(regs.rip, 0x10, "nor moved on");
        regs.rcx = 0x6f0;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x22, 0xe1]), Outcome::Done);
        assert_eq!((cpu.cr4, regs.rip), (0x6f0, 0x13));
        assert_eq!(
            run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x20, 0xd9]), // mov rcx, cr3
            Outcome::Exit(Exit::Cr3Read { register: 1 })
        );
        assert_eq!(regs.rip, 0x13, "the run loop moves it on");
        assert!(matches!(
            run(&mut cpu, &mut regs, &mut guest, &[0x44, 0x0f, 0x22, 0xc0]), // mov cr8, rax
            Outcome::Kill { value: 8, .. }
        ));
        cpu.cr0 |= 8 | 4;
        regs.rip = 0x20;
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x06]), Outcome::Done);
        assert_eq!(cpu.cr0 & 0xc, 4, "clts clears TS and nothing else");
    }

    #[test]
    fn hidden_umip_reads_store_exactly_their_size() {
        let (mut cpu, mut guest) = (VirtualCpu::at_boot(), Flat::new(0x100));
        (cpu.tr, cpu.gdtr) = (0x38, TableRegister { limit: 0x47, base: 0x1122_3344_5566_7788 });
        guest.put(0x80, &[0xaa; 16]);
        let mut regs =
            TrapFrame { rip: 0x10, rax: 0x80, rbx: 0xdead_beef_0000_1234, ..TrapFrame::default() };
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x66, 0x0f, 0x00, 0xcb]), Outcome::Done); // str bx
        assert_eq!(regs.rbx, 0xdead_beef_0000_0038, "the upper 48 bits stay");
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x00, 0x00]), Outcome::Done); // sldt [rax]
        assert_eq!(&guest.bytes[0x80..0x83], &[0, 0, 0xaa], "two bytes, no more");
        assert_eq!(run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0x00]), Outcome::Done); // sgdt [rax]
        assert_eq!(&guest.bytes[0x80..0x82], &[0x47, 0]);
        assert_eq!(guest.word(0x82), 0x1122_3344_5566_7788);
        assert_eq!(guest.bytes[0x8a], 0xaa, "ten bytes, no more");
        regs.rax = 0x1000; // beyond the guest's memory: its page fault
        assert!(matches!(
            run(&mut cpu, &mut regs, &mut guest, &[0x0f, 0x01, 0x00]),
            Outcome::Memory(_)
        ));
    }
    // LAB HIDDEN END
}
