//! The event log: every delivery's segments appended to numbered files and
//! synced before the delivery is acknowledged.
//!
//! The log, not the database, is what makes a delivery durable: one append
//! and one `fdatasync` per delivery. sled holds the index (where each
//! segment lies, held seqs, ids, counters) and is written after the sync
//! without waiting for its own flush; on open, records the index does not
//! cover yet are read back from the log and indexed again. Keeping events
//! out of sled matters: with segments stored as sled values, sled rewrote
//! leaves of up to 16 segments (2 MiB) when it consolidated them, which
//! stalled one delivery in eight for milliseconds.
//!
//! Record layout: magic (4 bytes), payload length (u32 LE), CRC-32 of the
//! payload (u32 LE), payload (an encoded segment, `segment`).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 4] = *b"SMG1";
const HEADER: usize = 12;
/// A file is closed for appends once it reaches this size.
const FILE_BYTES: u64 = 64 << 20;
/// Larger payloads are not written by this server; a length above it in a
/// file is damage, not a record.
const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("event log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "event log {path} is damaged at byte {offset}: {reason}; records after it cannot be \
         read (restore the data directory from a backup, or move the file away to start without \
         its events)"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// Where a record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
}

impl Location {
    pub const ENCODED: usize = 16;

    /// The position just after this record.
    pub fn end(self) -> Position {
        Position {
            file: self.file,
            offset: self.offset + HEADER as u64 + u64::from(self.len),
        }
    }

    pub fn encode(self) -> [u8; Self::ENCODED] {
        let mut out = [0; Self::ENCODED];
        out[..4].copy_from_slice(&self.file.to_be_bytes());
        out[4..12].copy_from_slice(&self.offset.to_be_bytes());
        out[12..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED] = bytes.try_into().ok()?;
        let (file, rest) = bytes.split_first_chunk::<4>()?;
        let (offset, len) = rest.split_first_chunk::<8>()?;
        Some(Self {
            file: u32::from_be_bytes(*file),
            offset: u64::from_be_bytes(*offset),
            len: u32::from_be_bytes(len.try_into().ok()?),
        })
    }
}

/// A point in the log: everything before it is indexed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub file: u32,
    pub offset: u64,
}

impl Position {
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[..4].copy_from_slice(&self.file.to_be_bytes());
        out[4..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (file, offset) = bytes.split_first_chunk::<4>()?;
        Some(Self {
            file: u32::from_be_bytes(*file),
            offset: u64::from_be_bytes(offset.try_into().ok()?),
        })
    }
}

/// Records read back on open, with where each lies.
pub type Unindexed = Vec<(Location, Vec<u8>)>;

/// The log directory and the file being appended to.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: Arc<File>,
    file_id: u32,
    len: u64,
    /// Bytes of the current file handed to a [`SyncJob`] to drop from the
    /// page cache.
    dropped: u64,
}

/// Syncing what was appended, then dropping it from the page cache.
///
/// The log is written once and read only by queries (a few segments
/// each), so keeping every written page cached only grows the page cache
/// with the log. Dropped once synced, the pages are freed and the next
/// appends reuse them: on this project's 2-core VM, appending into pages
/// the guest had never touched cost about 10 times as much as into reused
/// ones once the page cache had grown by some 2 GiB (a 330 KiB append:
/// 66 µs → 780 µs), which halved the server's intake in a long run.
#[derive(Debug)]
pub struct SyncJob {
    file: Arc<File>,
    path: PathBuf,
    /// Whole pages now written, to drop once synced.
    drop: std::ops::Range<u64>,
}

/// The page size the drop range is rounded to: a partly written last page
/// stays cached (dropping it would make the next append read it back).
const PAGE: u64 = 4096;

impl SyncJob {
    /// `fdatasync`, then drop the synced pages (a failed drop costs only
    /// memory and is logged at debug level).
    pub fn run(self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })?;
        drop_cached(&self.file, &self.path, self.drop);
        Ok(())
    }
}

