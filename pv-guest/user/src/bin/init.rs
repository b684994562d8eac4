//! Process 1: runs, one after the other, the programs named on the domain's command line after
//! `init` (`getarg`), each in a child (`fork` + `exec`), and reports their exit statuses. Words
//! with a `=` are options for the programs (they read them with `getarg` too), not programs.
#![no_std]
#![no_main]

use pv_user::{exec, exit, fork, getarg, println, wait};

fn main() -> u8 {
    let mut failures = 0;
    let mut index = 0;
    let mut runs = 0;
    let mut name = [0u8; 31];
    while let Ok(len) = getarg(index, &mut name) {
        let program = core::str::from_utf8(&name[..len]).unwrap_or("?");
        index += 1;
        if program.contains('=') {
            continue;
        }
        runs += 1;
        match fork() {
            Ok(0) => {
                let errno = exec(program);
                println!("init: cannot exec {program}: {errno:?}");
                exit(127);
            }
            Ok(_) => match wait() {
                Ok((pid, status)) => {
                    println!("init: {program} (pid {pid}) exited with status {status}");
                    failures += u8::from(status != 0);
                }
                Err(errno) => {
                    println!("init: wait failed: {errno:?}");
                    failures += 1;
                }
            },
            Err(errno) => {
                println!("init: fork failed: {errno:?}");
                failures += 1;
            }
        }
    }
    println!("init: {runs} programs run, {failures} failed");
    u8::from(failures != 0)
}

pv_user::entry!(main);
