//! The domain builder: turns a guest kernel image and a block of memory into a domain that is
//! ready to run (DESIGN §3). Pure code over a slice of pages, unit-tested on the host.
//!
//! Start-of-day layout, in gfns (guest frame numbers), as `hypercall_abi::layout` draws it:
//!
//! ```text
//! 0x000 ..              free (the first 1 MiB)
//! 0x100 .. image_end    the kernel's PT_LOAD segments, at (vaddr - GUEST_DIRECT_MAP) / 4096
//! image_end             StartInfo
//! + 1                   SharedInfo
//! + 2                   hypercall page (xen-lite fills it after the build, per mode)
//! + 3 ..                page tables: L4, L3, L2s, L1s mapping every gfn at gfn_to_va(gfn)
//! then                  boot stack (BOOT_STACK_PAGES); rsp starts at its top
//! then                  module table (one page, if any module), then each module's bytes,
//!                       page-aligned (StartInfo::modules)
//! then                  free: StartInfo::first_free_gfn
//! ```
//!
//! The page-table entries hold `pte_base + gfn * 4096`: machine addresses in `native` and `pv`
//! mode, guest-physical ones under nested paging. Every page is supervisor-only except those of
//! ELF segments flagged `PF_XENLITE_USER`. For `pv`, the page-table frames are mapped
//! read-only: the guest may read its tables but never write them. The hypervisor's level-4
//! slots are copied in where xen-lite must stay mapped (`native` hand-off, `pv` entries).

use core::fmt;
use core::ops::Range;

use hypercall_abi::elf::{Elf, ElfError, PF_XENLITE_USER};
use hypercall_abi::layout::{gfn_to_va, va_to_gfn, GUEST_KERNEL_FIRST_GFN, PAGE_SIZE};
use hypercall_abi::page_table::{self, address, index, PRESENT, USER, WRITABLE};
use hypercall_abi::start_info::{ModuleInfo, StartInfo, CMDLINE_LEN, MAX_MODULES};
use hypercall_abi::Mode;

/// One 4 KiB frame of domain memory.
pub type Page = [u8; PAGE_SIZE as usize];

/// Pages of boot stack (64 KiB).
pub const BOOT_STACK_PAGES: u64 = 16;
/// Entries per table, as a count of pages.
const ENTRIES: u64 = page_table::ENTRIES as u64;

/// What the builder needs to know about the domain.
pub struct DomainSpec<'a> {
    /// The domain's id.
    pub domain_id: u32,
    /// How it will run.
    pub mode: Mode,
    /// Its command line.
    pub cmdline: &'a str,
    /// The kernel's ELF image.
    pub image: &'a [u8],
    /// What a page-table entry holds for gfn 0.
    pub pte_base: u64,
    /// Level-4 entries to copy in, and the slots they go to.
    pub hypervisor_slots: Option<(Range<usize>, &'a [u64])>,
    /// Map the page-table frames read-only (`pv`: updates must go through xen-lite).
    pub read_only_page_tables: bool,
    /// `StartInfo::flags`.
    pub start_flags: u32,
    /// Images to hand to the domain as modules: `(name, bytes)`.
    pub modules: &'a [(&'a str, &'a [u8])],
}

/// A built domain: where to start it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltDomain {
    /// The kernel's entry point (virtual).
    pub entry: u64,
    /// Virtual address of the `StartInfo` page (passed in `rdi`).
    pub start_info: u64,
    /// Initial `rsp`.
    pub stack_top: u64,
    /// The gfn of the level-4 table (CR3 = pte_base + l4_gfn * 4096).
    pub l4_gfn: u64,
    /// The gfn of the `SharedInfo` page.
    pub shared_info_gfn: u64,
    /// The gfn of the hypercall page.
    pub hypercall_page_gfn: u64,
    /// First gfn left free for the guest.
    pub first_free_gfn: u64,
}