fn drop_cached(file: &File, path: &Path, range: std::ops::Range<u64>) {
    #[cfg(target_os = "linux")]
    if let Some(len) = range
        .end
        .checked_sub(range.start)
        .and_then(std::num::NonZeroU64::new)
        && let Err(err) =
            rustix::fs::fadvise(file, range.start, Some(len), rustix::fs::Advice::DontNeed)
    {
        tracing::debug!(path = %path.display(), "cannot drop synced log pages: {err}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, path, range);
}

fn file_name(id: u32) -> String {
    format!("events-{id:08}.log")
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Open the log in `dir` (created if missing) and read back every
    /// record from `indexed` on. A record cut short at the end of the last
    /// file was never acknowledged (the server stopped before its sync
    /// returned): it is cut off.
    pub fn open(dir: &Path, indexed: Position) -> Result<(Self, Unindexed), JournalError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        if created && let Some(parent) = dir.parent() {
            // The directory's own entry must survive a crash too.
            sync_dir(parent)?;
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("events-"))
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(id) = id {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let last = ids.last().copied().unwrap_or(1);
        let mut records = Vec::new();
        for &id in ids.iter().filter(|&&id| id >= indexed.file) {
            let from = if id == indexed.file {
                indexed.offset
            } else {
                0
            };
            read_records(dir, id, from, id == last, &mut records)?;
        }
        let path = dir.join(file_name(last));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        if ids.is_empty() {
            sync_dir(dir)?;
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                file: Arc::new(file),
                file_id: last,
                len,
                dropped: 0,
            },
            records,
        ))
    }

    /// Append one record (not yet synced).
    #[cfg(test)]
    pub fn append(&mut self, payload: &[u8]) -> Result<Location, JournalError> {
        let locations = self.append_all([payload])?;
        locations
            .into_iter()
            .next()
            .ok_or_else(|| JournalError::Io {
                path: self.path(),
                source: io::Error::other("no record appended"),
            })
    }

    /// Append records with one write (a delivery's records go to the file
    /// together, framed as if appended one by one; `writev`, so the
    /// payloads are not copied into one buffer first).
    pub fn append_all<'p>(
        &mut self,
        payloads: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<Vec<Location>, JournalError> {
        if self.len >= FILE_BYTES {
            self.rotate()?;
        }
        let payloads: Vec<&[u8]> = payloads.into_iter().collect();
        let mut headers = Vec::with_capacity(payloads.len());
        let mut locations = Vec::with_capacity(payloads.len());
        let mut offset = self.len;
        for payload in &payloads {
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|&len| len <= MAX_RECORD)
                .ok_or_else(|| JournalError::Io {
                    path: self.path(),
                    source: io::Error::other("record larger than 64 MiB"),
                })?;
            let mut header = [0u8; HEADER];
            header[..4].copy_from_slice(&MAGIC);
            header[4..8].copy_from_slice(&len.to_le_bytes());
            header[8..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
            headers.push(header);
            locations.push(Location {
                file: self.file_id,
                offset,
                len,
            });
            offset += (HEADER + payload.len()) as u64;
        }
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(&payloads)
            .flat_map(|(header, payload)| [IoSlice::new(header), IoSlice::new(payload)])
            .collect();
        let mut left = &mut slices[..];
        let mut file = &*self.file;
        while !left.is_empty() {
            match file.write_vectored(left) {
                Ok(0) => {
                    return Err(io_error(&self.path())(io::ErrorKind::WriteZero.into()));
                }
                Ok(written) => IoSlice::advance_slices(&mut left, written),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io_error(&self.path())(err)),
            }
        }
        self.len = offset;
        Ok(locations)
    }

    /// The file the latest appends went to (earlier files were synced when
    /// they were closed).
    #[cfg(test)]
    pub fn current_file(&self) -> (Arc<File>, PathBuf) {
        (self.file.clone(), self.path())
    }

    fn path(&self) -> PathBuf {
        self.dir.join(file_name(self.file_id))
    }

    /// The sync that makes the appends so far durable (run it off the
    /// async runtime).
    pub fn sync_job(&mut self) -> SyncJob {
        let end = self.len - self.len % PAGE;
        let start = self.dropped.min(end);
        self.dropped = end;
        SyncJob {
            file: self.file.clone(),
            path: self.path(),
            drop: start..end,
        }
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(io_error(&self.path()))?;
        drop_cached(&self.file, &self.path(), self.dropped..self.len);
        let next = self.file_id + 1;
        let path = self.dir.join(file_name(next));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        sync_dir(&self.dir)?;
        self.file = Arc::new(file);
        self.file_id = next;
        self.len = 0;
        self.dropped = 0;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn check_header(header: &[u8; HEADER]) -> Result<(u32, u32), String> {
    if header[..4] != MAGIC {
        return Err("no record starts here".to_owned());
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Err(format!("record length {len} is out of range"));
    }
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    Ok((len, crc))
}

/// Read every record of file `id` from `from` into `out`.
fn read_records(
    dir: &Path,
    id: u32,
    from: u64,
    is_last: bool,
    out: &mut Unindexed,
) -> Result<(), JournalError> {
    let path = dir.join(file_name(id));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let size = file.metadata().map_err(io_error(&path))?.len();
    if from > size {
        // Appends would land below what the index claims to cover and be
        // skipped by the next replay.
        return Err(JournalError::Damaged {
            path,
            offset: size,
            reason: format!("the index covers it up to byte {from}, but the file ends here"),
        });
    }
    file.seek(SeekFrom::Start(from)).map_err(io_error(&path))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, &mut file);
    let mut offset = from;
    let damaged = |offset, reason: String| JournalError::Damaged {
        path: path.clone(),
        offset,
        reason,
    };
    let mut torn = None;
    while offset < size {
        let mut header = [0u8; HEADER];
        if size - offset < HEADER as u64 {
            torn = Some(offset);
            break;
        }
        reader.read_exact(&mut header).map_err(io_error(&path))?;
        let (len, crc) = match check_header(&header) {
            Ok(found) => found,
            Err(reason) if is_last && all_zero(&header) => {
                tracing::debug!("{reason}");
                torn = Some(offset);
                break;
            }
            Err(reason) => return Err(damaged(offset, reason)),
        };
        let end = offset + HEADER as u64 + u64::from(len);
        if end > size {
            torn = Some(offset);
            break;
        }
        let mut payload = vec![0; len as usize];
        reader.read_exact(&mut payload).map_err(io_error(&path))?;
        if crc32fast::hash(&payload) != crc {
            if is_last && end == size {
                torn = Some(offset);
                break;
            }
            return Err(damaged(offset, "checksum mismatch".to_owned()));
        }
        out.push((
            Location {
                file: id,
                offset,
                len,
            },
            payload,
        ));
        offset = end;
    }
    if let Some(at) = torn {
        if !is_last {
            return Err(damaged(at, "record cut short".to_owned()));
        }
        // Its sync never returned, so nobody was told it was stored.
        tracing::warn!(
            file = %path.display(),
            offset = at,
            "cutting off a record that was being written when the server stopped"
        );
        drop(reader);
        file.set_len(at).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
    }
    Ok(())
}

