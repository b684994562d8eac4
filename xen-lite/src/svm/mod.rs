//! The AMD-V backend (DESIGN §3, `svm` row): [`Svm`], the `HardwareVt` implementation the `hvm`
//! run loop drives, file for file beside `crate::vmx`, in reading order:
//!
//! - `root.rs`: switching SVM on (`EFER.SVME`, the host save area), and the host-state VMCB;
//! - `vmcb.rs`: one domain's VMCB: its layout, the intercepts and guest state it starts with;
//! - `npt.rs`: the nested page tables that map a domain's guest-physical memory, exactly;
//! - `entry.rs`: the world switch around `vmrun`, and the call that runs the guest;
//! - `exits.rs`: why the guest left, decoded into the run loop's `Exit`;
//! - `msr.rs`: the I/O and MSR permission maps, and what the guest's `rdmsr` and `wrmsr` reach.
//!
//! What differs from VMX is only the mechanism: the VMCB is plain memory where the VMCS needs
//! VMREAD/VMWRITE; there is no launch state (`vmrun` every time); physical interrupts end the
//! guest's run by the INTR intercept, with V_INTR_MASKING keeping them apart from the guest's
//! IF (VMX: external-interrupt exiting and its preemption timer); a virtual interrupt is
//! offered with V_IRQ and the VINTR intercept and delivered with `event_inj` (VMX: the
//! interrupt window and the entry interruption field). See: AMD64 APM Vol. 2, revision 3.42,
//! chapter 15 ("Secure Virtual Machine").

mod root;
mod vmcb;
mod npt;
mod entry;
mod exits;
mod msr;

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::HYPERCALL_STUB_SIZE;
use hypercall_abi::Mode;

use crate::entry::TrapFrame;
use crate::frame::Frame;
use crate::hvm::{ExitInfo, HardwareVt, VcpuBoot};
use crate::memory_map::phys_to_virt;
pub use root::{log_features, SvmError};
use vmcb::Vmcb;

/// The machine address of the VMCB entered last: for gdb (`xl-vmcb`), which cannot otherwise
/// find it while the guest runs. Nothing in xen-lite reads it, so `#[used]` keeps the compiler
/// from dropping it, stores and all.
#[used]
pub static RUNNING_VMCB: AtomicU64 = AtomicU64::new(0);

/// The SVM backend: SVM on for the rest of the run.
pub struct Svm {
    root: root::SvmRoot,
    /// Physical addresses of the I/O and MSR permission maps (every bit set), shared.
    iopm: u64,
    msrpm: u64,
    /// The next domain's address-space id.
    next_asid: u32,
    /// xen-lite's EFER.NXE, which every guest gets too.
    nxe: u64,
}

/// One domain's virtual CPU under SVM.
pub struct Vcpu {
    /// The VMCB frame.
    vmcb: Frame,
    /// Whether an event is set up in `event_inj` for the next `vmrun` (a re-injection, or the
    /// interrupt just injected).
    injecting: bool,
    /// The guest `rip` after the instruction that caused the last exit.
    next_rip: u64,
}

impl Vcpu {
    /// The VMCB, through the physical map. Borrow it afresh after every `vmrun`, which writes
    /// it behind the compiler's back.
    fn vmcb(&mut self) -> &mut Vmcb {
        // SAFETY: the frame was allocated for this VMCB alone (`create_vcpu`) and is reached
        // only through this vCPU; the CPU writes it only inside `entry::enter`, while no
        // reference from here is alive.
        unsafe { &mut *(phys_to_virt(self.vmcb.addr()) as *mut Vmcb) }
    }
}

impl Svm {
    /// Switches SVM on for good and sets up the permission maps every domain shares.
    pub fn enable() -> Result<Svm, SvmError> {
        let root = root::enable()?;
        let (iopm, msrpm) = msr::intercept_everything().map_err(|_| SvmError::NoFrame)?;
        let f = root.features;
        log::info!(
            "svm: SVM on (EFER.SVME, host save area); nested paging, {} ASIDs, NRIP save {}; every port and MSR intercepted",
            f.asids,
            if f.next_rip { "yes" } else { "no" }
        );
        // SAFETY: EFER exists on every x86-64 CPU.
        let efer = unsafe { crate::instructions::rdmsr(x86::msr::IA32_EFER) };
        Ok(Svm { root, iopm, msrpm, next_asid: 1, nxe: efer & vmcb::EFER_NXE })
    }
}

impl HardwareVt for Svm {
    type Vcpu = Vcpu;

    const MODE: Mode = Mode::Svm;

    const GUEST_WORLD: &'static str = "SVM guest mode, ring 0";

