//! Event chunks live in append-only segment files; sled keeps only small
//! records (where each chunk is, stream and group state).
//!
//! Why not sled for the events themselves: sled 0.34 rewrites a whole leaf
//! for an insert and writes any page over a quarter of its segment as a
//! separate blob file with its own fsync, so each stored byte was written
//! several times and a durable ingest cost several fsyncs. A segment file
//! takes each chunk once, in one `pwrite`, and one `fdatasync` covers every
//! chunk appended before it (group commit, shared by all streams).
//!
//! The segment files are the record of what was ingested: each chunk is
//! written as a frame whose header names its stream and seqs, and the last
//! frame of an ingest carries the source cursor. An ingest returns once its
//! frames are synced; the index entries and stream state it writes to sled
//! are flushed lazily (every half second, and before segment files are
//! deleted). Opening replays the frames that sled's durable state does not
//! reflect yet ([`super::replay`]), so one fsync per group commit
//! suffices. Every durable index entry points at durable bytes: entries are
//! written only after their frames are synced. A new segment is started at
//! every open, so a torn tail is never appended to.
//!
//! The log is the truth, sled only an index of it: every segment begins
//! with a checkpoint of every stream (its name, next seq and cursor as of
//! the segment's start), so the newest segment — which is never deleted —
//! together with the frames after its checkpoints says where every stream
//! stands even after all its events were removed, and an index that was
//! lost or damaged is rebuilt from the segments alone.

use super::codec;
use super::flush::GroupCommit;
use safd_connector::Cursor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// A segment is closed, and a new one started, once it holds this much.
/// Segments are deleted whole once nothing in them is referenced, so this
/// bounds the disk space that acknowledged-and-trimmed events can hold on to.
const SEGMENT_BYTES: u64 = 64 << 20;

const EXTENSION: &str = "seg";

/// Starts every frame, so a scan recognises where frames stop.
const FRAME_MAGIC: [u8; 4] = *b"SAFC";
/// Starts every stream checkpoint (a header without a chunk).
const CHECKPOINT_MAGIC: [u8; 4] = *b"SAFK";
/// A frame header is small (a stream name and a cursor); anything larger
/// is damage.
const MAX_HEADER_BYTES: u32 = 1 << 20;

/// What a frame says about the chunk that follows it. Written as a
/// checksummed record (`codec::encode`); the chunk carries its own checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FrameHeader {
    pub(crate) stream_id: u32,
    /// The stream's name, so a stream whose state never reached sled's
    /// disk is recovered with it.
    pub(crate) stream: String,
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
    /// The first seq of the ingest this chunk belongs to: an ingest counts
    /// only if every one of its frames is there.
    pub(crate) ingest_first_seq: u64,
    /// Set on the ingest's last frame, which carries its cursor.
    pub(crate) last: bool,
    pub(crate) cursor: Option<Cursor>,
    pub(crate) ingested_at: i64,
    pub(crate) earliest: i64,
    pub(crate) payload_len: u32,
}

/// Where a stream stands after its last complete ingest: written at the
/// start of every segment, so the state of every stream survives the
/// deletion of the segments its events were in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) stream_id: u32,
    pub(crate) stream: String,
    /// The seq the stream's next event gets.
    pub(crate) next_seq: u64,
    /// The source cursor stored with the stream's last batch.
    pub(crate) cursor: Option<Cursor>,
}

impl Checkpoint {
    /// Follow a frame of the stream: an ingest's last frame moves the
    /// stream on (its seqs are taken, its cursor stored). Never backwards:
    /// frames moved from older stores (`migrate`) carry earlier seqs.
    fn follow(&mut self, header: &FrameHeader) {
        let end = header.first_seq + header.count;
        if header.last && end >= self.next_seq {
            self.next_seq = end;
            if header.cursor.is_some() {
                self.cursor.clone_from(&header.cursor);
            }
        }
    }
}

/// A frame found by [`scan`].
#[derive(Debug)]
pub(crate) struct ScannedFrame {
    pub(crate) segment: u64,
    pub(crate) payload_offset: u64,
    pub(crate) header: FrameHeader,
}

/// What [`scan`] finds, in the order it was written.
#[derive(Debug)]
pub(crate) enum Scanned {
    Frame(ScannedFrame),
    Checkpoint(Checkpoint),
}

/// Where a chunk is stored, and what retention needs to know about it
/// without reading it. The value of a chunk's index entry in sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkIndex {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// When the chunk was ingested (µs since the Unix epoch).
    pub(crate) ingested_at: i64,
    /// The earliest event time in the chunk, where a source must seek to
    /// re-read it once it is removed.
    pub(crate) earliest: i64,
}

