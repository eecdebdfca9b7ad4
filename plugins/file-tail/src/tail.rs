//! Following the files of one directory: which files there are, who each
//! one is across renames, truncations and copies, and the lines they hold.

use crate::config::Config;
use crate::cursor::{FileCursor, TailCursor, hash};
use crate::dir::{Directory, File};
use safd_plugin_sdk::events::EventWriter;
use safd_plugin_sdk::log;
use std::time::Instant;

/// Bytes hashed for a file's first-line fingerprint and for the bytes
/// before its position.
const PROBE: usize = 64;

/// For sizing reads: a generous typical log line. Longer lines only mean
/// a poll returns fewer events than its budget allows.
const BYTES_PER_LINE_GUESS: usize = 256;

/// The most read at once (what the host answers per read anyway) unless a
/// line is longer.
const WINDOW: usize = 64 * 1024;

/// A file being followed.
struct Tracked {
    file: File,
    ino: u64,
    fp: Option<u64>,
    name: String,
    /// Just after the last emitted line (what the cursor says).
    offset: u64,
    /// Where reading goes on (past `offset` while a multi-line event is
    /// still being gathered).
    read_at: u64,
    pending: Option<Pending>,
    /// Parts of an over-long line emitted so far.
    part: u32,
    /// The time stamped on the lines of this read (one clock call per
    /// read, not per line).
    now: i64,
    /// Buffers reused for every line's id and attributes.
    id: String,
    /// The id up to the offset, and the (inode, fingerprint) it is for.
    id_prefix: String,
    id_prefix_of: Option<(u64, Option<u64>)>,
    offset_text: String,
    part_text: String,
    /// Length and hash of the bytes before `offset`, taken when `offset`
    /// moved (a truncation destroys them).
    tail: (u8, u64),
    tail_at: u64,
    /// Last modification as last seen (seconds, nanoseconds).
    modified: Option<(u64, u32)>,
    /// Whether its current name matches the pattern.
    matches: bool,
    /// Whether the last listing still showed it.
    present: bool,
    size: u64,
    grew_at: Instant,
}

/// A multi-line event being gathered.
struct Pending {
    start: u64,
    end: u64,
    text: Vec<u8>,
    updated: Instant,
}

pub(crate) struct Tailer {
    dir: Directory,
    files: Vec<Tracked>,
    /// Cursor entries not matched to a file yet (before the first scan).
    resume: Option<Vec<FileCursor>>,
    /// No cursor was given: this is the very first start.
    first_start: bool,
    scanned_at: Option<Instant>,
    /// Files as they were just before a truncation, for a while: the
    /// copy that copytruncate made may be found only after the truncation.
    truncated: Vec<(FileCursor, Instant)>,
    /// Where the next poll begins in `files` (round robin when a poll's
    /// budget runs out).
    first_served: usize,
    /// Files that look like a copy still being written (same first line as
    /// a followed file, shorter than where it was read to), since when.
    copying: Vec<(u64, Instant)>,
}

/// What one `read` produced.
pub(crate) struct Read {
    pub(crate) moved: bool,
    pub(crate) more: bool,
}

/// The budget of one poll.
pub(crate) struct Budget {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl Tailer {
    pub(crate) fn new(dir: Directory, resume: Option<TailCursor>) -> Self {
        Self {
            dir,
            files: Vec::new(),
            first_start: resume.is_none(),
            resume: resume.map(|c| c.files),
            scanned_at: None,
            truncated: Vec::new(),
            first_served: 0,
            copying: Vec::new(),
        }
    }

    pub(crate) fn cursor(&self) -> TailCursor {
        TailCursor::new(
            self.files
                .iter()
                .map(|t| FileCursor {
                    ino: t.ino,
                    fp: t.fp,
                    name: t.name.clone(),
                    offset: t.offset,
                    // Read now rather than tracked per line: these must be
                    // the file's bytes, line endings and all.
                    tail: t.tail,
                })
                .collect(),
        )
    }

