//! The census's snippets: one per instruction, each a few instructions of assembly that run
//! it, store what it showed, and end in `ud2` (a #UD *at that ud2* means "it ran"; any other
//! exception is the instruction's own). Kernel snippets store into statics, user ones into
//! `census_out`, in the kernel's user-accessible `.user` segment (`pv-guest/kernel.ld`).

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// Where the snippets leave what they saw.
pub static OUT: AtomicU64 = AtomicU64::new(0);
pub static OUT2: AtomicU64 = AtomicU64::new(0);
/// The root the census loads before it starts (what `mov r64, cr3` should show).
pub static ROOT: AtomicU64 = AtomicU64::new(0);

/// Which ring a snippet runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    Kernel,
    User,
}

/// How to put what a snippet saw into words.
#[derive(Clone, Copy)]
pub enum Show {
    /// Nothing but that it ran.
    Nothing,
    /// `IF=n IOPL=n` of the RFLAGS it stored.
    Flags,
    /// IF after setting it, then after clearing it, both by `popfq`.
    PopfIf,
    /// The RPL of the selector it stored.
    Rpl,
    /// The DPL in the access rights `lar` stored.
    Dpl,
    /// The stored word, in hex.
    Hex,
    /// The stored word masked to these bits, in hex.
    Bits(u64),
    /// Whether the table base a descriptor-table store wrote lies in the kernel's image.
    TableBase,
    /// Whether the address lies in the kernel's image.
    KernelAddress,
    /// Whether the stored CR3 names the root the census loaded.
    Root,
    /// Bit 31 of CPUID leaf 1's ECX, "a hypervisor is present".
    HypervisorBit,
}

/// One instruction of the census.
pub struct Item {
    pub ring: Ring,
    pub name: &'static str,
    pub show: Show,
    pub start: unsafe extern "C" fn(),
}

/// The guest kernel's image starts here (`layout`); the hypervisor's lies elsewhere.
pub const KERNEL_IMAGE: u64 = hypercall_abi::layout::GUEST_KERNEL_BASE;

macro_rules! snippets {
    ($($ring:ident $name:literal $show:expr => $label:ident;)*) => {
        unsafe extern "C" { $(fn $label();)* }
        /// Every instruction the census runs, in order.
        pub const ITEMS: &[Item] = &[$(Item { ring: Ring::$ring, name: $name, show: $show, start: $label },)*];
    };
}

snippets! {
    Kernel "nop" Show::Nothing => census_k_nop;
    Kernel "cli" Show::Flags => census_k_cli;
    Kernel "sti" Show::Flags => census_k_sti;
    Kernel "pushf" Show::Flags => census_k_pushf;
    Kernel "popf" Show::PopfIf => census_k_popf;
    Kernel "mov-from-cr0" Show::Bits(0x8001_0001) => census_k_read_cr0;
    Kernel "mov-to-cr0" Show::Nothing => census_k_write_cr0;
    Kernel "smsw" Show::Bits(0x1) => census_k_smsw;
    Kernel "clts" Show::Nothing => census_k_clts;
    Kernel "smsw-after-ts" Show::Bits(0x8) => census_k_smsw_ts;
    Kernel "mov-from-cr3" Show::Root => census_k_read_cr3;
    Kernel "mov-to-cr3" Show::Nothing => census_k_write_cr3;
    Kernel "mov-from-cr4" Show::Bits(1 << 5) => census_k_read_cr4;
    Kernel "mov-from-dr7" Show::Nothing => census_k_read_dr7;
    Kernel "sgdt" Show::TableBase => census_k_sgdt;
    Kernel "sidt" Show::TableBase => census_k_sidt;
    Kernel "sldt" Show::Hex => census_k_sldt;
    Kernel "str" Show::Hex => census_k_str;
    Kernel "lgdt" Show::Nothing => census_k_lgdt;
    Kernel "lidt" Show::Nothing => census_k_lidt;
    Kernel "lldt" Show::Nothing => census_k_lldt;
    Kernel "mov-from-cs" Show::Rpl => census_k_mov_cs;
    Kernel "mov-from-ss" Show::Rpl => census_k_mov_ss;
    Kernel "mov-to-ss" Show::Nothing => census_k_write_ss;
    Kernel "push-fs" Show::Bits(0xffff) => census_k_push_fs;
    Kernel "pop-fs" Show::Nothing => census_k_pop_fs;
    Kernel "lar-cs" Show::Dpl => census_k_lar;
    Kernel "lsl-cs" Show::Hex => census_k_lsl;
    Kernel "verr-cs" Show::Hex => census_k_verr;
    Kernel "verw-ss" Show::Hex => census_k_verw;
    Kernel "far-ret" Show::Nothing => census_k_far_ret;
    Kernel "iretq" Show::Nothing => census_k_iretq;
    Kernel "int3" Show::Nothing => census_k_int3;
    Kernel "rdmsr-lstar" Show::KernelAddress => census_k_rdmsr;
    Kernel "wrmsr-lstar" Show::Nothing => census_k_wrmsr;
    Kernel "swapgs" Show::Nothing => census_k_swapgs;
    Kernel "in-pic" Show::Nothing => census_k_in;
    Kernel "out-pic" Show::Nothing => census_k_out;
    Kernel "invlpg" Show::Nothing => census_k_invlpg;
    Kernel "wbinvd" Show::Nothing => census_k_wbinvd;
    Kernel "cpuid" Show::HypervisorBit => census_k_cpuid;
    Kernel "rdtsc" Show::Nothing => census_k_rdtsc;
    Kernel "rdtscp" Show::Nothing => census_k_rdtscp;
    Kernel "rdpid" Show::Nothing => census_k_rdpid;
    Kernel "xgetbv" Show::Nothing => census_k_xgetbv;
    User "nop" Show::Nothing => census_u_nop;
    User "sgdt" Show::TableBase => census_u_sgdt;
    User "sidt" Show::TableBase => census_u_sidt;
    User "sldt" Show::Hex => census_u_sldt;
    User "str" Show::Hex => census_u_str;
    User "smsw" Show::Bits(0x1) => census_u_smsw;
    User "pushf" Show::Flags => census_u_pushf;
    User "popf" Show::PopfIf => census_u_popf;
    User "mov-from-cs" Show::Rpl => census_u_mov_cs;
    User "cli" Show::Flags => census_u_cli;
    User "in-pic" Show::Nothing => census_u_in;
    User "cpuid" Show::HypervisorBit => census_u_cpuid;
    User "rdtsc" Show::Nothing => census_u_rdtsc;
    User "int3" Show::Nothing => census_u_int3;
}

