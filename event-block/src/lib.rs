//! The event-block encoding of safd's WIT contract.
//!
//! Events cross the host/plugin boundary as one `list<u8>` per batch instead
//! of a list of records: the canonical ABI copies a record's every string
//! separately (one allocation and one guest `realloc` call each), which cost
//! about 2 µs per realistic event, while one byte list is a single copy. This
//! crate is the one implementation of that encoding; the host and the plugin
//! SDK both use it, so plugin authors never write it by hand.
//!
//! # Format
//!
//! ```text
//! event-block      = event*                  ; what a source's `poll` returns
//! sequenced-block  = (varint(seq) event)*    ; what a destination's `deliver` gets
//! event            = zigzag(time) varint(severity) varint(n)
//!                    varint(len(id)) (varint(len(key)) varint(len(value))){n}
//!                    varint(len(body)) text
//! text             = id key1 value1 … keyn valuen body    ; one UTF-8 run
//! varint           = unsigned LEB128, at most 10 bytes; lengths in bytes
//! zigzag(t)        = varint((t << 1) ^ (t >> 63))
//! severity         = 0 debug, 1 info, 2 warning, 3 minor, 4 major, 5 critical
//! ```
//!
//! Each event's numbers come first and its strings follow as one run, so a
//! reader checks UTF-8 once per event instead of once per string (in a
//! WebAssembly guest that check dominated the cost of reading a block), then
//! cuts the run at the given lengths. Every cut must fall on a character
//! boundary.
//!
//! Decoding borrows: an [`EventRef`] points into the block, so reading a
//! block allocates nothing per event.
//!
//! [`Event`] is the owned form of one event, the one definition of its
//! fields and severities that the host and the SDK share.
//!
//! [`names`] holds the other thing safd, its plugins and the servers it
//! delivers to must agree on: which agent, stream, group and member names
//! are valid, and how client-chosen text is quoted in messages.

pub mod delivery;
mod event;
pub mod names;
pub mod odd;

pub use event::{Attribute, Event, Severity, Timestamp};

use std::fmt;

/// Number of severity levels; a severity code is below this.
pub const SEVERITY_LEVELS: u8 = 6;

/// The fewest bytes an event takes: time, severity, attribute count, id
/// length and body length, one byte each.
pub const MIN_EVENT_BYTES: usize = 5;

/// The most events `bytes` bytes of a block can hold: what a declared
/// count is checked against before anything is sized by it.
pub fn max_events(bytes: usize) -> usize {
    bytes / MIN_EVENT_BYTES
}

/// Why a block does not decode. The offset is the byte where decoding
/// stopped, counted from the start of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError {
    pub offset: usize,
    pub kind: BlockErrorKind,
}

/// What was wrong at [`BlockError::offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockErrorKind {
    /// The block ends inside an event.
    Truncated,
    /// A varint runs past 10 bytes.
    BadVarint,
    /// A string is not valid UTF-8.
    BadUtf8,
    /// A severity code of 6 or more.
    BadSeverity(u64),
    /// The block holds more events than its declared count.
    TrailingBytes { declared: u32 },
    /// The block holds fewer events than its declared count.
    TooFewEvents { declared: u32, found: u32 },
    /// The declared count is more than the block's bytes can hold.
    CountTooLarge { declared: u32, bytes: usize },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event block, byte {}: ", self.offset)?;
        match &self.kind {
            BlockErrorKind::Truncated => f.write_str("ends in the middle of an event"),
            BlockErrorKind::BadVarint => f.write_str("malformed length or number (varint)"),
            BlockErrorKind::BadUtf8 => f.write_str("a string is not valid UTF-8"),
            BlockErrorKind::BadSeverity(code) => {
                write!(f, "severity code {code} (expected 0 to 5)")
            }
            BlockErrorKind::TrailingBytes { declared } => {
                write!(f, "bytes left after the declared {declared} events")
            }
            BlockErrorKind::CountTooLarge { declared, bytes } => write!(
                f,
                "declares {declared} events, but {bytes} bytes hold at most {}",
                max_events(*bytes)
            ),
            BlockErrorKind::TooFewEvents { declared, found } => {
                write!(f, "declares {declared} events but holds {found}")
            }
        }
    }
}

