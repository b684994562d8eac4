//! The ring-1 hypercalls and their `do_<name>` handlers: the virtual IDT, the bounce stack and
//! callbacks, one-shot timers, event channels, and (in `mmu`) validated page-table updates.
//!
//! `crate::domain::hypercalls::dispatch` decodes every hypercall and sends these here; only a
//! `pv` domain has the state they change ([`PvState`]), so an hvm caller gets `ENOSYS`.

use hypercall_abi::hypercall::{
    Errno, Hypercall, TrapInfo, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND,
    NO_DELIVERY_MAX, NR_EVENT_PORTS, NR_VIRQS, SYSCALL_VECTOR,
};

use super::mmu;
use super::state::{Port, PvState, TrapHandler};
use crate::domain::hypercalls::Result;
use crate::domain::{guest_offset, Domain, Domains};
use crate::gdt::GUEST_KERNEL_DS;

/// Runs ring-1 hypercall `hypercall` with `args` for domain `caller`.
pub fn dispatch(
    domains: &mut Domains,
    caller: usize,
    hypercall: Hypercall,
    args: [u64; 5],
) -> Result {
    let [a0, a1, a2, ..] = args;
    let domain = domains.domain(caller);
    if domain.pv.is_none() {
        return Err(Errno::ENOSYS);
    }
    match hypercall {
        Hypercall::SetTrapTable => do_set_trap_table(domain, a0),
        Hypercall::MmuUpdate => mmu::do_mmu_update(domain, a0, a1, a2),
        Hypercall::UpdateVaMapping => mmu::do_update_va_mapping(domain, a0, a1, a2),
        Hypercall::MmuextOp => mmu::do_mmuext_op(domain, a0, a1, a2),
        Hypercall::StackSwitch => do_stack_switch(domain, a0, a1),
        Hypercall::SetCallbacks => do_set_callbacks(domain, args),
        Hypercall::SetTimerOp => do_set_timer_op(domain.pv(), a0),
        Hypercall::EventChannelOp => do_event_channel_op(domains, caller, a0, a1, a2),
        // The mode-neutral hypercalls, which `domain::hypercalls` handles itself.
        Hypercall::XenVersion | Hypercall::ConsoleIo | Hypercall::SchedOp | Hypercall::Stats => {
            Err(Errno::ENOSYS)
        }
        // LAB 1.5 BEGIN: the new hypercall is mode-neutral too: say so here (this match is exhaustive as well)
        // Handout: // LAB 1.5: the new hypercall is not a ring-1 one: an arm for it goes here.
        Hypercall::DomainId => Err(Errno::ENOSYS),
        // LAB 1.5 END
    }
}

/// Whether `address` can be a handler: it lies in the domain's memory.
fn valid_code_address(domain: &Domain, address: u64) -> bool {
    guest_offset(address, 1, domain.nr_pages).is_ok()
}

/// `set_trap_table(table)`: reads `TrapInfo` records until one has address 0 (at most 256).
/// A null `table` clears the virtual IDT. All-or-nothing: a bad entry changes nothing.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_set_trap_table(domain: &mut Domain, table: u64) -> Result {
    // LAB 1.1 BEGIN: install the guest's virtual IDT: copy in TrapInfo records from `table` until one has address 0, all or nothing
    // Hint: read each record with `domain.read(at)?` (a typed copy-in: never the guest's bytes in place); a null `table` clears the IDT.
    // Hint: a handler must lie in the domain's memory (`valid_code_address`), and more than 256 records is EINVAL; a refused table changes nothing.
    // Hint: the `int 0x80` entry with DPL 3 becomes the fast trap (`PvState::fast_trap`).
    let mut traps = [TrapHandler::default(); 256];
    if table != 0 {
        for index in 0..=256u64 {
            let at = table.checked_add(index * 16).ok_or(Errno::EFAULT)?;
            let info: TrapInfo = domain.read(at)?;
            if info.address == 0 {
                break;
            }
            if index == 256 || !valid_code_address(domain, info.address) {
                return Err(Errno::EINVAL);
            }
            traps[usize::from(info.vector)] =
                TrapHandler { address: info.address, dpl: info.flags & 3 };
        }
    }
    let fast = traps[usize::from(SYSCALL_VECTOR)];
    let pv = domain.pv();
    pv.fast_trap = (fast.address != 0 && fast.dpl == 3).then_some(fast.address);
    pv.traps = traps;
    Ok(0)
    // LAB 1.1 END
}

