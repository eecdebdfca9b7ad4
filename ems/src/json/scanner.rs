//! A reader of JSON text (RFC 8259) for format B's fixed shape: the caller
//! walks the object it expects, strings are borrowed from the line unless
//! they hold an escape, and values under keys it does not know are checked
//! and skipped.
//!
//! Why not serde_json: in the plugin, serde_json into owned strings took
//! about half of format B's 2.2 µs per event (its generic visitor
//! machinery, and allocating and freeing a dozen strings per event;
//! `cargo xtask bench -p safd --bench ems_reader` under perf), which made
//! format B three times slower than format A and capped ingest near
//! 370 000 events/s. serde_json stays the reference: the tests parse
//! generated lines with both and compare.

use std::borrow::Cow;
use std::fmt;

/// Deeper nesting in a skipped value is refused, as serde_json refuses it:
/// a hostile line cannot exhaust the plugin's stack.
const MAX_DEPTH: u32 = 128;

/// The first byte from `from` on that ends a string's plain run — `"`,
/// `\` or a control character — or `bytes.len()`. Eight bytes at a time
/// (SWAR: the plugin has no SIMD), as most of a line is string content.
fn special_from(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    /// The high bit of every byte of `word` that is below `n` (≤ 0x80);
    /// the lowest one set is exact (a borrow only flags bytes above it).
    fn below(word: u64, n: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS
    }
    let mut i = from;
    for chunk in bytes.get(from..).unwrap_or_default().chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk).map(u64::from_le_bytes) else {
            break;
        };
        let found = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(byte) = bytes.get(i) {
        if matches!(byte, b'"' | b'\\' | 0..=0x1f) {
            return i;
        }
        i += 1;
    }
    i
}

/// What is wrong, and where (a byte column, from 1).
#[derive(Debug)]
pub(crate) struct ScanError {
    pub column: usize,
    pub problem: Cow<'static, str>,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.problem, self.column)
    }
}

/// Whether an object's keys are wanted (read, unescaped) or not.
#[derive(Clone, Copy)]
enum Keys {
    Read,
    Skip,
}

