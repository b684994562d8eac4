//! The boot bundle: what the ramdisk carries to xen-lite.
//!
//! A bundle holds xen-lite's command line and named images (guest kernels, user programs).
//! The xtask writes it ([`BundleWriter`]), the bootloader loads it as the ramdisk, and xen-lite
//! parses it ([`Bundle::parse`]) before trusting any byte of it. All integers little-endian:
//!
//! ```text
//! offset  size    field
//!      0     8    magic           b"XLBUNDLE"
//!      8     4    version         VERSION
//!     12     4    entry_count     images in the bundle, at most MAX_ENTRIES
//!     16     8    total_len       bytes in the bundle, this header included
//!     24     8    checksum        FNV-1a 64 of bytes [HEADER_LEN, total_len)
//!     32     4    cmdline_offset  where the command line (UTF-8, no NUL) starts
//!     36     4    cmdline_len     its length, at most MAX_CMDLINE
//!     40     8    reserved        zero
//!     48  48*n    entry table:    name [u8; 32] (ASCII, NUL-padded), offset u64, len u64
//!      …          command line, then each image at a 4 KiB-aligned offset
//! ```

use core::fmt;

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"XLBUNDLE";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// Size of one entry-table record.
pub const ENTRY_LEN: usize = 48;
/// Bytes available for an entry name (its last byte must stay NUL).
pub const NAME_LEN: usize = 32;
/// Most images one bundle may hold.
pub const MAX_ENTRIES: usize = 64;
/// Longest command line.
pub const MAX_CMDLINE: usize = 4096;
/// Largest bundle xen-lite accepts (it must fit in the ramdisk the bootloader loads).
pub const MAX_BUNDLE_LEN: u64 = 256 << 20;
/// Alignment of image data inside the bundle, so an image can later be mapped page by page.
pub const IMAGE_ALIGN: usize = 4096;

/// Why a byte string is not a usable bundle. Each variant carries the values that prove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than the fixed header.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The first eight bytes are not [`MAGIC`].
    BadMagic {
        /// What was found instead.
        found: [u8; 8],
    },
    /// A version this crate does not read.
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// The header declares more bytes than were loaded.
    Truncated {
        /// `total_len` from the header.
        declared: u64,
        /// Bytes actually available.
        available: usize,
    },
    /// The header declares a bundle larger than [`MAX_BUNDLE_LEN`] or smaller than its header.
    BadTotalLength {
        /// `total_len` from the header.
        declared: u64,
    },
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries {
        /// `entry_count` from the header.
        count: u32,
    },
    /// The reserved header field is not zero.
    ReservedNotZero,
    /// The checksum does not match the contents.
    ChecksumMismatch {
        /// Checksum stored in the header.
        stored: u64,
        /// Checksum of the bytes as loaded.
        computed: u64,
    },
    /// The command line lies outside the bundle, overlaps the tables or is too long.
    BadCmdline {
        /// `cmdline_offset` from the header.
        offset: u32,
        /// `cmdline_len` from the header.
        len: u32,
    },
    /// The command line is not UTF-8.
    CmdlineNotUtf8,
    /// An entry's data lies (partly) outside the bundle or inside its header and tables.
    EntryOutOfBounds {
        /// Index in the entry table.
        index: usize,
        /// The entry's `offset`.
        offset: u64,
        /// The entry's `len`.
        len: u64,
    },
    /// An entry name is empty, not NUL-terminated, or not printable ASCII.
    BadEntryName {
        /// Index in the entry table.
        index: usize,
    },
    /// Two entries share a name.
    DuplicateName {
        /// Index of the second entry with that name.
        index: usize,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BundleError::*;
        match *self {
            TooShort { len } => {
                write!(f, "only {len} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            BadMagic { found } => write!(f, "magic is {found:02x?}, expected \"XLBUNDLE\""),
            UnsupportedVersion { found } => {
                write!(f, "version {found}, this xen-lite reads {VERSION}")
            }
            Truncated { declared, available } => {
                write!(f, "truncated: header declares {declared} bytes, only {available} loaded")
            }
            BadTotalLength { declared } => write!(
                f,
                "header declares {declared} bytes, outside {HEADER_LEN}..={MAX_BUNDLE_LEN}"
            ),
            TooManyEntries { count } => write!(f, "{count} entries, at most {MAX_ENTRIES} allowed"),
            ReservedNotZero => write!(f, "reserved header field is not zero"),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: header says {stored:#018x}, contents give {computed:#018x}"
            ),
            BadCmdline { offset, len } => {
                write!(f, "command line at {offset} (+{len}) is out of bounds or too long")
            }
            CmdlineNotUtf8 => write!(f, "command line is not UTF-8"),
            EntryOutOfBounds { index, offset, len } => {
                write!(f, "entry {index} at {offset} (+{len}) lies outside the bundle data")
            }
            BadEntryName { index } => write!(f, "entry {index} has an empty or unprintable name"),
            DuplicateName { index } => write!(f, "entry {index} repeats an earlier name"),
        }
    }
}

