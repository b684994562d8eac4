//! Command-line syntax shared by xen-lite and its guests.
//!
//! A command line is a list of words separated by spaces. A word is a bare `flag` or a
//! `key=value` pair; a value containing spaces is written in double quotes:
//! `mode=native mem=16M domain="hello exit=3"`. There are no escapes.

use core::fmt;

/// One word of a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word<'a> {
    /// Text before `=`, or the whole word.
    pub key: &'a str,
    /// Text after `=` without its quotes; `None` for a bare flag.
    pub value: Option<&'a str>,
}

/// Why a command line could not be split into words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// A `"` at this byte offset is never closed.
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        at: usize,
    },
    /// A closing `"` at this offset is followed by something other than a space.
    TextAfterQuote {
        /// Byte offset of the closing quote.
        at: usize,
    },
    /// A word at this offset starts with `=`.
    EmptyKey {
        /// Byte offset of the word.
        at: usize,
    },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnterminatedQuote { at } => {
                write!(f, "quote at byte {at} is never closed")
            }
            CmdlineError::TextAfterQuote { at } => {
                write!(f, "text follows the closing quote at byte {at} without a space")
            }
            CmdlineError::EmptyKey { at } => write!(f, "word at byte {at} has an empty key"),
        }
    }
}

/// Splits `line` into [`Word`]s; see the module documentation for the syntax.
pub fn words(line: &str) -> Words<'_> {
    Words { line, pos: 0 }
}

/// Iterator returned by [`words`]. After an error it yields nothing more.
pub struct Words<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = Result<Word<'a>, CmdlineError>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.line.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos] == b' ' {
            self.pos += 1;
        }
        if self.pos >= bytes.len() {
            return None;
        }
        let start = self.pos;
        let key_end = start
            + bytes[start..]
                .iter()
                .position(|&b| b == b' ' || b == b'=')
                .unwrap_or(bytes.len() - start);
        let result = self.finish_word(start, key_end);
        if result.is_err() {
            self.pos = bytes.len();
        }
        Some(result)
    }
}

impl<'a> Words<'a> {
    fn finish_word(&mut self, start: usize, key_end: usize) -> Result<Word<'a>, CmdlineError> {
        let bytes = self.line.as_bytes();
        let key = &self.line[start..key_end];
        if key.is_empty() {
            return Err(CmdlineError::EmptyKey { at: start });
        }
        if key_end == bytes.len() || bytes[key_end] == b' ' {
            self.pos = key_end;
            return Ok(Word { key, value: None });
        }
        let value_start = key_end + 1;
        if bytes.get(value_start) == Some(&b'"') {
            let inner = value_start + 1;
            let close = bytes[inner..]
                .iter()
                .position(|&b| b == b'"')
                .map(|i| inner + i)
                .ok_or(CmdlineError::UnterminatedQuote { at: value_start })?;
            if close + 1 < bytes.len() && bytes[close + 1] != b' ' {
                return Err(CmdlineError::TextAfterQuote { at: close });
            }
            self.pos = close + 1;
            return Ok(Word { key, value: Some(&self.line[inner..close]) });
        }
        let end = bytes[value_start..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(bytes.len(), |i| value_start + i);
        self.pos = end;
        Ok(Word { key, value: Some(&self.line[value_start..end]) })
    }
}

/// Parses a decimal number or a `0x` hexadecimal one.
pub fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Parses a byte count with an optional `K`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    parse_u64(digits)?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(line: &str) -> Result<[Option<Word<'_>>; 4], CmdlineError> {
        let mut out = [None; 4];
        for (slot, word) in out.iter_mut().zip(words(line)) {
            *slot = Some(word?);
        }
        Ok(out)
    }

    fn w<'a>(key: &'a str, value: Option<&'a str>) -> Option<Word<'a>> {
        Some(Word { key, value })
    }

    #[test]
    fn splits_flags_pairs_and_quoted_values() {
        assert_eq!(
            all("  mode=native  verbose domain=\"hello exit=3\" mem=16M").unwrap(),
            [
                w("mode", Some("native")),
                w("verbose", None),
                w("domain", Some("hello exit=3")),
                w("mem", Some("16M"))
            ]
        );
        assert_eq!(all("").unwrap(), [None; 4]);
        assert_eq!(all("empty= x=\"\"").unwrap()[..2], [w("empty", Some("")), w("x", Some(""))]);
    }

    #[test]
    fn rejects_broken_quotes_and_empty_keys() {
        assert_eq!(all("a=\"open").unwrap_err(), CmdlineError::UnterminatedQuote { at: 2 });
        assert_eq!(all("a=\"x\"y").unwrap_err(), CmdlineError::TextAfterQuote { at: 4 });
        assert_eq!(all("ok =v").unwrap_err(), CmdlineError::EmptyKey { at: 3 });
        let mut it = words("=v more");
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "nothing after an error");
    }

    #[test]
    fn parses_numbers_and_sizes() {
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("0x2a"), Some(42));
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_size("16M"), Some(16 << 20));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999999G"), None, "overflow");
    }
}