pub(crate) struct Scanner<'a> {
    text: &'a str,
    /// The next byte to read.
    at: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// An error at the current position.
    pub fn fail<T>(&self, problem: impl Into<Cow<'static, str>>) -> Result<T, ScanError> {
        Err(ScanError {
            column: self.at + 1,
            problem: problem.into(),
        })
    }

    /// The next byte that is not whitespace (not consumed).
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), ScanError> {
        if self.eat(byte) {
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }

    /// Nothing but whitespace is left.
    pub fn end(mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.fail("trailing characters after the object"),
        }
    }

    /// `null`, consumed if it is next.
    pub fn null(&mut self) -> bool {
        self.peek();
        self.literal("null")
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.bytes()[self.at..].starts_with(word.as_bytes());
        if found {
            self.at += word.len();
        }
        found
    }

    /// An object: `field` is called with each key, the scanner at its value,
    /// and reads (or skips) that value.
    pub fn object(
        &mut self,
        field: impl FnMut(&mut Self, &str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.object_of(Keys::Read, field)
    }

    fn object_of(
        &mut self,
        keys: Keys,
        mut field: impl FnMut(&mut Self, &str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(b'{', "an object (`{`)")?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.fail("expected a key (a string)");
            }
            let key = match keys {
                Keys::Read => self.string()?,
                Keys::Skip => {
                    self.skip_string()?;
                    Cow::Borrowed("")
                }
            };
            self.expect(b':', "`:` after a key")?;
            field(self, &key)?;
            if !self.eat(b',') {
                return self.expect(b'}', "`,` or `}` in an object");
            }
        }
    }

    /// An array: `element` reads each element.
    pub fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(b'[', "an array (`[`)")?;
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            element(self)?;
            if !self.eat(b',') {
                return self.expect(b']', "`,` or `]` in an array");
            }
        }
    }

    pub fn bool(&mut self) -> Result<bool, ScanError> {
        self.peek();
        if self.literal("true") {
            Ok(true)
        } else if self.literal("false") {
            Ok(false)
        } else {
            self.fail("expected `true` or `false`")
        }
    }

    /// A non-negative integer up to `max` (no fraction, no exponent).
    pub fn unsigned(&mut self, max: u32) -> Result<u32, ScanError> {
        self.peek();
        let bytes = self.bytes();
        let start = self.at;
        let mut value: u64 = 0;
        let mut end = start;
        while let Some(digit @ b'0'..=b'9') = bytes.get(end) {
            // Accumulating stops once past `max`: no overflow, and no
            // overflow check (a 128-bit multiply in wasm32).
            if value <= u64::from(max) {
                value = value * 10 + u64::from(digit - b'0');
            }
            end += 1;
        }
        let digits = end - start;
        let leading_zero = digits > 1 && bytes[start] == b'0';
        let more = matches!(bytes.get(end), Some(b'.' | b'e' | b'E'));
        let value = u32::try_from(value).ok().filter(|value| *value <= max);
        match value {
            Some(value) if digits > 0 && !leading_zero && !more => {
                self.at = end;
                Ok(value)
            }
            _ => self.fail(format!("expected an integer from 0 to {max}")),
        }
    }

    /// A string, borrowed from the text unless it holds an escape.
    pub fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        self.expect(b'"', "a string")?;
        let (text, bytes, start) = (self.text, self.bytes(), self.at);
        // Built only once an escape is met.
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            let i = special_from(bytes, run);
            self.at = i;
            match bytes.get(i) {
                Some(b'"') => {
                    self.at = i + 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(&text[start..i]),
                        Some(mut owned) => {
                            owned.push_str(&text[run..i]);
                            Cow::Owned(owned)
                        }
                    });
                }
                Some(b'\\') => {
                    let (unescaped, len) = self.escape()?;
                    let owned = owned.get_or_insert_with(|| String::with_capacity(i - start + 16));
                    owned.push_str(&text[run..i]);
                    owned.push(unescaped);
                    run = i + len;
                }
                Some(_) => return self.fail("control character in a string (write it escaped)"),
                None => return self.fail("unterminated string"),
            }
        }
    }

    /// The escape at the current position (a backslash): the character
    /// and the escape's length.
    fn escape(&self) -> Result<(char, usize), ScanError> {
        let simple = match self.bytes().get(self.at + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(),
            _ => return self.fail("invalid escape in a string"),
        };
        Ok((simple, 2))
    }

    /// `\uXXXX`, or a surrogate pair of two.
    fn unicode_escape(&self) -> Result<(char, usize), ScanError> {
        let first = self.hex4(self.at + 2)?;
        match first {
            0xD800..=0xDBFF => {
                let after = self.at + 6;
                if self.bytes().get(after..after + 2) != Some(b"\\u") {
                    return self.fail("lone leading surrogate in a \\u escape");
                }
                let second = self.hex4(after + 2)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return self.fail("lone leading surrogate in a \\u escape");
                }
                let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                char::from_u32(code)
                    .map(|c| (c, 12))
                    .map_or_else(|| self.fail("invalid \\u escape"), Ok)
            }
            0xDC00..=0xDFFF => self.fail("lone trailing surrogate in a \\u escape"),
            code => char::from_u32(code)
                .map(|c| (c, 6))
                .map_or_else(|| self.fail("invalid \\u escape"), Ok),
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, ScanError> {
        let digits = self.bytes().get(at..at + 4);
        let value = digits.and_then(|digits| {
            digits.iter().try_fold(0u32, |value, digit| {
                char::from(*digit).to_digit(16).map(|d| value * 16 + d)
            })
        });
        value.map_or_else(|| self.fail("expected four hex digits after \\u"), Ok)
    }

    /// Any JSON value, checked and not kept.
    pub fn skip_value(&mut self) -> Result<(), ScanError> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Result<(), ScanError> {
        if depth >= MAX_DEPTH {
            return self.fail("values nested too deeply");
        }
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => self.object_of(Keys::Skip, |scanner, _| scanner.skip_nested(depth + 1)),
            Some(b'[') => self.array(|scanner| scanner.skip_nested(depth + 1)),
            Some(b't' | b'f') => self.bool().map(drop),
            Some(b'n') if self.null() => Ok(()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.fail("expected a value"),
        }
    }

    /// A string not kept. Its escapes are checked for their form only: a
    /// lone surrogate passes, as it passes serde_json in an ignored value.
    fn skip_string(&mut self) -> Result<(), ScanError> {
        self.expect(b'"', "a string")?;
        let bytes = self.bytes();
        let mut i = self.at;
        loop {
            i = special_from(bytes, i);
            self.at = i;
            match bytes.get(i) {
                Some(b'"') => {
                    self.at = i + 1;
                    return Ok(());
                }
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        self.hex4(i + 2)?;
                        i += 6;
                    }
                    _ => return self.fail("invalid escape in a string"),
                },
                Some(_) => return self.fail("control character in a string (write it escaped)"),
                None => return self.fail("unterminated string"),
            }
        }
    }

    /// A number of any form: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), ScanError> {
        let bytes = self.bytes();
        let mut i = self.at;
        let digits = |i: &mut usize| {
            let from = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let integer_start = i;
        let integer = digits(&mut i);
        let mut valid = integer == 1 || (integer > 1 && bytes[integer_start] != b'0');
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            valid &= digits(&mut i) > 0;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            valid &= digits(&mut i) > 0;
        }
        if !valid {
            return self.fail("invalid number");
        }
        self.at = i;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn special_bytes_are_found_where_a_byte_loop_finds_them(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, 0x20u8..=0x7f],
                0..40,
            ),
            from in 0usize..45,
        ) {
            let naive = (from..bytes.len())
                .find(|i| matches!(bytes[*i], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(bytes.len().max(from));
            prop_assert_eq!(special_from(&bytes, from), naive);
        }
    }
}
