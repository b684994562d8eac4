//! The smallest user program: print by both system-call paths, then exit.
#![no_std]
#![no_main]

use pv_user::{getpid, int80, println};

fn main() -> u8 {
    println!("hello from ring 3: pid {} (syscall), pid {} (int 0x80)", getpid(), int80::getpid());
    0
}

pv_user::entry!(main);
