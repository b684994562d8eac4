//! What each VM exit means, backend-neutrally: [`Hvm::handle`] is one line per [`Exit`], and
//! each `handle_*` below does the work for one reason. Only what a correct guest can cause is
//! handled; everything else kills the domain with one line naming the reason and the values.

use hypercall_abi::devices::{DEBUG_EXIT_PORT, GUEST_STATUS_MAX, TRAP_COUNTER_PORT};
use hypercall_abi::{vm_exit, Mode};

use super::devices::DeviceError;
use super::{Exit, Fatal, HardwareVt, Hvm};
use crate::domain::{self, kill, Domains, State};
use crate::instructions::{cpuid, take_pending_interrupts};
use crate::shadow::{self, DomainShadow, Fault};
use crate::timer::{self, TIMER_VECTOR};

impl<V: HardwareVt> Hvm<V> {
    /// Handles one exit of domain `c`.
    pub(super) fn handle(&mut self, domains: &mut Domains, c: usize, exit: Exit) {
        match exit {
            Exit::Hypercall => self.handle_hypercall(domains, c),
            Exit::Halt => self.handle_halt(domains, c),
            Exit::HostInterrupt(vector) => handle_host_interrupt(vector),
            Exit::HostInterruptPending => take_pending_interrupts(),
            Exit::InterruptWindow | Exit::Emulated => {} // the next trip round the loop injects
            Exit::CacheFlush => self.skip(c),
            // The tick that is due is pending at the PIC but was not delivered as an exit (the
            // Bochs quirk in `Vmx::set_tick_length`): take it here.
            Exit::TimeUp => take_pending_interrupts(),
            Exit::Cpuid => self.handle_cpuid(domains, c),
            Exit::Io { port, size, write } => self.handle_io(domains, c, port, size, write),
            Exit::Msr { write } => self.handle_msr(domains, c, write),
            Exit::PageFault { address, error_code } => {
                self.handle_page_fault(domains, c, address, error_code)
            }
            Exit::Cr3Write { value } => self.handle_cr3_write(domains, c, value),
            Exit::Cr3Read { register } => self.handle_cr3_read(domains, c, register),
            Exit::Invlpg { address } => self.handle_invlpg(domains, c, address),
            Exit::Fatal(fatal) => handle_fatal(domains, c, fatal),
        }
    }

    /// Moves domain `c` past the instruction that exited.
    fn skip(&mut self, c: usize) {
        let vcpu = self.vcpus[c].as_mut().expect("every domain has a vCPU");
        self.vt.skip_instruction(vcpu);
    }

    /// `vmcall`: the hypercall every mode shares. Counted as a VMCALL exit, not in
    /// `entries_hypercall` (the pv trap's counter).
    fn handle_hypercall(&mut self, domains: &mut Domains, c: usize) {
        let mut frame = domains.domain(c).regs;
        domain::hypercalls::dispatch(domains, c, &mut frame);
        domains.domain(c).regs.rax = frame.rax;
        self.skip(c);
    }

    /// `hlt`: the vCPU sleeps until its virtual PIC has an interrupt for it.
    fn handle_halt(&mut self, domains: &mut Domains, c: usize) {
        self.skip(c);
        let domain = domains.domain(c);
        let rip = domain.regs.rip;
        if domain.regs.rflags & (1 << 9) == 0 {
            kill!(
                domain,
                "hlt with interrupts disabled at rip {rip:#x}: the vCPU could never wake"
            );
        } else if self.devices[c].deliverable().is_none() {
            domain.state = State::Blocked;
        }
    }

