//! Tailing a directory of rotating EMS log files (`ZZEV0000`, `ZZEV0001`,
//! …; highest = newest, being appended to; the oldest may be purged at any
//! time).
//!
//! A [`Tail`] reads forward from a [`Position`] and returns complete
//! records with their exact byte range, plus [`Gap`]s: ranges that
//! vanished before they were read (a file purged, a file truncated). It
//! never skips anything silently and never returns a partial record.

use crate::Format;
use crate::framing;
use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A place in the log: a file number and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub file: u32,
    pub offset: u64,
}

/// One complete record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub file: u32,
    /// Byte range in the file: `start..end` (end is after its newline).
    pub start: u64,
    pub end: u64,
    /// Without the final newline; lossy UTF-8.
    pub text: String,
}

/// Why some bytes can never be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKind {
    /// Files `file..=last_file` disappeared (purged) before they were read
    /// to the end; reading had reached `offset` in the first.
    Purged { last_file: u32 },
    /// The file shrank below the read offset (truncated or replaced).
    Truncated { size: u64 },
}

/// Bytes that vanished before they were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub file: u32,
    pub offset: u64,
    pub kind: GapKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Record(Record),
    Gap(Gap),
}

/// A record as [`Tail::read_each`] hands it over: its text borrowed from
/// the bytes just read (a copy only where bytes were not UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub file: u32,
    /// Byte range in the file: `start..end` (end is after its newline).
    pub start: u64,
    pub end: u64,
    /// Without the final newline; lossy UTF-8.
    pub text: Cow<'a, str>,
}

impl RecordRef<'_> {
    pub fn to_record(&self) -> Record {
        Record {
            file: self.file,
            start: self.start,
            end: self.end,
            text: self.text.to_string(),
        }
    }
}

/// What [`Tail::read_each`] hands over, in the log's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemRef<'a> {
    Record(RecordRef<'a>),
    Gap(Gap),
}

impl ItemRef<'_> {
    pub fn to_item(&self) -> Item {
        match self {
            ItemRef::Record(record) => Item::Record(record.to_record()),
            ItemRef::Gap(gap) => Item::Gap(*gap),
        }
    }
}

/// What one read returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailRead {
    pub items: Vec<Item>,
    /// More complete records are ready right now (a limit was reached).
    pub more: bool,
}

/// A log file's number from its name (`ZZEV0012` → 12).
pub fn file_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("ZZEV")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of log file `number`.
pub fn file_name(number: u32) -> String {
    format!("ZZEV{number:04}")
}

/// The log files of `dir` by number, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut files: Vec<u32> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().and_then(file_number))
        .collect();
    files.sort_unstable();
    Ok(files)
}

/// Reads a log directory forward.
#[derive(Clone, Debug)]
pub struct Tail {
    dir: PathBuf,
    format: Format,
    position: Position,
    /// The writer has been quiet: what is written of the current file is
    /// taken as complete, its last record included (format A).
    settled: bool,
}

/// Read sizes: an estimate of the bytes still wanted (records × a typical
/// record size), within these bounds.
const AVERAGE_RECORD: usize = 256;
const MIN_READ: usize = 16 << 10;
const MAX_READ: usize = 4 << 20;

/// The longest record taken whole. EMS records are a few hundred bytes; a
/// "record" past this is damage (a file of binary junk, a missing newline)
/// and is cut here (the cut part emitted, flagged unparsable by the parser,
/// reading going on after it) instead of being read whole into memory —
/// which, in a sandbox with a memory limit, would trap on every try.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Seeking reads each file in pieces of this size, never whole.
const SEEK_CHUNK: usize = 4 << 20;

impl Tail {
    pub fn new(dir: &Path, format: Format, position: Position) -> Self {
        Self {
            dir: dir.to_owned(),
            format,
            position,
            settled: false,
        }
    }

    /// Take the end of what is written as the end of the last record (the
    /// writer has been quiet long enough), or stop doing so. Unlike a newer
    /// file, this does not move reading on to the next file.
    pub fn set_settled(&mut self, settled: bool) {
        self.settled = settled;
    }

    /// Where the next read starts (after the last record returned).
    pub fn position(&self) -> Position {
        self.position
    }

    pub fn set_position(&mut self, position: Position) {
        self.position = position;
    }

    /// Up to `max_records` records and about `max_bytes` bytes (at least
    /// one record if one is complete), with any gaps met on the way.
    pub fn read(&mut self, max_records: usize, max_bytes: usize) -> std::io::Result<TailRead> {
        let mut items = Vec::new();
        let more = self.read_each(max_records, max_bytes, |item| items.push(item.to_item()))?;
        Ok(TailRead { items, more })
    }

