//! The contract between `xen-lite`, its guests and the `xtask`.
//!
//! Everything both sides of a boundary must agree on lives here, once: the boot bundle that the
//! ramdisk carries, the command-line syntax, the `StartInfo` page a domain starts with, the
//! guest-visible memory layout and the emulated devices whose port numbers and exit codes the
//! test harness relies on. The crate is `no_std` and free of `unsafe`, so the same code is built
//! into the kernels and unit-tested on the host.
//!
//! For `pv` mode it also holds the hypercall interface (`hypercall`: numbers, argument
//! records, errno values, the hypercall-page layout) and `SharedInfo`, the page that carries
//! the virtual IF and the event bitmaps.
//!
//! Reading order:
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod devices;
pub mod layout;
pub mod page_table;
pub mod mode;
pub mod cmdline;
pub mod bundle;
pub mod elf;
pub mod start_info;
pub mod shared_info;
pub mod frame;
pub mod hypercall;
pub mod stats;
pub mod record;
pub mod vm_exit;
pub mod syscalls;

pub use mode::Mode;
pub use start_info::StartInfo;
