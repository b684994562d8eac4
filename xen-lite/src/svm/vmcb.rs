//! One domain's VMCB (virtual machine control block): its layout, the state xen-lite sets in it,
//! and the guest-state and event fields the run loop asks about between runs.
//!
//! Where Intel hides the VMCS behind VMREAD and VMWRITE, AMD's VMCB is an ordinary 4-KiB page
//! of memory with a documented layout, read and written with ordinary loads and stores
//! ([`Vmcb`] is that layout, field by field, offsets asserted below). It has two parts
//! (AMD64 APM Vol. 2, revision 3.42, 15.5 and Appendix B):
//!
//! - the **control area** (offsets 0x000-0x3ff): which guest actions are intercepted, the
//!   physical addresses of the I/O and MSR permission maps, the guest's ASID, the virtual
//!   interrupt xen-lite offers, the event to inject at the next `vmrun`, nested paging and its
//!   root (`n_cr3`), and, written by the CPU at every `#VMEXIT`, why the guest left
//!   (`exit_code`, `exit_info1`, `exit_info2`, `exit_int_info`, `next_rip`);
//! - the **state-save area** (0x400 up): the guest's segment registers with their hidden parts,
//!   control registers, `rip`, `rsp`, `rflags`, `rax` (the only general register in it), EFER,
//!   and the state `vmload`/`vmsave` move (FS, GS, TR, LDTR, the `syscall` MSRs).
//!
//! `vmrun` loads the guest from the state-save area and saves xen-lite's own state in the host
//! save area (`VM_HSAVE_PA`, `super::root`); `#VMEXIT` writes the guest back here and restores
//! xen-lite. Segment attributes are the descriptor's access byte and flags packed into 12 bits
//! (bits 7:0 = type, S, DPL, P; bits 11:8 = AVL, L, D/B, G).

use core::mem::{offset_of, size_of};

use super::npt;
use crate::hvm::VcpuBoot;

/// Intercept vector 3 (`intercepts[0]`): physical interrupts.
pub const INTERCEPT_INTR: u32 = 1 << 0;
/// Intercept vector 3: the virtual interrupt can be taken (the interrupt window).
pub const INTERCEPT_VINTR: u32 = 1 << 4;
/// Intercept vector 3: `cpuid`.
pub const INTERCEPT_CPUID: u32 = 1 << 18;
/// Intercept vector 3: `invd`.
pub const INTERCEPT_INVD: u32 = 1 << 22;
/// Intercept vector 3: `hlt`.
pub const INTERCEPT_HLT: u32 = 1 << 24;
/// Intercept vector 3: `invlpg` (shadow paging).
pub const INTERCEPT_INVLPG: u32 = 1 << 25;
/// `intercept_cr`: reads of CR3 (bit 3) and writes of CR3 (bit 16 + 3), for shadow paging.
pub const INTERCEPT_CR3: u32 = (1 << 3) | (1 << 19);
/// `intercept_exceptions`: #PF (vector 14), for shadow paging.
pub const INTERCEPT_PAGE_FAULT: u32 = 1 << 14;
/// `event_inj` type 3: a hardware exception; bit 11: push its error code.
const EVENT_EXCEPTION_WITH_CODE: u64 = (3 << 8) | (1 << 11);
/// Intercept vector 3: `invlpga`.
pub const INTERCEPT_INVLPGA: u32 = 1 << 26;
/// Intercept vector 3: `in`/`out`, through the I/O permission map.
pub const INTERCEPT_IOIO: u32 = 1 << 27;
/// Intercept vector 3: `rdmsr`/`wrmsr`, through the MSR permission map.
pub const INTERCEPT_MSR: u32 = 1 << 28;
/// Intercept vector 3: shutdown (a triple fault).
pub const INTERCEPT_SHUTDOWN: u32 = 1 << 31;
/// Intercept vector 4 (`intercepts[1]`): bits 0-6 `vmrun` (the CPU refuses a VMCB without it),
/// `vmmcall`, `vmload`, `vmsave`, `stgi`, `clgi`, `skinit`; bit 9 `wbinvd`; bit 13 `xsetbv`
/// (SVM does not switch XCR0, so one guest's would be the next one's).
pub const INTERCEPT_VECTOR_4: u32 = 0x7f | (1 << 9) | (1 << 13);

/// `v_intr` bit 8: a virtual interrupt is pending (V_IRQ).
pub const V_IRQ: u64 = 1 << 8;
/// `v_intr` bits 19:16: its priority (15: above any TPR); bit 20: ignore the guest's TPR.
pub const V_INTR_PRIORITY_IGNORE_TPR: u64 = (0xf << 16) | (1 << 20);
/// `v_intr` bit 24: V_INTR_MASKING. The guest's RFLAGS.IF masks only virtual interrupts;
/// physical ones are masked by xen-lite's IF at `vmrun`, so a guest that computes with
/// interrupts off is still interrupted by xen-lite's timer.
pub const V_INTR_MASKING: u64 = 1 << 24;
/// `event_inj` / `exit_int_info` bit 31: the event is valid.
pub const EVENT_VALID: u64 = 1 << 31;
/// `tlb_control` 1: flush every TLB entry on this `vmrun`.
pub const TLB_FLUSH_ALL: u8 = 1;

