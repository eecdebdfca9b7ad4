//! Bringing sled's index up to date with the segment files at open.
//!
//! An ingest is durable once its frames are synced; its index entries and
//! stream state reach sled's disk later (see [`crate::segments`]). After a
//! crash, the frames sled's state does not reflect yet are found by seq:
//! an ingest whose first seq is a stream's stored next seq is the one that
//! follows, and is applied if every one of its frames is intact. Ingests
//! below it are already reflected; a frame that does not continue its
//! ingest, or an ingest cut short, was never confirmed to its source.

use crate::codec;
use crate::keys;
use crate::queue::{QueueError, StreamRecord};
use crate::segments::{self, ChunkIndex, ScannedFrame};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// What a replay found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) ingests: u64,
    /// The highest stream id in any frame: ids up to it may have been
    /// given out, so a new stream must get a higher one.
    pub(crate) highest_stream_id: Option<u32>,
}

/// Apply to `tree` and `records` every complete ingest in the segments
/// under `dir` that follows what `records` hold, except for the streams
/// whose record was `damaged` (quarantined).
pub(crate) fn replay_unindexed(
    tree: &sled::Tree,
    dir: &Path,
    records: &mut BTreeMap<u32, StreamRecord>,
    damaged: &BTreeSet<u32>,
) -> Result<Replayed, QueueError> {
    let mut pending: HashMap<u32, Vec<ScannedFrame>> = HashMap::new();
    let mut replayed = Replayed::default();
    for frame in segments::scan(dir)? {
        let header = &frame.header;
        replayed.highest_stream_id = replayed.highest_stream_id.max(Some(header.stream_id));
        if damaged.contains(&header.stream_id) {
            continue;
        }
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
        if last && apply(tree, dir, records, &std::mem::take(ingest))? {
            replayed.ingests += 1;
        }
    }
    if replayed.ingests > 0 {
        tracing::info!(
            ingests = replayed.ingests,
            "queue index brought up to date from the segment files"
        );
    }
    Ok(replayed)
}

/// Apply one complete ingest if it is the next of its stream and intact.
fn apply(
    tree: &sled::Tree,
    dir: &Path,
    records: &mut BTreeMap<u32, StreamRecord>,
    ingest: &[ScannedFrame],
) -> Result<bool, QueueError> {
    let (Some(first), Some(last)) = (ingest.first(), ingest.last()) else {
        return Ok(false);
    };
    let head = &first.header;
    let record = records
        .entry(head.stream_id)
        .or_insert_with(|| StreamRecord::new(&head.stream));
    if head.ingest_first_seq != record.next_seq {
        if head.ingest_first_seq > record.next_seq {
            tracing::warn!(
                stream = %head.stream,
                stored_next_seq = record.next_seq,
                frame_seq = head.ingest_first_seq,
                "segment frames after a gap in a stream's seqs are not replayed"
            );
        }
        return Ok(false);
    }
    let mut next = record.clone();
    let mut batch = sled::Batch::default();
    for frame in ingest.iter().filter(|f| f.header.count > 0) {
        let header = &frame.header;
        let index = ChunkIndex {
            segment: frame.segment,
            offset: frame.payload_offset,
            len: header.payload_len,
            ingested_at: header.ingested_at,
            earliest: header.earliest,
        };
        let intact = segments::read_chunk_at(dir, &index)
            .ok()
            .is_some_and(|chunk| codec::decode_chunk(&chunk).is_ok());
        if !intact {
            tracing::warn!(
                stream = %header.stream,
                seq = header.first_seq,
                "a chunk that was never confirmed is damaged; its ingest is not replayed"
            );
            return Ok(false);
        }
        batch.insert(
            &keys::events(header.stream_id, header.first_seq)[..],
            codec::encode(&index)?,
        );
        next.bytes += u64::from(header.payload_len);
    }
    next.next_seq = last.header.first_seq + last.header.count;
    if let Some(cursor) = &last.header.cursor {
        next.cursor = Some(cursor.clone());
    }
    batch.insert(&keys::stream(head.stream_id)[..], codec::encode(&next)?);
    tree.apply_batch(batch)?;
    *record = next;
    Ok(true)
}
