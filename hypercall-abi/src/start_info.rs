//! `StartInfo`: the page a domain finds at boot, describing the machine it was given.
//!
//! xen-lite's domain builder writes it once, before the domain first runs, and never again; the
//! guest reads it (its virtual address arrives in `rdi`) and may reuse the page afterwards.
//! Every address here is a guest virtual address in the start-of-day direct map
//! ([`crate::layout`]) unless its name says otherwise.

use core::mem::{offset_of, size_of};

use crate::Mode;

/// `StartInfo::magic`: "xen-lite" in ASCII, little-endian.
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"xen-lite");
/// The layout version described here.
pub const START_INFO_VERSION: u32 = 1;
/// `StartInfo::flags`: a `pv` domain under shadow paging (`paging=shadow`). Its page tables hold
/// guest-physical addresses (`pte_base` is 0), are the guest's to write with ordinary stores, and
/// reach the MMU only through xen-lite's shadows: after a change the guest invalidates
/// (`mmuext_op` INVLPG_LOCAL or TLB_FLUSH_LOCAL) and switches with NEW_BASEPTR of a gfn;
/// `mmu_update`, `update_va_mapping` and pinning are refused.
pub const START_FLAG_SHADOW_PAGING: u32 = 1 << 0;
/// `StartInfo::flags`: an `hvm` domain whose console is the emulated 16550 UART at COM1
/// (`console=uart`) rather than the `console_io` hypercall: the guest drives it as on real
/// hardware, and every register access is a VM exit.
pub const START_FLAG_CONSOLE_UART: u32 = 1 << 1;
/// `StartInfo::flags`: a `mode=trap` domain told its few sites that rely on an instruction ring 1
/// does not trap are patched (`patch=on`): where it restores IF with `popfq`, it follows with
/// an `sti` (which traps, and so reaches xen-lite) if the flags it restores have IF set. The
/// "ring compression needs a modified kernel" lesson, in one flag.
pub const START_FLAG_PATCHED: u32 = 1 << 2;
/// Bytes reserved for the domain's command line, NUL terminator included.
pub const CMDLINE_LEN: usize = 512;

/// Start-of-day description of a domain. Written by xen-lite, read by the guest.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`]; a guest checks it before trusting anything else.
    pub magic: u64,
    /// [`START_INFO_VERSION`].
    pub version: u32,
    /// The domain's id: 0, 1, ... in the order the command line lists domains.
    pub domain_id: u32,
    /// How the domain runs, as [`Mode`] `as u32`.
    pub mode: u32,
    /// [`START_FLAG_SHADOW_PAGING`], or zero.
    pub flags: u32,
    /// Frames of memory the domain owns: gfns `0..nr_pages`.
    pub nr_pages: u64,
    /// What a page-table entry must hold to reach gfn 0 (later gfns follow contiguously):
    /// the machine address of the domain's memory in `native` mode, 0 under VMX/SVM where
    /// nested paging translates.
    pub pte_base: u64,
    /// Virtual address of the start-of-day level-4 page table.
    pub pt_base: u64,
    /// Number of page-table frames xen-lite built (they follow the `StartInfo` page).
    pub nr_pt_frames: u64,
    /// First gfn not used by the image, this page, the page tables or the boot stack.
    pub first_free_gfn: u64,
    /// Top of the boot stack (`rsp` at entry).
    pub stack_top: u64,
    /// Virtual address of the domain's `SharedInfo` page (`pv`; zero elsewhere for now).
    pub shared_info: u64,
    /// Virtual address of the hypercall page: call `hypercall_page + 32 * n` for hypercall `n`
    /// (`pv`; in `native` mode the page is left empty).
    pub hypercall_page: u64,
    /// Virtual address of `nr_modules` [`ModuleInfo`] records: the bundle's other images
    /// (user programs), copied into the domain's memory after the boot stack.
    pub modules: u64,
    /// How many modules.
    pub nr_modules: u64,
    /// The domain's command line, NUL-terminated UTF-8.
    pub cmdline: [u8; CMDLINE_LEN],
}

/// Most modules one domain receives.
pub const MAX_MODULES: usize = 16;

/// One module: a bundle image the domain received. Written by xen-lite's domain builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ModuleInfo {
    /// The image's bundle name, NUL-padded.
    pub name: [u8; 32],
    /// Virtual address of its first byte (page-aligned, in the start-of-day direct map).
    pub va: u64,
    /// Its length in bytes.
    pub len: u64,
}

const _: () = assert!(size_of::<ModuleInfo>() == 48);

impl ModuleInfo {
    /// Serialises a record into `out` in its `repr(C)` layout.
    pub fn write_to(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.name);
        out[offset_of!(ModuleInfo, va)..][..8].copy_from_slice(&self.va.to_le_bytes());
        out[offset_of!(ModuleInfo, len)..][..8].copy_from_slice(&self.len.to_le_bytes());
    }

    /// The name up to its first NUL, if it is UTF-8.
    pub fn name(&self) -> Option<&str> {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..end]).ok()
    }
}

