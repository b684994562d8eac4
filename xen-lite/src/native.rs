//! `native` mode: load the `hvm` guest and hand it the machine, with no hypervisor underneath.
//!
//! This is the baseline every other mode is compared against. xen-lite builds the domain like
//! any other (`domain_builder`), in one physically contiguous block so that guest-physical and
//! machine addresses differ only by an offset (`StartInfo::pte_base`), then jumps to the
//! kernel in ring 0 and never runs again. Until the guest installs its own IDT, exceptions
//! still land in xen-lite's handlers and are reported (`trap::fatal_exception`).

use core::arch::asm;

use hypercall_abi::devices::{STATUS_BAD_BUNDLE, STATUS_BAD_GUEST};
use hypercall_abi::Mode;

use crate::config::Config;
use crate::domain_builder::{self, DomainSpec};
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::instructions::write_cr3;
use crate::memory_map::HYPERVISOR_L4_SLOTS;
use crate::paging::hypervisor_l4_entries;
use crate::serial;

/// Builds domain 0 from `image` and enters it; returns only by ending the run on an error.
pub fn run(
    config: &Config<'_>,
    image: Option<&[u8]>,
    memory: Option<Frame>,
    modules: &[(&str, &[u8])],
) -> ! {
    let Some(image) = image else {
        log::error!("native: no image '{}' in the boot bundle", config.kernel);
        exit_emulator(STATUS_BAD_BUNDLE);
    };
    let Some(base) = memory else {
        log::error!("native: no {} contiguous free frames for domain 0", config.domain_pages);
        exit_emulator(STATUS_BAD_GUEST);
    };
    // SAFETY: the frames `base..base + domain_pages` were just allocated for this domain and are
    // reachable through the direct map; nothing else refers to them.
    let memory = unsafe { domain_builder::domain_memory(base, config.domain_pages) };
    let spec = DomainSpec {
        domain_id: 0,
        mode: Mode::Native,
        cmdline: config.domains()[0],
        image,
        pte_base: base.addr(),
        hypervisor_slots: Some((HYPERVISOR_L4_SLOTS, hypervisor_l4_entries())),
        read_only_page_tables: false,
        start_flags: 0,
        modules,
    };
    let built = match domain_builder::build(memory, &spec) {
        Ok(built) => built,
        Err(error) => {
            log::error!("native: cannot build domain 0 from '{}': {error}", config.kernel);
            exit_emulator(STATUS_BAD_GUEST);
        }
    };
    log::info!(
        "native: domain 0 has {} frames at machine {:#x}; entering {:#x} in ring 0, xen-lite steps aside",
        config.domain_pages,
        base.addr(),
        built.entry
    );
    serial::flush();
    let l4 = base.addr() + built.l4_gfn * 4096;
    // SAFETY: the domain's tables map xen-lite's slots (copied above), so this code and its
    // stack stay mapped after the switch.
    unsafe { write_cr3(l4) };
    // SAFETY: `entry`, `stack_top` and `start_info` were laid out by the builder and are mapped
    // by the tables now in CR3. Nothing of xen-lite's state is used after the jump.
    unsafe {
        asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "jmp {entry}",
            stack = in(reg) built.stack_top,
            entry = in(reg) built.entry,
            in("rdi") built.start_info,
            options(noreturn),
        )
    }
}
