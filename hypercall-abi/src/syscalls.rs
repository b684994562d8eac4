//! The system calls pv-guest offers its user programs: the contract between the guest kernel
//! (`pv-guest`) and its programs (`pv-guest/user`). Numbers follow Linux x86-64 where a call
//! with the same meaning exists.
//!
//! Both entries work the same: `syscall` (bounced through xen-lite in `pv` mode) or `int 0x80`
//! (the fast trap). The number goes in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, the
//! result comes back in `rax`, negative errno on failure (`crate::hypercall::Errno`).

/// `write(fd, buf, len) -> len`: fd 1 and 2 are the console.
pub const SYS_WRITE: u64 = 1;
/// `sbrk(increment) -> old break`: grows or shrinks the heap (pages appear on first touch).
pub const SYS_SBRK: u64 = 12;
/// `yield()`: let another process run.
pub const SYS_YIELD: u64 = 24;
/// `sleep(milliseconds)`.
pub const SYS_SLEEP: u64 = 35;
/// `fork() -> child pid` in the parent, 0 in the child.
pub const SYS_FORK: u64 = 57;
/// `exec(name, len)`: replace this program by the module `name`; returns only on failure.
pub const SYS_EXEC: u64 = 59;
/// `wait(status: *mut u64) -> pid`: wait for a child to end; `ECHILD` if there is none.
pub const SYS_WAIT: u64 = 61;
/// `getarg(index, buf, len) -> length`: the `index`-th program named on the domain's command
/// line after `init` (how `init` learns what to run); `ENOENT` past the last.
pub const SYS_GETARG: u64 = 1000;
/// `hvstats(buf, len) -> bytes`: the hypervisor's counters for this domain
/// (`crate::hypercall::Stats` as little-endian words, as the `stats` hypercall returns them),
/// for measuring what a system call costs; `ENOSYS` with no hypervisor underneath.
pub const SYS_HVSTATS: u64 = 1001;
/// `null_hypercalls(n) -> n`: the kernel makes `n` `xen_version` hypercalls, the cheapest
/// there is, for measuring the hypercall path from a user program; `ENOSYS` with no hypervisor.
pub const SYS_NULL_HYPERCALLS: u64 = 1002;
/// `pte_updates(batch, rounds) -> batch * rounds`: the kernel rewrites `batch` entries (1 to
/// 512) of a scratch page table, `rounds` times, one page-table update call per round
/// (`mmu_update` in `pv`, direct stores and a TLB flush in `hvm`), for measuring what a PTE
/// update costs by batch size.
pub const SYS_PTE_UPDATES: u64 = 1003;
/// The exit status of a process ended by an exception: this plus the vector.
pub const STATUS_KILLED_BY: u64 = 128;
/// `getpid() -> pid`.
pub const SYS_GETPID: u64 = 39;
/// `exit(status)`: does not return.
pub const SYS_EXIT: u64 = 60;

/// Where the first user program is linked; each links 16 MiB above the one before
/// (`pv-guest/user/build.rs`), so their symbols can be loaded into gdb side by side.
pub const USER_BASE: u64 = 0x40_0000;
/// One past the highest user stack address; the stack grows down from here.
pub const USER_STACK_TOP: u64 = 0x7fff_0000_0000;
/// Pages of user stack mapped at start.
pub const USER_STACK_PAGES: u64 = 4;