impl std::error::Error for BlockError {}

/// One event read from a block, borrowing its strings from the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub id: &'a str,
    /// Microseconds since the Unix epoch, UTC.
    pub time: i64,
    /// Severity code, below [`SEVERITY_LEVELS`].
    pub severity: u8,
    pub attributes: Attributes<'a>,
    pub body: &'a str,
}

/// The bytes an event counts against batch byte limits (a poll's
/// `max-bytes`, a group's `batch_max_bytes`): its id, its body, and every
/// attribute key and value. The host and the plugins must count alike, so
/// every owned event type counts with this function.
pub fn byte_size<'a>(
    id: &str,
    body: &str,
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> usize {
    id.len()
        + body.len()
        + attributes
            .into_iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
}

impl EventRef<'_> {
    /// [`byte_size`] of this event: its attribute keys and values lie back
    /// to back in the block, so their length is one subtraction.
    pub fn byte_size(&self) -> usize {
        self.id.len() + self.body.len() + self.attributes.text.len()
    }
}

/// The attributes of an [`EventRef`], in order. Already checked; iterating
/// reads them from the block without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// The varint lengths of each key and value.
    lengths: &'a [u8],
    /// Keys and values, back to back.
    text: &'a str,
    len: usize,
}

impl<'a> Attributes<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(key, value)` pairs in order.
    pub fn iter(&self) -> AttributeIter<'a> {
        AttributeIter {
            lengths: Cursor {
                bytes: self.lengths,
                pos: 0,
            },
            text: self.text,
            left: self.len,
        }
    }

    /// The value of the first attribute named `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for Attributes<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = AttributeIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Attributes`].
#[derive(Debug, Clone)]
pub struct AttributeIter<'a> {
    lengths: Cursor<'a>,
    text: &'a str,
    left: usize,
}

impl<'a> AttributeIter<'a> {
    fn cut(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.lengths.varint().ok()?).ok()?;
        let piece = self.text.get(..len)?;
        self.text = self.text.get(len..)?;
        Some(piece)
    }
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Checked when the event was decoded, so these cannot fail; if they
        // somehow did, ending the iteration is the safe answer.
        let key = self.cut()?;
        let value = self.cut()?;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for AttributeIter<'_> {}

/// Appends events to a block.
#[derive(Debug, Default, Clone)]
pub struct BlockWriter {
    bytes: Vec<u8>,
    count: u32,
}

impl BlockWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose buffer holds `bytes` without growing.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Append one event. `severity` is a code below [`SEVERITY_LEVELS`].
    /// The attributes are walked twice (lengths, then text), hence `Clone`.
    pub fn push<A, K, V>(&mut self, id: &str, time: i64, severity: u8, attributes: A, body: &str)
    where
        A: IntoIterator<Item = (K, V)>,
        A::IntoIter: ExactSizeIterator + Clone,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let out = &mut self.bytes;
        put_varint(out, zigzag(time));
        put_varint(out, u64::from(severity));
        let attributes = attributes.into_iter();
        put_varint(out, attributes.len() as u64);
        put_varint(out, id.len() as u64);
        for (key, value) in attributes.clone() {
            put_varint(out, key.as_ref().len() as u64);
            put_varint(out, value.as_ref().len() as u64);
        }
        put_varint(out, body.len() as u64);
        out.extend_from_slice(id.as_bytes());
        for (key, value) in attributes {
            out.extend_from_slice(key.as_ref().as_bytes());
            out.extend_from_slice(value.as_ref().as_bytes());
        }
        out.extend_from_slice(body.as_bytes());
        self.count += 1;
    }

    /// Append one event with its sequence number (a sequenced block).
    pub fn push_sequenced<A, K, V>(
        &mut self,
        seq: u64,
        id: &str,
        time: i64,
        severity: u8,
        attributes: A,
        body: &str,
    ) where
        A: IntoIterator<Item = (K, V)>,
        A::IntoIter: ExactSizeIterator + Clone,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        put_varint(&mut self.bytes, seq);
        self.push(id, time, severity, attributes, body);
    }

    /// Append an event read from another block.
    pub fn push_ref(&mut self, event: &EventRef<'_>) {
        self.push(
            event.id,
            event.time,
            event.severity,
            event.attributes,
            event.body,
        );
    }

    /// Append events already encoded (a run cut from another block of the
    /// same kind).
    pub fn push_encoded(&mut self, count: u32, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.count += count;
    }

    /// Events written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes written so far.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The event count and the encoded bytes.
    pub fn finish(self) -> (u32, Vec<u8>) {
        (self.count, self.bytes)
    }
}

