//! Building `pv` domains: each kernel image is laid out in its own frames with start-of-day
//! page tables that already obey the direct-paging rules (validated and pinned before the
//! first instruction), the switcher mapped into each, and the first domain entered in ring 1.

use core::mem::size_of;

use hypercall_abi::devices::{STATUS_BAD_BUNDLE, STATUS_BAD_GUEST};
use hypercall_abi::hypercall::{HYPERCALL_STUB_SIZE, HYPERCALL_VECTOR};
use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::start_info::START_FLAG_SHADOW_PAGING;
use hypercall_abi::Mode;
use spin::Once;

use super::page_types::{PageInfo, PageType};
use super::state::PvState;
use crate::config::{Config, Paging};
use crate::domain::schedule::SLICE_TICKS;
use crate::domain::{self, Domain};
use crate::domain_builder::{self, DomainSpec};
use crate::entry::{enter_frame, TrapFrame};
use crate::exit::exit_emulator;
use crate::frame::Frame;
use crate::gdt::{hypervisor_stack_top, GUEST_KERNEL_CS, GUEST_KERNEL_DS};
use crate::memory_map::phys_to_virt;
use crate::shadow::{DomainShadow, Pmap};
use crate::switcher;
use crate::timer;

/// The level-4 slot and entry that map the switcher into every guest (`switcher.rs`).
static SWITCHER_SLOT: Once<(usize, u64)> = Once::new();

/// The switcher's slot and entry; xen-lite writes it into every guest L4 it validates.
#[inline]
pub fn switcher_slot() -> (usize, u64) {
    *SWITCHER_SLOT.get().expect("pv::start builds it")
}

/// Builds the switcher's mapping for guest address spaces, once (`pv`, and `mode=trap`, whose
/// guests run in ring 1 on xen-lite's IDT too).
pub fn map_switcher() {
    SWITCHER_SLOT.call_once(|| {
        switcher::build_guest_slot(|| {
            let frame = crate::frame::alloc()
                .unwrap_or_else(|| panic!("no frame for the switcher's page tables"));
            // SAFETY: a frame just allocated for a page table; nothing else refers to it.
            unsafe {
                core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, PAGE_SIZE as usize)
            };
            frame
        })
    });
}

/// The stub for hypercall `number`: `mov eax, number; int 0x82; ret`, padded with `int3`.
pub fn hypercall_stub(number: u64) -> [u8; HYPERCALL_STUB_SIZE as usize] {
    hypercall_abi::hypercall::hypercall_stub(number, &[0xcd, HYPERCALL_VECTOR])
}

/// Builds every domain the command line names and starts the first.
pub fn start(config: &Config<'_>, image: Option<&[u8]>, modules: &[(&str, &[u8])]) -> ! {
    let Some(image) = image else {
        log::error!("pv: no image '{}' in the boot bundle", config.kernel);
        exit_emulator(STATUS_BAD_BUNDLE);
    };
    map_switcher();
    let mut domains = domain::lock();
    for (id, cmdline) in config.domains().iter().enumerate() {
        let base = domain::allocate_memory(config, id);
        let page_info = allocate_frame_table(config, id);
        domains.domains[id] =
            Some(build(id as u32, config, cmdline, image, modules, base, page_info));
    }
    timer::init();
    crate::syscall::init(crate::entry::syscall_entry_address());
    if config.audit {
        domain::audit::enable();
    }
    super::set_active();
    let first = domains.domain(0);
    let (regs, cr3) = (first.regs, first.pv().cr3);
    first.stats.schedules += 1;
    domains.current = Some(0);
    domain::set_current_for_debuggers(Some(0));
    domains.slice_left = SLICE_TICKS;
    drop(domains);
    log::info!("pv: entering dom0 in ring 1");
    switcher::set_return_cr3(cr3);
    // SAFETY: `trap_return` switches to dom0's tables, which map the switcher (its code and the
    // entry stack the frame is on); `regs` is a ring-1 context the builder laid out; the entry
    // stack is unused.
    unsafe { enter_frame(&regs, hypervisor_stack_top(), cr3) }
}

