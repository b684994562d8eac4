//! In the spirit of xv6's `usertests`: every system call, fork/exec/wait trees, heap growth and
//! shrinking, pages that appear on first touch, ridiculous pointers, and children that fault.
//! Prints one line per test, then `usertests: N passed, M failed`, and exits with M.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::Errno;
use hypercall_abi::syscalls::{STATUS_KILLED_BY, SYS_WRITE};
use pv_user::{exec, exit, fork, getpid, int80, println, sbrk, sleep, wait, write, yield_now};

static PASSED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

fn check(name: &str, ok: bool) {
    if ok {
        PASSED.fetch_add(1, Ordering::Relaxed);
        println!("usertests: ok {name}");
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        println!("usertests: FAIL {name}");
    }
}

/// Runs `child` in a forked child and returns its exit status.
fn in_child(child: fn() -> u8) -> Option<u64> {
    match fork() {
        Ok(0) => exit(child()),
        Ok(pid) => match wait() {
            Ok((reaped, status)) if reaped == pid => Some(status),
            _ => None,
        },
        Err(_) => None,
    }
}

/// Changed by a child after `fork`: the parent must not see it.
static SHARED: AtomicU64 = AtomicU64::new(1);

fn recurse(depth: u64) -> u64 {
    let padding = [depth; 64]; // 512 bytes a frame: 64 frames walk 32 KiB down the stack
    if depth == 0 {
        padding[0]
    } else {
        recurse(depth - 1) + core::hint::black_box(padding)[1]
    }
}

/// `write(1, pointer, 8)` with a pointer the kernel must check.
fn write_from(pointer: u64) -> Result<u64, Errno> {
    // SAFETY: the kernel must refuse a bad pointer rather than use it; that is the test.
    pv_user::check(unsafe { pv_user::syscall3(SYS_WRITE, 1, pointer, 8) })
}

/// Writes a pattern over `[start, start + len)` and reads it back.
fn fill_and_check(start: u64, len: usize) -> bool {
    let heap = start as *mut u8;
    // SAFETY: callers pass heap this program owns (after a successful `sbrk`).
    unsafe {
        (0..len).for_each(|i| heap.add(i).write_volatile(i as u8));
        (0..len).all(|i| heap.add(i).read_volatile() == i as u8)
    }
}

/// Reads one byte at `address` (which may fault: the tests use it to make children fault).
fn read_byte(address: u64) -> u8 {
    // SAFETY: the callers want the fault when the address is not this program's.
    unsafe { (address as *const u8).read_volatile() }
}

/// Burns CPU time without entering the kernel.
fn spin(iterations: u64) {
    for i in 0..iterations {
        core::hint::black_box(i);
    }
}

/// Raises the hardware #DE (not Rust's division check).
fn divide_by_zero() -> u8 {
    // SAFETY: faults on purpose; the kernel ends the child.
    unsafe {
        core::arch::asm!(
            "xor ecx, ecx",
            "xor eax, eax",
            "xor edx, edx",
            "div ecx",
            options(noreturn)
        )
    }
}

/// Raises #UD.
fn undefined_opcode() -> u8 {
    // SAFETY: faults on purpose; the kernel ends the child.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

/// Executes `hlt` in ring 3: #GP.
fn halt() -> u8 {
    // SAFETY: faults on purpose; the kernel ends the child.
    unsafe { core::arch::asm!("hlt", options(noreturn)) }
}

fn main() -> u8 {
    check("getpid by both paths", getpid() > 1 && getpid() == int80::getpid());
    check("write to fd 3 is EINVAL", pv_user::check(write(3, b"x")) == Err(Errno::EINVAL));
    let ridiculous = [0, 0x1000, 0xffff_8000_0000_0000, 0xffff_ffff_8010_0000, u64::MAX - 3];
    let refused = ridiculous.iter().filter(|&&p| write_from(p) == Err(Errno::EFAULT)).count();
    check("ridiculous pointers to write are EFAULT", refused == ridiculous.len());
    check("yield", yield_now() == Ok(0));
    check("sleep 20 ms", sleep(20) == Ok(0));

    check("fork, exit(42), wait", in_child(|| 42) == Some(42));
    let mut statuses = 0;
    let mut children = 0;
    for i in 0..5u8 {
        match fork() {
            Ok(0) => exit(i),
            Ok(_) => children += 1,
            Err(_) => {}
        }
    }
    while let Ok((_, status)) = wait() {
        statuses += status;
        children -= 1;
    }
    check("five children, all reaped", children == 0 && statuses == 10);
    check("wait with no child is ECHILD", wait() == Err(Errno::ECHILD));
    check(
        "a tree: a child forks a grandchild",
        in_child(|| match fork() {
            Ok(0) => 7,
            Ok(_) => match wait() {
                Ok((_, 7)) => 0,
                _ => 1,
            },
            Err(_) => 2,
        }) == Some(0),
    );

    check(
        "exec runs another program",
        in_child(|| {
            exec("hello");
            99
        }) == Some(0),
    );
    check(
        "exec of a missing program is ENOENT",
        in_child(|| u8::from(exec("no-such-program") != Errno::ENOENT)) == Some(0),
    );

    SHARED.store(1, Ordering::Relaxed);
    check(
        "a child's writes stay in the child",
        in_child(|| {
            SHARED.store(2, Ordering::Relaxed);
            0
        }) == Some(0)
            && SHARED.load(Ordering::Relaxed) == 1,
    );

    let start = sbrk(0).unwrap_or(0);
    let grown = sbrk(3 * 4096).is_ok();
    let touched = grown && fill_and_check(start, 3 * 4096);
    check("sbrk grows the heap, pages appear on first touch", touched);
    check(
        "sbrk shrinks it",
        sbrk(-2 * 4096) == Ok(start + 3 * 4096) && sbrk(0) == Ok(start + 4096),
    );
    static FREED: AtomicU64 = AtomicU64::new(0);
    FREED.store(start + 4096, Ordering::Relaxed);
    check(
        "touching a freed heap page kills the child",
        in_child(|| read_byte(FREED.load(Ordering::Relaxed))) == Some(STATUS_KILLED_BY + 14),
    );
    check("sbrk past the limit is ENOMEM", sbrk(1 << 40) == Err(Errno::ENOMEM));
    check("the stack grows on first touch (32 KiB deep)", recurse(64) == (1..=64).sum::<u64>());

    // Preemption: a child that spins without a system call must not keep a second child from
    // running. Without preemption the spinner (forked first) would end first.
    if fork() == Ok(0) {
        spin(30_000_000);
        exit(1);
    }
    if fork() == Ok(0) {
        exit(2);
    }
    let first = wait().map(|(_, status)| status);
    let second = wait().map(|(_, status)| status);
    check("a spinning process is preempted", first == Ok(2) && second == Ok(1));

    check(
        "a child dividing by zero is killed (#DE)",
        in_child(divide_by_zero) == Some(STATUS_KILLED_BY),
    );
    check(
        "a child executing ud2 is killed (#UD)",
        in_child(undefined_opcode) == Some(STATUS_KILLED_BY + 6),
    );
    check("a child executing hlt is killed (#GP)", in_child(halt) == Some(STATUS_KILLED_BY + 13));
    check(
        "a child reading kernel memory is killed (#PF)",
        in_child(|| read_byte(0xffff_ffff_8010_0000)) == Some(STATUS_KILLED_BY + 14),
    );

    let (passed, failed) = (PASSED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed));
    println!("usertests: {passed} passed, {failed} failed");
    if failed == 0 {
        println!("ALL TESTS PASSED");
    }
    failed.min(99) as u8
}

pv_user::entry!(main);
