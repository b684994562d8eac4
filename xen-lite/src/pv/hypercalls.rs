//! The hypercall dispatcher and its `do_<name>` handlers.
//!
//! A hypercall arrives as `int 0x82` from ring 1 with the number in `rax` and arguments in
//! `rdi, rsi, rdx, r10, r8`. [`dispatch`] decodes the number with one exhaustive `match` (a new
//! hypercall in `hypercall_abi::hypercall::Hypercall` does not compile until it is handled
//! here), runs the handler, and puts the result in the frame's `rax`. Misuse is answered with
//! the documented errno, never a kill: the policy for bad guest input (STYLE rule 12) is an
//! errno for anything a correct caller could get wrong.

use hypercall_abi::devices::GUEST_STATUS_MAX;
use hypercall_abi::hypercall::{
    Errno, Hypercall, Stats, TrapInfo, CONSOLEIO_MAX, CONSOLEIO_WRITE, EVTCHNOP_ALLOC_UNBOUND,
    EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND, NO_DELIVERY_MAX, NR_EVENT_PORTS, NR_VIRQS, SCHEDOP_BLOCK,
    SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SYSCALL_VECTOR, XEN_LITE_VERSION,
};
use hypercall_abi::Mode;

use super::domain::{Domain, Port, State, TrapHandler};
use super::guest_memory::guest_offset;
use super::mmu;
use super::Pv;
use crate::entry::TrapFrame;
use crate::gdt::GUEST_KERNEL_DS;

type Result = core::result::Result<u64, Errno>;

/// Runs the hypercall in `frame` for domain `caller` (of any mode: `hvm` passes the registers
/// its `vmcall` left).
pub fn dispatch(pv: &mut Pv, caller: usize, frame: &mut TrapFrame) {
    let [a0, a1, a2, a3, a4] = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
    let result = match Hypercall::from_number(frame.rax) {
        None => Err(Errno::ENOSYS),
        Some(hypercall) if pv.domain(caller).mode != Mode::Pv && ring1_only(hypercall) => {
            pv.domain(caller).stats.hypercalls[hypercall as usize] += 1;
            Err(Errno::ENOSYS)
        }
        Some(hypercall) => {
            pv.domain(caller).stats.hypercalls[hypercall as usize] += 1;
            match hypercall {
                Hypercall::SetTrapTable => do_set_trap_table(pv.domain(caller), a0),
                Hypercall::MmuUpdate => mmu::do_mmu_update(pv.domain(caller), a0, a1, a2),
                Hypercall::UpdateVaMapping => {
                    mmu::do_update_va_mapping(pv.domain(caller), a0, a1, a2)
                }
                Hypercall::MmuextOp => mmu::do_mmuext_op(pv.domain(caller), a0, a1, a2),
                Hypercall::StackSwitch => do_stack_switch(pv.domain(caller), a0, a1),
                Hypercall::SetCallbacks => {
                    do_set_callbacks(pv.domain(caller), [a0, a1, a2, a3, a4])
                }
                Hypercall::SetTimerOp => do_set_timer_op(pv, caller, a0),
                Hypercall::XenVersion => do_xen_version(),
                Hypercall::ConsoleIo => do_console_io(pv.domain(caller), a0, a1, a2),
                Hypercall::SchedOp => do_sched_op(pv, caller, a0, a1),
                Hypercall::EventChannelOp => do_event_channel_op(pv, caller, a0, a1, a2),
                Hypercall::Stats => do_stats(pv.domain(caller), a0),
            }
        }
    };
    frame.rax = result.unwrap_or_else(Errno::to_return);
}

/// Whether `hypercall` only means something for a guest in ring 1: the virtual IDT, the bounce
/// stack and callbacks, validated page-table updates, and event channels and one-shot timers
/// (delivered by upcall). An hvm guest has the real IDT, owns its page tables (EPT confines it)
/// and takes interrupts from its virtual PIC and PIT, so it gets `ENOSYS` for these.
fn ring1_only(hypercall: Hypercall) -> bool {
    matches!(
        hypercall,
        Hypercall::SetTrapTable
            | Hypercall::MmuUpdate
            | Hypercall::UpdateVaMapping
            | Hypercall::MmuextOp
            | Hypercall::StackSwitch
            | Hypercall::SetCallbacks
            | Hypercall::SetTimerOp
            | Hypercall::EventChannelOp
    )
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
    let mut traps = [TrapHandler::default(); 256];
    if table != 0 {
        for index in 0..=256u64 {
            let mut raw = [0u8; 16];
            let at = table.checked_add(index * 16).ok_or(Errno::EFAULT)?;
            domain.copy_from_guest(at, &mut raw)?;
            let info = TrapInfo {
                vector: raw[0],
                flags: raw[1],
                reserved: [0; 6],
                address: u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default()),
            };
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
    domain.fast_trap = (fast.address != 0 && fast.dpl == 3).then_some(fast.address);
    domain.traps = traps;
    Ok(0)
}

/// `stack_switch(ss, rsp)`: the ring-1 stack for bounces from ring 3. `ss` must be the guest
/// kernel's data selector; a bounce frame (48 bytes) must fit below `rsp` in the domain.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_stack_switch(domain: &mut Domain, ss: u64, rsp: u64) -> Result {
    if ss != u64::from(GUEST_KERNEL_DS.bits()) {
        return Err(Errno::EINVAL);
    }
    let low = rsp.checked_sub(64).ok_or(Errno::EFAULT)?;
    guest_offset(low, 64, domain.nr_pages)?;
    domain.kernel_stack = Some(rsp);
    domain.update_fast_syscall();
    Ok(0)
}

