//! Cutting complete records out of the bytes of a log file.
//!
//! A reader reads a file from an offset and hands the bytes here; what
//! comes back are the complete records and the offset after the last of
//! them, where the next read starts. A line is complete once its newline
//! is there. In format A a record is a header line plus the indented
//! continuation lines after it, so the last record of a file is complete
//! only once the next header line has started — or, when the file is known
//! to be finished (a newer file exists), at its last newline.
//!
//! Blank lines carry nothing and are skipped. Bytes that are not UTF-8 are
//! replaced (U+FFFD) in the record's text; the record then fails to parse
//! and is emitted flagged with that text, never dropped.

use crate::Format;
use std::borrow::Cow;

/// One complete record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of its first byte, relative to the buffer.
    pub start: usize,
    /// Offset after its last newline.
    pub end: usize,
    /// Its text without the final newline (lossy UTF-8).
    pub text: Cow<'a, str>,
}

/// The complete records in `bytes`, and the offset where reading resumes
/// (after the last complete record, or after blank lines that follow it).
/// `finished`: no more bytes will be appended to this file.
pub fn records(bytes: &[u8], format: Format, finished: bool) -> (Vec<Record<'_>>, usize) {
    records_up_to(bytes, format, finished, usize::MAX)
}

/// Like [`records`], but stops after `limit` records (the resume offset is
/// then right after the last one), so a reader pays only for what it takes.
pub fn records_up_to(
    bytes: &[u8],
    format: Format,
    finished: bool,
    limit: usize,
) -> (Vec<Record<'_>>, usize) {
    let mut out: Vec<Record<'_>> = Vec::new();
    if limit == 0 {
        return (out, 0);
    }
    let mut resume = 0;
    // The format A record being assembled: (start, end so far).
    let mut open: Option<(usize, usize)> = None;
    let mut line_start = 0;
    while let Some(newline) = memchr::memchr(b'\n', &bytes[line_start..]) {
        let line_end = line_start + newline + 1;
        let line = &bytes[line_start..line_start + newline];
        let blank = line.iter().all(|b| b.is_ascii_whitespace());
        match format {
            Format::B => {
                if !blank {
                    out.push(record(bytes, line_start, line_end));
                }
                resume = line_end;
                if out.len() == limit {
                    return (out, resume);
                }
            }
            Format::A => {
                if blank {
                    if open.is_none() {
                        resume = line_end;
                    }
                } else if crate::text::is_continuation(line) && open.is_some() {
                    if let Some((_, end)) = open.as_mut() {
                        *end = line_end;
                    }
                } else {
                    // A header (or stray continuation at the very start,
                    // which becomes its own unparsable record): the open
                    // record is complete.
                    if let Some((start, end)) = open.take() {
                        out.push(record(bytes, start, end));
                        resume = end;
                        if out.len() == limit {
                            return (out, resume);
                        }
                    }
                    open = Some((line_start, line_end));
                }
            }
        }
        line_start = line_end;
    }
    if finished && let Some((start, end)) = open.take() {
        out.push(record(bytes, start, end));
        resume = end;
    }
    // With no record open, everything before the unterminated tail is
    // consumed (what follows the last record are blank lines).
    if open.is_none() {
        resume = line_start;
    }
    (out, resume)
}

fn record(bytes: &[u8], start: usize, end: usize) -> Record<'_> {
    let mut body = &bytes[start..end];
    while let Some((b'\n' | b'\r', rest)) = body.split_last() {
        body = rest;
    }
    // Valid UTF-8 is checked a word at a time; only invalid bytes take the
    // slower replacing path.
    let text = match std::str::from_utf8(body) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(body),
    };
    Record { start, end, text }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn a_limit_stops_right_after_the_last_record_taken() {
        let bytes = b"{1}\n{2}\n{3}\n";
        let (found, resume) = records_up_to(bytes, Format::B, false, 2);
        assert_eq!(found.len(), 2);
        assert_eq!(resume, 8);
        let bytes = b"24 A\n  a\n24 B\n24 C\n";
        let (found, resume) = records_up_to(bytes, Format::A, true, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(resume, 9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(bytes: &[u8], format: Format, finished: bool) -> (Vec<String>, usize) {
        let (records, resume) = records(bytes, format, finished);
        (
            records.into_iter().map(|r| r.text.into_owned()).collect(),
            resume,
        )
    }

    #[test]
    fn format_a_holds_the_last_record_until_the_next_header() {
        let bytes = b"24-01-01 A\n  cont\n24-01-01 B\n  more\n";
        let (got, resume) = texts(bytes, Format::A, false);
        assert_eq!(got, ["24-01-01 A\n  cont"]);
        assert_eq!(resume, 18);
        let (got, resume) = texts(bytes, Format::A, true);
        assert_eq!(got, ["24-01-01 A\n  cont", "24-01-01 B\n  more"]);
        assert_eq!(resume, bytes.len());
    }

    #[test]
    fn a_partial_line_is_never_a_record() {
        let bytes = b"{\"a\":1}\n{\"b\":";
        let (got, resume) = texts(bytes, Format::B, true);
        assert_eq!(got, ["{\"a\":1}"]);
        assert_eq!(resume, 8);
        let (got, resume) = texts(b"24-01-01 A\n24-01-01 B", Format::A, true);
        assert_eq!(got, ["24-01-01 A"]);
        assert_eq!(resume, 11);
    }

    #[test]
    fn blank_lines_and_bad_bytes() {
        let (got, resume) = texts(b"\n\n{1}\n\n\r\n{2}\n", Format::B, false);
        assert_eq!(got, ["{1}", "{2}"]);
        assert_eq!(resume, 13);
        let (got, _) = texts(b"\xff\xfe bad\n", Format::B, false);
        assert_eq!(got, ["\u{fffd}\u{fffd} bad"]);
        // A continuation line with no header before it stands alone.
        let (got, _) = texts(b"  orphan\n24-01-01 A\n", Format::A, true);
        assert_eq!(got, ["  orphan", "24-01-01 A"]);
    }
}
