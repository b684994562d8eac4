//! The hypercall dispatcher, and the handlers that mean the same in every mode.
//!
//! A hypercall arrives with the number in `rax` and arguments in `rdi, rsi, rdx, r10, r8`: by
//! `int 0x82` from ring 1 (`pv`), or by `vmcall` (an hvm mode, whose run loop passes the
//! registers the exit left). [`dispatch`] decodes the number with one exhaustive `match` (a new
//! hypercall in `hypercall_abi::hypercall::Hypercall` does not compile until it is handled
//! here), runs the handler, and puts the result in the frame's `rax`. The ring-1 hypercalls
//! (virtual IDT, callbacks, validated page tables, event channels, one-shot timers) are
//! `crate::pv::hypercalls`; an hvm domain, which has the real IDT, owns its tables and takes
//! interrupts from its virtual PIC, gets `ENOSYS` for them. Misuse is answered with the
//! documented errno, never a kill: the policy for bad guest input (STYLE rule 12) is an errno
//! for anything a correct caller could get wrong.

use hypercall_abi::devices::GUEST_STATUS_MAX;
use hypercall_abi::hypercall::{
    Errno, Hypercall, CONSOLEIO_MAX, CONSOLEIO_WRITE, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN,
    SCHEDOP_YIELD, XEN_LITE_VERSION,
};

use super::{guest_offset, Domain, Domains, State};
use crate::entry::TrapFrame;

/// What a handler returns: the value for `rax`, or an errno.
pub type Result = core::result::Result<u64, Errno>;

/// Runs the hypercall in `frame` for domain `caller`.
pub fn dispatch(domains: &mut Domains, caller: usize, frame: &mut TrapFrame) {
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
    let [a0, a1, a2, ..] = args;
    let result = match Hypercall::from_number(frame.rax) {
        None => Err(Errno::ENOSYS),
        Some(hypercall) => {
            domains.domain(caller).stats.hypercalls[hypercall as usize] += 1;
            match hypercall {
                Hypercall::XenVersion => do_xen_version(),
                Hypercall::ConsoleIo => do_console_io(domains.domain(caller), a0, a1, a2),
                Hypercall::SchedOp => do_sched_op(domains, caller, a0, a1),
                Hypercall::Stats => do_stats(domains.domain(caller), a0),
                // LAB 1.5 BEGIN: dispatch the new hypercall to its handler
                // Handout: // LAB 1.5: the new hypercall's arm goes here (the match is exhaustive: it will not build without it).
                Hypercall::DomainId => do_domain_id(domains.domain(caller)),
                // LAB 1.5 END
                Hypercall::SetTrapTable
                | Hypercall::MmuUpdate
                | Hypercall::UpdateVaMapping
                | Hypercall::MmuextOp
                | Hypercall::StackSwitch
                | Hypercall::SetCallbacks
                | Hypercall::SetTimerOp
                | Hypercall::EventChannelOp => {
                    crate::pv::hypercalls::dispatch(domains, caller, hypercall, args)
                }
            }
        }
    };
    frame.rax = result.unwrap_or_else(Errno::to_return);
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
    // LAB 1.4 BEGIN: write `len` bytes of the guest's `buffer` to its console line, after checking the command, the length and the whole range
    // Hint: check the whole range before printing anything, so a bad buffer prints nothing.
    // Hint: copy in chunks with `domain.copy_from_guest`, and hand them to `domain.console_write`.
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
    // LAB 1.4 END
}

/// `sched_op(cmd, arg)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_sched_op(domains: &mut Domains, caller: usize, command: u64, arg: u64) -> Result {
    match command {
        SCHEDOP_YIELD => {
            domains.yield_now = true;
            Ok(0)
        }
        SCHEDOP_BLOCK => {
            let domain = domains.domain(caller);
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
            domains.domain(caller).shut_down(code);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

// LAB 1.5 BEGIN: write the handler `do_domain_id(domain: &Domain) -> Result`: the caller's id, as every handler here, a real function under its plain name
// Hint: look at `do_xen_version` for the attributes that keep a handler findable in gdb.
// Handout: // LAB 1.5: the handler `do_domain_id` goes here.
/// `domain_id()`: the caller's id.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_domain_id(domain: &Domain) -> Result {
    Ok(u64::from(domain.id))
}
// LAB 1.5 END

/// `stats(buf)`: copies this domain's `Stats` out.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
fn do_stats(domain: &mut Domain, buffer: u64) -> Result {
    domain.write(buffer, &domain.stats)?;
    Ok(0)
}
