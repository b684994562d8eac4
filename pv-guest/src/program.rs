//! Running a user program: load its ELF module into a new address space, enter it in ring 3,
//! and collect its exit status.
//!
//! [`run`] runs one program to completion, for the `run=` workload: `traps::catch` enters it
//! and returns when it exits or faults. `process` builds its processes from the same pieces:
//! [`load_module`] for each program, [`set_current`] and [`user_bytes`] to check its pointers.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::elf::{Elf, PF_W};
use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::selectors::{FLAT_RING3_CS, FLAT_RING3_DS};
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE, USER_END};
use hypercall_abi::start_info::ModuleInfo;
use hypercall_abi::syscalls::{USER_STACK_PAGES, USER_STACK_TOP};
use hypercall_abi::StartInfo;

use crate::address_space::AddressSpace;
use crate::platform;
use crate::traps::{self, Caught};

/// The running program's L4 gfn (0: none), for checking its pointers.
static CURRENT_L4: AtomicU64 = AtomicU64::new(0);
/// The domain's `pte_base`.
static PTE_BASE: AtomicU64 = AtomicU64::new(0);

/// How a program ended.
pub enum Outcome {
    /// It called `exit(status)`.
    Exited(u64),
    /// It raised an exception the kernel does not handle for it.
    Killed(Caught),
}

/// The module called `name`.
fn module<'a>(info: &'a StartInfo, name: &str) -> Option<&'a [u8]> {
    (0..info.nr_modules).find_map(|index| {
        // SAFETY: xen-lite wrote `nr_modules` records at `modules`, in the domain's memory.
        let record = unsafe { &*((info.modules + index * 48) as *const ModuleInfo) };
        // SAFETY: the record describes bytes xen-lite copied into the domain's memory.
        (record.name() == Some(name)).then(|| unsafe {
            core::slice::from_raw_parts(record.va as *const u8, record.len as usize)
        })
    })
}

/// Loads and runs program `name` to its end.
pub fn run(info: &StartInfo, name: &str) -> Result<Outcome, Errno> {
    let (space, entry, _) = load_module(info, name)?;
    let kernel_l4 = info.pte_base + (info.pt_base - gfn_to_va(0));
    let outcome = (|| {
        space.activate()?;
        set_current(space.l4());
        let caught = traps::catch(entry, FLAT_RING3_CS, USER_STACK_TOP, FLAT_RING3_DS);
        set_current(0);
        platform::load_root(kernel_l4)?;
        Ok(if caught.vector == traps::SYSCALL_VECTOR {
            Outcome::Exited(caught.error_code)
        } else {
            Outcome::Killed(caught)
        })
    })();
    space.destroy();
    outcome
}

/// A new address space holding module `name`'s program and a stack; returns it with the
/// entry point and where the heap starts (the page after the highest segment).
pub fn load_module(info: &StartInfo, name: &str) -> Result<(AddressSpace, u64, u64), Errno> {
    PTE_BASE.store(info.pte_base, Ordering::Relaxed);
    let image = module(info, name).ok_or(Errno::ENOENT)?;
    let elf = Elf::parse(image).map_err(|_| Errno::EINVAL)?;
    let mut space = AddressSpace::new(info)?;
    match load(&mut space, &elf) {
        Ok(()) => {
            let heap = elf.span().1.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            Ok((space, elf.entry(), heap))
        }
        Err(errno) => {
            space.destroy();
            Err(errno)
        }
    }
}

/// Records which address space user pointers are checked against (0: none).
pub fn set_current(l4: u64) {
    CURRENT_L4.store(l4, Ordering::Relaxed);
}

/// Copies the ELF's segments into fresh frames mapped at their addresses, and maps the stack.
fn load(space: &mut AddressSpace, elf: &Elf<'_>) -> Result<(), Errno> {
    for segment in elf.segments() {
        if segment.vend() > USER_END || segment.vaddr < PAGE_SIZE {
            return Err(Errno::EINVAL);
        }
        let bytes = elf.file_bytes(&segment);
        let mut page = segment.vaddr & !(PAGE_SIZE - 1);
        while page < segment.vend() {
            let gfn = space.map_new(page, segment.flags & PF_W != 0)?;
            // Copy the part of the file bytes that falls in this page.
            let start = page.max(segment.vaddr);
            let end = (page + PAGE_SIZE).min(segment.vaddr + bytes.len() as u64);
            if start < end {
                let from = &bytes[(start - segment.vaddr) as usize..(end - segment.vaddr) as usize];
                // SAFETY: `gfn` was just allocated for this page and is mapped writable in the
                // kernel's direct map; the range stays within the page.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        from.as_ptr(),
                        (gfn_to_va(gfn) + (start - page)) as *mut u8,
                        from.len(),
                    );
                }
            }
            page += PAGE_SIZE;
        }
    }
    for page in 1..=USER_STACK_PAGES {
        space.map_new(USER_STACK_TOP - page * PAGE_SIZE, true)?;
    }
    Ok(())
}

/// The bytes of user range `[va, va + len)` of the running program, if every page of it is
/// mapped user-accessible (the kernel's `copyin`).
pub fn user_bytes(va: u64, len: u64) -> Result<&'static [u8], Errno> {
    let l4 = CURRENT_L4.load(Ordering::Relaxed);
    let end = va.checked_add(len).ok_or(Errno::EFAULT)?;
    if l4 == 0 || end > USER_END {
        return Err(Errno::EFAULT);
    }
    let mut page = va & !(PAGE_SIZE - 1);
    while page < end {
        AddressSpace::lookup(l4, PTE_BASE.load(Ordering::Relaxed), page).ok_or(Errno::EFAULT)?;
        page += PAGE_SIZE;
    }
    // SAFETY: every page of the range is mapped user-accessible in the current address space,
    // which is loaded while the program's system call runs.
    Ok(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}
