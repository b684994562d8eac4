//! `SharedInfo`: the page xen-lite and a domain both write, which makes virtual interrupts cheap.
//!
//! The guest's `cli`/`sti` become stores to [`VcpuInfo::upcall_mask`] (no hypercall): the
//! *virtual IF*. xen-lite sets [`VcpuInfo::upcall_pending`] and a port's bit in
//! [`SharedInfo::evtchn_pending`] when an event arrives, and delivers it (a bounce to the
//! event callback) on the next return to the guest while the mask is clear. A guest that
//! unmasks must then check `upcall_pending` itself ("unmask, then check pending"), or an event
//! that arrived while it was masked waits for the next entry.
//!
//! See: Xen `public/xen.h`, `struct vcpu_info` and `struct shared_info`.

use core::mem::{offset_of, size_of};

/// Per-vCPU part (one vCPU per domain in xen-lite).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VcpuInfo {
    /// Written by xen-lite (set when an unmasked port becomes pending) and by the guest (cleared
    /// before it scans `evtchn_pending`). Nonzero: an upcall is wanted.
    pub upcall_pending: u8,
    /// Written by the guest (its `cli`/`sti`) and by xen-lite (set when it delivers an upcall).
    /// Nonzero: events are masked, the virtual IF is clear.
    pub upcall_mask: u8,
    /// Reserved, zero.
    pub pad: [u8; 6],
    /// Written by xen-lite before it bounces a #PF: the faulting address (the guest cannot read
    /// CR2 in ring 1). Valid inside the guest's #PF handler.
    pub cr2: u64,
}

/// The shared page.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct SharedInfo {
    /// The one vCPU.
    pub vcpu: VcpuInfo,
    /// Bit `p`: port `p` has an event waiting. Set by xen-lite, cleared by the guest.
    pub evtchn_pending: u64,
    /// Bit `p`: port `p` is masked (its events stay pending without an upcall). Guest-written.
    pub evtchn_mask: u64,
    /// Written by xen-lite on every timer tick and before each return to the guest: nanoseconds
    /// since xen-lite started (the clock `set_timer_op` deadlines use).
    pub system_time_ns: u64,
}

const _: () = assert!(size_of::<VcpuInfo>() == 16);
const _: () = assert!(offset_of!(VcpuInfo, upcall_mask) == 1);
const _: () = assert!(offset_of!(SharedInfo, evtchn_pending) == 16);
const _: () = assert!(offset_of!(SharedInfo, system_time_ns) == 32);
const _: () = assert!(size_of::<SharedInfo>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_both_sides_expect() {
        assert_eq!(offset_of!(SharedInfo, vcpu), 0);
        assert_eq!(offset_of!(VcpuInfo, upcall_pending), 0);
        assert_eq!(offset_of!(VcpuInfo, cr2), 8);
        assert_eq!(offset_of!(SharedInfo, evtchn_mask), 24);
    }
}