/// A segment file and how long it was when its handle was taken: what an
/// fsync of the handle makes durable at least.
#[derive(Clone)]
struct Appended {
    number: u64,
    file: Arc<File>,
    len: u64,
}

/// How much of each segment file this process has fsynced, by segment
/// number: recorded by [`fdatasync`], the one function that syncs segment
/// data, right after the system call returned. Crash tests cut the files
/// at these lengths to simulate a power loss (everything not synced is
/// gone) and check that every source commit survived it.
type SyncedLengths = Arc<Mutex<BTreeMap<u64, u64>>>;

/// fsync `segment` and record that its first `len` bytes are durable.
fn fdatasync(segment: &Appended, synced: &SyncedLengths) -> io::Result<()> {
    segment.file.sync_data()?;
    let mut synced = synced.lock().unwrap_or_else(PoisonError::into_inner);
    let durable = synced.entry(segment.number).or_default();
    *durable = (*durable).max(segment.len);
    Ok(())
}

struct Writer {
    number: u64,
    file: Arc<File>,
    len: u64,
    /// Closed segments whose last appends are not yet synced.
    unsynced: Vec<Appended>,
    /// Every stream as of the frames appended so far: what the next
    /// segment starts with.
    streams: BTreeMap<u32, Checkpoint>,
}

pub(crate) struct SegmentLog {
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
    /// Open handles for reading, by segment number.
    files: Mutex<BTreeMap<u64, Arc<File>>>,
    /// Chunks each segment holds that are (or are about to be) indexed.
    live: Mutex<BTreeMap<u64, u64>>,
    sync: GroupCommit,
    synced: SyncedLengths,
}

impl SegmentLog {
    /// Open the segments under `dir` and start a new one to append to,
    /// beginning with a checkpoint of every stream in `streams` (synced,
    /// with its directory entry, before this returns). Nothing is deleted
    /// here: the caller first declares what the index refers to
    /// ([`SegmentLog::track`]), then calls
    /// [`SegmentLog::delete_unreferenced`].
    pub(crate) fn open(dir: &Path, streams: impl Iterator<Item = Checkpoint>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let number = segment_files(dir)?.keys().next_back().copied().unwrap_or(0) + 1;
        let file = Arc::new(create_segment(dir, number)?);
        let streams: BTreeMap<u32, Checkpoint> = streams.map(|c| (c.stream_id, c)).collect();
        let len = write_checkpoints(&file, &streams)?;
        let synced_lengths = SyncedLengths::default();
        fdatasync(
            &Appended {
                number,
                file: file.clone(),
                len,
            },
            &synced_lengths,
        )?;
        let writer = Arc::new(Mutex::new(Writer {
            number,
            file: file.clone(),
            len,
            unsynced: Vec::new(),
            streams,
        }));
        let (to_sync, lengths) = (writer.clone(), synced_lengths.clone());
        Ok(Self {
            dir: dir.to_owned(),
            writer,
            files: Mutex::new(BTreeMap::from([(number, file)])),
            live: Mutex::new(BTreeMap::new()),
            sync: GroupCommit::new(move || sync_written(&to_sync, &lengths)),
            synced: synced_lengths,
        })
    }

    /// Count, for each segment in `indexed`, one chunk the index refers to.
    pub(crate) fn track(&self, indexed: impl Iterator<Item = u64>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for segment in indexed {
            *live.entry(segment).or_default() += 1;
        }
    }