/// A segment register in the state-save area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    pub selector: u16,
    /// Access byte and flags, packed (see the module header).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The control area. Field names as in the APM's Table B-1.
#[repr(C)]
pub struct Control {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    /// Intercept vectors 3, 4 and 5.
    pub intercepts: [u32; 3],
    reserved_018: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    reserved_05d: [u8; 3],
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub v_intr: u64,
    /// Bit 0: the guest is in an `sti` or `mov ss` interrupt shadow.
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    /// Bit 0: nested paging on.
    pub np_enable: u64,
    reserved_098: [u8; 0x10],
    pub event_inj: u64,
    /// The nested page tables' root (guest-physical to machine).
    pub n_cr3: u64,
    pub lbr_virtualization: u64,
    pub clean_bits: u32,
    reserved_0c4: u32,
    /// The guest `rip` after the intercepted instruction (with NRIP save).
    pub next_rip: u64,
    pub bytes_fetched: u8,
    pub guest_instruction: [u8; 15],
    reserved_0e0: [u8; 0x320],
}

/// The state-save area. Field names as in the APM's Table B-2.
#[repr(C)]
pub struct Save {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    reserved_0a0: [u8; 0x2b],
    pub cpl: u8,
    reserved_0cc: u32,
    pub efer: u64,
    reserved_0d8: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    reserved_180: [u8; 0x58],
    pub rsp: u64,
    reserved_1e0: [u8; 0x18],
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    reserved_248: [u8; 0x20],
    pub g_pat: u64,
    reserved_270: [u8; 0x990],
}

/// A whole VMCB: one page.
#[repr(C)]
pub struct Vmcb {
    pub control: Control,
    pub save: Save,
}

// The APM's offsets, so no field above is in the wrong place.
const _: () = {
    assert!(size_of::<Vmcb>() == 4096);
    assert!(offset_of!(Control, intercepts) == 0x00c);
    assert!(offset_of!(Control, iopm_base_pa) == 0x040);
    assert!(offset_of!(Control, guest_asid) == 0x058);
    assert!(offset_of!(Control, v_intr) == 0x060);
    assert!(offset_of!(Control, exit_code) == 0x070);
    assert!(offset_of!(Control, np_enable) == 0x090);
    assert!(offset_of!(Control, event_inj) == 0x0a8);
    assert!(offset_of!(Control, n_cr3) == 0x0b0);
    assert!(offset_of!(Control, next_rip) == 0x0c8);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(Save, tr) == 0x090);
    assert!(offset_of!(Save, cpl) == 0x0cb);
    assert!(offset_of!(Save, efer) == 0x0d0);
    assert!(offset_of!(Save, cr4) == 0x148);
    assert!(offset_of!(Save, rflags) == 0x170);
    assert!(offset_of!(Save, rip) == 0x178);
    assert!(offset_of!(Save, rsp) == 0x1d8);
    assert!(offset_of!(Save, rax) == 0x1f8);
    assert!(offset_of!(Save, star) == 0x200);
    assert!(offset_of!(Save, cr2) == 0x240);
    assert!(offset_of!(Save, g_pat) == 0x268);
};

/// A 64-bit ring-0 code segment: type 11 (execute/read, accessed), S, P; L, G.
const CODE64: u16 = 0xa9b;
/// A ring-0 data segment: type 3 (read/write, accessed), S, P; D/B, G.
const DATA: u16 = 0xc93;
/// A busy 64-bit TSS: type 11, P.
const BUSY_TSS: u16 = 0x08b;
/// CR0 at the guest's first instruction: PE, MP, ET, NE, WP, PG (as under VMX and natively).
const GUEST_CR0: u64 = 0x8001_0033;
/// CR4 at the guest's first instruction: PAE (long-mode paging needs it).
const GUEST_CR4: u64 = 0x20;
/// EFER.LME and EFER.LMA: long mode is on from the first instruction.
pub const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10);
/// EFER.SVME: `vmrun` refuses a guest without it (APM 15.5.1); the guest never sees it.
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;
/// The PAT's power-on value (write-back for PAT0), for the guest's G_PAT under nested paging.
const POWER_ON_PAT: u64 = 0x0007_0406_0007_0406;

/// Where a new domain's guest-state and controls start, as [`VcpuBoot`] says.
pub struct Setup<'a> {
    pub boot: &'a VcpuBoot,
    /// Physical addresses of the I/O and MSR permission maps every domain shares.
    pub iopm: u64,
    pub msrpm: u64,
    /// The nested page tables' root, or none for shadow paging (`boot.shadow_root`).
    pub n_cr3: Option<u64>,
    /// Address-space id of the guest's TLB entries (never 0: that is xen-lite's).
    pub asid: u32,
    /// xen-lite's EFER.NXE, which the guest gets too.
    pub nxe: u64,
}