/// Why a domain cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The image is not a loadable ELF executable.
    Elf(ElfError),
    /// A segment lies outside the direct map of the domain's memory, or below the kernel area.
    SegmentOutside {
        /// The segment's first virtual address.
        vaddr: u64,
        /// Its size in memory.
        len: u64,
    },
    /// The image, StartInfo, page tables and stack need more pages than the domain has.
    TooSmall {
        /// Pages needed.
        needed: u64,
        /// Pages available.
        have: u64,
    },
    /// More than one segment asks to be user-accessible.
    TwoUserSegments,
    /// More modules than `StartInfo` describes.
    TooManyModules {
        /// How many were given.
        count: usize,
    },
    /// The command line does not fit in `StartInfo`.
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BuildError::Elf(error) => write!(f, "kernel image: {error}"),
            BuildError::SegmentOutside { vaddr, len } => write!(
                f,
                "segment at {vaddr:#x} (+{len:#x}) is outside the domain's memory or below gfn {GUEST_KERNEL_FIRST_GFN:#x}"
            ),
            BuildError::TooSmall { needed, have } => {
                write!(f, "needs {needed} pages at start of day, the domain has {have}")
            }
            BuildError::TooManyModules { count } => {
                write!(f, "{count} modules, at most {MAX_MODULES}")
            }
            BuildError::TwoUserSegments => {
                write!(f, "more than one segment is flagged PF_XENLITE_USER")
            }
            BuildError::CmdlineTooLong { len } => {
                write!(f, "command line of {len} bytes exceeds {}", CMDLINE_LEN - 1)
            }
        }
    }
}

/// How many page-table frames map `nr_pages` pages: L4, L3, then L2s and L1s as needed.
fn page_table_frames(nr_pages: u64) -> u64 {
    2 + nr_pages.div_ceil(ENTRIES * ENTRIES) + nr_pages.div_ceil(ENTRIES)
}

