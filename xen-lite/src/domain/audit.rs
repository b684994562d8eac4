//! The invariant auditor's driver (`audit=on`): after every entry, the protection invariants of
//! DESIGN §4 are checked over every domain instead of trusting that each handler kept them. A
//! violation is a bug in xen-lite, so it is fatal, with one line naming the invariant, the
//! domain and the values.
//!
//! What is checked is the mode's: a `pv` domain's tables, frame types and the guest-visible
//! stacks (`crate::pv::audit`). An hvm domain has nothing of xen-lite mapped and no validated
//! tables: EPT confines it, and there is nothing in the domain for this auditor to walk.

use core::sync::atomic::{AtomicBool, Ordering};

use super::Domains;
use crate::pv::audit::Violation;

/// `audit=on`: check the protection invariants after every entry.
static AUDIT: AtomicBool = AtomicBool::new(false);

/// Turns the auditor on for the rest of the run (`audit=on`).
pub fn enable() {
    AUDIT.store(true, Ordering::Relaxed);
    log::info!("audit: checking the protection invariants (DESIGN section 4) after every entry");
}

/// Whether the auditor is on.
#[inline]
pub fn enabled() -> bool {
    AUDIT.load(Ordering::Relaxed)
}

/// Audits every live domain. `entered`: the domain whose entry this was (only it can have
/// changed its tables); `switched`: a different domain (or the idle loop) runs next;
/// `tables`: walk page tables too (after a hypercall, an exception or a VM exit; a bare timer
/// tick changes no table, and walking them on every tick would let the ticks of an emulator
/// with a virtual clock outrun the guest).
pub fn run(domains: &mut Domains, entered: Option<usize>, switched: bool, tables: bool) {
    for domain in domains.domains.iter_mut().flatten().filter(|d| !d.is_dead()) {
        let walk = tables && (switched || entered == Some(domain.id as usize));
        if let Err(violation) = crate::pv::audit::check_domain(domain, walk) {
            failed(violation, Some(domain.id));
        }
    }
    if crate::pv::active() {
        if let Err(violation) = crate::switcher::audit_stacks(switched, tables) {
            failed(violation, domains.current.map(|c| c as u32));
        }
    }
}

fn failed(violation: Violation, domain: Option<u32>) -> ! {
    let invariant = violation.invariant();
    match domain {
        Some(id) => crate::console::fatal_line(format_args!(
            "FATAL: audit: invariant {invariant} broken in dom{id}: {violation}"
        )),
        None => crate::console::fatal_line(format_args!(
            "FATAL: audit: invariant {invariant} broken: {violation}"
        )),
    }
    crate::exit::leave(hypercall_abi::devices::STATUS_HYPERVISOR_FAULT)
}
