//! Processes: user programs in ring 3, each in its own address space, scheduled by the kernel.
//!
//! Every way user code enters the kernel (a system call, a fault, an event) arrives with the
//! interrupted context's [`TrapFrame`], and the kernel switches processes exactly the way
//! xen-lite switches domains: it saves that frame into the running process and loads another
//! process's frame in its place; the return path then resumes whichever process the frame now
//! describes. So the kernel needs no stack per process. A process that waits (`wait`, `sleep`)
//! is simply not chosen; when none can run, the frame becomes the idle loop's, which blocks the
//! domain until an event (the timer, every 10 ms) brings the kernel back.
//!
//! Handlers run with events masked (`traps::handle`), so the table's lock is never contended.

use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::frame::TrapFrame;
use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::selectors::{FLAT_RING3_CS, FLAT_RING3_DS};
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE};
use hypercall_abi::syscalls::*;
use hypercall_abi::StartInfo;
use spin::{Mutex, Once};

use crate::address_space::AddressSpace;
use crate::traps::Caught;
use crate::{bench_calls, platform, println, program};

/// Most processes at once.
pub const MAX_PROCESSES: usize = 16;
/// Largest heap (`sbrk`).
const MAX_HEAP: u64 = 8 << 20;
/// Pages below the initial stack that may be touched into existence.
const STACK_GROWTH_PAGES: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Runnable,
    /// Until this system time (ns).
    Sleeping(u64),
    /// In `wait`, for any child.
    Waiting,
    /// Ended with this status; waits to be reaped by its parent.
    Zombie(u64),
}

struct Process {
    pid: u64,
    parent: u64,
    state: State,
    frame: TrapFrame,
    space: Option<AddressSpace>,
    heap_start: u64,
    brk: u64,
}

impl Process {
    const FREE: Process = Process {
        pid: 0,
        parent: 0,
        state: State::Free,
        frame: TrapFrame {
            rax: 0,
            rbx: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            rbp: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            vector: 0,
            error_code: 0,
            rip: 0,
            cs: 0,
            rflags: 0,
            rsp: 0,
            ss: 0,
        },
        space: None,
        heap_start: 0,
        brk: 0,
    };
}

struct Table {
    procs: [Process; MAX_PROCESSES],
    current: Option<usize>,
    next_pid: u64,
    /// Status of pid 1 once it has ended: the domain's exit code.
    init_status: Option<u64>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    procs: [const { Process::FREE }; MAX_PROCESSES],
    current: None,
    next_pid: 1,
    init_status: None,
});
static ACTIVE: AtomicBool = AtomicBool::new(false);
static INFO: Once<&'static StartInfo> = Once::new();

fn info() -> &'static StartInfo {
    INFO.get().expect("process::start ran")
}

/// Whether the kernel is running processes (so traps from ring 3 belong to them).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The kernel's own level-4 table (machine address): loaded while no process runs.
fn kernel_l4() -> u64 {
    crate::page_tables::start_of_day_root(info())
}

/// A frame that starts a program at `entry` in ring 3.
fn user_frame(entry: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        cs: u64::from(FLAT_RING3_CS),
        rflags: 0x202,
        rsp: USER_STACK_TOP,
        ss: u64::from(FLAT_RING3_DS),
        ..Process::FREE.frame
    }
}

const IDLE_STACK_SIZE: usize = 32 * 1024;
#[repr(C, align(16))]
struct IdleStack(core::cell::UnsafeCell<[u8; IDLE_STACK_SIZE]>);
// SAFETY: only the CPU uses these bytes, as the idle loop's stack.
unsafe impl Sync for IdleStack {}
static IDLE_STACK: IdleStack = IdleStack(core::cell::UnsafeCell::new([0; IDLE_STACK_SIZE]));

/// The kernel's idle loop: sleep until an event; the event's handler schedules.
extern "C" fn idle_loop() -> ! {
    loop {
        // Blocking enables events; the upcall that wakes us runs `after_event`.
        let _ = platform::block();
    }
}

fn idle_frame() -> TrapFrame {
    TrapFrame {
        rip: idle_loop as *const () as u64,
        cs: u64::from(platform::KERNEL_CS),
        rflags: 0x202,
        rsp: IDLE_STACK.0.get() as u64 + IDLE_STACK_SIZE as u64,
        ss: u64::from(platform::KERNEL_SS),
        ..Process::FREE.frame
    }
}