/// Append `value` as an unsigned LEB128 varint (the encoding's lengths and
/// seqs), for hosts that frame encoded events in records of their own.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Read the unsigned LEB128 varint `bytes` start with: its value and its
/// length in bytes; `Truncated` or `BadVarint` (past 10 bytes) otherwise.
/// For hosts that frame encoded events in records of their own.
pub fn read_varint(bytes: &[u8]) -> Result<(u64, usize), BlockErrorKind> {
    let mut cursor = Cursor { bytes, pos: 0 };
    cursor
        .varint()
        .map(|value| (value, cursor.pos))
        .map_err(|err| err.kind)
}

/// The zigzag mapping of a signed number onto a varint (the encoding's
/// times).
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Read the events of an event block holding `count` events.
pub fn events(bytes: &[u8], count: u32) -> Events<'_> {
    Events {
        reader: BlockReader::new(bytes, count),
    }
}

/// Read the `(seq, event)` pairs of a sequenced block holding `count` events.
pub fn sequenced(bytes: &[u8], count: u32) -> SequencedEvents<'_> {
    SequencedEvents {
        reader: BlockReader::new(bytes, count),
    }
}

/// Where each event of an event block holding `count` events ends, and its
/// text bytes (what [`EventRef::byte_size`] counts), without reading the
/// events: numbers and lengths are checked, the text is not (no UTF-8
/// check). For blocks that were checked when they were written and come
/// back from storage under a checksum, to cut and re-frame them cheaply.
pub fn spans(bytes: &[u8], count: u32) -> Spans<'_> {
    Spans {
        reader: BlockReader::new(bytes, count),
    }
}

/// One event's place in a block (see [`spans`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpan {
    pub start: usize,
    pub end: usize,
    /// Id, attribute and body bytes.
    pub text_bytes: usize,
}

/// Iterator over the events' places in a block.
#[derive(Debug, Clone)]
pub struct Spans<'a> {
    reader: BlockReader<'a>,
}

impl Iterator for Spans<'_> {
    type Item = Result<EventSpan, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next_item(|c| {
            let start = c.pos;
            let text_bytes = c.skip_event()?;
            Ok(EventSpan {
                start,
                end: c.pos,
                text_bytes,
            })
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.reader.size_hint()
    }
}

/// Iterator over an event block; yields an error once and then stops if the
/// block is malformed.
#[derive(Debug, Clone)]
pub struct Events<'a> {
    reader: BlockReader<'a>,
}

impl Events<'_> {
    /// Bytes read so far: after an event, the offset where the next starts.
    pub fn offset(&self) -> usize {
        self.reader.cursor.pos
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<EventRef<'a>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next_item(|c| c.event())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.reader.size_hint()
    }
}

/// Iterator over a sequenced block.
#[derive(Debug, Clone)]
pub struct SequencedEvents<'a> {
    reader: BlockReader<'a>,
}

impl SequencedEvents<'_> {
    /// Bytes read so far: after an event, the offset where the next starts
    /// (its seq first).
    pub fn offset(&self) -> usize {
        self.reader.cursor.pos
    }
}

impl<'a> Iterator for SequencedEvents<'a> {
    type Item = Result<(u64, EventRef<'a>), BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next_item(|c| {
            let seq = c.varint()?;
            Ok((seq, c.event()?))
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.reader.size_hint()
    }
}

