//! `image-builder KERNEL RAMDISK OUT`: wraps xen-lite and a boot bundle into a BIOS disk image.
//!
//! The `bootloader` crate embeds its BIOS stages at build time, which needs a nightly toolchain;
//! the xtask builds this program once with the pinned nightly and calls it for every image.

use std::path::PathBuf;
use std::process::ExitCode;

use bootloader::{BootConfig, DiskImageBuilder};
use bootloader_boot_config::LevelFilter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel, ramdisk, out] = args.as_slice() else {
        eprintln!("usage: image-builder KERNEL RAMDISK OUT");
        return ExitCode::from(2);
    };
    // The bootloader's own log would interleave with xen-lite's console and, in Bochs, is not
    // paced to the UART: keep serial for xen-lite, but let bootloader errors through.
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config.serial_logging = true;
    config.log_level = LevelFilter::Warn;
    let mut builder = DiskImageBuilder::new(PathBuf::from(kernel));
    builder.set_ramdisk(PathBuf::from(ramdisk));
    builder.set_boot_config(&config);
    match builder.create_bios_image(&PathBuf::from(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("image-builder: cannot create {out}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