/// Allocates the frame table of domain `id` (one zeroed `PageInfo` per frame of its memory);
/// ends the run if the machine has too little memory.
fn allocate_frame_table(config: &Config<'_>, id: usize) -> &'static mut [PageInfo] {
    let info_frames = (config.domain_pages * size_of::<PageInfo>() as u64).div_ceil(PAGE_SIZE);
    let Some(info) = crate::frame::alloc_contiguous(info_frames) else {
        log::error!("no {info_frames} contiguous free frames for dom{id}'s frame table");
        exit_emulator(STATUS_BAD_GUEST);
    };
    // SAFETY: the frames were just allocated for this table; zero bytes are a valid
    // `PageInfo` (type None, counts 0) and nothing else refers to them.
    unsafe {
        let start = phys_to_virt(info.addr()) as *mut u8;
        core::ptr::write_bytes(start, 0, (info_frames * PAGE_SIZE) as usize);
        core::slice::from_raw_parts_mut(start as *mut PageInfo, config.domain_pages as usize)
    }
}

/// Builds one domain in the frames at `base`.
fn build(
    id: u32,
    config: &Config<'_>,
    cmdline: &str,
    image: &[u8],
    modules: &[(&str, &[u8])],
    base: Frame,
    page_info: &'static mut [PageInfo],
) -> Domain {
    let pages = config.domain_pages;
    let shadowed = config.paging(id as usize) == Paging::Shadow;
    let switcher_slot = switcher_slot();
    // SAFETY: the frames were just allocated for this domain (`domain::allocate_memory`) and are
    // reached only through this slice until the domain runs.
    let memory = unsafe { domain_builder::domain_memory(base, pages) };
    // Under shadow paging the guest's tables are guest-physical and its own to write; the
    // switcher's entry goes into the shadow roots instead (`super::shadow::host_slots`).
    let switcher_entry =
        (switcher_slot.0..switcher_slot.0 + 1, core::slice::from_ref(&switcher_slot.1));
    let spec = DomainSpec {
        domain_id: id,
        mode: Mode::Pv,
        cmdline,
        image,
        pte_base: if shadowed { 0 } else { base.addr() },
        hypervisor_slots: (!shadowed).then_some(switcher_entry),
        read_only_page_tables: !shadowed,
        start_flags: if shadowed { START_FLAG_SHADOW_PAGING } else { 0 },
        modules,
    };
    let built = domain_builder::build(memory, &spec).unwrap_or_else(|error| {
        log::error!("pv: cannot build dom{id} from '{}': {error}", config.kernel);
        exit_emulator(STATUS_BAD_GUEST)
    });
    domain_builder::fill_hypercall_page(
        &mut memory[built.hypercall_page_gfn as usize],
        hypercall_stub,
    );
    let regs = TrapFrame {
        rip: built.entry,
        cs: u64::from(GUEST_KERNEL_CS.bits()),
        rflags: 0x202, // IF on: the real timer must be able to preempt the guest
        rsp: built.stack_top,
        ss: u64::from(GUEST_KERNEL_DS.bits()),
        rdi: built.start_info,
        ..TrapFrame::default()
    };
    let shadow = shadowed.then(|| {
        let pmap = Pmap { base: base.addr(), pages };
        let guest_cr3 = built.l4_gfn * PAGE_SIZE;
        DomainShadow::allocate(config, id as usize, pmap, guest_cr3, super::shadow::host_slots())
    });
    let cr3 = match &shadow {
        Some(shadow) => shadow.tables.root(),
        None => base.addr() + built.l4_gfn * PAGE_SIZE,
    };
    let mut pv = PvState::new(cr3, page_info);
    pv.shadow = shadow;
    let shared = built.shared_info_gfn;
    let mut domain = Domain::new(id, Mode::Pv, (base, pages), shared, regs, Some(pv));
    let mut table = domain.frame_table();
    // DESIGN §4, invariant 5: xen-lite writes the shared page for the domain's whole life,
    // through its own map, which ignores the guest's page-table rights. It holds a `Writable`
    // type reference on the frame from the start, and never drops it, so the frame can never
    // be validated as a page table (an attempt is `TypeConflict`).
    let held = table.get_type(shared, PageType::Writable);
    assert!(held.is_ok(), "a new domain's frames are all untyped");
    // Direct paging from the first instruction: the start-of-day L4 is validated and pinned,
    // and holds one more type reference for being the base pointer.
    let typed = if shadowed {
        Ok(())
    } else {
        table
            .pin(built.l4_gfn, PageType::L4)
            .and_then(|()| table.get_type(built.l4_gfn, PageType::L4))
    };
    if let Err(error) = typed {
        log::error!(
            "pv: dom{id}'s start-of-day page tables break the direct-paging rules: {error:?}"
        );
        exit_emulator(STATUS_BAD_GUEST);
    }
    domain.shared().vcpu.upcall_mask = 1; // events start masked, as after a CPU reset
    log::info!(
        "pv: dom{id}: {pages} frames at machine {:#x}, entry {:#x}, {} paging, command line \"{cmdline}\"",
        base.addr(),
        built.entry,
        config.paging(id as usize).name()
    );
    domain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_stubs_load_the_number_and_trap() {
        let stub = hypercall_stub(18);
        assert_eq!(stub[..8], [0xb8, 18, 0, 0, 0, 0xcd, 0x82, 0xc3]);
        assert!(stub[8..].iter().all(|&b| b == 0xcc));
    }
}
