//! The image format of guest kernels and user programs: a checked reader for the part of
//! ELF64 a loader needs (file header, `PT_LOAD` program headers).
//!
//! See: System V ABI, "ELF-64 Object File Format" 1.5, and its AMD64 supplement.

use core::fmt;

const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const FILE_HEADER_LEN: usize = 64;
const PROGRAM_HEADER_LEN: usize = 56;
/// At most this many program headers are examined.
pub const MAX_PROGRAM_HEADERS: usize = 32;

/// Segment permission: executable.
pub const PF_X: u32 = 1;
/// Segment permission: writable.
pub const PF_W: u32 = 2;
/// Segment permission: readable.
pub const PF_R: u32 = 4;
/// xen-lite's own segment flag (in the OS-specific range `PF_MASKOS`): map this segment
/// user-accessible at start of day. The guest kernel puts the ring-3 code and stack of its
/// early tests there; everything else stays supervisor-only.
pub const PF_XENLITE_USER: u32 = 0x0010_0000;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file (or shorter than its header).
    NotElf,
    /// ELF, but not a little-endian x86-64 executable (`ET_EXEC`).
    WrongKind {
        /// `EI_CLASS` (2 = 64-bit).
        class: u8,
        /// `e_machine` (62 = x86-64).
        machine: u16,
        /// `e_type` (2 = executable).
        kind: u16,
    },
    /// The program-header table is out of bounds, oddly sized or too long.
    BadProgramHeaders,
    /// A `PT_LOAD` segment's file bytes lie outside the file, its sizes disagree, or its
    /// addresses wrap around.
    BadSegment {
        /// Index among the program headers.
        index: usize,
    },
    /// No `PT_LOAD` segment at all.
    NoSegments,
    /// The entry point is not inside an executable segment.
    BadEntry {
        /// `e_entry`.
        entry: u64,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::WrongKind { class, machine, kind } => write!(
                f,
                "not a 64-bit x86-64 executable (class {class}, machine {machine}, type {kind})"
            ),
            ElfError::BadProgramHeaders => write!(f, "program-header table is malformed"),
            ElfError::BadSegment { index } => write!(f, "program header {index} is malformed"),
            ElfError::NoSegments => write!(f, "no loadable segment"),
            ElfError::BadEntry { entry } => {
                write!(f, "entry point {entry:#x} is not in an executable segment")
            }
        }
    }
}

/// A loadable segment: copy `file_len` bytes from `file_offset` to `vaddr`, zero the rest of
/// `mem_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Offset of its bytes in the file.
    pub file_offset: u64,
    /// Bytes present in the file.
    pub file_len: u64,
    /// Bytes in memory (`>= file_len`; the tail is zero, as for `.bss`).
    pub mem_len: u64,
    /// `PF_R | PF_W | PF_X` bits.
    pub flags: u32,
}

impl Segment {
    /// One past the last virtual address.
    pub fn vend(&self) -> u64 {
        self.vaddr + self.mem_len
    }
}

/// A validated ELF image.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: usize,
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut raw = [0; N];
    raw.copy_from_slice(&bytes[at..at + N]);
    raw
}

impl<'a> Elf<'a> {
    /// Validates the headers and every `PT_LOAD` segment.
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if bytes.len() < FILE_HEADER_LEN || bytes[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let (class, data) = (bytes[4], bytes[5]);
        let kind = u16::from_le_bytes(read(bytes, 16));
        let machine = u16::from_le_bytes(read(bytes, 18));
        if class != 2 || data != 1 || machine != EM_X86_64 || kind != ET_EXEC {
            return Err(ElfError::WrongKind { class, machine, kind });
        }
        let entry = u64::from_le_bytes(read(bytes, 24));
        let phoff = u64::from_le_bytes(read(bytes, 32));
        let phentsize = u16::from_le_bytes(read(bytes, 54)) as usize;
        let phnum = u16::from_le_bytes(read(bytes, 56)) as usize;
        let table_fits = usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(phnum * PROGRAM_HEADER_LEN))
            .is_some_and(|end| end <= bytes.len());
        if phentsize != PROGRAM_HEADER_LEN || phnum > MAX_PROGRAM_HEADERS || !table_fits {
            return Err(ElfError::BadProgramHeaders);
        }
        let elf = Elf { bytes, entry, phoff: phoff as usize, phnum };
        let mut any = false;
        let mut entry_ok = false;
        for index in 0..phnum {
            let Some(segment) = elf.program_header(index) else { continue };
            let file_ok = segment
                .file_offset
                .checked_add(segment.file_len)
                .is_some_and(|end| end <= bytes.len() as u64);
            let mem_ok = segment.file_len <= segment.mem_len
                && segment.vaddr.checked_add(segment.mem_len).is_some();
            if !file_ok || !mem_ok {
                return Err(ElfError::BadSegment { index });
            }
            any = true;
            entry_ok |=
                segment.flags & PF_X != 0 && (segment.vaddr..segment.vend()).contains(&entry);
        }
        if !any {
            return Err(ElfError::NoSegments);
        }
        if !entry_ok {
            return Err(ElfError::BadEntry { entry });
        }
        Ok(elf)
    }

    /// The `PT_LOAD` segment described by program header `index`, if it is one.
    fn program_header(&self, index: usize) -> Option<Segment> {
        let at = self.phoff + index * PROGRAM_HEADER_LEN;
        let word = |offset: usize| u64::from_le_bytes(read(self.bytes, at + offset));
        (u32::from_le_bytes(read(self.bytes, at)) == PT_LOAD).then(|| Segment {
            flags: u32::from_le_bytes(read(self.bytes, at + 4)),
            file_offset: word(8),
            vaddr: word(16),
            file_len: word(32),
            mem_len: word(40),
        })
    }

    /// The entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments, in file order.
    pub fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.phnum).filter_map(|index| self.program_header(index))
    }

    /// The file bytes of `segment` (validated by [`Elf::parse`]).
    pub fn file_bytes(&self, segment: &Segment) -> &'a [u8] {
        &self.bytes[segment.file_offset as usize..(segment.file_offset + segment.file_len) as usize]
    }

    /// Lowest and one-past-highest virtual address of all segments.
    pub fn span(&self) -> (u64, u64) {
        self.segments().fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.vaddr), hi.max(s.vend())))
    }
}