/// Starts process 1 from module `name` and enters it; never returns.
pub fn start(info: &'static StartInfo, name: &str) -> Result<core::convert::Infallible, Errno> {
    INFO.call_once(|| info);
    crate::timer::start()?;
    let mut table = TABLE.lock();
    let slot = table.spawn(name, 0)?;
    let frame = table.procs[slot].frame;
    table.current = Some(slot);
    table.activate(slot)?;
    ACTIVE.store(true, Ordering::Relaxed);
    drop(table);
    // SAFETY: the frame starts process 1 in ring 3 in its address space, now loaded.
    unsafe { crate::traps::enter(&frame, platform::kernel_stack_top()) }
}

impl Table {
    fn free_slot(&self) -> Result<usize, Errno> {
        self.procs.iter().position(|p| p.state == State::Free).ok_or(Errno::ENOSPC)
    }

    /// A new process running module `name`.
    fn spawn(&mut self, name: &str, parent: u64) -> Result<usize, Errno> {
        let slot = self.free_slot()?;
        let (space, entry, heap) = program::load_module(info(), name)?;
        let pid = self.next_pid;
        self.next_pid += 1;
        self.procs[slot] = Process {
            pid,
            parent,
            state: State::Runnable,
            frame: user_frame(entry),
            space: Some(space),
            heap_start: heap,
            brk: heap,
        };
        Ok(slot)
    }

    fn activate(&self, slot: usize) -> Result<(), Errno> {
        let space = self.procs[slot].space.as_ref().ok_or(Errno::EINVAL)?;
        space.activate()?;
        program::set_current(space.l4());
        Ok(())
    }

    /// Saves `frame` into the running process and loads the next runnable one (round robin),
    /// or the idle loop, or ends the domain when no process is left.
    fn schedule(&mut self, frame: &mut TrapFrame) {
        if let Some(c) = self.current {
            if !matches!(self.procs[c].state, State::Free | State::Zombie(_)) {
                self.procs[c].frame = *frame;
            }
        }
        let now = platform::now_ns().unwrap_or(0);
        for process in self.procs.iter_mut() {
            if matches!(process.state, State::Sleeping(until) if now >= until) {
                process.state = State::Runnable;
            }
        }
        let start = self.current.map_or(0, |c| c + 1);
        let next = (0..MAX_PROCESSES)
            .map(|i| (start + i) % MAX_PROCESSES)
            .find(|&i| self.procs[i].state == State::Runnable);
        match next {
            Some(n) => {
                if self.current != Some(n) && self.activate(n).is_err() {
                    println!("cannot switch to pid {}", self.procs[n].pid);
                    platform::shutdown(crate::EXIT_PANIC);
                }
                *frame = self.procs[n].frame;
                self.current = Some(n);
            }
            None if self
                .procs
                .iter()
                .any(|p| matches!(p.state, State::Sleeping(_) | State::Waiting)) =>
            {
                *frame = idle_frame();
                self.current = None;
            }
            None => {
                let status = self.init_status.unwrap_or(0);
                println!("init exited with status {status}; no process is left");
                platform::shutdown(status.min(99) as u8)
            }
        }
    }

    /// Ends process `slot` with `status`: frees its memory, hands its children to init, and
    /// lets a waiting parent collect it at once.
    fn exit(&mut self, slot: usize, status: u64) {
        let pid = self.procs[slot].pid;
        if pid == 1 {
            self.init_status = Some(status);
        }
        let _ = platform::load_root(kernel_l4());
        program::set_current(0);
        if let Some(space) = self.procs[slot].space.take() {
            space.destroy();
        }
        self.procs[slot].state = State::Zombie(status);
        for child in self.procs.iter_mut().filter(|p| p.parent == pid && p.state != State::Free) {
            child.parent = 1;
        }
        let parent = self
            .procs
            .iter()
            .position(|p| p.pid == self.procs[slot].parent && p.state == State::Waiting);
        match parent {
            Some(p) => self.reap(p, slot),
            // Orphans of init (or init itself) have no one to wait for them.
            None if self.procs[slot].parent == 0 => self.procs[slot].state = State::Free,
            None => {}
        }
    }