impl Vmcb {
    /// Fills a zeroed VMCB for a domain starting as `setup` says.
    pub fn setup(&mut self, setup: &Setup<'_>) {
        let c = &mut self.control;
        c.intercepts[0] = INTERCEPT_INTR
            | INTERCEPT_CPUID
            | INTERCEPT_INVD
            | INTERCEPT_HLT
            | INTERCEPT_INVLPGA
            | INTERCEPT_IOIO
            | INTERCEPT_MSR
            | INTERCEPT_SHUTDOWN;
        c.intercepts[1] = INTERCEPT_VECTOR_4;
        c.intercept_exceptions = 0; // the guest handles its own exceptions (#PF: below)
        c.iopm_base_pa = setup.iopm;
        c.msrpm_base_pa = setup.msrpm;
        c.guest_asid = setup.asid;
        c.tlb_control = TLB_FLUSH_ALL; // once, for the first run: cleared after it
        c.v_intr = V_INTR_MASKING;
        match (setup.n_cr3, setup.boot.shadow_root) {
            (Some(n_cr3), _) => (c.np_enable, c.n_cr3) = (npt::NP_ENABLE, n_cr3),
            // Shadow paging: the guest runs on xen-lite's shadow tables (machine addresses),
            // and every way of reading, changing or missing its translations is intercepted.
            (None, root) => {
                c.intercept_cr = INTERCEPT_CR3;
                c.intercept_exceptions = INTERCEPT_PAGE_FAULT;
                c.intercepts[0] |= INTERCEPT_INVLPG;
                self.save.cr3 = root.expect("shadow paging has a root");
            }
        }
        c.clean_bits = 0; // nothing cached: the CPU reads every field at every vmrun

        // The kernel's first instruction, in 64-bit ring 0 with paging on. The selectors are
        // the ones the kernel's own GDT will use; the CPU takes base, limit and attributes from
        // here, so the kernel runs before it has a GDT; its first act is to load one.
        let s = &mut self.save;
        let flat = |selector, attrib| Segment { selector, attrib, limit: 0xffff_ffff, base: 0 };
        s.cs = flat(0x08, CODE64);
        (s.ss, s.ds, s.es) = (flat(0x10, DATA), flat(0x10, DATA), flat(0x10, DATA));
        (s.fs, s.gs, s.ldtr) = (Segment::default(), Segment::default(), Segment::default());
        s.tr = Segment { selector: 0, attrib: BUSY_TSS, limit: 0x67, base: 0 };
        (s.gdtr, s.idtr) = (Segment::default(), Segment::default());
        s.cpl = 0;
        s.efer = EFER_LONG_MODE | EFER_SVME | setup.nxe;
        s.cr0 = GUEST_CR0;
        if setup.n_cr3.is_some() {
            s.cr3 = setup.boot.cr3; // guest-physical, translated by the nested tables
        }
        s.cr4 = GUEST_CR4;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.rflags = 0x2; // interrupts off until the kernel has its IDT
        s.rip = setup.boot.entry;
        s.rsp = setup.boot.stack_top;
        s.g_pat = POWER_ON_PAT;
    }

    /// Whether the guest's own state lets an interrupt in: IF set, no interrupt shadow.
    pub fn interrupts_open(&self) -> bool {
        self.save.rflags & (1 << 9) != 0 && self.control.interrupt_shadow & 1 == 0
    }

    /// Offers a virtual interrupt (V_IRQ) and intercepts the moment the guest could take it, or
    /// withdraws both. The vector is never taken from V_IRQ: xen-lite injects the real one with
    /// `event_inj` at the exit this causes, as for VMX's interrupt window.
    pub fn set_interrupt_window(&mut self, on: bool) {
        let c = &mut self.control;
        if on {
            c.v_intr |= V_IRQ | V_INTR_PRIORITY_IGNORE_TPR;
            c.intercepts[0] |= INTERCEPT_VINTR;
        } else {
            c.v_intr &= !(V_IRQ | V_INTR_PRIORITY_IGNORE_TPR);
            c.intercepts[0] &= !INTERCEPT_VINTR;
        }
    }

    /// Sets up external interrupt `vector` for delivery at the next `vmrun` (type 0).
    pub fn inject_interrupt(&mut self, vector: u8) {
        self.control.event_inj = EVENT_VALID | u64::from(vector);
    }

    /// Sets up a page fault with `error_code` at `address` for the next `vmrun`: what the guest's
    /// own MMU would have raised (the intercept left the guest's CR2 alone, so it is set here).
    pub fn inject_page_fault(&mut self, error_code: u64, address: u64) {
        self.save.cr2 = address;
        self.control.event_inj = EVENT_VALID | EVENT_EXCEPTION_WITH_CODE | 14 | (error_code << 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_pack_the_vmx_access_rights() {
        // VMX keeps flags in bits 15:12 of its access rights, SVM in bits 11:8.
        let pack = |vmx: u16| (vmx & 0xff) | ((vmx >> 4) & 0xf00);
        assert_eq!(pack(0xa09b), CODE64);
        assert_eq!(pack(0xc093), DATA);
        assert_eq!(pack(0x8b), BUSY_TSS);
    }
}
