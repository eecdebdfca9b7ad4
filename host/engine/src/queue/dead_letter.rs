//! Dead letters: events a receiver permanently rejected, kept per group with
//! the reason, until an operator replays or discards them.

use super::codec;
use super::keys;
use super::{Queue, QueueError};
use safd_connector::SequencedEvent;
use serde::{Deserialize, Serialize};

/// One permanently rejected event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub group: String,
    pub stream: String,
    pub event: SequencedEvent,
    /// The member that rejected it.
    pub member: String,
    pub reason: String,
    /// When it was rejected (µs since the Unix epoch).
    pub rejected_at: i64,
}

impl Queue {
    /// Keep `letter`; idempotent per (group, stream, seq). Becomes durable
    /// with the next group commit, together with the ack that settles it.
    pub(crate) fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let Some(id) = self.stream_id(&letter.stream) else {
            return Ok(());
        };
        self.store()?
            .tree
            .insert(
                keys::dead_letter(&letter.group, id, letter.event.seq),
                codec::encode(letter)?,
            )
            .map_err(|e| self.failed(e.into()))?;
        Ok(())
    }

    /// Every dead letter of `group`, by stream and seq.
    pub fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let mut out = Vec::new();
        let store = self.store()?;
        for item in store.tree.scan_prefix(keys::dead_letters(group)) {
            let (key, value) = item?;
            match codec::decode::<DeadLetter>(&value) {
                Ok(letter) if letter.group == group => out.push(letter),
                // Another group whose name has this one as a prefix cannot
                // match: the key carries the name's length first.
                Ok(_) => {}
                Err(err) => {
                    super::quarantine(&store.tree, &key, &value, &err, &store.notices)?;
                }
            }
        }
        Ok(out)
    }

    /// Forget the dead letter of `group` for (`stream`, `seq`), once it was
    /// replayed and accepted or an operator discarded it.
    pub fn remove_dead_letter(
        &self,
        group: &str,
        stream: &str,
        seq: u64,
    ) -> Result<bool, QueueError> {
        let Some(id) = self.stream_id(stream) else {
            return Ok(false);
        };
        Ok(self
            .store()?
            .tree
            .remove(keys::dead_letter(group, id, seq))?
            .is_some())
    }
}
