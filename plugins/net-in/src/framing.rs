//! Cutting a connection's bytes into messages (RFC 6587): octet counting
//! (`LEN SP MSG`) or one message per line. Bytes arrive in any pieces; a
//! message is handed out once it is whole, and nothing is dropped: a
//! message longer than allowed is cut (and says how long it was), a frame
//! whose length is not a number is taken as a line. RELP frames
//! (`TXNR COMMAND LEN DATA`, see [`crate::relp`]) are cut here too.

use crate::config::Framing;
use crate::relp::{self, Command};

/// One message: where it lies in [`Framer::buffered`], where it began in
/// the connection's byte stream, and whether it was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Offset of the message's first byte in the connection's stream.
    pub(crate) offset: u64,
    /// When the message was longer than allowed: its whole length (octet
    /// counting), or the bytes of it received when it was cut (a line's
    /// length is known only at its end), at least one more than allowed.
    pub(crate) truncated_from: Option<u64>,
    /// Why the framing was not what the connection uses (a bad octet
    /// count), for the event's `malformed` attribute.
    pub(crate) problem: Option<&'static str>,
    /// RELP: the frame's transaction number and command.
    pub(crate) relp: Option<(u32, Command)>,
}

#[derive(Debug)]
pub(crate) struct Framer {
    framing: Framing,
    buffer: Vec<u8>,
    /// Where the next message starts in `buffer`.
    at: usize,
    /// Stream offset of `buffer[0]`.
    base: u64,
    /// Bytes of a cut message still to be passed over, and the stream
    /// offset where that message began (for its length).
    skip: Skip,
    /// Why a RELP connection stopped making sense; what follows is taken
    /// as lines, flagged.
    broken: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
enum Skip {
    None,
    /// Octet counting: this many more bytes belong to a cut message.
    Bytes(u64),
    /// Newline framing: up to and including the next line feed.
    Line,
}

/// The longest octet count read: ten digits is over 9 GB.
const MAX_LEN_DIGITS: usize = 10;

impl Framer {
    pub(crate) fn new(framing: Framing) -> Self {
        Self {
            framing,
            buffer: Vec::new(),
            at: 0,
            base: 0,
            skip: Skip::None,
            broken: None,
        }
    }

    /// Why the RELP framing broke, if it did (the connection is then
    /// closed once what was received is taken).
    pub(crate) fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    /// Bytes received, appended.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The buffered bytes the frames point into.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Bytes received and not yet handed out as (or passed over with) a
    /// message.
    pub(crate) fn pending(&self) -> usize {
        self.buffer.len() - self.at
    }

    /// Drop the bytes of the messages handed out; frames given before are
    /// no longer valid.
    pub(crate) fn compact(&mut self) {
        self.buffer.drain(..self.at);
        self.base += self.at as u64;
        self.at = 0;
    }

    /// The next whole message, at most `max` bytes long; `closed` when the
    /// connection ended, so that a last line without its line feed counts.
    pub(crate) fn next(&mut self, max: usize, closed: bool) -> Option<Frame> {
        loop {
            if !self.pass_over_cut_message() {
                return None;
            }
            let rest = &self.buffer[self.at..];
            if rest.is_empty() {
                return None;
            }
            if self.framing == Framing::Auto {
                self.framing = if rest[0].is_ascii_digit() {
                    Framing::OctetCounting
                } else {
                    Framing::Newline
                };
            }
            let frame = match self.framing {
                Framing::OctetCounting => self.octet_counted(max, closed),
                Framing::Relp => self.relp(max, closed),
                _ => self.line(max, closed, self.broken),
            };
            match frame {
                // An empty line is no message (a RELP frame without data is).
                Some(frame)
                    if frame.start == frame.end
                        && frame.truncated_from.is_none()
                        && frame.relp.is_none() => {}
                other => return other,
            }
        }
    }

    /// Pass over what is left of a cut message; false while more of it
    /// is still to come.
    fn pass_over_cut_message(&mut self) -> bool {
        match self.skip {
            Skip::None => true,
            Skip::Bytes(left) => {
                let available = (self.buffer.len() - self.at) as u64;
                let taken = left.min(available);
                self.at += taken as usize;
                self.skip = if taken == left {
                    Skip::None
                } else {
                    Skip::Bytes(left - taken)
                };
                taken == left
            }
            Skip::Line => match memchr::memchr(b'\n', &self.buffer[self.at..]) {
                Some(n) => {
                    self.at += n + 1;
                    self.skip = Skip::None;
                    true
                }
                None => {
                    self.at = self.buffer.len();
                    false
                }
            },
        }
    }