/// FNV-1a, 64-bit: a checksum small enough to read in one glance, good enough to catch a
/// corrupted or mismatched ramdisk (not an integrity guarantee against an adversary).
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// A validated bundle borrowed from the ramdisk.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    cmdline: &'a str,
    count: usize,
}

/// One named image of a [`Bundle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The image's name.
    pub name: &'a str,
    /// Its bytes.
    pub data: &'a [u8],
}

impl<'a> Bundle<'a> {
    /// Checks every rule of the format and returns the bundle, or the first rule broken.
    ///
    /// Trailing bytes after `total_len` (the ramdisk may be padded) are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::TooShort { len: bytes.len() });
        }
        let mut magic = [0; 8];
        magic.copy_from_slice(&bytes[..8]);
        if magic != MAGIC {
            return Err(BundleError::BadMagic { found: magic });
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion { found: version });
        }
        let count = u32_at(bytes, 12);
        let declared = u64_at(bytes, 16);
        if declared < HEADER_LEN as u64 || declared > MAX_BUNDLE_LEN {
            return Err(BundleError::BadTotalLength { declared });
        }
        if declared > bytes.len() as u64 {
            return Err(BundleError::Truncated { declared, available: bytes.len() });
        }
        let bytes = &bytes[..declared as usize];
        if count as usize > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries { count });
        }
        if u64_at(bytes, 40) != 0 {
            return Err(BundleError::ReservedNotZero);
        }
        let tables_end = HEADER_LEN + count as usize * ENTRY_LEN;
        if tables_end > bytes.len() {
            return Err(BundleError::Truncated {
                declared: tables_end as u64,
                available: bytes.len(),
            });
        }
        let stored = u64_at(bytes, 24);
        let computed = checksum(&bytes[HEADER_LEN..]);
        if stored != computed {
            return Err(BundleError::ChecksumMismatch { stored, computed });
        }

        let (offset, len) = (u32_at(bytes, 32), u32_at(bytes, 36));
        let cmdline_range = (offset as usize)..(offset as usize + len as usize);
        if len as usize > MAX_CMDLINE
            || cmdline_range.start < tables_end
            || cmdline_range.end > bytes.len()
        {
            return Err(BundleError::BadCmdline { offset, len });
        }
        let cmdline =
            core::str::from_utf8(&bytes[cmdline_range]).map_err(|_| BundleError::CmdlineNotUtf8)?;

        let bundle = Bundle { bytes, cmdline, count: count as usize };
        for index in 0..bundle.count {
            let (name, offset, len) = bundle.raw_entry(index);
            let in_bounds = offset >= tables_end as u64
                && offset.checked_add(len).is_some_and(|end| end <= bytes.len() as u64);
            if !in_bounds {
                return Err(BundleError::EntryOutOfBounds { index, offset, len });
            }
            let name = entry_name(name).ok_or(BundleError::BadEntryName { index })?;
            if (0..index).any(|earlier| entry_name(bundle.raw_entry(earlier).0) == Some(name)) {
                return Err(BundleError::DuplicateName { index });
            }
        }
        Ok(bundle)
    }

    fn raw_entry(&self, index: usize) -> (&'a [u8], u64, u64) {
        let at = HEADER_LEN + index * ENTRY_LEN;
        (
            &self.bytes[at..at + NAME_LEN],
            u64_at(self.bytes, at + NAME_LEN),
            u64_at(self.bytes, at + NAME_LEN + 8),
        )
    }

    /// xen-lite's command line.
    pub fn cmdline(&self) -> &'a str {
        self.cmdline
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the bundle holds no image.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The images in bundle order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        (0..self.count).map(|index| {
            let (name, offset, len) = self.raw_entry(index);
            Entry {
                // Validated by `parse`.
                name: entry_name(name).unwrap_or(""),
                data: &self.bytes[offset as usize..(offset + len) as usize],
            }
        })
    }

    /// The image called `name`.
    pub fn find(&self, name: &str) -> Option<&'a [u8]> {
        self.entries().find(|entry| entry.name == name).map(|entry| entry.data)
    }
}