/// Writes a minimal executable: the file header, one program header per segment, then each
/// segment's bytes. `segments` are `(vaddr, flags, bytes, mem_len)`. For tests and hostile
/// images; the kernels are linked by the real toolchain.
#[cfg(any(feature = "alloc", test))]
pub fn write_executable(entry: u64, segments: &[(u64, u32, &[u8], u64)]) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec![0u8; FILE_HEADER_LEN];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    out[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&(FILE_HEADER_LEN as u64).to_le_bytes());
    out[52..54].copy_from_slice(&(FILE_HEADER_LEN as u16).to_le_bytes());
    out[54..56].copy_from_slice(&(PROGRAM_HEADER_LEN as u16).to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    let mut data_at = (FILE_HEADER_LEN + segments.len() * PROGRAM_HEADER_LEN) as u64;
    for &(vaddr, flags, bytes, mem_len) in segments {
        let mut header = [0u8; PROGRAM_HEADER_LEN];
        header[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        header[4..8].copy_from_slice(&flags.to_le_bytes());
        header[8..16].copy_from_slice(&data_at.to_le_bytes());
        header[16..24].copy_from_slice(&vaddr.to_le_bytes());
        header[24..32].copy_from_slice(&vaddr.to_le_bytes());
        header[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        header[40..48].copy_from_slice(&mem_len.to_le_bytes());
        header[48..56].copy_from_slice(&4096u64.to_le_bytes());
        out.extend_from_slice(&header);
        data_at += bytes.len() as u64;
    }
    for &(_, _, bytes, _) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RX segment at 0x40_0000 holding 16 bytes, plus 0x100 bytes of bss.
    fn image() -> alloc::vec::Vec<u8> {
        write_executable(0x40_0004, &[(0x40_0000, PF_R | PF_X, &[0x90; 16], 0x110)])
    }

    #[test]
    fn a_valid_image_yields_its_segments() {
        let bytes = image();
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.entry(), 0x40_0004);
        let segment = elf.segments().next().unwrap();
        assert_eq!(
            segment,
            Segment {
                vaddr: 0x40_0000,
                file_offset: 120,
                file_len: 16,
                mem_len: 0x110,
                flags: PF_R | PF_X
            }
        );
        assert_eq!(elf.file_bytes(&segment).len(), 16);
        assert_eq!(elf.span(), (0x40_0000, 0x40_0110));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = image();
        for len in 0..bytes.len() {
            assert!(Elf::parse(&bytes[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn malformed_headers_are_rejected_with_the_reason() {
        let mut b = image();
        b[18] = 3;
        assert!(matches!(Elf::parse(&b), Err(ElfError::WrongKind { machine: 3, .. })));

        let mut b = image();
        b[54] = 32;
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::BadProgramHeaders);

        let mut b = image();
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::BadProgramHeaders);

        let mut b = image();
        b[64 + 40..64 + 48].copy_from_slice(&8u64.to_le_bytes());
        assert_eq!(
            Elf::parse(&b).unwrap_err(),
            ElfError::BadSegment { index: 0 },
            "memsz < filesz"
        );

        let mut b = image();
        b[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::BadSegment { index: 0 }, "offset wraps");

        let mut b = image();
        b[64 + 16..64 + 24].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::BadSegment { index: 0 }, "vaddr wraps");

        let mut b = image();
        b[24..32].copy_from_slice(&0x50_0000u64.to_le_bytes());
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::BadEntry { entry: 0x50_0000 });

        let mut b = image();
        b[64] = 2;
        assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::NoSegments);
    }
}
