//! Removing events from the queue: acknowledged events beyond the replay
//! window (by age and bytes), acknowledged events when space is needed, and,
//! only with `when_full = "drop_oldest"`, the oldest undelivered events.
//!
//! Events are removed a whole chunk at a time and always as a prefix of
//! their stream, so a stream's stored events stay one contiguous seq range
//! (`first_seq..next_seq`).

use super::codec;
use super::keys;
use super::segments::ChunkIndex;
use super::{Queue, QueueError, SharedEntry};
use crate::metrics::Metrics;
use crate::notice::Notice;
use safd_connector::Timestamp;
use safd_connector::event_ids::QUEUE_EVENTS_DROPPED;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// How many removed runs per stream keep their seek time.
const MAX_TRIM_MARKS: usize = 256;

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    pub events: u64,
    pub bytes: u64,
}

/// What one removal took out.
#[derive(Default)]
struct Removed {
    events: u64,
    bytes: u64,
    /// A segment file no longer holds anything referenced.
    freed_segment: bool,
}

/// One stored chunk that may be removed.
struct Candidate {
    stream: String,
    first_seq: u64,
    end_seq: u64,
    /// Where it is; `None` when its index entry is damaged.
    index: Option<ChunkIndex>,
}

impl Candidate {
    fn new(stream: &str, first_seq: u64, end_seq: u64, index_entry: &[u8]) -> Self {
        Self {
            stream: stream.to_owned(),
            first_seq,
            end_seq,
            index: codec::decode::<ChunkIndex>(index_entry).ok(),
        }
    }

    /// Stored bytes. A damaged entry still counts as removable, with no
    /// bytes: its events can never be read anyway.
    fn bytes(&self) -> u64 {
        self.index.map_or(0, |i| u64::from(i.len))
    }

    fn ingested_at(&self) -> i64 {
        self.index.map_or(i64::MIN, |i| i.ingested_at)
    }
}

impl Queue {
    /// Remove acknowledged events that fall outside the replay window.
    /// The daemon calls this periodically.
    pub async fn enforce_retention(&self) -> Result<TrimReport, QueueError> {
        self.trim_acknowledged(0).await
    }

    /// Remove acknowledged events, oldest first, until `need` more bytes
    /// fit (retention yields to capacity).
    pub(crate) async fn reclaim_acknowledged(&self, need: u64) -> Result<(), QueueError> {
        self.trim_acknowledged(need).await.map(|_| ())
    }

    async fn trim_acknowledged(&self, need: u64) -> Result<TrimReport, QueueError> {
        let _one_pass_at_a_time = self.trim_lock.lock().await;
        let acked = self.acked_by_every_owner().await;
        let mut by_stream: Vec<Vec<Candidate>> = Vec::new();
        for (name, (id, entry)) in self.stream_entries() {
            let through = acked.get(&name).copied().unwrap_or(0);
            if through == 0 {
                continue;
            }
            let next_seq = entry.lock().await.record.next_seq;
            let chunks = self.acknowledged_chunks(&name, id, next_seq, through)?;
            if !chunks.is_empty() {
                by_stream.push(chunks);
            }
        }
        let retention = self.options.retention;
        let now = crate::clock::now_micros();
        let max_age = i64::try_from(retention.max_age.as_micros()).unwrap_or(i64::MAX);
        // Per stream, how many leading chunks go.
        let mut remove: Vec<usize> = by_stream
            .iter()
            .map(|chunks| {
                chunks
                    .iter()
                    .rposition(|c| now.saturating_sub(c.ingested_at()) > max_age)
                    .map_or(0, |i| i + 1)
            })
            .collect();
        let kept_bytes = |remove: &[usize]| -> u64 {
            by_stream
                .iter()
                .zip(remove)
                .flat_map(|(chunks, n)| &chunks[*n..])
                .map(|c| c.bytes())
                .sum()
        };
        let removed_bytes = |remove: &[usize]| -> u64 {
            by_stream
                .iter()
                .zip(remove)
                .flat_map(|(chunks, n)| &chunks[..*n])
                .map(|c| c.bytes())
                .sum()
        };
        let capacity = self.options.capacity_bytes;
        loop {
            let over_window = kept_bytes(&remove) > retention.max_bytes;
            let short_of_room = need > 0
                && self.used_bytes().saturating_sub(removed_bytes(&remove)) + need > capacity;
            if !over_window && !short_of_room {
                break;
            }
            // The oldest remaining chunk across streams goes next.
            let oldest = by_stream
                .iter()
                .zip(&remove)
                .enumerate()
                .filter_map(|(i, (chunks, n))| chunks.get(*n).map(|c| (c.ingested_at(), i)))
                .min();
            let Some((_, stream)) = oldest else { break };
            remove[stream] += 1;
        }
        let mut report = TrimReport::default();
        let mut freed_segment = false;
        for (chunks, n) in by_stream.iter().zip(remove) {
            if n > 0 {
                let removed = self.remove_prefix(&chunks[..n]).await?;
                report.events += removed.events;
                report.bytes += removed.bytes;
                freed_segment |= removed.freed_segment;
            }
        }
        if report.bytes > 0 || freed_segment {
            self.after_removal(freed_segment).await?;
            tracing::debug!(
                events = report.events,
                bytes = report.bytes,
                "acknowledged events left the replay window"
            );
        }
        Ok(report)
    }

