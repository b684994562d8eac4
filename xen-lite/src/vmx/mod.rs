//! The VT-x backend (DESIGN §3, `vmx` row): [`Vmx`], the `HardwareVt` implementation the `hvm`
//! run loop drives, and one file per mechanism it delegates to, in reading order:
//!
//! - `root.rs`: entering and leaving VMX root operation (feature control, the CR0/CR4 fixed
//!   bits, the VMXON region), and the boot-time check that logs whether it works;
//! - `controls.rs`: the execution controls every VMCS gets, made legal for this CPU;
//! - `ept.rs`: the extended page tables that map a domain's guest-physical memory, exactly;
//! - `vmcs.rs`: one domain's VMCS: the field accessors and its guest, host and control state;
//! - `entry.rs`: the VM-entry and VM-exit assembly, and the call that runs the guest;
//! - `exits.rs`: why the guest left, decoded into the run loop's `Exit`;
//! - `msr.rs`: what the guest's `rdmsr` and `wrmsr` reach.

mod root;
pub mod controls;
pub mod ept;
mod vmcs;
mod entry;
mod exits;
mod msr;

use hypercall_abi::hypercall::HYPERCALL_STUB_SIZE;
use hypercall_abi::Mode;

use crate::entry::TrapFrame;
use crate::hvm::{ExitInfo, HardwareVt, VcpuBoot};
use controls::Controls;
use msr::SyscallMsrs;
pub use root::log_root_operation;
use root::VmxError;

/// The VMX backend: xen-lite in VMX root operation for the rest of the run.
pub struct Vmx {
    revision: u32,
    controls: Controls,
    host: vmcs::HostState,
    /// What the VMX-preemption timer starts from at every entry: one tick of guest time.
    preemption_count: u64,
}

/// One domain's virtual CPU under VMX.
pub struct Vcpu {
    /// The VMCS frame.
    vmcs: crate::frame::Frame,
    /// Whether `vmlaunch` has run (then `vmresume`).
    launched: bool,
    /// Whether interrupt-window exiting is on.
    window: bool,
    /// Whether an event is set up for injection at the next entry (a re-injection).
    injecting: bool,
    msrs: SyscallMsrs,
    /// The guest's CR2. The CPU has one CR2 for root and non-root operation and for every
    /// domain, and VMX neither saves nor loads it, so xen-lite does, as KVM does: it is set
    /// when a page fault is injected, taken from the CPU after every exit (the guest may have
    /// taken a page fault of its own, or written CR2), and loaded before every entry. Without
    /// this, another domain's page fault, run between a fault injected into this one and its
    /// handler's read of CR2, showed the handler that domain's address
    /// (`vmx-shadow-usertests` caught it: dom0's usertests killed for its stack growth, at an
    /// old heap address).
    cr2: u64,
    /// The primary controls of its VMCS, without the interrupt window.
    primary: u32,
}

impl Vmx {
    /// Enters VMX root operation for good and reads what this CPU's VMX allows.
    pub fn enable(revision: u32, control: u64) -> Result<Vmx, VmxError> {
        let controls = Controls::for_this_cpu()?;
        let root = root::enter_root(revision, control)?;
        let host = vmcs::HostState::of_xen_lite(root.cr0, root.cr4);
        log::info!(
            "vmx: in VMX root operation; controls pin {:#x}, primary {:#x}, secondary {:#x}, exit {:#x}, entry {:#x}",
            controls.pin,
            controls.primary,
            controls.secondary,
            controls.exit,
            controls.entry
        );
        Ok(Vmx { revision, controls, host, preemption_count: u64::from(u32::MAX) })
    }
}

impl HardwareVt for Vmx {
    type Vcpu = Vcpu;

    const MODE: Mode = Mode::Vmx;

    const GUEST_WORLD: &'static str = "VMX non-root ring 0";