    /// Parent `p` collects zombie child `z`: the child's pid in `rax`, its status at the
    /// pointer the parent passed to `wait`.
    fn reap(&mut self, p: usize, z: usize) {
        let State::Zombie(status) = self.procs[z].state else { return };
        let pointer = self.procs[p].frame.rdi;
        if pointer != 0 {
            let _ = self.write_user(p, pointer, &status.to_le_bytes());
        }
        self.procs[p].frame.rax = self.procs[z].pid;
        self.procs[p].state = State::Runnable;
        self.procs[z] = Process::FREE;
    }

    /// Writes `bytes` at user address `va` of process `slot` (which need not be the running
    /// one), through the kernel's direct map, after checking every page is writable user memory.
    fn write_user(&self, slot: usize, va: u64, bytes: &[u8]) -> Result<(), Errno> {
        let space = self.procs[slot].space.as_ref().ok_or(Errno::EFAULT)?;
        for (i, byte) in bytes.iter().enumerate() {
            let at = va.checked_add(i as u64).ok_or(Errno::EFAULT)?;
            let (gfn, writable) = space.lookup_page(at & !(PAGE_SIZE - 1)).ok_or(Errno::EFAULT)?;
            if !writable {
                return Err(Errno::EFAULT);
            }
            // SAFETY: the page is the process's, mapped writable for it, and reachable (and
            // writable) in the kernel's direct map.
            unsafe { ((gfn_to_va(gfn) + at % PAGE_SIZE) as *mut u8).write_volatile(*byte) };
        }
        Ok(())
    }
}

/// A system call from the running process. Returns `false` if no process is running.
pub fn syscall(frame: &mut TrapFrame) -> bool {
    if !active() {
        return false;
    }
    let mut table = TABLE.lock();
    let Some(c) = table.current else { return false };
    let result = match frame.rax {
        SYS_WRITE => crate::syscall::write(frame.rdi, frame.rsi, frame.rdx),
        SYS_GETPID => Ok(table.procs[c].pid),
        SYS_GETARG => getarg(&table, c, frame.rdi, frame.rsi, frame.rdx),
        SYS_HVSTATS => hvstats(&table, c, frame.rdi, frame.rsi),
        SYS_NULL_HYPERCALLS => bench_calls::null_hypercalls(frame.rdi),
        SYS_PTE_UPDATES => bench_calls::pte_updates(info().pte_base, frame.rdi, frame.rsi),
        SYS_SBRK => sbrk(&mut table, c, frame.rdi as i64),
        SYS_FORK => fork(&mut table, c, frame),
        SYS_EXEC => exec(&mut table, c, frame),
        SYS_YIELD => {
            frame.rax = 0;
            table.schedule(frame);
            return true;
        }
        SYS_SLEEP => {
            let until = platform::now_ns().unwrap_or(0) + frame.rdi.saturating_mul(1_000_000);
            frame.rax = 0;
            table.procs[c].state = State::Sleeping(until);
            table.schedule(frame);
            return true;
        }
        SYS_EXIT => {
            table.exit(c, frame.rdi);
            table.schedule(frame);
            return true;
        }
        SYS_WAIT => return wait(&mut table, c, frame),
        _ => Err(Errno::ENOSYS),
    };
    // `exec` replaced the frame itself on success.
    if frame.rax != SYS_EXEC || result.is_err() {
        frame.rax = result.unwrap_or_else(Errno::to_return);
    }
    true
}

fn getarg(table: &Table, c: usize, index: u64, buffer: u64, len: u64) -> Result<u64, Errno> {
    let line = info().cmdline().unwrap_or("");
    let word = line.split_whitespace().skip(1).nth(index as usize).ok_or(Errno::ENOENT)?;
    let bytes = &word.as_bytes()[..word.len().min(len as usize)];
    table.write_user(c, buffer, bytes)?;
    Ok(bytes.len() as u64)
}

/// `hvstats(buf, len)`: [`bench_calls::hvstats`], copied to the user's buffer.
fn hvstats(table: &Table, c: usize, buffer: u64, len: u64) -> Result<u64, Errno> {
    let bytes = bench_calls::hvstats()?;
    let n = bytes.len().min(len as usize);
    table.write_user(c, buffer, &bytes[..n])?;
    Ok(n as u64)
}