#[derive(Debug, Clone)]
struct BlockReader<'a> {
    cursor: Cursor<'a>,
    declared: u32,
    read: u32,
    done: bool,
}

impl<'a> BlockReader<'a> {
    fn new(bytes: &'a [u8], declared: u32) -> Self {
        Self {
            cursor: Cursor { bytes, pos: 0 },
            declared,
            read: 0,
            done: false,
        }
    }

    fn next_item<T>(
        &mut self,
        item: impl FnOnce(&mut Cursor<'a>) -> Result<T, BlockError>,
    ) -> Option<Result<T, BlockError>> {
        if self.done {
            return None;
        }
        let result = if self.declared as usize > max_events(self.cursor.bytes.len()) {
            // Refused before reading: a count is never trusted as a size.
            self.done = true;
            Err(self.cursor.error(BlockErrorKind::CountTooLarge {
                declared: self.declared,
                bytes: self.cursor.bytes.len(),
            }))
        } else if self.read == self.declared {
            self.done = true;
            if self.cursor.at_end() {
                return None;
            }
            Err(self.cursor.error(BlockErrorKind::TrailingBytes {
                declared: self.declared,
            }))
        } else if self.cursor.at_end() {
            Err(self.cursor.error(BlockErrorKind::TooFewEvents {
                declared: self.declared,
                found: self.read,
            }))
        } else {
            item(&mut self.cursor)
        };
        match &result {
            Ok(_) => self.read += 1,
            Err(_) => self.done = true,
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = ((self.declared - self.read) as usize)
            .min(max_events(self.cursor.bytes.len() - self.cursor.pos));
        // A malformed block may also yield one error item.
        (0, Some(left + 1))
    }
}

#[derive(Debug, Clone)]
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn error(&self, kind: BlockErrorKind) -> BlockError {
        BlockError {
            offset: self.pos,
            kind,
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, BlockError> {
        // Most numbers in a block (lengths, counts, severities) fit one byte.
        if let Some(&byte) = self.bytes.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, BlockError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.error(BlockErrorKind::Truncated));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(BlockErrorKind::BadVarint))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], BlockError> {
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error(BlockErrorKind::Truncated))?;
        self.pos = end;
        Ok(&self.bytes[start..end])
    }

    #[inline]
    fn length(&mut self) -> Result<usize, BlockError> {
        let len = self.varint()?;
        usize::try_from(len).map_err(|_| self.error(BlockErrorKind::Truncated))
    }

    /// Step over one event; returns its text length.
    fn skip_event(&mut self) -> Result<usize, BlockError> {
        self.varint()?;
        self.severity()?;
        let attribute_count = self.length()?;
        let mut text_len = self.length()?;
        for _ in 0..attribute_count.saturating_mul(2).saturating_add(1) {
            let len = self.length()?;
            text_len = text_len
                .checked_add(len)
                .ok_or_else(|| self.error(BlockErrorKind::Truncated))?;
        }
        self.take(text_len)?;
        Ok(text_len)
    }

    fn severity(&mut self) -> Result<u8, BlockError> {
        let at = self.pos;
        let severity = self.varint()?;
        if severity >= u64::from(SEVERITY_LEVELS) {
            return Err(BlockError {
                offset: at,
                kind: BlockErrorKind::BadSeverity(severity),
            });
        }
        Ok(severity as u8)
    }

