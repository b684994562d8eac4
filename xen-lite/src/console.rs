//! The console: the `log` backend that puts xen-lite's messages on the serial line.
//!
//! Every line starts with whose it is: `[xen]` for the hypervisor, `[domN]` for a domain's
//! console output. Levels other than `info` are named after the prefix, so `grep '\[xen\] WARN'`
//! finds every warning.

use core::fmt::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::serial;

/// Serialises whole lines so two writers never interleave within a line.
static LINE_LOCK: Mutex<()> = Mutex::new(());

struct SerialWriter;

impl Write for SerialWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        serial::write_bytes(s.as_bytes());
        Ok(())
    }
}

struct Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let _line = LINE_LOCK.lock();
            write_line(record.level(), *record.args());
        }
    }

    fn flush(&self) {
        serial::flush();
    }
}

fn write_line(level: Level, args: fmt::Arguments<'_>) {
    let tag = match level {
        Level::Info => "",
        Level::Error => "ERROR ",
        Level::Warn => "WARN ",
        Level::Debug => "DEBUG ",
        Level::Trace => "TRACE ",
    };
    // Writing to the UART cannot fail.
    let _ = writeln!(SerialWriter, "[xen] {tag}{args}");
}

static CONSOLE: Console = Console;

/// Initialises the UART and makes it the `log` backend, showing `level` and above.
pub fn init(level: LevelFilter) {
    serial::init();
    // Only fails if a logger is already set, which would be a second call: keep the first.
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(level);
}

/// Changes the level shown (from the command line's `loglevel=`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Prints one line of a domain's console as `[domN] text`. Bytes outside printable ASCII are
/// shown as `?` so a guest cannot send control sequences to the terminal.
pub fn guest_line(domain: u32, text: &[u8]) {
    let _line = LINE_LOCK.lock();
    let _ = write!(SerialWriter, "[dom{domain}] ");
    for &byte in text {
        let shown = if byte == b' ' || byte.is_ascii_graphic() { byte } else { b'?' };
        serial::write_bytes(&[shown]);
    }
    serial::write_bytes(b"\n");
}

/// Writes one `[xen]` line without taking the line lock: for the fatal path, which may have
/// interrupted a writer holding it.
pub fn fatal_line(args: fmt::Arguments<'_>) {
    write_line(Level::Error, args);
}
