//! Bringing sled's index up to date with the segment files at open, or
//! rebuilding it from them.
//!
//! The segment files are the truth; sled is an index of them. An ingest is
//! durable once its frames are synced, and its index entries and stream
//! state reach sled's disk later (see [`super::segments`]), so at open the
//! log is read in the order it was written and everything the index does
//! not reflect is applied:
//!
//! - an ingest counts once all its frames are there and intact (its last
//!   frame carries the cursor). A complete ingest at or beyond a stream's
//!   next seq moves the stream on to its end, whatever gap lies before it;
//!   one below it is already reflected, and only its chunks that the index
//!   lacks but should hold (at or above the stream's oldest stored seq,
//!   never quarantined) are indexed again;
//! - a checkpoint (at the start of every segment) moves a stream on to the
//!   state it records, so a stream whose events were all removed keeps its
//!   next seq and cursor;
//! - a stream whose record is missing or damaged is rebuilt: every chunk of
//!   it the log holds is indexed (which of them a group had acknowledged is
//!   unknown; re-delivering them is harmless, servers deduplicate).
//!
//! An ingest cut short (its last frame never reached the disk) was never
//! confirmed to its source, never indexed and never delivered: its seqs are
//! given again to the events the source sends again.
//!
//! A stream's next seq is never below the end of a complete ingest in the
//! log, nor below the highest seq any group acknowledged.

use super::codec;
use super::keys;
use super::segments::{self, Checkpoint, ChunkIndex, Scanned, ScannedFrame};
use super::{QueueError, StreamRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// What a replay found and did.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Complete ingests that moved a stream on.
    pub(crate) ingests: u64,
    /// Index entries written for chunks the index lacked.
    pub(crate) chunks_indexed: u64,
    /// The highest stream id in any frame or checkpoint: ids up to it may
    /// have been given out, so a new stream must get a higher one.
    pub(crate) highest_stream_id: Option<u32>,
    /// Streams whose record was rebuilt from the log.
    pub(crate) rebuilt: Vec<String>,
    /// The segment of every chunk the index refers to once the replay is
    /// done (one entry per chunk).
    pub(crate) indexed_segments: Vec<u64>,
}

/// Bring `tree` and `records` up to date with the segments under `dir`.
/// `damaged` lists the streams whose record was quarantined; `acked` the
/// highest seq any group acknowledged, per stream name.
pub(crate) fn replay(
    tree: &sled::Tree,
    dir: &Path,
    records: &mut BTreeMap<u32, StreamRecord>,
    damaged: &BTreeSet<u32>,
    acked: &HashMap<String, u64>,
) -> Result<Replayed, QueueError> {
    let mut replay = Replay {
        tree,
        dir,
        records,
        rebuilt: damaged.clone(),
        replayed: Replayed::default(),
    };
    let mut pending: HashMap<u32, Vec<ScannedFrame>> = HashMap::new();
    for item in segments::scan(dir)? {
        match item {
            Scanned::Checkpoint(checkpoint) => replay.checkpoint(&checkpoint),
            Scanned::Frame(frame) => {
                let header = &frame.header;
                replay.saw_stream(header.stream_id);
                let ingest = pending.entry(header.stream_id).or_default();
                let continues = ingest.last().is_some_and(|previous| {
                    previous.header.ingest_first_seq == header.ingest_first_seq
                        && previous.header.first_seq + previous.header.count == header.first_seq
                });
                if !continues {
                    ingest.clear();
                    if header.first_seq != header.ingest_first_seq {
                        continue;
                    }
                }
                let last = header.last;
                ingest.push(frame);
                if last {
                    replay.ingest(&std::mem::take(ingest))?;
                }
            }
        }
    }
    replay.finish(acked)
}

struct Replay<'a> {
    tree: &'a sled::Tree,
    dir: &'a Path,
    records: &'a mut BTreeMap<u32, StreamRecord>,
    /// Streams whose record is rebuilt from the log.
    rebuilt: BTreeSet<u32>,
    replayed: Replayed,
}