/// A name field is printable ASCII, then NUL padding to the end; the last byte is always NUL.
fn entry_name(field: &[u8]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0)?;
    let (name, padding) = field.split_at(len);
    let printable = name.iter().all(|b| b.is_ascii_graphic());
    (len > 0 && printable && padding.iter().all(|&b| b == 0))
        .then(|| core::str::from_utf8(name).ok())
        .flatten()
}

/// Why [`BundleWriter`] refused an input.
#[cfg(any(feature = "alloc", test))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The name is empty, longer than `NAME_LEN - 1` bytes, or not printable ASCII.
    BadName(alloc::string::String),
    /// The name was already added.
    DuplicateName(alloc::string::String),
    /// More than [`MAX_ENTRIES`] images.
    TooManyEntries,
    /// The command line is longer than [`MAX_CMDLINE`].
    CmdlineTooLong,
    /// The bundle would exceed [`MAX_BUNDLE_LEN`].
    TooLarge,
}

#[cfg(any(feature = "alloc", test))]
impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::BadName(name) => write!(
                f,
                "image name {name:?} must be 1..={} printable ASCII characters",
                NAME_LEN - 1
            ),
            WriteError::DuplicateName(name) => write!(f, "image name {name:?} is used twice"),
            WriteError::TooManyEntries => write!(f, "a bundle holds at most {MAX_ENTRIES} images"),
            WriteError::CmdlineTooLong => write!(f, "command line exceeds {MAX_CMDLINE} bytes"),
            WriteError::TooLarge => write!(f, "bundle would exceed {MAX_BUNDLE_LEN} bytes"),
        }
    }
}

/// Builds a bundle in memory (the xtask's side of the format).
#[cfg(any(feature = "alloc", test))]
pub struct BundleWriter {
    cmdline: alloc::string::String,
    images: alloc::vec::Vec<(alloc::string::String, alloc::vec::Vec<u8>)>,
}

#[cfg(any(feature = "alloc", test))]
impl BundleWriter {
    /// Starts a bundle with xen-lite's command line.
    pub fn new(cmdline: &str) -> Result<BundleWriter, WriteError> {
        if cmdline.len() > MAX_CMDLINE {
            return Err(WriteError::CmdlineTooLong);
        }
        Ok(BundleWriter { cmdline: cmdline.into(), images: alloc::vec::Vec::new() })
    }