    /// List the directory: follow renames, adopt new files, let go of
    /// files that are gone or rotated away and read to their end.
    fn scan(&mut self, config: &Config) -> Result<bool, String> {
        let entries = self.dir.list()?;
        let mut changed = false;
        for t in &mut self.files {
            t.present = false;
        }
        let mut new = Vec::new();
        for entry in entries {
            if let Some(t) = self.files.iter_mut().find(|t| t.ino == entry.ino) {
                t.present = true;
                t.matches = config.pattern.matches(&entry.name);
                if t.name != entry.name {
                    t.name = entry.name;
                    changed = true;
                }
            } else if config.pattern.matches(&entry.name) {
                new.push(entry);
            }
        }
        let resume = self.resume.take();
        // Oldest first, so that a rotated file's lines come before its
        // successor's.
        let mut opened = Vec::new();
        for entry in new {
            let Ok((file, ino)) = self.dir.open_file(&entry.name) else {
                continue;
            };
            let (size, modified) = file.stat()?;
            opened.push((modified, entry.name, file, ino, size));
        }
        opened.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let wait = config.rotate_wait + config.scan_interval;
        self.truncated.retain(|(_, at)| at.elapsed() < wait);
        for (modified, name, file, ino, size) in opened {
            let fp = fingerprint(&file, size)?;
            if self.copy_in_progress(ino, fp, size, wait) {
                continue;
            }
            let start = self.start_of(config, resume.as_deref(), &file, ino, fp, size, &name)?;
            let tail = tail_of(&file, start)?;
            self.files.push(Tracked {
                file,
                ino,
                fp,
                name,
                offset: start,
                read_at: start,
                pending: None,
                part: 0,
                now: 0,
                id: String::new(),
                id_prefix: String::new(),
                id_prefix_of: None,
                offset_text: String::new(),
                part_text: String::new(),
                tail,
                tail_at: start,
                modified,
                matches: true,
                present: true,
                size: start,
                grew_at: Instant::now(),
            });
            changed = true;
        }
        if let Some(resume) = resume {
            for gone in resume
                .iter()
                .filter(|c| !self.files.iter().any(|t| t.ino == c.ino || same_copy(t, c)))
            {
                log::warn(&format!(
                    "`{}` (read up to byte {}) is gone: lines written to it after that \
                         while safd was down could not be read",
                    gone.name, gone.offset
                ));
            }
        }
        let before = self.files.len();
        let rotate_wait = config.rotate_wait;
        self.files.retain(|t| {
            // Its size now, not as of the last read: lines written just
            // before a rename must still be read.
            let size = t.file.stat().map_or(u64::MAX, |(size, _)| size);
            let drained = t.read_at >= size && t.pending.is_none();
            let keep = if !t.present {
                // Deleted (or moved out): the open handle still reads it.
                !drained
            } else if !t.matches {
                !drained || t.grew_at.elapsed() < rotate_wait
            } else {
                true
            };
            if !keep {
                log::info(&format!("finished with `{}`", t.name));
            }
            keep
        });
        self.scanned_at = Some(Instant::now());
        Ok(changed || self.files.len() != before)
    }

    /// Whether a new file looks like a copy of a followed one that is still
    /// being written; such a file is left alone for up to `wait`.
    fn copy_in_progress(
        &mut self,
        ino: u64,
        fp: Option<u64>,
        size: u64,
        wait: std::time::Duration,
    ) -> bool {
        let looks_like_copy = fp.is_some()
            && self
                .files
                .iter()
                .map(|t| (t.fp, t.offset))
                .chain(self.truncated.iter().map(|(c, _)| (c.fp, c.offset)))
                .any(|(other, offset)| other == fp && size < offset);
        if !looks_like_copy {
            self.copying.retain(|(i, _)| *i != ino);
            return false;
        }
        let since = match self.copying.iter().find(|(i, _)| *i == ino) {
            Some((_, since)) => *since,
            None => {
                self.copying.push((ino, Instant::now()));
                Instant::now()
            }
        };
        since.elapsed() < wait
    }