impl Replay<'_> {
    fn saw_stream(&mut self, id: u32) {
        self.replayed.highest_stream_id = self.replayed.highest_stream_id.max(Some(id));
    }

    /// The record of stream `id`, created (as rebuilt) if sled had none.
    fn record(&mut self, id: u32, name: &str) -> &mut StreamRecord {
        let rebuilt = &mut self.rebuilt;
        self.records.entry(id).or_insert_with(|| {
            rebuilt.insert(id);
            StreamRecord::new(name)
        })
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.saw_stream(checkpoint.stream_id);
        let record = self.record(checkpoint.stream_id, &checkpoint.stream);
        if checkpoint.next_seq >= record.next_seq {
            record.next_seq = checkpoint.next_seq;
            if checkpoint.cursor.is_some() {
                record.cursor.clone_from(&checkpoint.cursor);
            }
        }
    }

    /// Apply one complete ingest (see the module's rules).
    fn ingest(&mut self, ingest: &[ScannedFrame]) -> Result<(), QueueError> {
        let (Some(first), Some(last)) = (ingest.first(), ingest.last()) else {
            return Ok(());
        };
        let head = &first.header;
        let id = head.stream_id;
        let rebuilt = self.rebuilt.contains(&id);
        let record = self.record(id, &head.stream).clone();
        let moves_on = head.ingest_first_seq >= record.next_seq;
        // Chunks below the oldest stored seq were removed on purpose
        // (retention, drop_oldest); a rebuilt stream does not know it.
        let floor = if rebuilt { 0 } else { record.first_seq };
        let mut batch = sled::Batch::default();
        let mut indexed = 0;
        for frame in ingest.iter().filter(|f| f.header.count > 0) {
            let header = &frame.header;
            if header.first_seq < floor {
                continue;
            }
            let key = keys::events(id, header.first_seq);
            if self.tree.contains_key(key)? || self.tree.contains_key(keys::quarantine(&key))? {
                continue;
            }
            let index = ChunkIndex {
                segment: frame.segment,
                offset: frame.payload_offset,
                len: header.payload_len,
                ingested_at: header.ingested_at,
                earliest: header.earliest,
            };
            let intact = segments::read_chunk_at(self.dir, &index)
                .ok()
                .is_some_and(|chunk| codec::decode_chunk(&chunk).is_ok());
            if !intact {
                tracing::warn!(
                    stream = %header.stream,
                    seq = header.first_seq,
                    "a chunk in the segment files is damaged; it is not indexed"
                );
                if moves_on {
                    // An ingest with a damaged chunk that sled never
                    // reflected may never have been confirmed: none of it
                    // counts.
                    return Ok(());
                }
                continue;
            }
            batch.insert(&key[..], codec::encode(&index)?);
            indexed += 1;
        }
        if moves_on && head.ingest_first_seq > record.next_seq && !rebuilt {
            tracing::warn!(
                stream = %head.stream,
                stored_next_seq = record.next_seq,
                frame_seq = head.ingest_first_seq,
                "the segment files hold events beyond a gap in the index; they are indexed \
                 and the stream goes on after them"
            );
        }
        self.tree.apply_batch(batch)?;
        self.replayed.chunks_indexed += indexed;
        if moves_on {
            let record = self.record(id, &head.stream);
            record.next_seq = last.header.first_seq + last.header.count;
            if let Some(cursor) = &last.header.cursor {
                record.cursor = Some(cursor.clone());
            }
            self.replayed.ingests += 1;
        }
        Ok(())
    }

    /// Recount every stream's stored chunks from the index, keep next
    /// seqs above every acknowledgement, and write the records that
    /// changed.
    fn finish(mut self, acked: &HashMap<String, u64>) -> Result<Replayed, QueueError> {
        // (first indexed seq, stored bytes) per stream.
        let mut stored: HashMap<u32, (u64, u64)> = HashMap::new();
        for item in self.tree.scan_prefix([keys::EVENTS]) {
            let (key, value) = item?;
            let Some((id, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            // A damaged entry keeps nothing alive; it is quarantined when
            // read.
            let Ok(index) = codec::decode::<ChunkIndex>(&value) else {
                continue;
            };
            self.replayed.indexed_segments.push(index.segment);
            let totals = stored.entry(id).or_insert((first_seq, 0));
            totals.1 += u64::from(index.len);
        }
        let before: BTreeMap<u32, Option<Vec<u8>>> = self
            .records
            .keys()
            .map(|id| Ok((*id, self.tree.get(keys::stream(*id))?.map(|v| v.to_vec()))))
            .collect::<Result<_, sled::Error>>()?;
        let mut batch = sled::Batch::default();
        for (id, record) in self.records.iter_mut() {
            let (first_indexed, bytes) = stored.get(id).copied().unwrap_or((record.next_seq, 0));
            record.bytes = bytes;
            if self.rebuilt.contains(id) {
                record.first_seq = first_indexed;
                self.replayed.rebuilt.push(record.name.clone());
            }
            if let Some(acked) = acked.get(&record.name)
                && *acked >= record.next_seq
            {
                tracing::warn!(
                    stream = %record.name,
                    next_seq = record.next_seq,
                    acked,
                    "a group acknowledged seqs the queue has no trace of; the stream goes on \
                     after them so that no seq is given twice"
                );
                record.next_seq = acked + 1;
            }
            record.first_seq = record.first_seq.min(record.next_seq);
            let encoded = codec::encode(&*record)?;
            if before.get(id).and_then(Option::as_deref) != Some(&encoded[..]) {
                batch.insert(&keys::stream(*id)[..], encoded);
            }
        }
        self.tree.apply_batch(batch)?;
        if self.replayed.ingests > 0 || self.replayed.chunks_indexed > 0 {
            tracing::info!(
                ingests = self.replayed.ingests,
                chunks = self.replayed.chunks_indexed,
                "queue index brought up to date from the segment files"
            );
        }
        Ok(self.replayed)
    }
}