/// A header of zeros: the file system extended the file but the write did
/// not land.
fn all_zero(header: &[u8]) -> bool {
    header.iter().all(|&b| b == 0)
}

/// Reads records by location, keeping the files it opened.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    open: std::collections::HashMap<u32, File>,
}

impl JournalReader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            open: std::collections::HashMap::new(),
        }
    }

    pub fn read(&mut self, location: Location) -> Result<Vec<u8>, JournalError> {
        let path = self.dir.join(file_name(location.file));
        let file = match self.open.entry(location.file) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(File::open(&path).map_err(io_error(&path))?)
            }
        };
        let mut bytes = vec![0; HEADER + location.len as usize];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(io_error(&path))?;
        let damaged = |reason: String| JournalError::Damaged {
            path: path.clone(),
            offset: location.offset,
            reason,
        };
        let header: &[u8; HEADER] = bytes[..HEADER]
            .try_into()
            .map_err(|_| damaged("short record".to_owned()))?;
        let (len, crc) = check_header(header).map_err(damaged)?;
        if len != location.len {
            return Err(damaged(format!(
                "record length {len}, the index says {}",
                location.len
            )));
        }
        let payload = bytes.split_off(HEADER);
        if crc32fast::hash(&payload) != crc {
            return Err(damaged("checksum mismatch".to_owned()));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, from: Position) -> (Journal, Unindexed) {
        Journal::open(dir, from).unwrap()
    }

    #[test]
    fn records_read_back_by_location_and_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = open(dir.path(), Position::default());
        assert!(replay.is_empty());
        let a = journal.append(b"first").unwrap();
        let b = journal.append(b"second").unwrap();
        assert_eq!(JournalReader::new(dir.path()).read(b).unwrap(), b"second");
        assert_eq!(Location::decode(&a.encode()), Some(a));
        drop(journal);
        let (_, replay) = open(dir.path(), a.end());
        assert_eq!(replay, vec![(b, b"second".to_vec())]);
        let (_, replay) = open(dir.path(), Position { file: 0, offset: 0 });
        assert_eq!(replay.len(), 2);
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path(), Position::default());
        let a = journal.append(b"kept").unwrap();
        journal.append(b"torn record").unwrap();
        let (_, path) = journal.current_file();
        drop(journal);
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 3).unwrap();
        let (mut journal, replay) = open(dir.path(), Position::default());
        assert_eq!(replay, vec![(a, b"kept".to_vec())]);
        let c = journal.append(b"after").unwrap();
        assert_eq!(c.offset, a.end().offset);
        drop(journal);
        let (_, replay) = open(dir.path(), Position::default());
        assert_eq!(replay.len(), 2);
    }

    #[test]
    fn damage_before_the_end_is_named_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path(), Position::default());
        // Three records written at once are framed one by one: damage to
        // the middle one is named.
        let written = journal
            .append_all([&b"one"[..], &b"two"[..], &b"three"[..]])
            .unwrap();
        let b = written[1];
        let (_, path) = journal.current_file();
        drop(journal);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", b.offset + HEADER as u64).unwrap();
        let err = Journal::open(dir.path(), Position::default()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("events-00000001.log"), "{message}");
        assert!(message.contains(&format!("byte {}", b.offset)), "{message}");
        assert!(matches!(err, JournalError::Damaged { .. }));
        assert!(JournalReader::new(dir.path()).read(b).is_err());
    }

    #[test]
    fn a_log_shorter_than_the_index_says_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path(), Position::default());
        let a = journal.append(b"one").unwrap();
        drop(journal);
        let beyond = Position {
            file: a.file,
            offset: a.end().offset + 100,
        };
        let err = Journal::open(dir.path(), beyond).unwrap_err().to_string();
        assert!(err.contains("the index covers it up to byte"), "{err}");
    }

    #[test]
    fn files_rotate_and_replay_crosses_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(dir.path(), Position::default());
        let first = journal.append(b"a").unwrap();
        journal.len = FILE_BYTES;
        let second = journal.append(b"b").unwrap();
        assert_eq!(second.file, first.file + 1);
        assert_eq!(second.offset, 0);
        drop(journal);
        let (mut journal, replay) = open(dir.path(), Position::default());
        assert_eq!(replay.len(), 2);
        let third = journal.append(b"c").unwrap();
        assert_eq!(third.file, second.file);
        assert_eq!(JournalReader::new(dir.path()).read(first).unwrap(), b"a");
    }
}