    fn octet_counted(&mut self, max: usize, closed: bool) -> Option<Frame> {
        let rest = &self.buffer[self.at..];
        let digits = rest
            .iter()
            .take(MAX_LEN_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == rest.len() && digits <= MAX_LEN_DIGITS && !closed {
            return None; // the count is still arriving
        }
        let len = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse::<u64>().ok());
        let (Some(len), Some(b' ')) = (len, rest.get(digits)) else {
            // Not `LEN SP`: take the line as it is, flagged.
            return self.line(max, closed, Some("bad octet count"));
        };
        let header = digits + 1;
        let offset = self.base + self.at as u64 + header as u64;
        let available = (rest.len() - header) as u64;
        if len as usize <= max {
            if available < len && !closed {
                return None;
            }
            let take = len.min(available) as usize;
            let start = self.at + header;
            self.at = start + take;
            return Some(Frame {
                start,
                end: start + take,
                offset,
                truncated_from: None,
                problem: (take as u64 != len).then_some("connection closed inside the message"),
                relp: None,
            });
        }
        // Longer than allowed: the first `max` bytes, the rest passed over.
        if available < max as u64 && !closed {
            return None;
        }
        let take = max.min(available as usize);
        let start = self.at + header;
        self.at = start + take;
        self.skip = Skip::Bytes(len - take as u64);
        Some(Frame {
            start,
            end: start + take,
            offset,
            truncated_from: Some(len),
            problem: None,
            relp: None,
        })
    }

    /// A RELP frame. A frame the connection closed inside of is not taken:
    /// it was not acknowledged, its sender sends it again. Bytes that are
    /// no RELP frame end the framing: they and what follows are taken as
    /// lines, flagged.
    fn relp(&mut self, max: usize, closed: bool) -> Option<Frame> {
        let rest = &self.buffer[self.at..];
        let header = match relp::header(rest) {
            Ok(Some(header)) => header,
            Ok(None) => {
                if closed {
                    self.at = self.buffer.len();
                }
                return None;
            }
            Err(relp::BadFrame(why)) => return self.break_relp(why, max, closed),
        };
        let start = self.at + header.len;
        let offset = self.base + start as u64;
        let available = (self.buffer.len() - start) as u64;
        let relp = Some((header.txnr, header.command));
        if header.data_len <= max as u64 {
            // The data and its trailer.
            if available < header.data_len + 1 {
                if closed {
                    self.at = self.buffer.len();
                }
                return None;
            }
            let end = start + header.data_len as usize;
            if self.buffer[end] != b'\n' {
                return self.break_relp("no line feed after the data", max, closed);
            }
            self.at = end + 1;
            return Some(Frame {
                start,
                end,
                offset,
                truncated_from: None,
                problem: None,
                relp,
            });
        }
        // Longer than allowed: the first `max` bytes, the rest and the
        // trailer passed over.
        if available < max as u64 {
            if closed {
                self.at = self.buffer.len();
            }
            return None;
        }
        self.at = start + max;
        self.skip = Skip::Bytes(header.data_len - max as u64 + 1);
        Some(Frame {
            start,
            end: start + max,
            offset,
            truncated_from: Some(header.data_len),
            problem: None,
            relp,
        })
    }

    fn break_relp(&mut self, why: &'static str, max: usize, closed: bool) -> Option<Frame> {
        self.broken = Some(why);
        self.framing = Framing::Newline;
        self.line(max, closed, Some(why))
    }