    fn event(&mut self) -> Result<EventRef<'a>, BlockError> {
        let time = unzigzag(self.varint()?);
        let severity = self.severity()?;
        let attribute_count = self.length()?;
        let id_len = self.length()?;
        let lengths_start = self.pos;
        let mut attribute_bytes = 0usize;
        for _ in 0..attribute_count.saturating_mul(2) {
            attribute_bytes = attribute_bytes.saturating_add(self.length()?);
        }
        let lengths = &self.bytes[lengths_start..self.pos];
        let body_len = self.length()?;
        let text_start = self.pos;
        let text_len = id_len
            .checked_add(attribute_bytes)
            .and_then(|n| n.checked_add(body_len))
            .ok_or_else(|| self.error(BlockErrorKind::Truncated))?;
        let text = std::str::from_utf8(self.take(text_len)?).map_err(|e| BlockError {
            offset: text_start + e.valid_up_to(),
            kind: BlockErrorKind::BadUtf8,
        })?;
        // Every cut must fall between characters.
        let mut cut = id_len;
        let mut check = Cursor {
            bytes: lengths,
            pos: 0,
        };
        let mut cuts_ok = text.is_char_boundary(cut);
        while cuts_ok && !check.at_end() {
            cut += check.length()?;
            cuts_ok = text.is_char_boundary(cut);
        }
        let pieces = cuts_ok
            .then(|| {
                let (id, rest) = text.split_at_checked(id_len)?;
                let (attributes, body) = rest.split_at_checked(attribute_bytes)?;
                Some((id, attributes, body))
            })
            .flatten();
        let Some((id, attributes, body)) = pieces else {
            return Err(BlockError {
                offset: text_start,
                kind: BlockErrorKind::BadUtf8,
            });
        };
        Ok(EventRef {
            id,
            time,
            severity,
            attributes: Attributes {
                lengths,
                text: attributes,
                len: attribute_count,
            },
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    type Owned = (String, i64, u8, Vec<(String, String)>, String);

    fn owned(e: EventRef<'_>) -> Owned {
        (
            e.id.to_owned(),
            e.time,
            e.severity,
            e.attributes
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            e.body.to_owned(),
        )
    }

    fn write(events: &[Owned]) -> (u32, Vec<u8>) {
        let mut w = BlockWriter::new();
        for (id, time, severity, attributes, body) in events {
            w.push(
                id,
                *time,
                *severity,
                attributes.iter().map(|(k, v)| (k, v)),
                body,
            );
        }
        w.finish()
    }

    fn event_strategy() -> impl Strategy<Value = Owned> {
        (
            ".{0,20}",
            any::<i64>(),
            0..SEVERITY_LEVELS,
            proptest::collection::vec((".{0,8}", ".{0,12}"), 0..8),
            ".{0,300}",
        )
    }

    proptest! {
        #[test]
        fn round_trips(events in proptest::collection::vec(event_strategy(), 0..20)) {
            let (count, bytes) = write(&events);
            let read: Vec<Owned> = super::events(&bytes, count)
                .map(|e| e.map(owned))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(read, events);
        }

        #[test]
        fn spans_agree_with_reading(events in proptest::collection::vec(event_strategy(), 0..20)) {
            let (count, bytes) = write(&events);
            let mut read = super::events(&bytes, count);
            let mut start = 0;
            for span in spans(&bytes, count) {
                let span = span.unwrap();
                let event = read.next().unwrap().unwrap();
                prop_assert_eq!(span.start, start);
                prop_assert_eq!(span.end, read.offset());
                prop_assert_eq!(span.text_bytes, event.byte_size());
                // The block's count is the rule every owned event uses.
                prop_assert_eq!(
                    event.byte_size(),
                    byte_size(event.id, event.body, event.attributes.iter())
                );
                start = span.end;
            }
            prop_assert!(read.next().is_none());
            prop_assert_eq!(start, bytes.len());
        }

        #[test]
        fn spans_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in 0u32..8) {
            for span in spans(&bytes, count).flatten() {
                prop_assert!(span.start <= span.end && span.end <= bytes.len());
            }
        }

        #[test]
        fn sequenced_round_trips(events in proptest::collection::vec((any::<u64>(), event_strategy()), 0..20)) {
            let mut w = BlockWriter::new();
            for (seq, (id, time, severity, attributes, body)) in &events {
                w.push_sequenced(*seq, id, *time, *severity, attributes.iter().map(|(k, v)| (k, v)), body);
            }
            let (count, bytes) = w.finish();
            let read: Vec<(u64, Owned)> = sequenced(&bytes, count)
                .map(|e| e.map(|(seq, e)| (seq, owned(e))))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(read, events);
        }

        /// Any bytes with any declared count: an error or events, never a
        /// panic, and never more items than declared plus one error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in 0u32..8) {
            let items: Vec<_> = events(&bytes, count).collect();
            prop_assert!(items.len() <= count as usize + 1);
            let errors = items.iter().filter(|i| i.is_err()).count();
            prop_assert!(errors <= 1);
            if errors == 1 {
                prop_assert!(items.last().unwrap().is_err());
            }
        }
    }