    /// Append one frame per chunk and say where each chunk went (segment,
    /// offset). Not durable until [`SegmentLog::durable`] returns.
    pub(crate) fn append<'a>(
        &self,
        frames: impl Iterator<Item = (&'a FrameHeader, &'a [u8])>,
    ) -> io::Result<Vec<(u64, u64)>> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (header, chunk) in frames {
            let head = encode_head(FRAME_MAGIC, header)?;
            let len = (head.len() + chunk.len()) as u64;
            if writer.len > 0 && writer.len + len > SEGMENT_BYTES {
                self.rotate(&mut writer)?;
            }
            let at = writer.len;
            writer.file.write_all_at(&head, at)?;
            writer.file.write_all_at(chunk, at + head.len() as u64)?;
            out.push((writer.number, at + head.len() as u64));
            writer.len += len;
            writer
                .streams
                .entry(header.stream_id)
                .or_insert_with(|| Checkpoint {
                    stream_id: header.stream_id,
                    stream: header.stream.clone(),
                    next_seq: 1,
                    cursor: None,
                })
                .follow(header);
            // A frame without events (a cursor alone) gets no index entry,
            // so it keeps nothing alive.
            if header.count > 0 {
                *self
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(writer.number)
                    .or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Close the active segment and start the next one with a checkpoint
    /// of every stream, so deleting the closed one later loses no stream's
    /// state.
    fn rotate(&self, writer: &mut Writer) -> io::Result<()> {
        let number = writer.number + 1;
        let file = Arc::new(create_segment(&self.dir, number)?);
        let checkpoints = write_checkpoints(&file, &writer.streams)?;
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, file.clone());
        let closed = std::mem::replace(&mut writer.file, file);
        let closed = Appended {
            number: writer.number,
            file: closed,
            len: writer.len,
        };
        writer.unsynced.push(closed);
        writer.number = number;
        writer.len = checkpoints;
        Ok(())
    }

    /// Wait until every chunk appended before this call is on disk (one
    /// fsync shared with concurrent callers).
    pub(crate) async fn durable(&self) -> Result<std::time::Duration, String> {
        self.sync.durable().await
    }

    /// [`SegmentLog::durable`] for callers outside the runtime (opening).
    pub(crate) fn sync_now(&self) -> io::Result<()> {
        sync_written(&self.writer, &self.synced).map_err(io::Error::other)
    }

    /// Per segment file, how many of its bytes this process has fsynced
    /// (see [`SyncedLengths`]).
    pub(crate) fn synced_lengths(&self) -> Vec<(PathBuf, u64)> {
        self.synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&number, &len)| (segment_path(&self.dir, number), len))
            .collect()
    }

    /// The stored bytes of the chunk at `index`.
    pub(crate) fn read(&self, index: &ChunkIndex) -> io::Result<Vec<u8>> {
        read_chunk(&*self.file(index.segment)?, index)
    }

    fn file(&self, number: u64) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = files.get(&number) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(segment_path(&self.dir, number))?);
        files.insert(number, file.clone());
        Ok(file)
    }

    /// A chunk of `segment` is no longer referenced. Returns whether the
    /// segment now holds none (see [`SegmentLog::delete_unreferenced`]).
    pub(crate) fn release(&self, segment: u64) -> bool {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.get_mut(&segment) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                live.remove(&segment);
                true
            }
            None => false,
        }
    }

    /// Delete the closed segments no chunk refers to any more. Call only
    /// once the index removals that released them are durable: until then
    /// a crash would bring the references back.
    pub(crate) fn delete_unreferenced(&self) -> io::Result<usize> {
        // The active segment's checkpoints must be on disk before the
        // segments whose state they repeat go.
        sync_written(&self.writer, &self.synced).map_err(io::Error::other)?;
        let active = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .number;
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut deleted = 0;
        for (number, path) in segment_files(&self.dir)? {
            if number < active && !live.contains_key(&number) {
                files.remove(&number);
                self.synced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&number);
                match std::fs::remove_file(&path) {
                    Ok(()) => deleted += 1,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(deleted)
    }

    /// How many fsyncs of segment files have run.
    pub(crate) fn syncs(&self) -> u64 {
        self.sync.flushes()
    }
}

/// `magic`, the record's length, then the record (checksummed by `codec`).
fn encode_head<T: Serialize>(magic: [u8; 4], record: &T) -> io::Result<Vec<u8>> {
    let record = codec::encode(record).map_err(io::Error::other)?;
    let len = u32::try_from(record.len()).map_err(io::Error::other)?;
    let mut head = Vec::with_capacity(8 + record.len());
    head.extend_from_slice(&magic);
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(&record);
    Ok(head)
}

/// Write a checkpoint of every stream at the start of a new segment, in
/// one write; returns the bytes written.
fn write_checkpoints(file: &File, streams: &BTreeMap<u32, Checkpoint>) -> io::Result<u64> {
    let mut bytes = Vec::new();
    for checkpoint in streams.values() {
        bytes.extend_from_slice(&encode_head(CHECKPOINT_MAGIC, checkpoint)?);
    }
    file.write_all_at(&bytes, 0)?;
    Ok(bytes.len() as u64)
}

/// Every frame header and checkpoint in the segments under `dir`, in the
/// order written. A segment's scan stops at the first record that is
/// incomplete or damaged: what follows was never confirmed (a sync covers
/// everything written before it). Chunks are not read or checked here.
pub(crate) fn scan(dir: &Path) -> io::Result<Vec<Scanned>> {
    let mut out = Vec::new();
    for (segment, path) in segment_files(dir)? {
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let mut at = 0u64;
        while at + 8 <= size {
            let mut prefix = [0u8; 8];
            file.read_exact_at(&mut prefix, at)?;
            let magic = [prefix[0], prefix[1], prefix[2], prefix[3]];
            let header_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
            if (magic != FRAME_MAGIC && magic != CHECKPOINT_MAGIC)
                || header_len > MAX_HEADER_BYTES
                || at + 8 + u64::from(header_len) > size
            {
                break;
            }
            let mut record = vec![0; header_len as usize];
            file.read_exact_at(&mut record, at + 8)?;
            let end_of_head = at + 8 + u64::from(header_len);
            if magic == CHECKPOINT_MAGIC {
                let Ok(checkpoint) = codec::decode::<Checkpoint>(&record) else {
                    break;
                };
                out.push(Scanned::Checkpoint(checkpoint));
                at = end_of_head;
                continue;
            }
            let Ok(header) = codec::decode::<FrameHeader>(&record) else {
                break;
            };
            let end = end_of_head + u64::from(header.payload_len);
            if end > size {
                break;
            }
            out.push(Scanned::Frame(ScannedFrame {
                segment,
                payload_offset: end_of_head,
                header,
            }));
            at = end;
        }
        if at < size {
            tracing::debug!(
                segment = %path.display(),
                at,
                size,
                "segment ends in an incomplete frame (never confirmed); ignored"
            );
        }
    }
    Ok(out)
}

/// The stored bytes of a chunk, for callers without an open log.
pub(crate) fn read_chunk_at(dir: &Path, index: &ChunkIndex) -> io::Result<Vec<u8>> {
    read_chunk(&File::open(segment_path(dir, index.segment))?, index)
}

fn read_chunk(file: &File, index: &ChunkIndex) -> io::Result<Vec<u8>> {
    let mut out = vec![0; index.len as usize];
    file.read_exact_at(&mut out, index.offset)?;
    Ok(out)
}

/// The segment files under `dir`, by number.
fn segment_files(dir: &Path) -> io::Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if let Some(number) = segment_number(&path) {
                    out.insert(number, path);
                }
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    Ok(out)
}