    /// `cpuid`: the host's answer, edited ([`guest_cpuid`]).
    fn handle_cpuid(&mut self, domains: &mut Domains, c: usize) {
        let regs = &mut domains.domain(c).regs;
        let [a, b, c_, d] = guest_cpuid(regs.rax as u32, regs.rcx as u32);
        (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (a.into(), b.into(), c_.into(), d.into());
        self.skip(c);
    }

    /// `in` or `out`: to the domain's virtual PIC and PIT, a byte at a time.
    fn handle_io(&mut self, domains: &mut Domains, c: usize, port: u16, size: u8, write: bool) {
        let domain = domains.domain(c);
        let (rip, value) = (domain.regs.rip, domain.regs.rax);
        let result = match (size, write) {
            // A kernel that believes it is alone on the machine ends it through the exit device
            // (`hypercall_abi::devices`), as natively: under xen-lite that ends the domain.
            (4, true) if port == DEBUG_EXIT_PORT && value as u32 <= u32::from(GUEST_STATUS_MAX) => {
                domain.shut_down(value as u8);
                return;
            }
            (4, false) if port == TRAP_COUNTER_PORT && V::MODE == Mode::Trap => {
                let exits = &domain.stats.vm_exits;
                let tick = [vm_exit::EXTERNAL_INTERRUPT, vm_exit::INTERRUPT_WINDOW];
                let timer: u64 = tick.iter().map(|&r| exits[usize::from(r)]).sum();
                domain.regs.rax = (domain.stats.vm_exits_total() - timer) & 0xffff_ffff;
                Ok(())
            }
            (1, true) => self.devices[c].write(port, value as u8),
            (1, false) => self.devices[c].read(port).map(|byte| {
                domain.regs.rax = (value & !0xff) | u64::from(byte);
            }),
            _ => Err(DeviceError::Unsupported("access size")),
        };
        if let Some(byte) = self.devices[c].take_sent() {
            // The UART's line is the domain's console (which tags and prints whole lines); the
            // carriage return a serial driver sends before each newline is the terminal's.
            if byte != b'\r' {
                domain.console_write(&[byte]);
            }
        }
        match result {
            Ok(()) => self.skip(c),
            Err(error) if write => kill!(
                domain,
                "out of {size} byte(s), value {value:#x}, to port {port:#x} at rip {rip:#x}: {error}"
            ),
            Err(error) => kill!(
                domain,
                "in of {size} byte(s) from port {port:#x} at rip {rip:#x}: {error}"
            ),
        }
    }

    /// `rdmsr` or `wrmsr`: what the backend virtualises, and nothing else.
    fn handle_msr(&mut self, domains: &mut Domains, c: usize, write: bool) {
        let vcpu = self.vcpus[c].as_mut().expect("every domain has a vCPU");
        let domain = domains.domain(c);
        let (rip, regs) = (domain.regs.rip, &mut domain.regs);
        let msr = regs.rcx as u32;
        let result = if write {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            self.vt.write_msr(vcpu, msr, value)
        } else {
            match self.vt.read_msr(vcpu, msr) {
                Some(value) => {
                    (regs.rax, regs.rdx) = (value & 0xffff_ffff, value >> 32);
                    Ok(())
                }
                None => Err("xen-lite does not virtualise it"),
            }
        };
        let what = if write { "wrmsr" } else { "rdmsr" };
        match result {
            Ok(()) => self.vt.skip_instruction(vcpu),
            Err(why) => kill!(domain, "{what} of MSR {msr:#x} at rip {rip:#x}: {why}"),
        }
    }
}

/// Shadow paging (`crate::shadow`): the four exits it adds, each turned into the shadow's own
/// operation, and its counters copied into the domain's `Stats`.
impl<V: HardwareVt> Hvm<V> {
    /// The shadow of domain `c`, the backend and the vCPU; `None` (and the domain killed) if
    /// the domain runs on second-stage tables, where these exits are never asked for.
    fn shadowed(
        &mut self,
        domains: &mut Domains,
        c: usize,
        what: &str,
    ) -> Option<(&mut DomainShadow, &mut V, &mut V::Vcpu)> {
        let Hvm { vt, vcpus, shadows, .. } = self;
        let vcpu = vcpus[c].as_mut().expect("every domain has a vCPU");
        match shadows[c].as_mut() {
            Some(shadow) => Some((shadow, vt, vcpu)),
            None => {
                let domain = domains.domain(c);
                let rip = domain.regs.rip;
                kill!(domain, "{what} exit at rip {rip:#x} without shadow paging");
                None
            }
        }
    }

    /// A page fault: fixed in the shadow and retried (hidden), delivered to the guest (true), or
    /// a kill for an entry beyond the domain's memory.
    fn handle_page_fault(&mut self, domains: &mut Domains, c: usize, address: u64, code: u64) {
        let Some((shadow, vt, vcpu)) = self.shadowed(domains, c, "page-fault") else {
            return;
        };
        let controls = vt.paging_controls(vcpu);
        let domain = domains.domain(c);
        match shadow.page_fault(domain.id, &mut domain.stats, controls, address, code) {
            Fault::Hidden => vt.flush_guest_tlb(vcpu),
            Fault::True { error_code } => vt.inject_page_fault(vcpu, error_code, address),
            Fault::Beyond(beyond) => {
                let rip = domain.regs.rip;
                shadow::kill_beyond(domain, beyond, shadow.pmap.pages, address, rip);
            }
        }
    }

    /// `mov cr3, r64`: the guest's new tables, and an empty shadow for them.
    fn handle_cr3_write(&mut self, domains: &mut Domains, c: usize, value: u64) {
        let Some((shadow, vt, vcpu)) = self.shadowed(domains, c, "CR3-write") else { return };
        shadow.tables.load_cr3(value);
        vt.set_shadow_root(vcpu, shadow.tables.root());
        vt.skip_instruction(vcpu);
        shadow.record(&mut domains.domain(c).stats);
    }

    /// `mov r64, cr3`: the value the guest loaded, not the shadow's.
    fn handle_cr3_read(&mut self, domains: &mut Domains, c: usize, register: u8) {
        let Some((shadow, vt, vcpu)) = self.shadowed(domains, c, "CR3-read") else { return };
        let cr3 = shadow.tables.guest_cr3();
        vt.skip_instruction(vcpu);
        *domains.domain(c).regs.register_mut(register) = cr3;
    }

    /// `invlpg`: the shadow entry of that page goes.
    fn handle_invlpg(&mut self, domains: &mut Domains, c: usize, address: u64) {
        let Some((shadow, vt, vcpu)) = self.shadowed(domains, c, "invlpg") else { return };
        shadow.tables.invalidate_page(address);
        vt.flush_guest_tlb(vcpu);
        vt.skip_instruction(vcpu);
        shadow.record(&mut domains.domain(c).stats);
    }
}

/// An exit no correct guest causes: the domain dies with the reason and its values.
fn handle_fatal(domains: &mut Domains, c: usize, fatal: Fatal) {
    let domain = domains.domain(c);
    let rip = domain.regs.rip;
    kill!(domain, "{fatal} at rip {rip:#x}");
}

/// A host interrupt that arrived while the guest ran: the timer's tick is counted (the run
/// loop accounts for it on its next trip); the exit itself was the point of the others.
fn handle_host_interrupt(vector: u8) {
    if vector == TIMER_VECTOR {
        timer::tick();
    }
}

/// What `cpuid` tells a guest: the host's answer, with VMX and SVM hidden (xen-lite offers no
/// nested virtualisation) and the "hypervisor present" bit set, as every hypervisor does.
fn guest_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let [a, b, mut c, d] = cpuid(leaf, subleaf);
    match leaf {
        1 => c = (c & !(1 << 5)) | (1 << 31), // ECX.VMX off, ECX.hypervisor on
        0x8000_0001 => c &= !(1 << 2),        // ECX.SVM off
        _ => {}
    }
    [a, b, c, d]
}
