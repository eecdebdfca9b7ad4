//! Ingest: a source's batch cut into chunks, appended to the segment log
//! with its cursor, synced (group commit), then indexed; the capacity and
//! free-space checks that hold a source back.

use super::held::Attempt;
use super::*;

impl Queue {
    pub(super) fn entry(
        &self,
        stream: &str,
    ) -> Result<Arc<tokio::sync::Mutex<StreamEntry>>, QueueError> {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, entry)) = streams.by_name.get(stream) {
            return Ok(entry.clone());
        }
        let id = streams.next_id;
        if id == u32::MAX {
            return Err(QueueError::TooManyStreams { max: u32::MAX });
        }
        streams.next_id += 1;
        let entry = Arc::new(tokio::sync::Mutex::new(StreamEntry {
            id,
            record: StreamRecord::new(stream),
        }));
        streams
            .by_name
            .insert(stream.to_owned(), (id, entry.clone()));
        Ok(entry)
    }

    /// Store `events` of `stream` with the source `cursor` that follows
    /// them, in one atomic write, and return once it is durable. Only then
    /// may the source be told to commit. A `None` cursor keeps the stored
    /// one. When the queue is full this waits for room (`block`) or drops
    /// the oldest undelivered events (`drop_oldest`).
    pub async fn ingest(
        &self,
        stream: &str,
        events: &[Event],
        cursor: Option<&Cursor>,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_block(stream, &EventBlock::from_events(events), cursor)
            .await
    }

    /// [`Queue::ingest`] for events still in the encoding a plugin sent
    /// them in: their bytes are stored as they are.
    pub async fn ingest_block(
        &self,
        stream: &str,
        events: &EventBlock,
        cursor: Option<&Cursor>,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_held(stream, events, cursor, &mut HeldBatch::default())
            .await
    }

    /// [`Queue::ingest_block`] for a batch its caller holds and hands over
    /// again after a failure: pass the same `held` to every attempt. An
    /// attempt that failed but was made durable by the reopen that followed
    /// (see [`HeldBatch`]) is answered with where it landed, not stored
    /// twice.
    pub async fn ingest_held(
        &self,
        stream: &str,
        events: &EventBlock,
        cursor: Option<&Cursor>,
        held: &mut HeldBatch,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_inner(stream, events, cursor, true, held).await
    }

    /// Ingest safd's own events: they bypass the capacity limit, because
    /// "the queue is full" must itself get through.
    pub(crate) async fn ingest_internal(
        &self,
        stream: &str,
        events: &[Event],
        held: &mut HeldBatch,
    ) -> Result<IngestReceipt, QueueError> {
        self.ingest_inner(stream, &EventBlock::from_events(events), None, false, held)
            .await
    }

    pub(super) async fn ingest_inner(
        &self,
        stream: &str,
        events: &EventBlock,
        cursor: Option<&Cursor>,
        limited: bool,
        held: &mut HeldBatch,
    ) -> Result<IngestReceipt, QueueError> {
        // Before waiting for room or space: a batch that already landed
        // needs neither.
        if held.attempts() > 0
            && let Some(receipt) = self.landed(stream, held).await?
        {
            return Ok(receipt);
        }
        let ingested_at = crate::clock::now_micros();
        let mut encoded: Vec<EncodedChunk> = events
            .runs(CHUNK_BYTES)
            .map(|(count, run)| EncodedChunk {
                count: u64::from(count),
                earliest: event_block::events(run, count)
                    .filter_map(Result::ok)
                    .map(|e| e.time)
                    .min()
                    .unwrap_or(i64::MAX),
                stored: codec::encode_chunk(ingested_at, count, run),
            })
            .collect();
        if encoded.is_empty() {
            // No events: one frame without any carries the cursor.
            encoded.push(EncodedChunk {
                count: 0,
                earliest: i64::MAX,
                stored: Vec::new(),
            });
        }
        let bytes: u64 = encoded.iter().map(|c| c.stored.len() as u64).sum();
        if limited {
            self.wait_for_room(bytes).await?;
            self.check_free_space(bytes)?;
        }
        let writing = self.writes.clone().read_owned().await;
        let store = self.writable_store()?;
        // Per-stream order: seqs are assigned, and index entries written,
        // under the stream's lock, held across the segment sync (shared
        // with other streams) so index entries land in seq order.
        let entry = self.entry(stream)?.lock_owned().await;
        // Asked again under the locks: nothing can reopen the store or
        // write this stream between this answer and the write below.
        if let Some(receipt) = held.landed(&store, &entry)? {
            return Ok(receipt);
        }
        if !events.is_empty() {
            let first_seq = entry.record.next_seq;
            held.record(Attempt {
                first_seq,
                next_seq: first_seq + events.len() as u64,
                ingested_at,
            });
        }
        let write = DurableWrite {
            store,
            entry,
            chunks: encoded,
            events: events.len() as u64,
            cursor: cursor.cloned(),
            ingested_at,
            bytes,
            used_bytes: self.used_bytes.clone(),
            unflushed: self.unflushed.clone(),
            appended: self.appended.clone(),
            fail_index_write: self.fail_index_write.swap(false, Ordering::AcqRel),
            _writing: writing,
        };
        // Once frames are appended, their seqs are taken: the rest (sync,
        // index entries, the stream's state) runs to its end even if this
        // caller goes away (a source stopped by a reload), so a later
        // ingest can never be given the same seqs.
        let (first_seq, next_seq, durable_after) = tokio::spawn(write.run())
            .await
            .map_err(|e| QueueError::Fsync(format!("the write task ended abnormally: {e}")))?
            .map_err(|e| self.failed(e))?;
        self.metrics.fsync.observe(durable_after);
        Metrics::add(&self.metrics.events_ingested, events.len() as u64);
        self.metrics.labelled.add(
            "safd_events_ingested_total",
            &[("stream", stream)],
            events.len() as u64,
        );
        self.check_high_water();
        Ok(IngestReceipt {
            first_seq,
            next_seq,
            durable_after,
        })
    }

    /// Where an earlier attempt of `held` landed, if it did.
    async fn landed(
        &self,
        stream: &str,
        held: &HeldBatch,
    ) -> Result<Option<IngestReceipt>, QueueError> {
        let _writing = self.writes.read().await;
        let store = self.writable_store()?;
        let entry = self.entry(stream)?.lock_owned().await;
        let landed = held.landed(&store, &entry)?;
        if let Some(receipt) = &landed {
            tracing::info!(
                stream,
                first_seq = receipt.first_seq,
                next_seq = receipt.next_seq,
                attempts = held.attempts(),
                "a write reported as failed had reached the disk whole and was read back by \
                 the reopen; it is not stored again"
            );
        }
        Ok(landed)
    }

    /// The store, unless it failed and awaits its reopen: a write to it
    /// would be refused by sled, or land after a torn tail, and the reopen
    /// decides what of the failed write counts.
    fn writable_store(&self) -> Result<Arc<Store>, QueueError> {
        if let Some(reason) = self.failure.borrow().clone() {
            return Err(QueueError::StoreDown(reason));
        }
        self.store()
    }

    /// Wait until `bytes` more fit under the capacity, reclaiming
    /// acknowledged events first and, with `drop_oldest`, undelivered ones.
    pub(super) async fn wait_for_room(&self, bytes: u64) -> Result<(), QueueError> {
        let capacity = self.options.capacity_bytes;
        if bytes > capacity {
            return Err(QueueError::BatchTooLarge {
                batch: bytes,
                capacity,
            });
        }
        loop {
            // Registered before the check, so a wakeup between the check
            // and the wait is not lost.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.fits(bytes) {
                break;
            }
            self.reclaim_acknowledged(bytes).await?;
            if self.fits(bytes) {
                break;
            }
            if self.options.when_full == WhenFull::DropOldest {
                self.drop_oldest(bytes).await?;
                break;
            }
            if !self.full_announced.swap(true, Ordering::AcqRel) {
                self.notices.emit(
                    Notice::new(
                        QUEUE_FULL,
                        "queue full: sources are blocked until delivery frees space",
                    )
                    .with("used_bytes", self.used_bytes())
                    .with("capacity_bytes", capacity),
                );
            }
            room.await;
        }
        self.full_announced.store(false, Ordering::Release);
        Ok(())
    }

    /// Refuse a write of `bytes` that would leave less than the reserve
    /// free on the data directory's file system.
    pub(super) fn check_free_space(&self, bytes: u64) -> Result<(), QueueError> {
        let reserve = self.options.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        match fs2::available_space(&self.path) {
            Ok(free) if free < reserve.saturating_add(bytes) => {
                Err(QueueError::DiskFull { free, reserve })
            }
            Ok(_) => Ok(()),
            // Not knowing is no reason to hold the source back; a write
            // that really fails is reported as such.
            Err(err) => {
                tracing::debug!("cannot tell the free space of the data directory: {err}");
                Ok(())
            }
        }
    }

    pub(super) fn fits(&self, bytes: u64) -> bool {
        self.used_bytes() + bytes <= self.options.capacity_bytes
    }

    /// Stored bytes of all event chunks.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    /// Free space on the data directory's file system, if it can be
    /// told.
    pub fn free_space(&self) -> Option<u64> {
        fs2::available_space(&self.path).ok()
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// Announce crossing the high-water mark, in either direction, once.
    pub(crate) fn check_high_water(&self) {
        let mark = self.options.capacity_bytes / 100 * u64::from(self.options.high_water_percent);
        let used = self.used_bytes();
        let above = used >= mark;
        if self.above_high_water.swap(above, Ordering::AcqRel) == above {
            return;
        }
        let (id, message) = if above {
            (QUEUE_HIGH_WATER, "queue above its high-water mark")
        } else {
            (
                QUEUE_BELOW_HIGH_WATER,
                "queue back below its high-water mark",
            )
        };
        self.notices.emit(
            Notice::new(id, message)
                .with("used_bytes", used)
                .with("capacity_bytes", self.options.capacity_bytes),
        );
    }
}