    /// Adds an image.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<&mut Self, WriteError> {
        let valid =
            !name.is_empty() && name.len() < NAME_LEN && name.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(WriteError::BadName(name.into()));
        }
        if self.images.iter().any(|(existing, _)| existing == name) {
            return Err(WriteError::DuplicateName(name.into()));
        }
        if self.images.len() == MAX_ENTRIES {
            return Err(WriteError::TooManyEntries);
        }
        self.images.push((name.into(), data.into()));
        Ok(self)
    }

    /// Lays the bundle out and computes its checksum.
    pub fn finish(&self) -> Result<alloc::vec::Vec<u8>, WriteError> {
        let align = |n: usize| n.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN;
        let tables_end = HEADER_LEN + self.images.len() * ENTRY_LEN;
        let mut out = alloc::vec![0u8; tables_end];
        out.extend_from_slice(self.cmdline.as_bytes());
        for (index, (name, data)) in self.images.iter().enumerate() {
            let offset = align(out.len());
            if (offset + data.len()) as u64 > MAX_BUNDLE_LEN {
                return Err(WriteError::TooLarge);
            }
            out.resize(offset, 0);
            out.extend_from_slice(data);
            let at = HEADER_LEN + index * ENTRY_LEN;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
            out[at + NAME_LEN..at + NAME_LEN + 8].copy_from_slice(&(offset as u64).to_le_bytes());
            out[at + NAME_LEN + 8..at + ENTRY_LEN]
                .copy_from_slice(&(data.len() as u64).to_le_bytes());
        }
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(self.images.len() as u32).to_le_bytes());
        let total = out.len() as u64;
        out[16..24].copy_from_slice(&total.to_le_bytes());
        out[32..36].copy_from_slice(&(tables_end as u32).to_le_bytes());
        out[36..40].copy_from_slice(&(self.cmdline.len() as u32).to_le_bytes());
        let sum = checksum(&out[HEADER_LEN..]);
        out[24..32].copy_from_slice(&sum.to_le_bytes());
        Ok(out)
    }
}