    fn line(&mut self, max: usize, closed: bool, problem: Option<&'static str>) -> Option<Frame> {
        let rest = &self.buffer[self.at..];
        let window = &rest[..rest.len().min(max + 1)];
        let offset = self.base + self.at as u64;
        let start = self.at;
        match memchr::memchr(b'\n', window) {
            Some(n) => {
                let end = if n > 0 && rest[n - 1] == b'\r' {
                    n - 1
                } else {
                    n
                };
                self.at += n + 1;
                Some(Frame {
                    start,
                    end: start + end,
                    offset,
                    truncated_from: None,
                    problem,
                    relp: None,
                })
            }
            None if rest.len() > max => {
                // Its first `max` bytes now; its length is known only at its
                // end, so it says how long it was at least.
                self.at += max;
                self.skip = Skip::Line;
                Some(Frame {
                    start,
                    end: start + max,
                    offset,
                    truncated_from: Some(rest.len() as u64),
                    problem,
                    relp: None,
                })
            }
            None if closed => {
                self.at = self.buffer.len();
                Some(Frame {
                    start,
                    end: self.buffer.len(),
                    offset,
                    truncated_from: None,
                    problem,
                    relp: None,
                })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every message of `input` fed in pieces of `piece` bytes.
    fn frames(
        framing: Framing,
        input: &[u8],
        piece: usize,
        max: usize,
    ) -> Vec<(String, u64, Option<u64>)> {
        let mut framer = Framer::new(framing);
        let mut out = Vec::new();
        let mut take = |framer: &mut Framer, closed: bool| {
            while let Some(f) = framer.next(max, closed) {
                let text = String::from_utf8_lossy(&framer.buffered()[f.start..f.end]).into_owned();
                out.push((text, f.offset, f.truncated_from));
            }
            framer.compact();
        };
        for chunk in input.chunks(piece.max(1)) {
            framer.extend(chunk);
            take(&mut framer, false);
        }
        take(&mut framer, true);
        out
    }

    #[test]
    fn lines_whatever_the_pieces() {
        let input = b"one\r\ntwo\n\nthree\nlast";
        for piece in 1..input.len() {
            let got = frames(Framing::Newline, input, piece, 100);
            let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
            assert_eq!(texts, ["one", "two", "three", "last"], "piece {piece}");
            assert_eq!(got[2].1, 10);
        }
    }

    #[test]
    fn octet_counted_messages_keep_their_line_breaks() {
        let input = b"5 a\nb c11 hello world3 xyz";
        for piece in 1..input.len() {
            let got = frames(Framing::Auto, input, piece, 100);
            let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
            assert_eq!(texts, ["a\nb c", "hello world", "xyz"], "piece {piece}");
            assert_eq!(got[1].1, 10);
        }
    }

    #[test]
    fn over_long_messages_are_cut_and_say_how_long_they_were() {
        let long = "x".repeat(30);
        let input = format!("{long}\nshort\n");
        let got = frames(Framing::Newline, input.as_bytes(), 7, 10);
        // A line's length is known only at its end: it was at least this.
        assert_eq!((got[0].0.as_str(), got[0].1), ("x".repeat(10).as_str(), 0));
        assert!(got[0].2.unwrap() > 10, "{got:?}");
        assert_eq!(got[1].0, "short");
        let input = format!("30 {long}5 short");
        let got = frames(Framing::OctetCounting, input.as_bytes(), 4, 10);
        assert_eq!(got[0], ("x".repeat(10), 3, Some(30)));
        assert_eq!(got[1].0, "short");
    }

    #[test]
    fn a_bad_octet_count_is_taken_as_a_flagged_line() {
        let mut framer = Framer::new(Framing::OctetCounting);
        framer.extend(b"12x oops\n4 good");
        let bad = framer.next(100, false).unwrap();
        assert_eq!(&framer.buffered()[bad.start..bad.end], b"12x oops");
        assert_eq!(bad.problem, Some("bad octet count"));
        let good = framer.next(100, false).unwrap();
        assert_eq!(&framer.buffered()[good.start..good.end], b"good");
        assert_eq!(good.problem, None);
    }

    #[test]
    fn relp_frames_whatever_the_pieces() {
        let long = "z".repeat(20);
        let input = format!(
            "1 open 14 relp_version=0\n2 syslog 5 a\nb c\n3 syslog 20 {long}\n4 close 0\n5 syslog 2 ab"
        );
        for piece in 1..input.len() {
            let mut framer = Framer::new(Framing::Relp);
            let mut got = Vec::new();
            let mut take = |framer: &mut Framer, closed: bool| {
                while let Some(f) = framer.next(10, closed) {
                    let text = String::from_utf8_lossy(&framer.buffered()[f.start..f.end]);
                    got.push((f.relp.unwrap(), text.into_owned(), f.truncated_from));
                }
                framer.compact();
            };
            for chunk in input.as_bytes().chunks(piece) {
                framer.extend(chunk);
                take(&mut framer, false);
            }
            take(&mut framer, true);
            assert_eq!(
                got,
                [
                    ((1, Command::Open), "relp_versi".to_owned(), Some(14)),
                    ((2, Command::Syslog), "a\nb c".to_owned(), None),
                    ((3, Command::Syslog), "z".repeat(10), Some(20)),
                    ((4, Command::Close), String::new(), None),
                ],
                "piece {piece}"
            );
            // The frame cut by the close was not taken: its sender has it.
            assert_eq!(framer.pending(), 0);
            assert_eq!(framer.broken(), None);
        }
    }

    #[test]
    fn what_breaks_relp_is_kept_as_flagged_lines() {
        let mut framer = Framer::new(Framing::Relp);
        framer.extend(b"1 syslog 2 okXgarbage\nmore\n");
        let bad = framer.next(100, false).unwrap();
        assert_eq!(
            &framer.buffered()[bad.start..bad.end],
            b"1 syslog 2 okXgarbage"
        );
        assert_eq!(bad.problem, Some("no line feed after the data"));
        let next = framer.next(100, false).unwrap();
        assert_eq!(&framer.buffered()[next.start..next.end], b"more");
        assert_eq!(next.problem, framer.broken());
        assert!(next.relp.is_none());
    }
}