    /// `when_full = "drop_oldest"`: remove the oldest chunks, acknowledged
    /// or not, until `need` more bytes fit. Counted and announced.
    pub(crate) async fn drop_oldest(&self, need: u64) -> Result<(), QueueError> {
        let _one_pass_at_a_time = self.trim_lock.lock().await;
        let mut dropped: HashMap<String, (u64, u64, u64)> = HashMap::new();
        let mut freed_segment = false;
        while self.used_bytes() + need > self.options.capacity_bytes {
            let mut oldest: Option<Candidate> = None;
            for (name, (id, entry)) in self.stream_entries() {
                let next_seq = entry.lock().await.record.next_seq;
                let first = self.first_chunk(&name, id, next_seq)?;
                if let Some(first) = first
                    && oldest
                        .as_ref()
                        .is_none_or(|o| first.ingested_at() < o.ingested_at())
                {
                    oldest = Some(first);
                }
            }
            let Some(oldest) = oldest else { break };
            let removed = self.remove_prefix(std::slice::from_ref(&oldest)).await?;
            freed_segment |= removed.freed_segment;
            let range = dropped.entry(oldest.stream.clone()).or_insert((
                oldest.first_seq,
                oldest.end_seq,
                0,
            ));
            range.0 = range.0.min(oldest.first_seq);
            range.1 = range.1.max(oldest.end_seq);
            range.2 += removed.events;
        }
        for (stream, (from, end, events)) in dropped {
            Metrics::add(&self.metrics.events_dropped, events);
            self.notices.emit(
                Notice::new(
                    QUEUE_EVENTS_DROPPED,
                    format!(
                        "queue full: dropped {events} undelivered events of stream `{stream}` \
                         (when_full = \"drop_oldest\")"
                    ),
                )
                .with("stream", &stream)
                .with("first_seq", from)
                .with("last_seq", end - 1)
                .with("events", events),
            );
        }
        self.after_removal(freed_segment).await
    }

    /// The event time a source should seek to so that it re-reads the
    /// removed events of `stream` from `seq` on; `None` when nothing is
    /// known about removed events there.
    pub(crate) async fn seek_time_for(&self, stream: &str, seq: u64) -> Option<Timestamp> {
        let (_, entry) = self.stream_entry(stream)?;
        let entry = entry.lock().await;
        let marks = &entry.record.trim_marks;
        let from = marks
            .iter()
            .rposition(|(first, _)| *first <= seq)
            .unwrap_or(0);
        marks[from..].iter().map(|(_, time)| *time).min()
    }

    /// Announce and signal freed room; delete segment files nothing refers
    /// to any more, once their removal from the index is durable.
    async fn after_removal(&self, freed_segment: bool) -> Result<(), QueueError> {
        self.check_high_water();
        self.room.notify_waiters();
        if freed_segment {
            self.flush().await?;
            let deleted = self
                .store()?
                .log
                .delete_unreferenced()
                .map_err(|e| self.failed(e.into()))?;
            tracing::debug!(deleted, "segment files of removed events deleted");
        }
        Ok(())
    }