    /// Where to start reading a file seen for the first time.
    #[allow(clippy::too_many_arguments)]
    fn start_of(
        &self,
        config: &Config,
        resume: Option<&[FileCursor]>,
        file: &File,
        ino: u64,
        fp: Option<u64>,
        size: u64,
        name: &str,
    ) -> Result<u64, String> {
        if let Some(resume) = resume {
            if let Some(c) = resume.iter().find(|c| c.ino == ino && c.fp == fp) {
                if size < c.offset {
                    log::warn(&format!(
                        "`{name}` is shorter than where reading stopped ({size} < {}): \
                             truncated while safd was down; reading it from its start",
                        c.offset
                    ));
                    return Ok(0);
                }
                return Ok(c.offset);
            }
            if let Some(c) = find_copy(resume, file, fp, size)? {
                return Ok(c.offset);
            }
        }
        // A copy of a followed file (copytruncate): its first part was
        // read from the original already.
        let mut followed: Vec<FileCursor> = self.cursor().files;
        followed.extend(self.truncated.iter().map(|(c, _)| c.clone()));
        if let Some(c) = find_copy(&followed, file, fp, size)? {
            log::info(&format!(
                "`{name}` is a copy of `{}` (rotated by copy and truncate): reading it from \
                     byte {}, where the original was read to",
                c.name, c.offset
            ));
            return Ok(c.offset);
        }
        Ok(
            if self.first_start && self.scanned_at.is_none() && config.start_at_end {
                size
            } else {
                0
            },
        )
    }

    /// Read new lines from every file into `out`.
    pub(crate) fn read(
        &mut self,
        config: &Config,
        out: &mut EventWriter,
        budget: &Budget,
    ) -> Result<Read, String> {
        let mut moved = false;
        let due = self
            .scanned_at
            .is_none_or(|at| at.elapsed() >= config.scan_interval);
        if due {
            moved |= self.scan(config)?;
        }
        let mut more = false;
        let count = self.files.len();
        let first = self.first_served % count.max(1);
        for i in (first..count).chain(0..first) {
            if out.len() >= budget.events || out.text_bytes() >= budget.bytes {
                // The next poll starts with the first file this one did not
                // get to: one busy file cannot starve the others.
                self.first_served = i;
                more = true;
                break;
            }
            let t = &mut self.files[i];
            let before = t.offset;
            more |= read_file(t, config, out, budget, &mut self.truncated)?;
            moved |= t.offset != before;
        }
        Ok(Read { moved, more })
    }

