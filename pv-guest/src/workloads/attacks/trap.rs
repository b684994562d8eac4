//! The attacks on `mode=trap`'s virtual CPU: each privileged instruction the kernel can execute
//! in ring 1, with an operand that would hand it the machine if xen-lite took it as it came.
//! Under trap-and-emulate every one traps; the emulation must refuse it (a kill naming the rule
//! and the value, or the #GP the CPU raises), and a DPL-0 descriptor must still run in ring 1.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{caught, Context};
use crate::traps::catch_in_kernel;

/// A descriptor-table pointer with a non-canonical base (limit 0x37, base 2^63).
static NON_CANONICAL_TABLE: [u16; 5] = [0x37, 0, 0, 0, 0x8000];
/// The CS the snippet read after its far return.
static SEEN_CS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.attack_snippets, "ax"
attack_lgdt_non_canonical:             // a GDT at 2^63: xen-lite would read it from anywhere
    lea rax, [rip + {table}]
    lgdt [rax]
    ud2
attack_far_return_to_data:             // CS = its DPL-0 data descriptor
    push 0x10
    lea rax, [rip + 1f]
    push rax
    retfq
1:  ud2
attack_ring0_descriptor:               // CS = its DPL-0 code descriptor: ring 0, it hopes
    push 0x08
    lea rax, [rip + 1f]
    push rax
    retfq
1:  mov ax, cs
    movzx eax, ax
    mov [rip + {seen}], rax
    ud2
attack_wrmsr_sysenter:                 // SYSENTER_EIP: an entry point xen-lite never set
    mov ecx, 0x176
    lea rax, [rip + attack_wrmsr_sysenter]
    xor edx, edx
    wrmsr
    ud2
attack_efer_long_mode_off:             // EFER without LME
    mov ecx, 0xc0000080
    rdmsr
    and eax, 0xfffffeff
    wrmsr
    ud2
attack_ltr_data:                       // the task register at a data descriptor
    mov ax, 0x10
    ltr ax
    ud2
    "#,
    table = sym NON_CANONICAL_TABLE,
    seen = sym SEEN_CS,
);

unsafe extern "C" {
    static attack_lgdt_non_canonical: u8;
    static attack_far_return_to_data: u8;
    static attack_ring0_descriptor: u8;
    static attack_wrmsr_sysenter: u8;
    static attack_efer_long_mode_off: u8;
    static attack_ltr_data: u8;
}

/// The snippet `name`, run in the kernel's ring until it faults.
fn snippet(c: &Context, name: &str) {
    let rip = match name {
        "lgdt" => core::ptr::addr_of!(attack_lgdt_non_canonical),
        "data" => core::ptr::addr_of!(attack_far_return_to_data),
        "sysenter" => core::ptr::addr_of!(attack_wrmsr_sysenter),
        "efer" => core::ptr::addr_of!(attack_efer_long_mode_off),
        _ => core::ptr::addr_of!(attack_ltr_data),
    };
    caught(c, catch_in_kernel(rip as u64));
}

/// `lgdt` of a non-canonical base.
pub fn lgdt_non_canonical(c: &Context) {
    snippet(c, "lgdt");
}

/// A far return to a data descriptor.
pub fn far_return_to_data(c: &Context) {
    snippet(c, "data");
}

/// A far return to its own DPL-0 code descriptor, then what CS really is.
pub fn ring0_descriptor(c: &Context) {
    let _ = catch_in_kernel(core::ptr::addr_of!(attack_ring0_descriptor) as u64);
    let cs = SEEN_CS.load(Ordering::Relaxed);
    c.say(format_args!(
        "after a far return to its DPL-0 code descriptor, CS is {cs:#x} (ring {})",
        cs & 3
    ));
}

/// `wrmsr` of SYSENTER_EIP.
pub fn wrmsr_sysenter(c: &Context) {
    snippet(c, "sysenter");
}

/// `wrmsr` of EFER without long mode.
pub fn efer_long_mode_off(c: &Context) {
    snippet(c, "efer");
}

/// `ltr` of a data descriptor.
pub fn ltr_data(c: &Context) {
    snippet(c, "ltr");
}
