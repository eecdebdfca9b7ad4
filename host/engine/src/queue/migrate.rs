//! Queues written before segment files kept each chunk of events as a sled
//! value (`E` keys). At open those chunks are moved into a segment byte for
//! byte (the chunk encoding did not change) and indexed like any other, so
//! upgrading safd loses nothing that was queued.

use super::codec;
use super::keys;
use super::segments::{ChunkIndex, FrameHeader, SegmentLog};
use super::{QueueError, StreamRecord, quarantine};
use crate::notice::Notices;
use std::collections::BTreeMap;

/// Move every chunk stored in sled into `log`; returns how many were.
/// Idempotent across a crash: the sled entries are replaced only after
/// the chunks are synced, and a half-done move is redone from the start
/// (the unindexed copies are deleted with their segment at the next open).
pub(crate) fn move_sled_chunks(
    tree: &sled::Tree,
    log: &SegmentLog,
    records: &BTreeMap<u32, StreamRecord>,
    notices: &Notices,
) -> Result<u64, QueueError> {
    let mut moved = Vec::new();
    for item in tree.scan_prefix([keys::LEGACY_EVENTS]) {
        let (key, value) = item?;
        let Some((stream_id, first_seq)) = keys::parse_legacy_events(&key) else {
            continue;
        };
        let (events, ingested_at) = match codec::decode_chunk(&value)
            .and_then(|events| Ok((events, codec::chunk_ingested_at(&value)?)))
        {
            Ok(decoded) => decoded,
            Err(err) => {
                quarantine(tree, &key, &value, &err, notices)?;
                continue;
            }
        };
        let earliest = events.iter().map(|e| e.time).min().unwrap_or(i64::MAX);
        let header = FrameHeader {
            stream_id,
            stream: records
                .get(&stream_id)
                .map_or_else(|| format!("#{stream_id}"), |r| r.name.clone()),
            first_seq,
            count: events.len() as u64,
            ingest_first_seq: first_seq,
            last: true,
            cursor: None,
            ingested_at,
            earliest,
            payload_len: u32::try_from(value.len()).unwrap_or(u32::MAX),
        };
        let at = log.append(std::iter::once((&header, &value[..])))?;
        let Some(&(segment, offset)) = at.first() else {
            continue;
        };
        moved.push((
            key,
            keys::events(stream_id, first_seq),
            ChunkIndex {
                segment,
                offset,
                len: header.payload_len,
                ingested_at,
                earliest,
            },
        ));
    }
    if moved.is_empty() {
        return Ok(0);
    }
    log.sync_now()?;
    let mut batch = sled::Batch::default();
    for (legacy, key, index) in &moved {
        batch.remove(legacy);
        batch.insert(&key[..], codec::encode(index)?);
    }
    tree.apply_batch(batch)?;
    tracing::info!(
        chunks = moved.len(),
        "queued events moved from the sled database into segment files"
    );
    Ok(moved.len() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::StreamRecord;
    use super::codec;
    use super::keys;
    use crate::Queue;
    use safd_connector::{Event, EventBlock, Severity};

    fn event(n: u64) -> Event {
        Event {
            id: format!("old-{n}"),
            time: 1_000 + n as i64,
            severity: Severity::Major,
            attributes: Vec::new(),
            body: format!("queued before the upgrade {n}"),
        }
    }

    /// A queue as the sled-only versions wrote it: two chunks of a stream
    /// and its record.
    fn write_legacy_queue(path: &std::path::Path) {
        let db = sled::open(path).unwrap();
        let tree = db.open_tree("saf").unwrap();
        let mut bytes = 0;
        for (first, range) in [(1u64, 0..10u64), (11, 10..25)] {
            let events: Vec<Event> = range.map(event).collect();
            let block = EventBlock::from_events(&events);
            let chunk = codec::encode_chunk(42, events.len() as u32, block.bytes());
            bytes += chunk.len() as u64;
            let mut key = keys::events(3, first);
            key[0] = keys::LEGACY_EVENTS;
            tree.insert(key, chunk).unwrap();
        }
        let record = StreamRecord {
            next_seq: 26,
            bytes,
            cursor: Some(vec![25]),
            ..StreamRecord::new("ems")
        };
        tree.insert(keys::stream(3), codec::encode(&record).unwrap())
            .unwrap();
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn a_queue_from_before_segments_keeps_every_event() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy_queue(dir.path());
        for _ in 0..2 {
            let (queue, report) = Queue::open(dir.path()).unwrap();
            assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
            assert_eq!(report.streams[0].next_seq, 26);
            assert_eq!(report.streams[0].cursor.as_deref(), Some(&[25u8][..]));
            let read = queue.read("ems", 1, 100, usize::MAX).unwrap();
            let expected: Vec<Event> = (0..25).map(event).collect();
            assert_eq!(
                read.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
                expected
            );
            let store = queue.store().unwrap();
            assert_eq!(store.tree.scan_prefix([keys::LEGACY_EVENTS]).count(), 0);
            drop(store);
            drop(queue);
        }
    }
}