/// Event payload per stored chunk. A chunk is the unit of reading and of
/// removal, so it stays well under a typical delivery batch; bigger chunks
/// mean fewer index entries.
pub(super) const CHUNK_BYTES: usize = 64 * 1024;

/// The frame headers of an ingest's chunks: the last one carries the
/// cursor.
pub(super) fn frame_headers(
    entry: &StreamEntry,
    chunks: &[EncodedChunk],
    first_seq: u64,
    cursor: Option<&Cursor>,
    ingested_at: i64,
) -> Vec<FrameHeader> {
    let mut seq = first_seq;
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let header = FrameHeader {
                stream_id: entry.id,
                stream: entry.record.name.clone(),
                first_seq: seq,
                count: chunk.count,
                ingest_first_seq: first_seq,
                last: i == last,
                cursor: if i == last { cursor.cloned() } else { None },
                ingested_at,
                earliest: chunk.earliest,
                payload_len: u32::try_from(chunk.stored.len()).unwrap_or(u32::MAX),
            };
            seq += chunk.count;
            header
        })
        .collect()
}

/// The part of an ingest that must not be cancelled: append the frames,
/// wait for their sync, write their index entries and the stream's state.
pub(super) struct DurableWrite {
    store: Arc<Store>,
    entry: tokio::sync::OwnedMutexGuard<StreamEntry>,
    chunks: Vec<EncodedChunk>,
    events: u64,
    cursor: Option<Cursor>,
    ingested_at: i64,
    bytes: u64,
    used_bytes: Arc<AtomicU64>,
    unflushed: Arc<AtomicBool>,
    /// Wakes the dispatchers.
    appended: tokio::sync::watch::Sender<u64>,
    /// Injected fault (tests): fail as sled does on a full disk, after the
    /// sync.
    fail_index_write: bool,
    /// Keeps a reopen of the store waiting until this write is done.
    _writing: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl DurableWrite {
    /// Returns the seqs given (`first..next`) and how long the sync took.
    async fn run(mut self) -> Result<(u64, u64, Duration), QueueError> {
        let store = &self.store;
        let first_seq = self.entry.record.next_seq;
        let next_seq = first_seq + self.events;
        let frames = frame_headers(
            &self.entry,
            &self.chunks,
            first_seq,
            self.cursor.as_ref(),
            self.ingested_at,
        );
        let locations = store.log.append(
            frames
                .iter()
                .zip(&self.chunks)
                .map(|(h, c)| (h, &c.stored[..])),
        )?;
        let durable_after = store.log.durable().await.map_err(QueueError::Fsync)?;
        if self.fail_index_write {
            return Err(QueueError::Storage(sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "injected: no space left for the index",
            ))));
        }
        // Durable from here on: the frames carry the events and the
        // cursor. sled's records follow, flushed lazily.
        let mut record = self.entry.record.clone();
        record.next_seq = next_seq;
        record.bytes += self.bytes;
        if self.cursor.is_some() {
            record.cursor.clone_from(&self.cursor);
        }
        let mut batch = sled::Batch::default();
        for ((frame, chunk), (segment, offset)) in frames.iter().zip(&self.chunks).zip(locations) {
            if frame.count == 0 {
                continue;
            }
            let index = ChunkIndex {
                segment,
                offset,
                len: frame.payload_len,
                ingested_at: self.ingested_at,
                earliest: chunk.earliest,
            };
            batch.insert(
                &keys::events(self.entry.id, frame.first_seq)[..],
                codec::encode(&index)?,
            );
        }
        batch.insert(&keys::stream(self.entry.id)[..], codec::encode(&record)?);
        store.tree.apply_batch(batch)?;
        self.unflushed.store(true, Ordering::Release);
        self.entry.record = record;
        self.used_bytes.fetch_add(self.bytes, Ordering::AcqRel);
        self.appended.send_modify(|n| *n += 1);
        Ok((first_seq, next_seq, durable_after))
    }
}

/// One chunk of an ingest, encoded for its segment file.
pub(super) struct EncodedChunk {
    count: u64,
    earliest: Timestamp,
    stored: Vec<u8>,
}