fn write_entry(memory: &mut [Page], table_gfn: u64, slot: usize, value: u64) {
    let at = slot * 8;
    memory[table_gfn as usize][at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn read_entry(memory: &[Page], table_gfn: u64, slot: usize) -> u64 {
    let at = slot * 8;
    let mut raw = [0; 8];
    raw.copy_from_slice(&memory[table_gfn as usize][at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Fills a domain's hypercall page with one stub per hypercall number, as the mode's transport
/// makes them (`int 0x82` for pv, `vmcall` for vmx).
pub fn fill_hypercall_page(
    page: &mut Page,
    stub: impl Fn(u64) -> [u8; hypercall_abi::hypercall::HYPERCALL_STUB_SIZE as usize],
) {
    use hypercall_abi::hypercall::{HYPERCALL_PAGE_ENTRIES, HYPERCALL_STUB_SIZE};
    for (number, slot) in
        (0..HYPERCALL_PAGE_ENTRIES).zip(page.chunks_exact_mut(HYPERCALL_STUB_SIZE as usize))
    {
        slot.copy_from_slice(&stub(number));
    }
}

/// The domain's memory, `pages` frames from machine frame `base`, as xen-lite sees it (through
/// its direct map), for [`build`].
///
/// # Safety
/// The frames must have just been allocated for this domain, and nothing else may refer to
/// them until the domain runs.
pub unsafe fn domain_memory(base: crate::frame::Frame, pages: u64) -> &'static mut [Page] {
    // SAFETY: the caller guarantees the frames are this domain's alone; the direct map covers
    // all of machine memory.
    unsafe {
        core::slice::from_raw_parts_mut(
            crate::memory_map::phys_to_virt(base.addr()) as *mut Page,
            pages as usize,
        )
    }
}

/// Loads `spec.image` into `memory` (which is zeroed first) and lays out the start of day.
pub fn build(memory: &mut [Page], spec: &DomainSpec<'_>) -> Result<BuiltDomain, BuildError> {
    let nr_pages = memory.len() as u64;
    let elf = Elf::parse(spec.image).map_err(BuildError::Elf)?;
    let mut image_end_gfn = GUEST_KERNEL_FIRST_GFN;
    let mut user_gfns = 0..0;
    for segment in elf.segments() {
        let outside = BuildError::SegmentOutside { vaddr: segment.vaddr, len: segment.mem_len };
        let first = va_to_gfn(segment.vaddr, nr_pages).ok_or(outside)?;
        let last = va_to_gfn(segment.vend().saturating_sub(1).max(segment.vaddr), nr_pages);
        if first < GUEST_KERNEL_FIRST_GFN || last.is_none() {
            return Err(outside);
        }
        let end_gfn = segment.vend().div_ceil(PAGE_SIZE) - gfn_to_va(0) / PAGE_SIZE;
        image_end_gfn = image_end_gfn.max(end_gfn);
        if segment.flags & PF_XENLITE_USER != 0 {
            if !user_gfns.is_empty() {
                return Err(BuildError::TwoUserSegments);
            }
            user_gfns = first..end_gfn;
        }
    }
    let start_info_gfn = image_end_gfn;
    let shared_info_gfn = start_info_gfn + 1;
    let hypercall_page_gfn = start_info_gfn + 2;
    let l4_gfn = start_info_gfn + 3;
    let tables = page_table_frames(nr_pages);
    let stack_end_gfn = l4_gfn + tables + BOOT_STACK_PAGES;
    if spec.modules.len() > MAX_MODULES {
        return Err(BuildError::TooManyModules { count: spec.modules.len() });
    }
    let module_pages: u64 =
        spec.modules.iter().map(|(_, bytes)| (bytes.len() as u64).div_ceil(PAGE_SIZE)).sum();
    let module_table_pages = u64::from(!spec.modules.is_empty());
    let free_gfn = stack_end_gfn + module_table_pages + module_pages;
    if free_gfn > nr_pages {
        return Err(BuildError::TooSmall { needed: free_gfn, have: nr_pages });
    }
    if spec.cmdline.len() >= CMDLINE_LEN {
        return Err(BuildError::CmdlineTooLong { len: spec.cmdline.len() });
    }

    memory.iter_mut().for_each(|page| page.fill(0));
    for segment in elf.segments() {
        let bytes = elf.file_bytes(&segment);
        for (i, byte) in bytes.iter().enumerate() {
            let va = segment.vaddr + i as u64;
            let gfn = (va - gfn_to_va(0)) / PAGE_SIZE;
            memory[gfn as usize][(va % PAGE_SIZE) as usize] = *byte;
        }
    }

    let table_gfns = l4_gfn..l4_gfn + tables;
    let flags = |gfn: u64| {
        let mut flags = PRESENT | WRITABLE;
        if spec.read_only_page_tables && table_gfns.contains(&gfn) {
            flags &= !WRITABLE;
        }
        if user_gfns.contains(&gfn) {
            flags |= USER;
        }
        flags
    };
    map_direct(memory, l4_gfn, spec.pte_base, flags);
    if let Some((slots, entries)) = &spec.hypervisor_slots {
        for (slot, entry) in slots.clone().zip(entries.iter()) {
            write_entry(memory, l4_gfn, slot, *entry);
        }
    }

    let mut info = StartInfo::new();
    info.domain_id = spec.domain_id;
    info.mode = spec.mode as u32;
    info.nr_pages = nr_pages;
    info.pte_base = spec.pte_base;
    info.flags = spec.start_flags;
    info.pt_base = gfn_to_va(l4_gfn);
    info.nr_pt_frames = tables;
    let mut next = stack_end_gfn + module_table_pages;
    for (index, (name, bytes)) in spec.modules.iter().enumerate() {
        let mut record = ModuleInfo { name: [0; 32], va: gfn_to_va(next), len: bytes.len() as u64 };
        let shown = name.len().min(31);
        record.name[..shown].copy_from_slice(&name.as_bytes()[..shown]);
        record.write_to(&mut memory[stack_end_gfn as usize][index * 48..]);
        for (page, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
            memory[(next + page as u64) as usize][..chunk.len()].copy_from_slice(chunk);
        }
        next += (bytes.len() as u64).div_ceil(PAGE_SIZE);
    }
    info.modules = if spec.modules.is_empty() { 0 } else { gfn_to_va(stack_end_gfn) };
    info.nr_modules = spec.modules.len() as u64;
    info.first_free_gfn = free_gfn;
    info.stack_top = gfn_to_va(stack_end_gfn);
    info.shared_info = gfn_to_va(shared_info_gfn);
    info.hypercall_page = gfn_to_va(hypercall_page_gfn);
    info.set_cmdline(spec.cmdline);
    info.write_to(&mut memory[start_info_gfn as usize]);

    Ok(BuiltDomain {
        entry: elf.entry(),
        start_info: gfn_to_va(start_info_gfn),
        stack_top: info.stack_top,
        l4_gfn,
        shared_info_gfn,
        hypercall_page_gfn,
        first_free_gfn: free_gfn,
    })
}

/// Builds the tables at `l4_gfn` onwards that map every gfn at its direct-map address, each
/// leaf with `flags(gfn)`. Intermediate entries allow everything; the leaf decides.
fn map_direct(memory: &mut [Page], l4_gfn: u64, pte_base: u64, flags: impl Fn(u64) -> u64) {
    let nr_pages = memory.len() as u64;
    let entry_for = |gfn: u64| (pte_base + gfn * PAGE_SIZE) | PRESENT | WRITABLE | USER;
    let mut next_table = l4_gfn + 1;
    let mut table_for = |memory: &mut [Page], parent: u64, slot: usize| {
        let existing = read_entry(memory, parent, slot);
        if existing != 0 {
            return address(existing).wrapping_sub(pte_base) / PAGE_SIZE;
        }
        let gfn = next_table;
        next_table += 1;
        write_entry(memory, parent, slot, entry_for(gfn));
        gfn
    };
    for gfn in 0..nr_pages {
        let va = gfn_to_va(gfn);
        let l3 = table_for(memory, l4_gfn, index(va, 4));
        let l2 = table_for(memory, l3, index(va, 3));
        let l1 = table_for(memory, l2, index(va, 2));
        write_entry(memory, l1, index(va, 1), (pte_base + gfn * PAGE_SIZE) | flags(gfn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::elf::{write_executable, PF_R, PF_W, PF_X};
    use hypercall_abi::layout::GUEST_KERNEL_BASE;
    use hypercall_abi::start_info::START_INFO_MAGIC;

    const PTE_BASE: u64 = 0x4000_0000;

    fn memory(pages: usize) -> Vec<Page> {
        vec![[0xaa; 4096]; pages]
    }

    fn kernel() -> Vec<u8> {
        write_executable(
            GUEST_KERNEL_BASE + 0x10,
            &[
                (GUEST_KERNEL_BASE, PF_R | PF_X, &[0xc3; 0x20], 0x20),
                (GUEST_KERNEL_BASE + 0x2000, PF_R | PF_W, &[1, 2, 3], 0x3000),
            ],
        )
    }

    fn spec(image: &[u8]) -> DomainSpec<'_> {
        DomainSpec {
            domain_id: 3,
            mode: Mode::Native,
            cmdline: "hello exit=3",
            image,
            pte_base: PTE_BASE,
            hypervisor_slots: None,
            read_only_page_tables: false,
            start_flags: 0,
            modules: &[],
        }
    }

    /// Walks the tables like the MMU does; returns the gfn `va` maps to.
    fn translate(memory: &[Page], l4_gfn: u64, va: u64) -> Option<u64> {
        let mut table = l4_gfn;
        for level in (1..=4).rev() {
            let entry = read_entry(memory, table, index(va, level));
            if entry & 1 == 0 {
                return None;
            }
            table = ((entry & !0xfff) - PTE_BASE) / PAGE_SIZE;
        }
        Some(table)
    }

    #[test]
    fn loads_segments_and_zeroes_the_rest() {
        let image = kernel();
        let mut mem = memory(2048);
        let built = build(&mut mem, &spec(&image)).unwrap();
        assert_eq!(built.entry, GUEST_KERNEL_BASE + 0x10);
        assert_eq!(mem[0x100][..0x20], [0xc3; 0x20]);
        assert_eq!(mem[0x100][0x20], 0);
        assert_eq!(mem[0x102][..4], [1, 2, 3, 0]);
        assert!(mem[0x104].iter().all(|&b| b == 0), "bss is zero");
        assert!(mem[0].iter().all(|&b| b == 0), "stale contents are cleared");
    }

    #[test]
    fn every_page_is_mapped_at_its_direct_map_address() {
        let image = kernel();
        let mut mem = memory(2048);
        let built = build(&mut mem, &spec(&image)).unwrap();
        for gfn in [0, 1, 0x100, 511, 512, 1500, 2047] {
            assert_eq!(translate(&mem, built.l4_gfn, gfn_to_va(gfn)), Some(gfn), "gfn {gfn}");
        }
        assert_eq!(translate(&mem, built.l4_gfn, gfn_to_va(2048)), None);
        assert_eq!(translate(&mem, built.l4_gfn, 0x1000), None, "nothing in the lower half");
    }

    #[test]
    fn start_info_describes_the_layout() {
        let image = kernel();
        let mut mem = memory(2048);
        let built = build(&mut mem, &spec(&image)).unwrap();
        let page = &mem[va_to_gfn(built.start_info, 2048).unwrap() as usize];
        let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
        assert_eq!(word(0), START_INFO_MAGIC);
        assert_eq!(u32::from_le_bytes(page[12..16].try_into().unwrap()), 3);
        assert_eq!(word(24), 2048);
        assert_eq!(word(32), PTE_BASE);
        assert_eq!(word(40), gfn_to_va(built.l4_gfn));
        assert_eq!(word(48), page_table_frames(2048));
        assert_eq!(word(56), built.first_free_gfn);
        assert_eq!(word(64), built.stack_top);
        assert_eq!(word(72), gfn_to_va(built.shared_info_gfn));
        assert_eq!(word(80), gfn_to_va(built.hypercall_page_gfn));
        assert_eq!(&page[104..116], b"hello exit=3");
        assert_eq!(built.start_info, gfn_to_va(0x105), "right after the image (ends at gfn 0x105)");
        assert_eq!(
            (built.shared_info_gfn, built.hypercall_page_gfn, built.l4_gfn),
            (0x106, 0x107, 0x108)
        );
        assert_eq!(built.first_free_gfn, 0x108 + page_table_frames(2048) + BOOT_STACK_PAGES);
    }

    /// The leaf entry that maps `gfn`.
    fn leaf(memory: &[Page], l4_gfn: u64, gfn: u64) -> u64 {
        let va = gfn_to_va(gfn);
        let mut table = l4_gfn;
        for level in (2..=4).rev() {
            table = ((read_entry(memory, table, index(va, level)) & !0xfff) - PTE_BASE) / PAGE_SIZE;
        }
        read_entry(memory, table, index(va, 1))
    }

    #[test]
    fn pv_page_tables_are_read_only_and_only_the_user_segment_is_user() {
        let image = write_executable(
            GUEST_KERNEL_BASE,
            &[
                (GUEST_KERNEL_BASE, PF_R | PF_X, &[0xc3; 0x20], 0x20),
                (GUEST_KERNEL_BASE + 0x1000, PF_R | PF_X | PF_XENLITE_USER, &[0x90; 4], 0x2000),
            ],
        );
        let mut mem = memory(2048);
        let mut spec = spec(&image);
        spec.read_only_page_tables = true;
        let built = build(&mut mem, &spec).unwrap();
        let l4 = built.l4_gfn;
        assert_eq!(leaf(&mem, l4, l4) & 0b111, 0b001, "L4 frame: present, read-only, supervisor");
        assert_eq!(leaf(&mem, l4, l4 + 3) & 0b111, 0b001, "an L1 frame");
        assert_eq!(leaf(&mem, l4, 0x100) & 0b111, 0b011, "kernel text: supervisor");
        assert_eq!(leaf(&mem, l4, 0x101) & 0b111, 0b111, "user segment");
        assert_eq!(leaf(&mem, l4, 0x102) & 0b111, 0b111, "user segment, second page");
        assert_eq!(leaf(&mem, l4, 0x103) & 0b111, 0b011, "StartInfo");

        let two = write_executable(
            GUEST_KERNEL_BASE,
            &[
                (GUEST_KERNEL_BASE, PF_R | PF_X | PF_XENLITE_USER, &[0xc3], 1),
                (GUEST_KERNEL_BASE + 0x1000, PF_R | PF_XENLITE_USER, &[0], 1),
            ],
        );
        assert_eq!(build(&mut mem, &self::spec(&two)), Err(BuildError::TwoUserSegments));
    }

    #[test]
    fn modules_follow_the_stack_and_are_described() {
        let image = kernel();
        let mut mem = memory(2048);
        let program = vec![7u8; 5000];
        let modules = [("hello", &program[..]), ("init", &b"\x7fELF"[..])];
        let mut spec = spec(&image);
        spec.modules = &modules;
        let built = build(&mut mem, &spec).unwrap();
        let info = &mem[va_to_gfn(built.start_info, 2048).unwrap() as usize];
        let word = |at: usize| u64::from_le_bytes(info[at..at + 8].try_into().unwrap());
        let (table_va, count) = (word(88), word(96));
        assert_eq!(count, 2);
        let table = &mem[va_to_gfn(table_va, 2048).unwrap() as usize];
        assert_eq!(&table[..6], b"hello\0");
        let first_va = u64::from_le_bytes(table[32..40].try_into().unwrap());
        assert_eq!(u64::from_le_bytes(table[40..48].try_into().unwrap()), 5000);
        let first = va_to_gfn(first_va, 2048).unwrap() as usize;
        assert!(
            mem[first].iter().all(|&b| b == 7) && mem[first + 1][..904].iter().all(|&b| b == 7)
        );
        assert_eq!(&table[48..53], b"init\0");
        assert_eq!(
            u64::from_le_bytes(table[80..88].try_into().unwrap()),
            first_va + 2 * 4096,
            "page-aligned, after the first"
        );
        assert_eq!(built.first_free_gfn, first as u64 + 3, "two pages of hello, one of init");
    }

    #[test]
    fn hypervisor_slots_are_copied_into_the_l4() {
        let image = kernel();
        let mut mem = memory(2048);
        let entries = [0x1234_5003u64, 0x5678_9003];
        let mut spec = spec(&image);
        spec.hypervisor_slots = Some((256..258, &entries));
        let built = build(&mut mem, &spec).unwrap();
        assert_eq!(read_entry(&mem, built.l4_gfn, 256), 0x1234_5003);
        assert_eq!(read_entry(&mem, built.l4_gfn, 257), 0x5678_9003);
        assert_eq!(read_entry(&mem, built.l4_gfn, 258), 0);
    }

    #[test]
    fn bad_images_and_small_domains_are_refused() {
        let mut mem = memory(2048);
        assert!(matches!(build(&mut mem, &spec(b"not elf")), Err(BuildError::Elf(_))));

        let low = write_executable(0x40_0000, &[(0x40_0000, PF_R | PF_X, &[0x90], 1)]);
        assert!(matches!(build(&mut mem, &spec(&low)), Err(BuildError::SegmentOutside { .. })));

        let first_mib = write_executable(gfn_to_va(1), &[(gfn_to_va(1), PF_R | PF_X, &[0x90], 1)]);
        assert!(matches!(
            build(&mut mem, &spec(&first_mib)),
            Err(BuildError::SegmentOutside { .. })
        ));

        let huge = write_executable(
            GUEST_KERNEL_BASE,
            &[(GUEST_KERNEL_BASE, PF_R | PF_X, &[0x90], 8 << 20)],
        );
        assert!(matches!(build(&mut mem, &spec(&huge)), Err(BuildError::SegmentOutside { .. })));

        let image = kernel();
        let mut small = memory(0x108);
        assert!(matches!(build(&mut small, &spec(&image)), Err(BuildError::TooSmall { .. })));

        let long = "x".repeat(CMDLINE_LEN);
        let mut spec = spec(&image);
        spec.cmdline = &long;
        assert_eq!(build(&mut mem, &spec), Err(BuildError::CmdlineTooLong { len: CMDLINE_LEN }));
    }
}
