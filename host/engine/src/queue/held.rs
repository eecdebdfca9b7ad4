//! A batch its writer holds until it is durable, and the question a retry
//! must ask first: did an earlier attempt land after all?
//!
//! A write can fail after its frames reached the segment file whole: sled
//! refusing the index entries on a full disk, a group-commit sync that
//! failed for a later writer's bytes. The caller is told it failed, yet
//! the reopen that follows replays those frames (the segment log is the
//! truth) and moves the stream on past them. Writing the held batch again
//! would store every event twice, under new seqs. So each attempt is
//! remembered — the seqs it was given and its ingest time, which its frames
//! and index entries carry — and a retry first looks for it in the index.

use super::segments::ChunkIndex;
use super::{IngestReceipt, QueueError, Store, StreamEntry, codec, keys};
use std::time::Duration;

/// A batch being stored: pass the same one to every attempt of the same
/// events ([`super::Queue::ingest_held`]), and a fresh one for the next
/// batch.
#[derive(Debug, Default)]
pub struct HeldBatch {
    attempts: Vec<Attempt>,
}

/// One write of the batch that got as far as taking seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempt {
    pub(super) first_seq: u64,
    pub(super) next_seq: u64,
    /// Unique per attempt (microseconds, and attempts are a reopen apart):
    /// tells this attempt's chunks from any other write at the same seqs.
    pub(super) ingested_at: i64,
}

impl HeldBatch {
    /// Attempts that got as far as the segment log.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    pub(super) fn record(&mut self, attempt: Attempt) {
        self.attempts.push(attempt);
    }

    /// Where an earlier attempt landed, if the store (reopened since) holds
    /// it: its first chunk is indexed with that attempt's ingest time, or —
    /// removed since by retention or `drop_oldest` — its seqs lie wholly
    /// below the stream's oldest stored seq and below its next seq.
    /// `None`: nothing of the batch is stored, write it.
    pub(super) fn landed(
        &self,
        store: &Store,
        entry: &StreamEntry,
    ) -> Result<Option<IngestReceipt>, QueueError> {
        for attempt in self.attempts.iter().rev() {
            if attempt.next_seq > entry.record.next_seq {
                // The stream never moved past it: replay did not count it.
                continue;
            }
            let key = keys::events(entry.id, attempt.first_seq);
            let found = match store.tree.get(key)? {
                Some(value) => codec::decode::<ChunkIndex>(&value)
                    .is_ok_and(|index| index.ingested_at == attempt.ingested_at),
                None => attempt.next_seq <= entry.record.first_seq,
            };
            if found {
                return Ok(Some(IngestReceipt {
                    first_seq: attempt.first_seq,
                    next_seq: attempt.next_seq,
                    durable_after: Duration::ZERO,
                }));
            }
        }
        Ok(None)
    }
}