    /// `mov eax, number; vmmcall; ret`, padded with `int3`.
    fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
        const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
        hypercall_abi::hypercall::hypercall_stub(number, &VMMCALL)
    }

    fn create_vcpu(&mut self, boot: &VcpuBoot) -> Result<Vcpu, &'static str> {
        let n_cr3 = match boot.shadow_root {
            None => Some(npt::for_domain(boot)?),
            Some(_) => None, // shadow paging: `crate::shadow`
        };
        let frame = crate::frame::alloc().ok_or("no free frame for its VMCB")?;
        // SAFETY: a frame just allocated for the VMCB; nothing else refers to it.
        unsafe { core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, 4096) };
        if self.next_asid >= self.root.features.asids {
            return Err("no address-space id left for it");
        }
        let mut vcpu = Vcpu { vmcb: frame, injecting: false, next_rip: 0 };
        vcpu.vmcb().setup(&vmcb::Setup {
            boot,
            iopm: self.iopm,
            msrpm: self.msrpm,
            n_cr3,
            asid: self.next_asid,
            nxe: self.nxe,
        });
        self.next_asid += 1;
        Ok(vcpu)
    }

    /// Nothing to do: SVM has no preemption timer, and needs none, since with V_INTR_MASKING
    /// xen-lite's own timer interrupt ends the guest's run whatever the guest's IF.
    fn set_tick_length(&mut self, _tsc: u64) {}

    /// Nothing to do either: `vmrun` takes the VMCB's address each time, and the guest's MSRs
    /// travel in it (`vmload`).
    fn load(&mut self, _vcpu: &mut Vcpu) {}

    fn run(&mut self, vcpu: &mut Vcpu, regs: &mut TrapFrame) -> ExitInfo {
        let save = &mut vcpu.vmcb().save;
        save.rax = regs.rax;
        // VMRUN loads the guest's CR2 from the VMCB, but Bochs 2.7 drops the value it reads
        // (svm.cc, SvmEnterLoadCheckGuestState): the guest would see another domain's CR2, or a
        // page fault xen-lite injected without its address. Loading it here costs a read of CR2
        // and, when it differs, a write; on a real CPU it changes nothing.
        if crate::instructions::read_cr2() != save.cr2 {
            crate::instructions::write_cr2(save.cr2);
        }
        RUNNING_VMCB.store(vcpu.vmcb.addr(), Ordering::Relaxed);
        let injected = vcpu.vmcb().control.event_inj;
        entry::enter(regs, vcpu.vmcb.addr(), self.root.host_vmcb.addr());
        let vmcb = vcpu.vmcb();
        vmcb.control.tlb_control = 0; // the first run flushed; the ASID keeps the rest apart
        let nrip = self.root.features.next_rip;
        let (info, injecting, next_rip) = exits::read(vmcb, regs, nrip, injected);
        (vcpu.injecting, vcpu.next_rip) = (injecting, next_rip);
        info
    }

    fn skip_instruction(&mut self, vcpu: &mut Vcpu) {
        let next = vcpu.next_rip;
        let vmcb = vcpu.vmcb();
        vmcb.save.rip = next;
        // The `sti` or `mov ss` shadow covered only the instruction just skipped.
        vmcb.control.interrupt_shadow &= !1;
    }

    fn interruptible(&mut self, vcpu: &mut Vcpu) -> bool {
        !vcpu.injecting && vcpu.vmcb().interrupts_open()
    }

    fn inject_interrupt(&mut self, vcpu: &mut Vcpu, vector: u8) {
        vcpu.vmcb().inject_interrupt(vector);
        vcpu.injecting = true;
    }

    fn request_interrupt_window(&mut self, vcpu: &mut Vcpu, on: bool) {
        vcpu.vmcb().set_interrupt_window(on);
    }

    fn read_msr(&mut self, vcpu: &mut Vcpu, msr: u32) -> Option<u64> {
        msr::read(vcpu.vmcb(), msr)
    }

    fn write_msr(&mut self, vcpu: &mut Vcpu, msr: u32, value: u64) -> Result<(), &'static str> {
        msr::write(vcpu.vmcb(), msr, value)
    }

    fn set_shadow_root(&mut self, vcpu: &mut Vcpu, root: u64) {
        vcpu.vmcb().save.cr3 = root;
        self.flush_guest_tlb(vcpu);
    }

    /// `tlb_control` 1 for the next `vmrun`: every TLB entry goes (this ASID's included).
    fn flush_guest_tlb(&mut self, vcpu: &mut Vcpu) {
        vcpu.vmcb().control.tlb_control = vmcb::TLB_FLUSH_ALL;
    }

    fn paging_controls(&mut self, vcpu: &mut Vcpu) -> crate::shadow::walk::Controls {
        let save = &vcpu.vmcb().save;
        crate::shadow::walk::Controls {
            write_protect: save.cr0 & (1 << 16) != 0,
            no_execute: save.efer & vmcb::EFER_NXE != 0,
        }
    }

    fn inject_page_fault(&mut self, vcpu: &mut Vcpu, error_code: u64, address: u64) {
        vcpu.vmcb().inject_page_fault(error_code, address);
        vcpu.injecting = true;
    }
}