    #[test]
    fn layout_is_numbers_then_one_text_run() {
        let mut w = BlockWriter::new();
        w.push("a", -1, 5, [("k", "v")], "hi");
        let (count, bytes) = w.finish();
        assert_eq!(count, 1);
        assert_eq!(
            bytes,
            [1, 5, 1, 1, 1, 1, 2, b'a', b'k', b'v', b'h', b'i'].to_vec()
        );
    }

    #[test]
    fn a_cut_inside_a_character_is_refused() {
        // "é" is two bytes; lengths that split it must not decode.
        let bytes = [0u8, 1, 0, 1, 1, 0xc3, 0xa9];
        let err = events(&bytes, 1).next().unwrap().unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::BadUtf8);
    }

    #[test]
    fn a_count_beyond_the_bytes_is_refused_before_reading() {
        let mut w = BlockWriter::new();
        w.push(
            &"i".repeat(3),
            1,
            1,
            std::iter::empty::<(&str, &str)>(),
            "b",
        );
        let (_, bytes) = w.finish();
        let mut read = events(&bytes, u32::MAX);
        assert_eq!(
            read.size_hint(),
            (0, Some(bytes.len() / MIN_EVENT_BYTES + 1))
        );
        let err = read.next().unwrap().unwrap_err();
        assert_eq!(
            err.kind,
            BlockErrorKind::CountTooLarge {
                declared: u32::MAX,
                bytes: bytes.len()
            }
        );
        assert!(read.next().is_none());
        // The shortest event fits the minimum exactly.
        let mut w = BlockWriter::new();
        w.push("", 0, 0, std::iter::empty::<(&str, &str)>(), "");
        let (count, bytes) = w.finish();
        assert_eq!(bytes.len(), MIN_EVENT_BYTES);
        assert_eq!(events(&bytes, count).count(), 1);
    }

    #[test]
    fn byte_size_counts_text() {
        let mut w = BlockWriter::new();
        w.push("id", 0, 1, [("key", "value")], "body");
        let (count, bytes) = w.finish();
        let event = events(&bytes, count).next().unwrap().unwrap();
        assert_eq!(event.byte_size(), 2 + 3 + 5 + 4);
        assert_eq!(event.attributes.get("key"), Some("value"));
        assert_eq!(event.attributes.get("nope"), None);
    }

    #[test]
    fn count_mismatches_and_bad_fields_are_named() {
        let mut w = BlockWriter::new();
        w.push("id", 0, 1, [("k", "v")], "body");
        let (_, bytes) = w.finish();

        let err = events(&bytes, 2).nth(1).unwrap().unwrap_err();
        assert_eq!(
            err.kind,
            BlockErrorKind::TooFewEvents {
                declared: 2,
                found: 1
            }
        );
        let err = events(&bytes, 0).next().unwrap().unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::TrailingBytes { declared: 0 });
        assert_eq!(err.offset, 0);

        let mut bad_severity = bytes.clone();
        bad_severity[1] = 9;
        let err = events(&bad_severity, 1).next().unwrap().unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::BadSeverity(9));
        assert_eq!(err.offset, 1);
        assert!(err.to_string().contains("severity code 9"), "{err}");

        let mut bad_utf8 = bytes.clone();
        bad_utf8[8] = 0xff;
        let err = events(&bad_utf8, 1).next().unwrap().unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::BadUtf8);
        assert_eq!(err.offset, 8);

        let err = events(&bytes[..bytes.len() - 1], 1)
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, BlockErrorKind::Truncated);
    }
}