    /// `mov eax, number; vmcall; ret`, padded with `int3`.
    fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
        const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
        hypercall_abi::hypercall::hypercall_stub(number, &VMCALL)
    }

    fn create_vcpu(&mut self, boot: &VcpuBoot) -> Result<Vcpu, &'static str> {
        let eptp = match boot.shadow_root {
            None => Some(ept::for_domain(boot)?),
            Some(_) => None, // shadow paging: `crate::shadow`
        };
        let vmcs = vmcs::create(self.revision)?;
        let primary = vmcs::setup(boot, &self.controls, &self.host, eptp);
        vmcs::write(x86::vmx::vmcs::guest::VMX_PREEMPTION_TIMER_VALUE, self.preemption_count);
        Ok(Vcpu {
            vmcs,
            launched: false,
            window: false,
            injecting: false,
            msrs: SyscallMsrs::default(),
            cr2: 0,
            primary,
        })
    }

    /// The VMX-preemption timer, started afresh at every entry (its value is not saved on
    /// exit), ends any guest run after one tick. It is a backstop to external-interrupt
    /// exiting: the SDM says a host interrupt exits whatever the guest's IF, but Bochs 2.7
    /// delivers none while a guest keeps IF clear from its first instruction (it decides
    /// whether an interrupt is masked when IF changes, and VM entry loads the guest's IF = 0
    /// while still in host context); a guest computing with interrupts off was never preempted.
    fn set_tick_length(&mut self, tsc: u64) {
        self.preemption_count =
            (tsc >> self.controls.preemption_rate).clamp(1, u64::from(u32::MAX));
    }

    fn load(&mut self, vcpu: &mut Vcpu) {
        vmcs::make_current(vcpu.vmcs);
        vmcs::write(x86::vmx::vmcs::guest::VMX_PREEMPTION_TIMER_VALUE, self.preemption_count);
        msr::load(&vcpu.msrs);
    }

    fn run(&mut self, vcpu: &mut Vcpu, regs: &mut TrapFrame) -> ExitInfo {
        if crate::instructions::read_cr2() != vcpu.cr2 {
            crate::instructions::write_cr2(vcpu.cr2);
        }
        if let Err(status) = entry::enter(regs, vcpu.launched) {
            return exits::entry_failed(status);
        }
        vcpu.launched = true;
        let info = exits::read(vcpu, regs);
        vcpu.cr2 = crate::instructions::read_cr2();
        info
    }

    fn skip_instruction(&mut self, _vcpu: &mut Vcpu) {
        vmcs::skip_instruction();
    }

    fn interruptible(&mut self, vcpu: &mut Vcpu) -> bool {
        !vcpu.injecting && vmcs::interrupts_open()
    }

    fn inject_interrupt(&mut self, vcpu: &mut Vcpu, vector: u8) {
        vmcs::inject_interrupt(vector);
        vcpu.injecting = true;
    }

    fn request_interrupt_window(&mut self, vcpu: &mut Vcpu, on: bool) {
        if vcpu.window != on {
            vmcs::set_interrupt_window(vcpu.primary, on);
            vcpu.window = on;
        }
    }

    fn read_msr(&mut self, vcpu: &mut Vcpu, msr: u32) -> Option<u64> {
        msr::read(&vcpu.msrs, msr)
    }

    fn write_msr(&mut self, vcpu: &mut Vcpu, msr: u32, value: u64) -> Result<(), &'static str> {
        msr::write(&mut vcpu.msrs, msr, value)
    }

    fn set_shadow_root(&mut self, _vcpu: &mut Vcpu, root: u64) {
        vmcs::write(x86::vmx::vmcs::guest::CR3, root);
    }

    /// Nothing to do: without VPIDs, every VM entry and exit flushes the guest's translations.
    fn flush_guest_tlb(&mut self, _vcpu: &mut Vcpu) {}

    fn paging_controls(&mut self, _vcpu: &mut Vcpu) -> crate::shadow::walk::Controls {
        use x86::vmx::vmcs::guest;
        crate::shadow::walk::Controls {
            write_protect: vmcs::read(guest::CR0) & (1 << 16) != 0,
            no_execute: vmcs::read(guest::IA32_EFER_FULL) & vmcs::EFER_NXE != 0,
        }
    }

    fn inject_page_fault(&mut self, vcpu: &mut Vcpu, error_code: u64, address: u64) {
        vmcs::inject_page_fault(error_code);
        vcpu.cr2 = address;
        vcpu.injecting = true;
    }
}