/// `stack_switch(ss, rsp)`: the ring-1 stack for bounces from ring 3. `ss` must be the guest
/// kernel's data selector; a bounce frame (48 bytes) must fit below `rsp` in the domain.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_stack_switch(domain: &mut Domain, ss: u64, rsp: u64) -> Result {
    // LAB 1.2 BEGIN: register the ring-1 stack bounces from ring 3 use, after checking the selector and that a bounce frame fits below `rsp` in the domain
    // Hint: `guest_offset` says whether a guest range is the domain's (EFAULT if not).
    // Hint: the fast path reads the stack too: call `PvState::update_fast_syscall` after any change.
    if ss != u64::from(GUEST_KERNEL_DS.bits()) {
        return Err(Errno::EINVAL);
    }
    let low = rsp.checked_sub(64).ok_or(Errno::EFAULT)?;
    guest_offset(low, 64, domain.nr_pages)?;
    let shared_info_gfn = domain.shared_info_gfn;
    let pv = domain.pv();
    pv.kernel_stack = Some(rsp);
    pv.update_fast_syscall(shared_info_gfn);
    Ok(0)
    // LAB 1.2 END
}

/// `set_callbacks(event, failsafe, syscall, no_delivery_start, no_delivery_end)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_set_callbacks(
    domain: &mut Domain,
    [event, failsafe, syscall, start, end]: [u64; 5],
) -> Result {
    // LAB 1.3 BEGIN: record the event, failsafe and syscall callbacks and the no-delivery window, refusing any address outside the domain
    // Hint: 0 means "no callback" and is allowed; a window must not be reversed or longer than NO_DELIVERY_MAX.
    let bad = |address: u64| address != 0 && !valid_code_address(domain, address);
    let window_bad = start > end || end - start > NO_DELIVERY_MAX || bad(start) || bad(end);
    if bad(event) || bad(failsafe) || bad(syscall) || window_bad {
        return Err(Errno::EINVAL);
    }
    let shared_info_gfn = domain.shared_info_gfn;
    let pv = domain.pv();
    pv.event_callback = event;
    pv.failsafe_callback = failsafe;
    pv.syscall_callback = syscall;
    pv.update_fast_syscall(shared_info_gfn);
    pv.no_delivery = start..end;
    Ok(0)
    // LAB 1.3 END
}

/// `set_timer_op(deadline_ns)`: a one-shot VIRQ_TIMER at `deadline_ns`; 0 cancels. A deadline
/// already past fires at the next tick.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_set_timer_op(pv: &mut PvState, deadline: u64) -> Result {
    pv.timer_deadline = deadline;
    Ok(0)
}

/// `event_channel_op(cmd, arg0, arg1)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_event_channel_op(
    domains: &mut Domains,
    caller: usize,
    command: u64,
    arg0: u64,
    arg1: u64,
) -> Result {
    match command {
        EVTCHNOP_BIND_VIRQ => {
            if arg0 >= NR_VIRQS {
                return Err(Errno::EINVAL);
            }
            let pv = domains.domain(caller).pv();
            if pv.virq_ports[arg0 as usize].is_some() {
                return Err(Errno::EBUSY);
            }
            let port = free_port(pv)?;
            pv.ports[port] = Port::Virq(arg0);
            pv.virq_ports[arg0 as usize] = Some(port as u8);
            Ok(port as u64)
        }
        EVTCHNOP_ALLOC_UNBOUND => {
            let remote = u32::try_from(arg0).map_err(|_| Errno::ESRCH)?;
            if domains.find(remote as usize).is_none() {
                return Err(Errno::ESRCH);
            }
            let pv = domains.domain(caller).pv();
            let port = free_port(pv)?;
            pv.ports[port] = Port::Unbound { remote };
            Ok(port as u64)
        }
        EVTCHNOP_SEND => {
            let target = usize::try_from(arg0).map_err(|_| Errno::ESRCH)?;
            if arg1 >= NR_EVENT_PORTS {
                return Err(Errno::EINVAL);
            }
            let domain = domains.find(target).filter(|d| !d.is_dead()).ok_or(Errno::ESRCH)?;
            // An hvm domain has no event ports at all.
            let port = domain.pv.as_ref().map_or(Port::Free, |pv| pv.ports[arg1 as usize]);
            match port {
                Port::Free => Err(Errno::ENOENT),
                Port::Unbound { remote } if remote as usize == caller => {
                    super::events::raise_port(domain, arg1 as usize);
                    Ok(0)
                }
                _ => Err(Errno::EACCES),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The lowest free port, skipping port 0 (reserved, as in Xen).
fn free_port(pv: &PvState) -> core::result::Result<usize, Errno> {
    (1..NR_EVENT_PORTS as usize).find(|&p| pv.ports[p] == Port::Free).ok_or(Errno::ENOSPC)
}