    /// What [`Tail::read`] returns, handed to `visit` one item at a time
    /// as it is read, the records' text borrowed from the bytes read: no
    /// copy of every record, and no list of them all held at once (in the
    /// plugin, whose memory never shrinks, that list was a megabyte per
    /// source). Returns whether more complete records are ready now.
    pub fn read_each(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(ItemRef<'_>),
    ) -> std::io::Result<bool> {
        let mut more = false;
        let mut records = 0;
        let mut bytes = 0usize;
        // The directory is listed only when needed — the current file is
        // gone, or read to its end (is a newer one there?) — not per poll.
        let mut listing: Option<Vec<u32>> = None;
        loop {
            let current = self.position.file;
            let mut file = match std::fs::File::open(self.dir.join(file_name(current))) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    let files = list(&self.dir)?;
                    let located = self.locate(&files, &mut visit);
                    if located.is_none() || located == Some(current) {
                        // Nothing newer to go to (or it vanished between the
                        // open and the listing; the next poll sees it).
                        return Ok(more);
                    }
                    listing = Some(files);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut size = file.metadata()?.len();
            if size < self.position.offset {
                visit(ItemRef::Gap(Gap {
                    file: current,
                    offset: self.position.offset,
                    kind: GapKind::Truncated { size },
                }));
                self.position.offset = 0;
            }
            let newer_exists = |files: &Option<Vec<u32>>| {
                files
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|n| *n > current))
            };
            let mut finished = newer_exists(&listing);
            // Read in portions sized to what is still wanted, and frame
            // only as many records as are taken: a poll costs what it
            // returns, not the size of the file.
            let mut reached_end = false;
            loop {
                let available = usize::try_from(size - self.position.offset).unwrap_or(usize::MAX);
                let (consumed, to_end) = if available == 0 {
                    (0, true)
                } else {
                    self.read_portion(
                        &mut file,
                        current,
                        available,
                        finished || self.settled,
                        max_records - records,
                        max_bytes,
                        &mut records,
                        &mut bytes,
                        &mut more,
                        &mut visit,
                    )?
                };
                let progressed = consumed > 0;
                self.position.offset += consumed as u64;
                if more || records == max_records {
                    break;
                }
                if to_end {
                    if !finished && listing.is_none() {
                        // At the end of what is written: a newer file means
                        // this one is complete (its last record too).
                        listing = Some(list(&self.dir)?);
                        finished = newer_exists(&listing);
                        if finished {
                            // The writer completes a file before it starts
                            // the next, but it may have written more since
                            // the size above was taken: only the size now
                            // is the file's real end.
                            size = file.metadata()?.len();
                            continue;
                        }
                    }
                    reached_end = self.position.offset >= size;
                    break;
                }
                if !progressed {
                    break;
                }
            }
            if more || records == max_records || bytes >= max_bytes {
                return Ok(more || self.position.offset < size || finished);
            }
            if finished && reached_end {
                // Done with this file: on to the next.
                self.position = Position {
                    file: current + 1,
                    offset: 0,
                };
                continue;
            }
            return Ok(more);
        }
    }

    /// Read and frame the next portion of `file` from the position, and
    /// hand the records taken to `visit`. Returns the bytes consumed and
    /// whether the read reached the end of what is written.
    #[allow(clippy::too_many_arguments)]
    fn read_portion(
        &self,
        file: &mut std::fs::File,
        current: u32,
        available: usize,
        finished: bool,
        wanted_records: usize,
        max_bytes: usize,
        records: &mut usize,
        bytes: &mut usize,
        more: &mut bool,
        visit: &mut impl FnMut(ItemRef<'_>),
    ) -> std::io::Result<(usize, bool)> {
        let estimate = wanted_records.saturating_mul(AVERAGE_RECORD);
        let mut want = available.min(estimate.clamp(MIN_READ, MAX_READ));
        loop {
            file.seek(SeekFrom::Start(self.position.offset))?;
            let mut buffer = Vec::with_capacity(want);
            file.take(want as u64).read_to_end(&mut buffer)?;
            let to_end = buffer.len() >= available;
            let (found, resume) =
                framing::records_up_to(&buffer, self.format, finished && to_end, wanted_records);
            if found.is_empty() && !to_end {
                if buffer.len() >= MAX_RECORD_BYTES {
                    let cut = oversized_cut(&buffer);
                    *records += 1;
                    *bytes += cut;
                    let text = String::from_utf8_lossy(&buffer[..cut]);
                    visit(ItemRef::Record(RecordRef {
                        file: current,
                        start: self.position.offset,
                        end: self.position.offset + cut as u64,
                        text: Cow::Borrowed(text.trim_end_matches(['\n', '\r'])),
                    }));
                    return Ok((cut, false));
                }
                // One record longer than the read: read more.
                want = want.saturating_mul(2).min(available);
                continue;
            }
            let mut consumed = resume;
            for record in found {
                if *bytes >= max_bytes && *records > 0 {
                    consumed = record.start;
                    *more = true;
                    break;
                }
                *records += 1;
                *bytes += record.end - record.start;
                visit(ItemRef::Record(RecordRef {
                    file: current,
                    start: self.position.offset + record.start as u64,
                    end: self.position.offset + record.end as u64,
                    text: record.text,
                }));
            }
            return Ok((consumed, to_end));
        }
    }

    /// The file to read now: the position's own, or — if it is gone — the
    /// next existing one, after recording the gap. `None`: nothing to read.
    fn locate(&mut self, files: &[u32], visit: &mut impl FnMut(ItemRef<'_>)) -> Option<u32> {
        if files.contains(&self.position.file) {
            return Some(self.position.file);
        }
        let next = *files.iter().find(|n| **n > self.position.file)?;
        // Moving on from a file that was read to its end (offset 0 of the
        // next number, which never existed or was purged unread) is only a
        // gap if that file existed; a file that never existed is not
        // distinguishable from a purged empty one, so only a position
        // inside a file, or skipped numbers, count.
        let skipped_whole_files = next > self.position.file + 1;
        if self.position.offset > 0 || skipped_whole_files {
            visit(ItemRef::Gap(Gap {
                file: self.position.file,
                offset: self.position.offset,
                kind: GapKind::Purged {
                    last_file: next - 1,
                },
            }));
        }
        self.position = Position {
            file: next,
            offset: 0,
        };
        Some(next)
    }

    /// Position at the first record whose time (as `time_of` reads it from
    /// the record's text) is at or after `target`; at the end of the log
    /// when there is none. Unparsable records are passed over.
    pub fn seek(
        &mut self,
        target: i64,
        mut time_of: impl FnMut(&str) -> Option<i64>,
    ) -> std::io::Result<()> {
        let files = list(&self.dir)?;
        for (i, number) in files.iter().enumerate() {
            let mut file = match std::fs::File::open(self.dir.join(file_name(*number))) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            let finished = i + 1 < files.len();
            let size = file.metadata()?.len();
            // Read in pieces: memory stays bounded whatever the file's size.
            let mut offset = 0u64;
            while offset < size {
                let want = usize::try_from(size - offset)
                    .unwrap_or(SEEK_CHUNK)
                    .min(SEEK_CHUNK);
                file.seek(SeekFrom::Start(offset))?;
                let mut buffer = Vec::with_capacity(want);
                (&mut file).take(want as u64).read_to_end(&mut buffer)?;
                let at_end = offset + buffer.len() as u64 >= size;
                let (found, resume) = framing::records(&buffer, self.format, finished && at_end);
                if let Some(record) = found
                    .iter()
                    .find(|r| time_of(&r.text).is_some_and(|t| t >= target))
                {
                    self.position = Position {
                        file: *number,
                        offset: offset + record.start as u64,
                    };
                    return Ok(());
                }
                let step = if found.is_empty() && !at_end {
                    // A record longer than a piece: step over it as a read
                    // would cut it.
                    oversized_cut(&buffer)
                } else {
                    resume
                };
                if step == 0 {
                    break;
                }
                offset += step as u64;
            }
            self.position = Position {
                file: *number,
                offset,
            };
        }
        Ok(())
    }
}

/// Where a record longer than [`MAX_RECORD_BYTES`] at the start of
/// `buffer` is cut: after its last line break within the limit, or at the
/// limit (on a UTF-8 boundary where one is near) when it has none.
fn oversized_cut(buffer: &[u8]) -> usize {
    let limit = buffer.len().min(MAX_RECORD_BYTES);
    if let Some(newline) = memchr::memrchr(b'\n', &buffer[..limit]) {
        return newline + 1;
    }
    // Not inside a multi-byte character, if the text is UTF-8 at all.
    (limit.saturating_sub(3)..=limit)
        .rev()
        .find(|&at| at == buffer.len() || buffer.get(at).is_some_and(|b| b & 0xc0 != 0x80))
        .unwrap_or(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_number("ZZEV0012"), Some(12));
        assert_eq!(file_number("ZZEV123456"), Some(123_456));
        assert_eq!(file_number("ZZEV"), None);
        assert_eq!(file_number("ZZEV00a1"), None);
        assert_eq!(file_number("zzev0001"), None);
        assert_eq!(file_name(7), "ZZEV0007");
    }

    #[test]
    fn an_oversized_record_is_cut_at_a_line_or_character_boundary() {
        let mut lines = vec![b'x'; MAX_RECORD_BYTES - 10];
        lines.extend_from_slice(b"\nyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        assert_eq!(oversized_cut(&lines), MAX_RECORD_BYTES - 9);
        let mut one = "é".repeat(MAX_RECORD_BYTES).into_bytes();
        one.truncate(MAX_RECORD_BYTES + 5);
        let cut = oversized_cut(&one);
        assert!((MAX_RECORD_BYTES - 3..=MAX_RECORD_BYTES).contains(&cut));
        assert!(std::str::from_utf8(&one[..cut]).is_ok());
    }
}