global_asm!(
    r#"
    .section .text.census, "ax"
    .global census_k_nop, census_k_cli, census_k_sti, census_k_pushf, census_k_popf
    .global census_k_read_cr0, census_k_write_cr0, census_k_smsw, census_k_clts, census_k_smsw_ts, census_k_read_cr3
    .global census_k_write_cr3, census_k_read_cr4, census_k_read_dr7, census_k_sgdt, census_k_sidt
    .global census_k_sldt, census_k_str, census_k_lgdt, census_k_lidt, census_k_lldt
    .global census_k_mov_cs, census_k_mov_ss, census_k_write_ss, census_k_push_fs, census_k_pop_fs
    .global census_k_lar, census_k_lsl, census_k_verr, census_k_verw, census_k_far_ret
    .global census_k_iretq, census_k_int3, census_k_rdmsr, census_k_wrmsr, census_k_swapgs
    .global census_k_in, census_k_out, census_k_invlpg, census_k_wbinvd, census_k_cpuid
    .global census_k_rdtsc, census_k_rdtscp, census_k_rdpid, census_k_xgetbv
census_k_nop:       nop
                    ud2
census_k_cli:       cli
                    pushfq
                    pop rax
                    mov [rip + {out}], rax
                    ud2
census_k_sti:       sti
                    pushfq
                    pop rax
                    mov [rip + {out}], rax
                    ud2
census_k_pushf:     pushfq
                    pop rax
                    mov [rip + {out}], rax
                    ud2
census_k_popf:      pushfq
                    pop rax
                    or rax, 0x200
                    push rax
                    popfq
                    pushfq
                    pop rcx
                    mov [rip + {out}], rcx
                    and rax, ~0x200
                    push rax
                    popfq
                    pushfq
                    pop rcx
                    mov [rip + {out2}], rcx
                    ud2
census_k_read_cr0:  mov rax, cr0
                    mov [rip + {out}], rax
                    ud2
census_k_write_cr0: mov rax, cr0
                    mov cr0, rax
                    ud2
census_k_smsw:      smsw rax
                    mov [rip + {out}], rax
                    ud2
census_k_clts:      clts
                    ud2
census_k_smsw_ts:   mov rax, cr0           // set CR0.TS, then read it back with smsw
                    or rax, 8
                    mov cr0, rax
                    smsw rax
                    mov [rip + {out}], rax
                    clts
                    ud2
census_k_read_cr3:  mov rax, cr3
                    mov [rip + {out}], rax
                    ud2
census_k_write_cr3: mov rax, cr3
                    mov cr3, rax
                    ud2
census_k_read_cr4:  mov rax, cr4
                    mov [rip + {out}], rax
                    ud2
census_k_read_dr7:  mov rax, dr7
                    ud2
census_k_sgdt:      sgdt [rip + {table}]
                    mov rax, [rip + {table} + 2]
                    mov [rip + {out}], rax
                    ud2
census_k_sidt:      sidt [rip + {table}]
                    mov rax, [rip + {table} + 2]
                    mov [rip + {out}], rax
                    ud2
census_k_sldt:      xor eax, eax
                    sldt ax
                    mov [rip + {out}], rax
                    ud2
census_k_str:       xor eax, eax
                    str ax
                    mov [rip + {out}], rax
                    ud2
census_k_lgdt:      sgdt [rip + {table}]
                    lgdt [rip + {table}]
                    ud2
census_k_lidt:      sidt [rip + {table}]
                    lidt [rip + {table}]
                    ud2
census_k_lldt:      xor eax, eax
                    lldt ax
                    ud2
census_k_mov_cs:    mov eax, cs
                    mov [rip + {out}], rax
                    ud2
census_k_mov_ss:    mov eax, ss
                    mov [rip + {out}], rax
                    ud2
census_k_write_ss:  mov eax, ss
                    mov ss, eax
                    ud2
census_k_push_fs:   push fs
                    pop rax
                    mov [rip + {out}], rax
                    ud2
census_k_pop_fs:    push fs
                    pop fs
                    ud2
census_k_lar:       mov ecx, cs
                    xor eax, eax
                    lar eax, ecx
                    mov [rip + {out}], rax
                    ud2
census_k_lsl:       mov ecx, cs
                    xor eax, eax
                    lsl eax, ecx
                    mov [rip + {out}], rax
                    ud2
census_k_verr:      mov ecx, cs
                    xor eax, eax
                    verr cx
                    setz al
                    mov [rip + {out}], rax
                    ud2
census_k_verw:      mov ecx, ss
                    xor eax, eax
                    verw cx
                    setz al
                    mov [rip + {out}], rax
                    ud2
census_k_far_ret:   mov eax, cs
                    push rax
                    lea rax, [rip + 2f]
                    push rax
                    retfq
2:                  ud2
census_k_iretq:     mov eax, ss
                    mov rcx, rsp
                    push rax
                    push rcx
                    pushfq
                    mov eax, cs
                    push rax
                    lea rax, [rip + 3f]
                    push rax
                    iretq
3:                  ud2
census_k_int3:      int3
                    ud2
census_k_rdmsr:     mov ecx, 0xc0000082
                    rdmsr
                    shl rdx, 32
                    or rax, rdx
                    mov [rip + {out}], rax
                    ud2
census_k_wrmsr:     mov ecx, 0xc0000082
                    rdmsr
                    wrmsr
                    ud2
census_k_swapgs:    swapgs
                    swapgs
                    ud2
census_k_in:        in al, 0x21
                    ud2
census_k_out:       in al, 0x21
                    out 0x21, al
                    ud2
census_k_invlpg:    invlpg [rip + {out}]
                    ud2
census_k_wbinvd:    wbinvd
                    ud2
census_k_cpuid:     mov eax, 1
                    xor ecx, ecx
                    cpuid
                    mov [rip + {out}], rcx
                    ud2
census_k_rdtsc:     rdtsc
                    ud2
census_k_rdtscp:    rdtscp
                    ud2
census_k_rdpid:     rdpid rax
                    ud2
census_k_xgetbv:    xor ecx, ecx
                    xgetbv
                    ud2

    .section .user, "awx"
    .balign 4096
    .global census_u_nop, census_u_sgdt, census_u_sidt, census_u_sldt, census_u_str, census_u_smsw
    .global census_u_pushf, census_u_popf, census_u_mov_cs, census_u_cli, census_u_in
    .global census_u_cpuid, census_u_rdtsc, census_u_int3
census_u_nop:       nop
                    ud2
census_u_sgdt:      sgdt [rip + census_table]
                    mov rax, [rip + census_table + 2]
                    mov [rip + census_out], rax
                    ud2
census_u_sidt:      sidt [rip + census_table]
                    mov rax, [rip + census_table + 2]
                    mov [rip + census_out], rax
                    ud2
census_u_sldt:      xor eax, eax
                    sldt ax
                    mov [rip + census_out], rax
                    ud2
census_u_str:       xor eax, eax
                    str ax
                    mov [rip + census_out], rax
                    ud2
census_u_smsw:      smsw rax
                    mov [rip + census_out], rax
                    ud2
census_u_pushf:     pushfq
                    pop rax
                    mov [rip + census_out], rax
                    ud2
census_u_popf:      pushfq
                    pop rax
                    or rax, 0x200
                    push rax
                    popfq
                    pushfq
                    pop rcx
                    mov [rip + census_out], rcx
                    and rax, ~0x200
                    push rax
                    popfq
                    pushfq
                    pop rcx
                    mov [rip + census_out + 8], rcx
                    ud2
census_u_mov_cs:    mov eax, cs
                    mov [rip + census_out], rax
                    ud2
census_u_cli:       cli
                    pushfq
                    pop rax
                    mov [rip + census_out], rax
                    ud2
census_u_in:        in al, 0x21
                    ud2
census_u_cpuid:     mov eax, 1
                    xor ecx, ecx
                    cpuid
                    mov [rip + census_out], rcx
                    ud2
census_u_rdtsc:     rdtsc
                    ud2
census_u_int3:      int3
                    ud2
    .balign 16
    .global census_out
census_out:         .quad 0, 0
census_table:       .quad 0, 0
census_stack:       .space 512
    .global census_stack_top
census_stack_top:
    "#,
    out = sym OUT,
    out2 = sym OUT2,
    table = sym TABLE,
);

/// Where the kernel snippets store a descriptor-table register (10 bytes).
static TABLE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

unsafe extern "C" {
    pub static census_out: [u64; 2];
    pub static census_stack_top: u8;
}
