//! A program that misbehaves: ridiculous pointers to `write` (each must come back EFAULT, the
//! kernel unharmed), then a null dereference (the kernel must end this program, not itself).
#![no_std]
#![no_main]

use hypercall_abi::hypercall::Errno;
use hypercall_abi::syscalls::SYS_WRITE;
use pv_user::println;

fn main() -> u8 {
    let pointers: [(&str, u64); 5] = [
        ("xen-lite's range", 0xffff_8000_0000_0000),
        ("the guest kernel", 0xffff_ffff_8010_0000),
        ("a wrap-around", u64::MAX - 3),
        ("an unmapped page", 0x1000),
        ("null", 0),
    ];
    let mut refused = 0;
    for (what, pointer) in pointers {
        // SAFETY: the kernel must check the pointer; that is what is being tested.
        let result = unsafe { pv_user::syscall3(SYS_WRITE, 1, pointer, 8) };
        if Errno::from_return(result) == Some(Errno::EFAULT) {
            refused += 1;
        } else {
            println!("faulty: write from {what} returned {result:#x}");
        }
    }
    println!("faulty: {refused} of {} ridiculous pointers refused with EFAULT", pointers.len());
    // SAFETY: deliberately faults; the kernel ends the program.
    let value = unsafe { core::ptr::read_volatile(core::ptr::null::<u8>()) };
    println!("faulty: read {value} from address 0?");
    0
}

pv_user::entry!(main);