/// fsync the active segment and any closed one with unsynced appends.
/// Handles are taken under the lock, synced outside it, so appends go on
/// meanwhile (they are covered by a later sync).
fn sync_written(writer: &Mutex<Writer>, synced: &SyncedLengths) -> Result<(), String> {
    let (active, closed) = {
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        let active = Appended {
            number: writer.number,
            file: writer.file.clone(),
            len: writer.len,
        };
        (active, std::mem::take(&mut writer.unsynced))
    };
    for (i, segment) in closed.iter().enumerate() {
        if let Err(err) = fdatasync(segment, synced) {
            // The closed segments not yet synced stay on the list: the
            // next sync tries them again instead of reporting them durable.
            let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut kept = closed[i..].to_vec();
            kept.append(&mut writer.unsynced);
            writer.unsynced = kept;
            return Err(err.to_string());
        }
    }
    fdatasync(&active, synced).map_err(|e| e.to_string())
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.{EXTENSION}"))
}

fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != EXTENSION {
        return None;
    }
    u64::from_str_radix(path.file_stem()?.to_str()?, 16).ok()
}

/// Create segment `number` and make its directory entry durable, so the
/// chunks synced into it later cannot vanish with the entry in a crash.
fn create_segment(dir: &Path, number: u64) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, number))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(first_seq: u64, payload: &[u8]) -> FrameHeader {
        FrameHeader {
            stream_id: 7,
            stream: "ems".to_owned(),
            first_seq,
            count: 1,
            ingest_first_seq: first_seq,
            last: true,
            cursor: Some(vec![first_seq as u8]),
            ingested_at: 0,
            earliest: 0,
            payload_len: payload.len() as u32,
        }
    }

    fn index(at: (u64, u64), payload: &[u8]) -> ChunkIndex {
        ChunkIndex {
            segment: at.0,
            offset: at.1,
            len: payload.len() as u32,
            ingested_at: 0,
            earliest: 0,
        }
    }

    fn frames(dir: &Path) -> Vec<ScannedFrame> {
        scan(dir)
            .unwrap()
            .into_iter()
            .filter_map(|item| match item {
                Scanned::Frame(frame) => Some(frame),
                Scanned::Checkpoint(_) => None,
            })
            .collect()
    }

    fn checkpoints(dir: &Path) -> Vec<Checkpoint> {
        scan(dir)
            .unwrap()
            .into_iter()
            .filter_map(|item| match item {
                Scanned::Checkpoint(checkpoint) => Some(checkpoint),
                Scanned::Frame(_) => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn chunks_read_back_and_unreferenced_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), std::iter::empty()).unwrap();
        let (one, two) = (header(1, b"first"), header(2, b"second"));
        let at = log
            .append([(&one, &b"first"[..]), (&two, &b"second"[..])].into_iter())
            .unwrap();
        log.durable().await.unwrap();
        assert_eq!(log.read(&index(at[0], b"first")).unwrap(), b"first");
        assert_eq!(log.read(&index(at[1], b"second")).unwrap(), b"second");
        drop(log);
        let scanned = frames(dir.path());
        assert_eq!(scanned.len(), 2);
        assert_eq!(scanned[1].header, two);
        assert_eq!((scanned[1].segment, scanned[1].payload_offset), at[1]);

        // Reopened with the chunks indexed: the segment stays, appends go
        // to a new one.
        let log = SegmentLog::open(dir.path(), std::iter::empty()).unwrap();
        log.track([at[0].0, at[1].0].into_iter());
        assert_eq!(log.delete_unreferenced().unwrap(), 0);
        assert_eq!(log.read(&index(at[1], b"second")).unwrap(), b"second");
        let three = header(3, b"third");
        let later = log.append([(&three, &b"third"[..])].into_iter()).unwrap();
        assert_ne!(later[0].0, at[1].0);
        assert!(!log.release(at[0].0));
        assert!(log.release(at[1].0));
        assert_eq!(log.delete_unreferenced().unwrap(), 1);
        assert!(log.read(&index(at[1], b"second")).is_err());
        drop(log);

        // Reopened with nothing indexed: every old segment is deleted.
        let log = SegmentLog::open(dir.path(), std::iter::empty()).unwrap();
        log.delete_unreferenced().unwrap();
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 1, "only the new active segment is left");
    }

    /// Every segment begins with where every stream stands, so deleting
    /// older segments never loses a stream's next seq or cursor.
    #[tokio::test]
    async fn every_segment_starts_with_every_streams_state() {
        let dir = tempfile::tempdir().unwrap();
        let start = Checkpoint {
            stream_id: 3,
            stream: "quiet".to_owned(),
            next_seq: 41,
            cursor: Some(vec![9]),
        };
        let log = SegmentLog::open(dir.path(), [start.clone()].into_iter()).unwrap();
        assert_eq!(checkpoints(dir.path()), std::slice::from_ref(&start));
        // An ingest of two frames, the cursor on the last.
        let mut first = header(1, b"a");
        first.last = false;
        first.cursor = None;
        let mut second = header(2, b"b");
        second.ingest_first_seq = 1;
        let at = log
            .append([(&first, &b"a"[..]), (&second, &b"b"[..])].into_iter())
            .unwrap();
        {
            let mut writer = log.writer.lock().unwrap();
            log.rotate(&mut writer).unwrap();
        }
        log.durable().await.unwrap();
        let ems = Checkpoint {
            stream_id: 7,
            stream: "ems".to_owned(),
            next_seq: 3,
            cursor: Some(vec![2]),
        };
        assert_eq!(checkpoints(dir.path()), [start.clone(), start, ems]);
        // Once its chunks are removed, the first segment goes; its state
        // is in the second.
        log.release(at[0].0);
        log.release(at[1].0);
        assert_eq!(log.delete_unreferenced().unwrap(), 1);
        assert_eq!(checkpoints(dir.path()).len(), 2);
    }

    #[test]
    fn a_scan_stops_at_a_torn_frame() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), std::iter::empty()).unwrap();
        let written: Vec<FrameHeader> = (1..=3).map(|n| header(n, b"payload")).collect();
        log.append(written.iter().map(|h| (h, &b"payload"[..])))
            .unwrap();
        drop(log);
        let path = segment_files(dir.path())
            .unwrap()
            .into_values()
            .next()
            .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        for cut in [1, 4, 9] {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(size - cut).unwrap();
            let seqs: Vec<u64> = frames(dir.path())
                .iter()
                .map(|f| f.header.first_seq)
                .collect();
            assert_eq!(seqs, [1, 2], "cut {cut}");
        }
        // Damage inside the second header ends the scan there.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == FRAME_MAGIC)
            .nth(1)
            .unwrap()
            .0;
        bytes[second + 12] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(frames(dir.path()).len(), 1);
    }
}