const _: () = assert!(size_of::<StartInfo>() == 104 + CMDLINE_LEN);
const _: () = assert!(offset_of!(StartInfo, nr_pages) == 24);
const _: () = assert!(offset_of!(StartInfo, stack_top) == 64);
const _: () = assert!(size_of::<StartInfo>() <= crate::layout::PAGE_SIZE as usize);

impl StartInfo {
    /// An all-zero `StartInfo` with magic and version set; the builder fills in the rest.
    pub const fn new() -> StartInfo {
        StartInfo {
            magic: START_INFO_MAGIC,
            version: START_INFO_VERSION,
            domain_id: 0,
            mode: 0,
            flags: 0,
            nr_pages: 0,
            pte_base: 0,
            pt_base: 0,
            nr_pt_frames: 0,
            first_free_gfn: 0,
            stack_top: 0,
            shared_info: 0,
            hypercall_page: 0,
            modules: 0,
            nr_modules: 0,
            cmdline: [0; CMDLINE_LEN],
        }
    }

    /// Whether magic and version are the ones this crate describes.
    pub fn is_valid(&self) -> bool {
        self.magic == START_INFO_MAGIC && self.version == START_INFO_VERSION
    }

    /// The mode, if `mode` holds a known value.
    pub fn mode(&self) -> Option<Mode> {
        Mode::from_u32(self.mode)
    }

    /// Stores `text` as the command line; returns `false` (storing nothing) if it does not fit.
    pub fn set_cmdline(&mut self, text: &str) -> bool {
        if text.len() >= CMDLINE_LEN {
            return false;
        }
        self.cmdline = [0; CMDLINE_LEN];
        self.cmdline[..text.len()].copy_from_slice(text.as_bytes());
        true
    }

    /// Serialises the structure into `out` in its `repr(C)` layout (for a builder that writes
    /// guest memory as bytes). Panics if `out` is shorter than `size_of::<StartInfo>()`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut put =
            |offset: usize, bytes: &[u8]| out[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(StartInfo, magic), &self.magic.to_le_bytes());
        put(offset_of!(StartInfo, version), &self.version.to_le_bytes());
        put(offset_of!(StartInfo, domain_id), &self.domain_id.to_le_bytes());
        put(offset_of!(StartInfo, mode), &self.mode.to_le_bytes());
        put(offset_of!(StartInfo, flags), &self.flags.to_le_bytes());
        put(offset_of!(StartInfo, nr_pages), &self.nr_pages.to_le_bytes());
        put(offset_of!(StartInfo, pte_base), &self.pte_base.to_le_bytes());
        put(offset_of!(StartInfo, pt_base), &self.pt_base.to_le_bytes());
        put(offset_of!(StartInfo, nr_pt_frames), &self.nr_pt_frames.to_le_bytes());
        put(offset_of!(StartInfo, first_free_gfn), &self.first_free_gfn.to_le_bytes());
        put(offset_of!(StartInfo, stack_top), &self.stack_top.to_le_bytes());
        put(offset_of!(StartInfo, shared_info), &self.shared_info.to_le_bytes());
        put(offset_of!(StartInfo, hypercall_page), &self.hypercall_page.to_le_bytes());
        put(offset_of!(StartInfo, modules), &self.modules.to_le_bytes());
        put(offset_of!(StartInfo, nr_modules), &self.nr_modules.to_le_bytes());
        put(offset_of!(StartInfo, cmdline), &self.cmdline);
    }

    /// The command line up to its NUL, or `None` if it is unterminated or not UTF-8.
    pub fn cmdline(&self) -> Option<&str> {
        let len = self.cmdline.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&self.cmdline[..len]).ok()
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        StartInfo::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_the_guest_expects() {
        assert_eq!(size_of::<StartInfo>(), 616);
        assert_eq!(offset_of!(StartInfo, magic), 0);
        assert_eq!(offset_of!(StartInfo, domain_id), 12);
        assert_eq!(offset_of!(StartInfo, mode), 16);
        assert_eq!(offset_of!(StartInfo, pt_base), 40);
        assert_eq!(offset_of!(StartInfo, shared_info), 72);
        assert_eq!(offset_of!(StartInfo, modules), 88);
        assert_eq!(offset_of!(StartInfo, cmdline), 104);
        assert_eq!(&START_INFO_MAGIC.to_le_bytes(), b"xen-lite");
    }

    #[test]
    fn command_line_round_trips_and_rejects_overflow() {
        let mut info = StartInfo::new();
        assert!(info.is_valid());
        assert!(info.set_cmdline("hello exit=3"));
        assert_eq!(info.cmdline(), Some("hello exit=3"));
        let long = [b'x'; CMDLINE_LEN];
        assert!(!info.set_cmdline(core::str::from_utf8(&long).unwrap()));
        assert_eq!(info.cmdline(), Some("hello exit=3"));
        info.cmdline = [b'y'; CMDLINE_LEN];
        assert_eq!(info.cmdline(), None, "unterminated");
    }
}
