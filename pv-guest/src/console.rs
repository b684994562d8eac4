//! `print!` and `println!` for the guest kernel, over `platform::console_write`.

use core::fmt::{self, Write};

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::platform::console_write(s.as_bytes());
        Ok(())
    }
}

/// Formats to the console; used by the macros.
pub fn print(args: fmt::Arguments<'_>) {
    // The platform console cannot fail.
    let _ = Console.write_fmt(args);
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::print(format_args!($($arg)*)));
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($arg)*))));
}
