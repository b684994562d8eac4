//! Event channels, virtual interrupts and upcalls.
//!
//! An *event* sets a port's bit in `SharedInfo::evtchn_pending` and, unless the port is masked,
//! `upcall_pending`; a blocked domain becomes runnable. The *upcall* is the delivery: on the way
//! back into the guest, if `upcall_pending` is set and `upcall_mask` (the virtual IF) is clear,
//! xen-lite bounces to the guest's event callback as if an interrupt had arrived, and sets
//! `upcall_mask` (as the CPU clears IF on an interrupt gate).
//!
//! The return window. The guest's callback ends by clearing `upcall_mask` and executing
//! `iretq`. An event arriving between those two instructions would be delivered on top of the
//! frame about to be popped, and a stream of them could grow the stack without bound. xen-lite
//! takes lguest's answer: the guest registers the `rip` range of that window with
//! `set_callbacks`, and no upcall is delivered while the interrupted `rip` lies inside it. The
//! event stays pending and is delivered at the next entry after the `iretq` (at the latest the
//! next timer tick, 1 ms). See `pv-guest/src/platform/pv.rs` for the guest's half.

use hypercall_abi::hypercall::VIRQ_TIMER;

use hypercall_abi::shared_info::VcpuInfo;

use super::PvState;
use crate::domain::{Domain, State};

/// Raises event `port` in `domain`.
#[inline]
pub fn raise_port(domain: &mut Domain, port: usize) {
    let bit = 1u64 << port;
    let shared = domain.shared();
    shared.evtchn_pending |= bit;
    if shared.evtchn_mask & bit == 0 {
        shared.vcpu.upcall_pending = 1;
        if domain.state == State::Blocked {
            domain.state = State::Runnable;
        }
    }
}

/// Fires `domain`'s one-shot timer if its deadline has passed.
#[inline]
pub fn check_timer(domain: &mut Domain, now: u64) {
    let pv = domain.pv();
    if pv.timer_deadline != 0 && now >= pv.timer_deadline {
        pv.timer_deadline = 0;
        if let Some(port) = pv.virq_ports[VIRQ_TIMER as usize] {
            raise_port(domain, usize::from(port));
        }
    }
}

/// Whether an upcall should be delivered now to a domain (ring-1 state `pv`, virtual CPU
/// state `vcpu` from its shared page) interrupted at `rip` with `cs`.
#[inline]
pub fn upcall_due(pv: &PvState, vcpu: VcpuInfo, rip: u64, cs: u64) -> bool {
    let in_window = cs & 3 == 1 && pv.no_delivery.contains(&rip);
    let callback = pv.event_callback != 0;
    callback && vcpu.upcall_pending != 0 && vcpu.upcall_mask == 0 && !in_window
}

/// The RFLAGS.IF the guest should see: its virtual IF.
#[inline]
pub fn virtual_if(domain: &mut Domain) -> bool {
    domain.shared().vcpu.upcall_mask == 0
}
