//! Reading events back: by seq for delivery, by time for a deep catch-up,
//! a damaged chunk quarantined instead of failing the read.

use super::*;

impl Queue {
    /// Up to `max_events` events of `stream` starting at `from_seq`, in seq
    /// order, stopping once `max_bytes` is reached (at least one event is
    /// returned if any is stored). Damaged batches are quarantined, announced
    /// and skipped.
    pub fn read(
        &self,
        stream: &str,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<SequencedEvent>, QueueError> {
        match self.stream_id(stream) {
            Some(id) => self.read_id(id, from_seq, max_events, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    pub(super) fn read_id(
        &self,
        id: u32,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<SequencedEvent>, QueueError> {
        let store = self.store()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in store.tree.range(chunk_range(&store, id, from_seq)?) {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk(&key, &value).map_err(|e| self.failed(e))?;
            let Some(events) = read else {
                continue;
            };
            let events: Vec<Event> = events.to_events();
            for (seq, event) in (first_seq..).zip(events) {
                if seq < from_seq {
                    continue;
                }
                if out.len() >= max_events || (bytes >= max_bytes && !out.is_empty()) {
                    return Ok(out);
                }
                bytes += event.byte_size();
                out.push(SequencedEvent { seq, event });
            }
        }
        Ok(out)
    }

    /// Like [`Queue::read`], but the events stay encoded: each is cut from
    /// its stored chunk and framed behind its seq, never decoded (the
    /// chunk's checksum covers bytes that were checked at ingest). This is
    /// what deliveries are built from.
    pub fn read_block(
        &self,
        stream: &str,
        from_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<SequencedBlock, QueueError> {
        let mut out = SequencedBlock::new();
        let Some(id) = self.stream_id(stream) else {
            return Ok(out);
        };
        let store = self.store()?;
        for item in store.tree.range(chunk_range(&store, id, from_seq)?) {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk_with(&key, &value, |stored| {
                let (count, events) = codec::chunk_events(stored)?;
                let spans = event_block::spans(events, count)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| RecordError::Decode(e.to_string()))?;
                Ok((events.to_vec(), spans))
            });
            let read = read.map_err(|e| self.failed(e))?;
            let Some((events, spans)) = read else {
                continue;
            };
            for (seq, span) in (first_seq..).zip(spans) {
                if seq < from_seq {
                    continue;
                }
                if out.len() >= max_events || (out.text_bytes() >= max_bytes && !out.is_empty()) {
                    return Ok(out);
                }
                out.push_encoded(seq, &events[span.start..span.end], span.text_bytes);
            }
        }
        Ok(out)
    }

    /// The first seq of `stream` whose event time is at or after `time`
    /// among the stored events; `None` when no stored event is that recent.
    pub fn first_seq_at_or_after(
        &self,
        stream: &str,
        time: Timestamp,
    ) -> Result<Option<u64>, QueueError> {
        let Some(id) = self.stream_id(stream) else {
            return Ok(None);
        };
        let store = self.store()?;
        for item in store
            .tree
            .range(keys::events(id, 0)..=keys::events(id, u64::MAX))
        {
            let (key, value) = item?;
            let Some((_, first_seq)) = keys::parse_events(&key) else {
                continue;
            };
            let read = store.read_chunk(&key, &value).map_err(|e| self.failed(e))?;
            let Some(events) = read else {
                continue;
            };
            if let Some(offset) = events.iter().position(|e| e.time >= time) {
                return Ok(Some(first_seq + offset as u64));
            }
        }
        Ok(None)
    }
}

impl Store {
    /// The events of the chunk whose index entry is (`key`, `value`).
    /// `None` when the entry or the chunk is damaged (or its segment is
    /// gone): the entry is then quarantined and announced.
    pub(crate) fn read_chunk(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<EventBlock>, QueueError> {
        self.read_chunk_with(key, value, codec::decode_chunk)
    }

    /// Read the chunk `key` → `value` indexes and `decode` it; a damaged
    /// entry or chunk (including one `decode` refuses) is quarantined
    /// (`None`).
    pub(crate) fn read_chunk_with<T>(
        &self,
        key: &[u8],
        value: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>, QueueError> {
        let index = match codec::decode::<ChunkIndex>(value) {
            Ok(index) => index,
            Err(err) => {
                quarantine(&self.tree, key, value, &err, &self.notices)?;
                return Ok(None);
            }
        };
        let damage = match self.log.read(&index) {
            Ok(stored) => match decode(&stored) {
                Ok(events) => return Ok(Some(events)),
                Err(err) => err,
            },
            // Removed (retention) since the entry was read: its segment may
            // be gone with it. Nothing is damaged.
            Err(_) if self.tree.get(key)?.as_deref() != Some(value) => return Ok(None),
            // The segment is gone or shorter than the entry says: damage.
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                RecordError::Decode(format!(
                    "its segment {:016x} cannot be read at {}: {err}",
                    index.segment, index.offset
                ))
            }
            // Trouble, not damage (too many open files, an I/O error): the
            // chunk is left as it is and the read fails; the store is
            // marked failed and reopened (2007/2008), and reading resumes.
            Err(err) => return Err(QueueError::Segments(err)),
        };
        quarantine(&self.tree, key, value, &damage, &self.notices)?;
        self.log.release(index.segment);
        Ok(None)
    }
}

/// The index keys of stream `id`'s chunks from the one that holds
/// `from_seq` (the last whose first seq is not after it) to the end.
pub(super) fn chunk_range(
    store: &Store,
    id: u32,
    from_seq: u64,
) -> Result<std::ops::RangeInclusive<Vec<u8>>, QueueError> {
    let start = store
        .tree
        .range(keys::events(id, 0)..=keys::events(id, from_seq))
        .next_back()
        .transpose()?
        .map_or(keys::events(id, from_seq).to_vec(), |(key, _)| key.to_vec());
    Ok(start..=keys::events(id, u64::MAX).to_vec())
}
