//! Stacks the CPU switches to by itself (TSS.RSP0, IST) or that xen-lite starts a context on.

use core::cell::UnsafeCell;

/// A page-aligned stack of `N` bytes (a multiple of 4096) in writable, zero-initialised memory.
///
/// The bytes sit in an `UnsafeCell`: a plain immutable `static` array could be placed in
/// read-only memory, and the first push would page-fault. Whole pages, so a stack can be mapped
/// into a guest's address space (the switcher) without exposing its neighbours.
#[repr(C, align(4096))]
pub struct Stack<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: Rust code never reads or writes the bytes; only the CPU does, as a stack, on the one
// CPU xen-lite runs on.
unsafe impl<const N: usize> Sync for Stack<N> {}

impl<const N: usize> Stack<N> {
    /// A zeroed stack.
    pub const fn new() -> Self {
        assert!(N.is_multiple_of(4096), "stacks are whole pages");
        Stack(UnsafeCell::new([0; N]))
    }

    /// The lowest address of the stack.
    pub fn bottom(&self) -> u64 {
        self.0.get() as u64
    }

    /// The address just past the stack: the initial stack pointer.
    pub fn top(&self) -> u64 {
        self.bottom() + N as u64
    }
}