    /// Per stream, the highest seq every declared cursor owner has
    /// acknowledged. Empty when no owner is declared.
    async fn acked_by_every_owner(&self) -> HashMap<String, u64> {
        let owners: Vec<String> = self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let groups = self.groups.lock().await;
        let mut out = HashMap::new();
        let Some((first, rest)) = owners.split_first() else {
            return out;
        };
        let Some(first) = groups.get(first) else {
            return out;
        };
        for (stream, seq) in &first.acked {
            let min = rest
                .iter()
                .map(|owner| {
                    groups
                        .get(owner)
                        .and_then(|g| g.acked.get(stream))
                        .copied()
                        .unwrap_or(0)
                })
                .fold(*seq, u64::min);
            out.insert(stream.clone(), min);
        }
        out
    }

    fn stream_entries(&self) -> Vec<(String, SharedEntry)> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_name
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect()
    }

    /// The stored chunks of a stream, in seq order, that lie entirely at or
    /// below `through`.
    fn acknowledged_chunks(
        &self,
        stream: &str,
        id: u32,
        next_seq: u64,
        through: u64,
    ) -> Result<Vec<Candidate>, QueueError> {
        let mut out: Vec<Candidate> = Vec::new();
        // One seq past `through`, so the chunk that follows the last
        // candidate is seen and ends it.
        let upper = through.saturating_add(1);
        for item in self
            .store()?
            .tree
            .range(keys::events(id, 0)..=keys::events(id, upper))
        {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            if let Some(previous) = out.last_mut() {
                previous.end_seq = first_seq;
            }
            out.push(Candidate::new(stream, first_seq, next_seq, &value));
        }
        while out.last().is_some_and(|c| c.end_seq > upper) {
            out.pop();
        }
        Ok(out)
    }

    /// The oldest stored chunk of a stream (two key reads, not a scan).
    fn first_chunk(
        &self,
        stream: &str,
        id: u32,
        next_seq: u64,
    ) -> Result<Option<Candidate>, QueueError> {
        let store = self.store()?;
        let mut range = store
            .tree
            .range(keys::events(id, 0)..=keys::events(id, u64::MAX));
        let Some((key, value)) = range.next().transpose()? else {
            return Ok(None);
        };
        let Some((_, first_seq)) = keys::parse_events(&key) else {
            return Ok(None);
        };
        let end_seq = match range.next().transpose()? {
            Some((next, _)) => keys::parse_events(&next).map_or(next_seq, |(_, seq)| seq),
            None => next_seq,
        };
        Ok(Some(Candidate::new(stream, first_seq, end_seq, &value)))
    }

    /// Remove the leading `chunks` of one stream and update its record in
    /// the same atomic batch.
    async fn remove_prefix(&self, chunks: &[Candidate]) -> Result<Removed, QueueError> {
        let Some(last) = chunks.last() else {
            return Ok(Removed::default());
        };
        let Some((_, entry)) = self.stream_entry(&last.stream) else {
            return Ok(Removed::default());
        };
        let store = self.store()?;
        let mut entry = entry.lock().await;
        let mut record = entry.record.clone();
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        let mut earliest: Option<i64> = None;
        for chunk in chunks {
            let key = keys::events(entry.id, chunk.first_seq);
            if let Some(index) = chunk.index
                && index.earliest != i64::MAX
            {
                earliest = Some(earliest.map_or(index.earliest, |e| e.min(index.earliest)));
            }
            batch.remove(&key[..]);
            bytes += chunk.bytes();
        }
        if let Some(time) = earliest {
            record.trim_marks.push((chunks[0].first_seq, time));
            if record.trim_marks.len() > MAX_TRIM_MARKS {
                // Merge the two oldest: seeking earlier than needed only
                // re-reads events receivers already hold.
                let (_, second_time) = record.trim_marks.remove(1);
                record.trim_marks[0].1 = record.trim_marks[0].1.min(second_time);
            }
        }
        let events = last.end_seq - chunks[0].first_seq.max(record.first_seq);
        record.first_seq = record.first_seq.max(last.end_seq);
        record.bytes = record.bytes.saturating_sub(bytes);
        batch.insert(&keys::stream(entry.id)[..], codec::encode(&record)?);
        store
            .tree
            .apply_batch(batch)
            .map_err(|e| self.failed(e.into()))?;
        entry.record = record;
        self.used_bytes.fetch_sub(
            bytes.min(self.used_bytes.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        let mut freed_segment = false;
        for index in chunks.iter().filter_map(|c| c.index) {
            freed_segment |= store.log.release(index.segment);
        }
        Ok(Removed {
            events,
            bytes,
            freed_segment,
        })
    }
}
