//! Links every user program at its own fixed address (`user.ld`, `USER_LINK_BASE`): 16 MiB
//! apart from `hypercall_abi::syscalls::USER_BASE`, so that in gdb the symbols of two programs
//! (`--symbols` of both) never claim the same address.

/// The programs in `src/bin`, in the order of their link addresses: a new one goes at the end,
/// so no other program moves.
const PROGRAMS: [&str; 6] = ["init", "hello", "usertests", "faulty", "nullcalls", "bench"];
/// `hypercall_abi::syscalls::USER_BASE`: where the first program is linked.
const USER_BASE: u64 = 0x40_0000;
/// The room each program gets.
const SPACING: u64 = 0x100_0000;

fn main() {
    println!("cargo:rerun-if-changed=user.ld");
    println!("cargo:rerun-if-changed=src/bin");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/user.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    let bins = std::fs::read_dir(format!("{dir}/src/bin")).expect("src/bin is readable");
    for entry in bins.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".rs") else { continue };
        let Some(index) = PROGRAMS.iter().position(|p| *p == name) else {
            panic!("src/bin/{file}: give it a link address by adding \"{name}\" to PROGRAMS in build.rs");
        };
        let base = USER_BASE + index as u64 * SPACING;
        println!("cargo:rustc-link-arg-bin={name}=--defsym=USER_LINK_BASE={base:#x}");
    }
}