/// `set_callbacks(event, failsafe, syscall, no_delivery_start, no_delivery_end)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_set_callbacks(
    domain: &mut Domain,
    [event, failsafe, syscall, start, end]: [u64; 5],
) -> Result {
    let bad = |address: u64| address != 0 && !valid_code_address(domain, address);
    let window_bad = start > end || end - start > NO_DELIVERY_MAX || bad(start) || bad(end);
    if bad(event) || bad(failsafe) || bad(syscall) || window_bad {
        return Err(Errno::EINVAL);
    }
    domain.event_callback = event;
    domain.failsafe_callback = failsafe;
    domain.syscall_callback = syscall;
    domain.update_fast_syscall();
    domain.no_delivery = start..end;
    Ok(0)
}

/// `set_timer_op(deadline_ns)`: a one-shot VIRQ_TIMER at `deadline_ns`; 0 cancels. A deadline
/// already past fires at the next tick.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_set_timer_op(pv: &mut Pv, caller: usize, deadline: u64) -> Result {
    pv.domain(caller).timer_deadline = deadline;
    Ok(0)
}

/// `xen_version()`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_xen_version() -> Result {
    Ok(XEN_LITE_VERSION)
}

/// `console_io(CONSOLEIO_WRITE, len, buf)`: returns `len`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_console_io(domain: &mut Domain, command: u64, len: u64, buffer: u64) -> Result {
    if command != CONSOLEIO_WRITE {
        return Err(Errno::ENOSYS);
    }
    if len > CONSOLEIO_MAX {
        return Err(Errno::EINVAL);
    }
    // Check the whole range first, so a bad buffer prints nothing at all.
    guest_offset(buffer, len, domain.nr_pages)?;
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        domain.copy_from_guest(buffer + done, &mut chunk[..n])?;
        domain.console_write(&chunk[..n]);
        done += n as u64;
    }
    Ok(len)
}

/// `sched_op(cmd, arg)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_sched_op(pv: &mut Pv, caller: usize, command: u64, arg: u64) -> Result {
    match command {
        SCHEDOP_YIELD => {
            pv.yield_now = true;
            Ok(0)
        }
        SCHEDOP_BLOCK => {
            let domain = pv.domain(caller);
            // Blocking enables events (the virtual `sti; hlt`), and an event already pending
            // means there is nothing to wait for.
            domain.shared().vcpu.upcall_mask = 0;
            if domain.shared().vcpu.upcall_pending == 0 {
                domain.state = State::Blocked;
            }
            Ok(0)
        }
        SCHEDOP_SHUTDOWN => {
            let code =
                u8::try_from(arg).ok().filter(|&c| c <= GUEST_STATUS_MAX).ok_or(Errno::EINVAL)?;
            let domain = pv.domain(caller);
            domain.console_flush();
            domain.state = State::Dead(code);
            log::info!("dom{caller} shut down with exit code {code}");
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `event_channel_op(cmd, arg0, arg1)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_event_channel_op(pv: &mut Pv, caller: usize, command: u64, arg0: u64, arg1: u64) -> Result {
    match command {
        EVTCHNOP_BIND_VIRQ => {
            if arg0 >= NR_VIRQS {
                return Err(Errno::EINVAL);
            }
            let domain = pv.domain(caller);
            if domain.virq_ports[arg0 as usize].is_some() {
                return Err(Errno::EBUSY);
            }
            let port = free_port(domain)?;
            domain.ports[port] = Port::Virq(arg0);
            domain.virq_ports[arg0 as usize] = Some(port as u8);
            Ok(port as u64)
        }
        EVTCHNOP_ALLOC_UNBOUND => {
            let remote = u32::try_from(arg0).map_err(|_| Errno::ESRCH)?;
            if pv.find(remote as usize).is_none() {
                return Err(Errno::ESRCH);
            }
            let domain = pv.domain(caller);
            let port = free_port(domain)?;
            domain.ports[port] = Port::Unbound { remote };
            Ok(port as u64)
        }
        EVTCHNOP_SEND => {
            let target = usize::try_from(arg0).map_err(|_| Errno::ESRCH)?;
            if arg1 >= NR_EVENT_PORTS {
                return Err(Errno::EINVAL);
            }
            let domain = pv.find(target).filter(|d| !d.is_dead()).ok_or(Errno::ESRCH)?;
            match domain.ports[arg1 as usize] {
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
fn free_port(domain: &Domain) -> core::result::Result<usize, Errno> {
    (1..NR_EVENT_PORTS as usize).find(|&p| domain.ports[p] == Port::Free).ok_or(Errno::ENOSPC)
}

/// `stats(buf)`: copies this domain's `Stats` out.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_stats(domain: &mut Domain, buffer: u64) -> Result {
    let mut bytes = [0u8; Stats::WORDS * 8];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(domain.stats.to_words()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    domain.copy_to_guest(buffer, &bytes)?;
    Ok(0)
}