/// Recomputes and stores the checksum of a bundle whose bytes a test has edited on purpose,
/// so that the parser reaches the rule under test instead of stopping at the checksum.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_LEN {
        let sum = checksum(&bytes[HEADER_LEN..]);
        bytes[24..32].copy_from_slice(&sum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn sample() -> Vec<u8> {
        let mut writer = BundleWriter::new("mode=native domain=\"hello\"").unwrap();
        writer.add("guest-hvm", &[0x7f, b'E', b'L', b'F', 1, 2, 3]).unwrap();
        writer.add("empty", &[]).unwrap();
        writer.finish().unwrap()
    }

    fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn a_written_bundle_parses_back() {
        let bytes = sample();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.cmdline(), "mode=native domain=\"hello\"");
        assert_eq!(bundle.len(), 2);
        assert_eq!(bundle.find("guest-hvm"), Some(&[0x7f, b'E', b'L', b'F', 1, 2, 3][..]));
        assert_eq!(bundle.find("empty"), Some(&[][..]));
        assert_eq!(bundle.find("missing"), None);
        let names: Vec<_> = bundle.entries().map(|e| e.name).collect();
        assert_eq!(names, ["guest-hvm", "empty"]);
    }

    #[test]
    fn images_are_page_aligned_and_padding_after_the_end_is_ignored() {
        let mut bytes = sample();
        let at = HEADER_LEN + NAME_LEN;
        assert_eq!(u64_at(&bytes, at) % IMAGE_ALIGN as u64, 0);
        bytes.extend_from_slice(&[0xff; 100]);
        assert!(Bundle::parse(&bytes).is_ok());
    }

    #[test]
    fn truncated_input_is_rejected_at_every_length() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let err = Bundle::parse(&bytes[..len]).unwrap_err();
            let expected = if len < HEADER_LEN {
                BundleError::TooShort { len }
            } else {
                BundleError::Truncated { declared: bytes.len() as u64, available: len }
            };
            assert_eq!(err, expected, "length {len}");
        }
    }

    #[test]
    fn header_fields_are_checked() {
        let good = sample();
        let mut bytes = good.clone();
        bytes[0] = b'x';
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::BadMagic { .. })));

        let mut bytes = good.clone();
        bytes[8] = 2;
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::UnsupportedVersion { found: 2 }
        );

        let mut bytes = good.clone();
        put_u64(&mut bytes, 16, MAX_BUNDLE_LEN + 1);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::BadTotalLength { declared: MAX_BUNDLE_LEN + 1 }
        );
        put_u64(&mut bytes, 16, 3);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadTotalLength { declared: 3 });

        let mut bytes = good.clone();
        bytes[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::TooManyEntries { count: 1000 });

        let mut bytes = BundleWriter::new("").unwrap().finish().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::Truncated {
                declared: (HEADER_LEN + ENTRY_LEN) as u64,
                available: HEADER_LEN
            },
            "entry table past the end"
        );

        let mut bytes = good.clone();
        bytes[44] = 1;
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::ReservedNotZero);
    }

    #[test]
    fn any_flipped_content_byte_breaks_the_checksum() {
        let good = sample();
        for at in HEADER_LEN..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 0x40;
            assert!(
                matches!(Bundle::parse(&bytes), Err(BundleError::ChecksumMismatch { .. })),
                "byte {at}"
            );
        }
    }

    #[test]
    fn entries_out_of_bounds_or_overflowing_are_rejected() {
        let good = sample();
        let at = HEADER_LEN + NAME_LEN;
        for (offset, len) in
            [(0, 4), (good.len() as u64 - 2, 4), (u64::MAX - 1, 4), (4096, u64::MAX)]
        {
            let mut bytes = good.clone();
            put_u64(&mut bytes, at, offset);
            put_u64(&mut bytes, at + 8, len);
            reseal(&mut bytes);
            assert_eq!(
                Bundle::parse(&bytes).unwrap_err(),
                BundleError::EntryOutOfBounds { index: 0, offset, len }
            );
        }
    }

    #[test]
    fn bad_command_lines_and_names_are_rejected() {
        let good = sample();
        let mut bytes = good.clone();
        bytes[36..40].copy_from_slice(&(MAX_CMDLINE as u32 + 1).to_le_bytes());
        reseal(&mut bytes);
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::BadCmdline { .. })));

        let mut bytes = good.clone();
        bytes[32..36].copy_from_slice(&0u32.to_le_bytes());
        reseal(&mut bytes);
        assert!(
            matches!(Bundle::parse(&bytes), Err(BundleError::BadCmdline { .. })),
            "inside the header"
        );

        let mut bytes = good.clone();
        let cmdline_at = HEADER_LEN + 2 * ENTRY_LEN;
        bytes[cmdline_at] = 0xff;
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::CmdlineNotUtf8);

        let mut bytes = good.clone();
        bytes[HEADER_LEN + ENTRY_LEN..HEADER_LEN + ENTRY_LEN + 5].copy_from_slice(b"guest");
        bytes[HEADER_LEN + ENTRY_LEN + 5] = b' ';
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadEntryName { index: 1 });

        let mut bytes = good.clone();
        bytes[HEADER_LEN + ENTRY_LEN..HEADER_LEN + ENTRY_LEN + NAME_LEN].fill(b'a');
        reseal(&mut bytes);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::BadEntryName { index: 1 },
            "no NUL"
        );

        let mut bytes = good.clone();
        let (first, second) = bytes[HEADER_LEN..].split_at_mut(ENTRY_LEN);
        second[..NAME_LEN].copy_from_slice(&first[..NAME_LEN]);
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::DuplicateName { index: 1 });
    }

    #[test]
    fn the_writer_refuses_what_the_parser_would() {
        let mut writer = BundleWriter::new("").unwrap();
        assert!(matches!(writer.add("", &[]), Err(WriteError::BadName(_))));
        assert!(matches!(writer.add("has space", &[]), Err(WriteError::BadName(_))));
        assert!(matches!(writer.add(&"x".repeat(NAME_LEN), &[]), Err(WriteError::BadName(_))));
        writer.add("a", &[]).unwrap();
        assert!(matches!(writer.add("a", &[]), Err(WriteError::DuplicateName(_))));
        for i in 1..MAX_ENTRIES {
            writer.add(&alloc::format!("n{i}"), &[]).unwrap();
        }
        assert_eq!(writer.add("one-more", &[]).err(), Some(WriteError::TooManyEntries));
        assert!(Bundle::parse(&writer.finish().unwrap()).is_ok());
        assert!(matches!(
            BundleWriter::new(&"x".repeat(MAX_CMDLINE + 1)),
            Err(WriteError::CmdlineTooLong)
        ));
    }
}