    /// Deep catch-up to `from` (seconds since the epoch): lines carry no
    /// time of their own, so every file changed since then is read again
    /// from its start; the ids of lines read before are the same.
    pub(crate) fn seek(&mut self, config: &Config, from_secs: u64) -> Result<(), String> {
        // A session just opened (from a cursor) knows its files only after
        // its first look at the directory: without it this seek would find
        // nothing to rewind.
        if self.scanned_at.is_none() {
            self.scan(config)?;
        }
        for t in &mut self.files {
            let (_, modified) = t.file.stat()?;
            if modified.is_none_or(|(secs, _)| secs >= from_secs) {
                t.offset = 0;
                t.read_at = 0;
                t.pending = None;
                t.part = 0;
            }
        }
        Ok(())
    }
}

/// Bring `t.tail` up to `t.offset`, from the chunk just read when it
/// holds those bytes, else from the file.
fn settle_tail(t: &mut Tracked, base: u64, chunk: &[u8]) -> Result<(), String> {
    if t.tail_at == t.offset {
        return Ok(());
    }
    let end = t.offset;
    let start = end.saturating_sub(PROBE as u64);
    t.tail = if start >= base && end <= base + chunk.len() as u64 {
        let bytes = &chunk[(start - base) as usize..(end - base) as usize];
        (bytes.len() as u8, hash(bytes))
    } else {
        tail_of(&t.file, end)?
    };
    t.tail_at = end;
    Ok(())
}

fn tail_of(file: &File, offset: u64) -> Result<(u8, u64), String> {
    let bytes = tail_bytes(file, offset)?;
    Ok((bytes.len() as u8, hash(&bytes)))
}

/// The fingerprint of a file's first line (its first 64 bytes at most);
/// `None` until that line is complete.
fn fingerprint(file: &File, size: u64) -> Result<Option<u64>, String> {
    let head = file.read_at(0, PROBE as u64)?;
    Ok(match head.iter().position(|&b| b == b'\n') {
        Some(end) => Some(hash(&head[..end])),
        None if head.len() >= PROBE || size >= PROBE as u64 => Some(hash(&head)),
        None => None,
    })
}

fn tail_bytes(file: &File, offset: u64) -> Result<Vec<u8>, String> {
    let start = offset.saturating_sub(PROBE as u64);
    file.read_at(start, offset - start)
}

fn same_copy(t: &Tracked, c: &FileCursor) -> bool {
    t.fp.is_some() && t.fp == c.fp && t.offset >= c.offset
}

/// A cursor entry `file` is a copy of: same first line, at least as long,
/// the same bytes before the entry's position.
fn find_copy<'a>(
    candidates: &'a [FileCursor],
    file: &File,
    fp: Option<u64>,
    size: u64,
) -> Result<Option<&'a FileCursor>, String> {
    for c in candidates {
        if fp.is_none() || c.fp != fp || size < c.offset || c.offset == 0 {
            continue;
        }
        let recent = tail_bytes(file, c.offset)?;
        if (recent.len() as u8, hash(&recent)) == c.tail {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Read what `t` gained; true when more is ready than this poll took.
fn read_file(
    t: &mut Tracked,
    config: &Config,
    out: &mut EventWriter,
    budget: &Budget,
    truncated: &mut Vec<(FileCursor, Instant)>,
) -> Result<bool, String> {
    let (size, modified) = t.file.stat()?;
    t.now = safd_plugin_sdk::time::now_micros();
    // Truncated and written again since the last look, maybe up to or past
    // where reading stopped: its first line, or the bytes before where
    // reading stopped, are no longer the same.
    let changed = size != t.size || modified != t.modified;
    t.modified = modified;
    let rewritten = changed
        && t.read_at > 0
        && size >= t.read_at
        && (fingerprint(&t.file, size)? != t.fp
            || (t.tail_at == t.offset && tail_of(&t.file, t.offset)? != t.tail));
    if size < t.read_at || rewritten {
        // Truncated in place (copytruncate, or `> file`): what was read
        // stays read; the file starts over.
        flush_pending(t, config, out);
        settle_tail(t, 0, &[])?;
        truncated.push((
            FileCursor {
                ino: t.ino,
                fp: t.fp,
                name: t.name.clone(),
                offset: t.offset,
                tail: t.tail,
            },
            Instant::now(),
        ));
        log::info(&format!(
            "`{}` was truncated (now {size} bytes, read to {}): reading it from its start",
            t.name, t.read_at
        ));
        t.offset = 0;
        t.read_at = 0;
        t.part = 0;
        t.fp = None;
        t.size = 0;
        t.tail = (0, hash(&[]));
        t.tail_at = 0;
    }
    if size > t.size {
        t.grew_at = Instant::now();
    }
    t.size = size;
    if t.fp.is_none() {
        t.fp = fingerprint(&t.file, size)?;
    }
    let mut more = false;
    // Read in windows of at most `WINDOW` bytes, not all a poll may take
    // at once: each window is held in the plugin's memory, which never
    // shrinks (a file of 200 KB read whole left 200 KB touched per
    // source). A line longer than a window is read again in a window that
    // holds the longest allowed line.
    let mut window = WINDOW;
    while size > t.read_at {
        // About what this poll can still take (reading far more only to
        // read it again next time costs a copy through the sandbox), but
        // always room for a whole line of the longest allowed length.
        let events_left = budget.events.saturating_sub(out.len()).max(1);
        let wanted = (events_left * BYTES_PER_LINE_GUESS)
            .min(budget.bytes)
            .max(64 * 1024)
            .max(config.max_line_bytes * 2 + 2);
        let chunk_len = (size - t.read_at).min(wanted.min(window) as u64);
        let chunk = t.file.read_at(t.read_at, chunk_len)?;
        let base = t.read_at;
        let mut at = 0;
        let mut full = false;
        while at < chunk.len() {
            if out.len() >= budget.events || out.text_bytes() >= budget.bytes {
                full = true;
                break;
            }
            let rest = &chunk[at..];
            let line_window = &rest[..rest.len().min(config.max_line_bytes + 2)];
            let newline = memchr::memchr(b'\n', line_window);
            let (line, used, complete) = match newline {
                Some(n) => {
                    let line = &rest[..n];
                    (line.strip_suffix(b"\r").unwrap_or(line), n + 1, true)
                }
                // Longer than allowed: its next part now, the rest after.
                None if rest.len() > config.max_line_bytes => {
                    let part = char_floor(rest, config.max_line_bytes);
                    (&rest[..part], part, false)
                }
                // Not complete in this chunk: the next window, or the
                // writer, completes it.
                None => break,
            };
            take_line(t, config, out, base + at as u64, line, complete);
            at += used;
            t.read_at = base + at as u64;
            if t.pending.is_none() {
                t.offset = t.read_at;
            }
        }
        let read_to = base + chunk.len() as u64;
        let stuck = at == 0 && window >= wanted;
        if full || read_to >= size || stuck {
            more = full || size > read_to;
            settle_tail(t, base, &chunk)?;
            break;
        }
        if at == 0 {
            window = wanted;
        }
    }
    if t.pending
        .as_ref()
        .is_some_and(|p| p.updated.elapsed() >= config.multiline_timeout)
    {
        flush_pending(t, config, out);
        settle_tail(t, 0, &[])?;
    }
    Ok(more)
}

/// One complete line, or the next part of an over-long one, at `start`.
fn take_line(
    t: &mut Tracked,
    config: &Config,
    out: &mut EventWriter,
    start: u64,
    line: &[u8],
    complete: bool,
) {
    let end = start + line.len() as u64;
    if let Some(regex) = config
        .multiline_start
        .as_ref()
        .filter(|_| complete && t.part == 0)
    {
        let text = String::from_utf8_lossy(line);
        let joins = t.pending.as_ref().is_some_and(|p| {
            !regex.is_match(&text) && p.text.len() + 1 + line.len() <= config.max_line_bytes
        });
        if joins {
            if let Some(p) = t.pending.as_mut() {
                p.text.push(b'\n');
                p.text.extend_from_slice(line);
                p.end = end;
                p.updated = Instant::now();
            }
            return;
        }
        flush_pending(t, config, out);
        t.pending = Some(Pending {
            start,
            end,
            text: line.to_vec(),
            updated: Instant::now(),
        });
        return;
    }
    flush_pending(t, config, out);
    let part = if !complete {
        t.part += 1;
        Some(t.part)
    } else if t.part > 0 {
        let last = t.part + 1;
        t.part = 0;
        Some(last)
    } else {
        None
    };
    if !line.is_empty() || part.is_some() {
        emit(t, config, out, start, line, part);
    }
}

fn flush_pending(t: &mut Tracked, config: &Config, out: &mut EventWriter) {
    if let Some(p) = t.pending.take() {
        if !p.text.is_empty() {
            emit(t, config, out, p.start, &p.text, None);
        }
        // Up to the next line's start: the one that ended this event, or
        // the file's end once the event timed out.
        t.offset = t.read_at.max(p.end);
    }
}

/// Emit one event: the line's text, where it is, and an id that is the
/// same whenever the same line of the same file is read.
fn emit(
    t: &mut Tracked,
    config: &Config,
    out: &mut EventWriter,
    start: u64,
    text: &[u8],
    part: Option<u32>,
) {
    use std::fmt::Write as _;
    // Reused buffers, and no formatting machinery per line: this runs once
    // per line.
    if t.id_prefix_of != Some((t.ino, t.fp)) {
        t.id_prefix_of = Some((t.ino, t.fp));
        t.id_prefix.clear();
        let _ = write!(t.id_prefix, "{:016x}{:016x}:", t.ino, t.fp.unwrap_or(0));
    }
    let mut id = std::mem::take(&mut t.id);
    let mut offset = std::mem::take(&mut t.offset_text);
    let mut part_text = std::mem::take(&mut t.part_text);
    id.clear();
    offset.clear();
    part_text.clear();
    let mut digits = itoa::Buffer::new();
    let start_text = digits.format(start);
    id.push_str(&t.id_prefix);
    id.push_str(start_text);
    offset.push_str(start_text);
    // Valid UTF-8 is checked a word at a time; only invalid bytes take the
    // slower replacing path.
    let body = match std::str::from_utf8(text) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(text),
    };
    let mut attributes = [
        ("file", t.name.as_str()),
        ("offset", &offset),
        ("", ""),
        ("", ""),
    ];
    let mut n = 2;
    if let Some(part) = part {
        let _ = write!(part_text, "{part}");
        attributes[n] = ("part", &part_text);
        n += 1;
    }
    if matches!(body, std::borrow::Cow::Owned(_)) {
        attributes[n] = ("invalid_utf8", "true");
        n += 1;
    }
    out.push_fields(
        &id,
        t.now,
        config.severity,
        attributes[..n].iter().copied(),
        body.as_ref(),
    );
    t.id = id;
    t.offset_text = offset;
    t.part_text = part_text;
}

/// The largest cut at or below `max` that does not split a UTF-8 character.
fn char_floor(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    // Continuation bytes are 0b10xx_xxxx; at most 3 precede a boundary.
    while cut > 0 && cut > max.saturating_sub(3) && bytes.get(cut).is_some_and(|b| b & 0xC0 == 0x80)
    {
        cut -= 1;
    }
    cut
}

/// The tailer against real files in a temporary directory (natively: the
/// directory is `dir_native.rs`, the same face the sandbox's has).
#[cfg(all(test, not(target_os = "wasi")))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("file-tail-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn append(&self, name: &str, text: &str) {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.0.join(name))
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Pattern `app.log*` unless `extra` names another.
    fn config(dir: &Path, extra: &str) -> Config {
        let pattern = if extra.contains("\"pattern\"") {
            ""
        } else {
            r#""pattern": "app.log*","#
        };
        let text = format!(
            r#"{{"directory": {:?}, {pattern} "rotate_wait_ms": 0,
                 "scan_interval_ms": 10, "multiline_timeout_ms": 60000 {extra}}}"#,
            dir.to_str().unwrap()
        );
        crate::config::parse(&text).unwrap_or_else(|p| panic!("{}: {}", p[0].path, p[0].message))
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Line {
        body: String,
        id: String,
        attributes: Vec<(String, String)>,
    }

    fn tailer(dir: &TempDir, resume: Option<TailCursor>) -> Tailer {
        Tailer::new(Directory::open(dir.0.to_str().unwrap()).unwrap(), resume)
    }

    /// Everything one read gives, after a fresh look at the directory.
    fn read(tailer: &mut Tailer, config: &Config) -> Vec<Line> {
        tailer.scanned_at = None;
        let mut out = EventWriter::new();
        let budget = Budget {
            events: 100_000,
            bytes: 1 << 30,
        };
        tailer.read(config, &mut out, &budget).unwrap();
        out.finish()
            .iter()
            .map(|e| {
                let e = e.unwrap();
                Line {
                    body: e.body.to_owned(),
                    id: e.id.to_owned(),
                    attributes: e
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                }
            })
            .collect()
    }

    fn bodies(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.body.as_str()).collect()
    }

    #[test]
    fn complete_lines_once_in_order_and_a_partial_line_waits() {
        let dir = TempDir::new("partial");
        let config = config(&dir.0, "");
        let mut tailer = tailer(&dir, None);
        dir.append("app.log", "one\r\ntwo\nthr");
        assert_eq!(bodies(&read(&mut tailer, &config)), ["one", "two"]);
        assert!(read(&mut tailer, &config).is_empty());
        dir.append("app.log", "ee\n\nfour\n");
        // The empty line is no event; its bytes are still read past.
        assert_eq!(bodies(&read(&mut tailer, &config)), ["three", "four"]);
    }

    #[test]
    fn a_renamed_file_is_read_to_its_end_and_its_successor_from_the_start() {
        let dir = TempDir::new("rename");
        let config = config(&dir.0, r#", "pattern": "app.log""#);
        let mut tailer = tailer(&dir, None);
        dir.append("app.log", "a1\na2\n");
        assert_eq!(bodies(&read(&mut tailer, &config)), ["a1", "a2"]);
        // Written just before the rotation, then renamed away from the
        // pattern and replaced.
        dir.append("app.log", "a3\n");
        std::fs::rename(dir.0.join("app.log"), dir.0.join("old.1")).unwrap();
        dir.append("app.log", "b1\n");
        let lines = read(&mut tailer, &config);
        assert_eq!(bodies(&lines), ["a3", "b1"]);
        assert_eq!(lines[0].attributes[0], ("file".into(), "old.1".into()));
        assert!(read(&mut tailer, &config).is_empty());
    }

    #[test]
    fn a_truncated_file_starts_over_and_its_copy_is_not_read_twice() {
        let dir = TempDir::new("copytruncate");
        let config = config(&dir.0, "");
        let mut tailer = tailer(&dir, None);
        dir.append("app.log", "first line of the original\nsecond\n");
        assert_eq!(read(&mut tailer, &config).len(), 2);
        // copytruncate: copy, then truncate in place, then new lines.
        std::fs::copy(dir.0.join("app.log"), dir.0.join("app.log.1")).unwrap();
        std::fs::File::create(dir.0.join("app.log")).unwrap();
        dir.append("app.log", "after the truncation\n");
        let lines = read(&mut tailer, &config);
        assert_eq!(bodies(&lines), ["after the truncation"]);
        assert!(read(&mut tailer, &config).is_empty());
    }

    #[test]
    fn a_resumed_tailer_goes_on_where_the_cursor_was_with_the_same_ids() {
        let dir = TempDir::new("resume");
        let config = config(&dir.0, "");
        let mut first = tailer(&dir, None);
        dir.append("app.log", "one\ntwo\n");
        let before = read(&mut first, &config);
        let cursor = TailCursor::decode(&first.cursor().encode()).unwrap();
        dir.append("app.log", "three\n");
        let mut again = tailer(&dir, Some(cursor));
        assert_eq!(bodies(&read(&mut again, &config)), ["three"]);
        // Read again from nothing: the same lines get the same ids.
        let mut fresh = tailer(&dir, None);
        let all = read(&mut fresh, &config);
        assert_eq!(all[..2], before[..]);
        assert!(
            all.iter()
                .all(|l| l.id.ends_with(&format!(":{}", offset(l))))
        );
    }

    fn offset(line: &Line) -> &str {
        &line
            .attributes
            .iter()
            .find(|(k, _)| k == "offset")
            .unwrap()
            .1
    }

    #[test]
    fn a_seek_rewinds_even_a_session_that_has_not_read_yet() {
        let dir = TempDir::new("seek");
        let config = config(&dir.0, "");
        let mut first = tailer(&dir, None);
        dir.append("app.log", "one\ntwo\n");
        let lines = read(&mut first, &config);
        assert_eq!(bodies(&lines), ["one", "two"]);
        // Opened from the cursor after both lines, it seeks before any read.
        let mut resumed = tailer(&dir, Some(first.cursor()));
        resumed.seek(&config, 0).unwrap();
        assert_eq!(
            read(&mut resumed, &config),
            lines,
            "the same lines, ids and all"
        );
    }

    #[test]
    fn an_over_long_line_comes_in_numbered_parts_cut_between_characters() {
        let dir = TempDir::new("long");
        let config = config(&dir.0, r#", "max_line_bytes": 256"#);
        let mut tailer = tailer(&dir, None);
        // 'é' is two bytes: 255 is inside one, so the first cut is at 254.
        let long = format!("x{}", "é".repeat(200));
        dir.append("app.log", &format!("{long}\nshort\n"));
        let lines = read(&mut tailer, &config);
        let parts: Vec<_> = lines
            .iter()
            .map(|l| {
                l.attributes
                    .iter()
                    .find(|(k, _)| k == "part")
                    .map(|p| p.1.clone())
            })
            .collect();
        assert_eq!(parts, [Some("1".into()), Some("2".into()), None]);
        assert_eq!(lines[0].body.len(), 255);
        assert_eq!(format!("{}{}", lines[0].body, lines[1].body), long);
        assert_eq!(lines[2].body, "short");
    }

    #[test]
    fn lines_across_read_windows_come_whole_once_in_order() {
        let dir = TempDir::new("windows");
        let config = config(&dir.0, r#", "max_line_bytes": 300000"#);
        let mut tailer = tailer(&dir, None);
        // Lines of many lengths so that window ends fall inside lines, and
        // lines longer than a window (read again in a larger one).
        let mut expected = Vec::new();
        let mut text = String::new();
        for n in 0..400usize {
            let len = match n % 50 {
                7 => WINDOW + 1_000,
                23 => 3 * WINDOW,
                _ => 1 + (n * 7919) % 3_000,
            };
            let line = format!("{n}:{}", "y".repeat(len));
            text.push_str(&line);
            text.push('\n');
            expected.push(line);
        }
        dir.append("app.log", &text);
        let lines = read(&mut tailer, &config);
        assert_eq!(bodies(&lines), expected);
        assert!(
            lines
                .iter()
                .all(|l| l.attributes.iter().all(|(k, _)| k != "part"))
        );
        assert!(read(&mut tailer, &config).is_empty());
    }

    #[test]
    fn continuation_lines_join_the_event_they_follow() {
        let dir = TempDir::new("multiline");
        let config = config(&dir.0, r#", "multiline_start": "^\\d""#);
        let mut tailer = tailer(&dir, None);
        dir.append("app.log", "1 boom\n  at a\n  at b\n2 next\n");
        // The second event waits: a continuation may still come.
        assert_eq!(
            bodies(&read(&mut tailer, &config)),
            ["1 boom\n  at a\n  at b"]
        );
        dir.append("app.log", "3 last\n");
        assert_eq!(bodies(&read(&mut tailer, &config)), ["2 next"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged_not_dropped() {
        let dir = TempDir::new("utf8");
        let config = config(&dir.0, "");
        let mut tailer = tailer(&dir, None);
        std::fs::write(dir.0.join("app.log"), b"bad \xff byte\n").unwrap();
        let lines = read(&mut tailer, &config);
        assert_eq!(lines[0].body, "bad \u{fffd} byte");
        assert!(
            lines[0]
                .attributes
                .contains(&("invalid_utf8".into(), "true".into()))
        );
    }
}
