//! `cargo xtask`: the one entry point for building, booting, testing and diagnosing xen-lite.
//!
//! ```text
//! cargo xtask run    [--mode M] [--emulator qemu|bochs|kvm] [--guests a,b] [--release]
//!                    [--timeout SECS] [-- XEN_LITE_CMDLINE_WORDS...]
//! cargo xtask test   [--filter P] [--timeout SECS] [--jobs N] [--release]
//! cargo xtask gdb    [--mode M] [--guests a,b] [--no-gdb | --batch FILE | --walkthrough]
//! cargo xtask doctor
//! ```
//!
//! Every command sets up what it needs first (toolchains, the cached bootloader image builder,
//! Debian packages) and ends with one status line and an exit code that tells success.
//!
//! Modules, in reading order:

mod cli;
mod process;
mod setup;
mod artifacts;
mod emulator;
mod run;
mod bench;
mod figures;
mod census;
mod boot_tests;
mod checks;
mod doc_checks;
mod notes;
mod book;
mod test;
mod gdb;
mod hostile;
mod doctor;
mod labs;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        cli::Command::Help => {
            println!("{}", cli::USAGE);
            println!("\n{}", run::workloads_help());
            return ExitCode::SUCCESS;
        }
        cli::Command::Run(options) => run::run(&options),
        cli::Command::Bench(options) => bench::bench(&options),
        cli::Command::Census(options) => census::census(&options),
        cli::Command::Notes(update) => notes::notes(update),
        cli::Command::Book => book::book(),
        cli::Command::Test(options) => test::test(&options),
        cli::Command::Gdb(options) => gdb::gdb(&options),
        cli::Command::Handout(labs, seed, out) => {
            labs::handout::handout(&labs, seed, &out).map(|()| 0)
        }
        cli::Command::Grade(options) => labs::grade::grade(&options),
        cli::Command::Doctor => doctor::doctor(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}