fn sbrk(table: &mut Table, c: usize, increment: i64) -> Result<u64, Errno> {
    let process = &mut table.procs[c];
    let old = process.brk;
    let new = old.checked_add_signed(increment).ok_or(Errno::ENOMEM)?;
    if new < process.heap_start || new > process.heap_start + MAX_HEAP {
        return Err(Errno::ENOMEM);
    }
    let page_up = |a: u64| a.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    if let Some(space) = process.space.as_mut() {
        let mut page = page_up(new);
        while page < page_up(old) {
            space.unmap(page)?;
            page += PAGE_SIZE;
        }
    }
    process.brk = new;
    Ok(old)
}

fn fork(table: &mut Table, c: usize, frame: &TrapFrame) -> Result<u64, Errno> {
    let slot = table.free_slot()?;
    let space = table.procs[c].space.as_ref().ok_or(Errno::EINVAL)?.duplicate(info())?;
    let pid = table.next_pid;
    table.next_pid += 1;
    let parent = &table.procs[c];
    let child_frame = TrapFrame { rax: 0, ..*frame };
    table.procs[slot] = Process {
        pid,
        parent: parent.pid,
        state: State::Runnable,
        frame: child_frame,
        space: Some(space),
        heap_start: parent.heap_start,
        brk: parent.brk,
    };
    Ok(pid)
}

fn exec(table: &mut Table, c: usize, frame: &mut TrapFrame) -> Result<u64, Errno> {
    let bytes = program::user_bytes(frame.rdi, frame.rsi.min(31))?;
    let mut name = [0u8; 31];
    name[..bytes.len()].copy_from_slice(bytes);
    let name = core::str::from_utf8(&name[..bytes.len()]).map_err(|_| Errno::EINVAL)?;
    let (space, entry, heap) = program::load_module(info(), name)?;
    space.activate()?;
    program::set_current(space.l4());
    let process = &mut table.procs[c];
    if let Some(old) = process.space.replace(space) {
        old.destroy();
    }
    process.heap_start = heap;
    process.brk = heap;
    *frame = user_frame(entry);
    frame.rax = SYS_EXEC; // marks the frame as replaced for `syscall`
    Ok(0)
}

fn wait(table: &mut Table, c: usize, frame: &mut TrapFrame) -> bool {
    let pid = table.procs[c].pid;
    let is_child = |p: &Process| p.parent == pid && p.state != State::Free;
    if !table.procs.iter().any(is_child) {
        frame.rax = Errno::ECHILD.to_return();
        return true;
    }
    table.procs[c].frame = *frame;
    let zombie =
        table.procs.iter().position(|p| is_child(p) && matches!(p.state, State::Zombie(_)));
    if let Some(z) = zombie {
        table.reap(c, z);
        frame.rax = table.procs[c].frame.rax;
        return true;
    }
    table.procs[c].state = State::Waiting;
    table.schedule(frame);
    true
}

/// An exception from the running process: a first touch of its heap or stack gets a zeroed
/// page; anything else ends the process with status 128 + vector. Returns `false` if no
/// process is running.
pub fn fault(frame: &mut TrapFrame, caught: Caught) -> bool {
    if !active() || frame.cs & 3 != 3 {
        return false;
    }
    let mut table = TABLE.lock();
    let Some(c) = table.current else { return false };
    let address = caught.fault_address & !(PAGE_SIZE - 1);
    let process = &mut table.procs[c];
    let in_heap =
        address >= process.heap_start && address < process.brk.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let in_stack =
        (USER_STACK_TOP - STACK_GROWTH_PAGES * PAGE_SIZE..USER_STACK_TOP).contains(&address);
    let not_present = caught.error_code & 1 == 0;
    if caught.vector == 14 && not_present && (in_heap || in_stack) {
        if let Some(space) = process.space.as_mut() {
            if space.map_new(address, true).is_ok() {
                return true; // retry the access
            }
        }
    }
    println!(
        "pid {} killed: vector {} at rip {:#x}, error code {:#x}, fault address {:#x}",
        process.pid, caught.vector, caught.rip, caught.error_code, caught.fault_address
    );
    table.exit(c, STATUS_KILLED_BY + caught.vector);
    table.schedule(frame);
    true
}

/// After an event upcall: the timer ticked, so wake sleepers and let the next process run if
/// the interrupted one was user code or the idle loop.
pub fn after_event(frame: &mut TrapFrame) {
    if !active() {
        return;
    }
    let mut table = TABLE.lock();
    if table.current.is_none() || frame.cs & 3 == 3 {
        table.schedule(frame);
    }
}
