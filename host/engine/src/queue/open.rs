//! Opening the queue: sled's index opened (or set aside when damaged),
//! every stream's and group's state read back, and what the index lacks
//! replayed from the segment files.

use super::*;

/// Open the store at `path` and read every stream's and group's state.
/// Damaged records are quarantined and reported; what the index lacks is
/// taken from the segment files ([`replay`]), and an index
/// that sled cannot read at all is set aside and rebuilt from them.
pub(crate) fn load(
    path: &Path,
    notices: &Notices,
) -> Result<(Store, Streams, OpenReport), QueueError> {
    make_private(path)?;
    let (db, set_aside) = open_db(path)?;
    let tree = db.open_tree("saf")?;
    let segments_dir = path.join(SEGMENTS_DIR);
    let mut report = OpenReport::default();
    report.groups = load_groups(&tree, &mut report.quarantined, notices)?;
    let mut records: BTreeMap<u32, StreamRecord> = BTreeMap::new();
    let mut damaged: BTreeSet<u32> = BTreeSet::new();
    for item in tree.scan_prefix([keys::STREAM]) {
        let (key, value) = item?;
        let Some(id) = keys::parse_stream(&key) else {
            continue;
        };
        match codec::decode::<StreamRecord>(&value) {
            Ok(record) => {
                records.insert(id, record);
            }
            Err(err) => {
                quarantine(&tree, &key, &value, &err, notices)?;
                report.quarantined.push(describe_key(&key));
                damaged.insert(id);
            }
        }
    }
    let index_was_empty = records.is_empty() && damaged.is_empty();
    let mut acked: HashMap<String, u64> = HashMap::new();
    for (stream, seq) in report.groups.values().flat_map(|g| &g.acked) {
        let highest = acked.entry(stream.clone()).or_default();
        *highest = (*highest).max(*seq);
    }
    let replayed = replay::replay(&tree, &segments_dir, &mut records, &damaged, &acked)?;
    if set_aside.is_some() || (index_was_empty && !replayed.rebuilt.is_empty()) {
        report.index_rebuilt = Some(IndexRebuilt {
            set_aside,
            streams: replayed.rebuilt.clone(),
        });
    }
    // The replayed index entries and records are durable before the new
    // segment's checkpoints are written and old segments deleted.
    db.flush()?;
    let checkpoints = records.iter().map(|(id, record)| Checkpoint {
        stream_id: *id,
        stream: record.name.clone(),
        next_seq: record.next_seq,
        cursor: record.cursor.clone(),
    });
    let log = SegmentLog::open(&segments_dir, checkpoints)?;
    log.track(replayed.indexed_segments.iter().copied());
    migrate::move_sled_chunks(&tree, &log, &records, notices)?;
    db.flush()?;
    log.delete_unreferenced()?;
    let mut streams = Streams {
        next_id: records
            .keys()
            .chain(&damaged)
            .copied()
            .chain(replayed.highest_stream_id)
            .max()
            .map_or(0, |id| id + 1),
        ..Streams::default()
    };
    for (id, record) in records {
        report.streams.push(StreamState::from(&record));
        streams.by_name.insert(
            record.name.clone(),
            (
                id,
                Arc::new(tokio::sync::Mutex::new(StreamEntry { id, record })),
            ),
        );
    }
    report.streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((
        Store {
            tree,
            commit: GroupCommit::new(move || db.flush().map(drop).map_err(|e| e.to_string())),
            log,
            notices: notices.clone(),
        },
        streams,
        report,
    ))
}

/// Event 2009 for an index rebuilt from the segment files.
pub(super) fn index_rebuilt_notice(rebuilt: &IndexRebuilt) -> Notice {
    let mut message = format!(
        "the queue's index was rebuilt from the segment files ({} streams found); \
         groups deliver again what they had acknowledged (servers deduplicate)",
        rebuilt.streams.len()
    );
    if let Some(aside) = &rebuilt.set_aside {
        message.push_str(&format!(
            "; the damaged index, with any dead letters, was kept in {}",
            aside.display()
        ));
    }
    let notice = Notice::new(QUEUE_INDEX_REBUILT, message).with("streams", rebuilt.streams.len());
    match &rebuilt.set_aside {
        Some(aside) => notice.with("set_aside", aside.display()),
        None => notice,
    }
}

/// Every group's state; a damaged one is quarantined and started again
/// with an epoch no earlier one can match.
pub(super) fn load_groups(
    tree: &sled::Tree,
    quarantined: &mut Vec<String>,
    notices: &Notices,
) -> Result<BTreeMap<String, GroupState>, QueueError> {
    let mut groups = BTreeMap::new();
    for item in tree.scan_prefix([keys::GROUP]) {
        let (key, value) = item?;
        let name = String::from_utf8_lossy(&key[1..]).into_owned();
        let state = match codec::decode::<GroupState>(&value) {
            Ok(state) => state,
            Err(err) => {
                quarantine(tree, &key, &value, &err, notices)?;
                quarantined.push(describe_key(&key));
                // The old epoch is unknown: jump above any epoch that can
                // have been issued (they count up from 1), so a stale
                // catch-up request can never match. Acks restart at 0:
                // re-delivery is harmless, receivers deduplicate.
                let state = GroupState {
                    epoch: unmatchable_epoch(),
                    ..GroupState::default()
                };
                tree.insert(&key, codec::encode(&state)?)?;
                state
            }
        };
        groups.insert(name, state);
    }
    Ok(groups)
}

/// An epoch above any that can have been issued before (epochs count up
/// from 1, one per change of active member): the time in microseconds.
pub(crate) fn unmatchable_epoch() -> u64 {
    crate::clock::now_micros().unsigned_abs()
}

/// sled's page cache (its default is 1 GiB). sled holds only small
/// records; events are in the segment files.
pub(super) const SLED_CACHE_BYTES: u64 = 32 << 20;

/// The data directory, readable by safd's user only: the queue holds every
/// event's text. Created 0700; an existing one open to others is closed
/// (and said so). Files inside are created 0600 (safd's umask).
fn make_private(path: &Path) -> Result<(), QueueError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |err: std::io::Error| QueueError::Open {
        path: path.display().to_string(),
        reason: err.to_string(),
    };
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(failed),
        Err(err) => Err(failed(err)),
        Ok(meta) if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(
                path = %path.display(),
                "the data directory was open to other users (mode {:o}); made 0700",
                meta.permissions().mode() & 0o777
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)
        }
        Ok(_) => Ok(()),
    }
}

/// The directory of the segment files, inside the queue's directory.
pub(super) const SEGMENTS_DIR: &str = "segments";

/// How long `open` waits for sled's file lock. sled releases it from its own
/// I/O threads shortly after the previous handle is dropped (a restart in
/// the same process, or a previous safd still exiting).
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Open sled at `path`. An index sled reports as corrupt is moved aside
/// (kept for inspection, returned) and a new one started: the segment
/// files rebuild it.
pub(super) fn open_db(path: &Path) -> Result<(sled::Db, Option<PathBuf>), QueueError> {
    match open_sled(path) {
        Err(QueueError::IndexDamaged(reason)) => {
            let aside = index_damage::set_aside(path).map_err(|e| QueueError::Open {
                path: path.display().to_string(),
                reason: format!(
                    "its index is damaged ({reason}) and cannot be moved aside to be rebuilt: \
                     {e}; move the files `conf`, `db`, `snap.*` and `blobs` out of the data \
                     directory by hand (the events are in `segments/`) and start again"
                ),
            })?;
            tracing::error!(
                event_id = QUEUE_INDEX_REBUILT,
                set_aside = %aside.display(),
                "the queue's index is damaged ({reason}); it was moved aside and is rebuilt \
                 from the segment files"
            );
            Ok((open_sled(path)?, Some(aside)))
        }
        other => other.map(|db| (db, None)),
    }
}

pub(super) fn open_sled(path: &Path) -> Result<sled::Db, QueueError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let config = sled::Config::new()
            .path(path)
            // Durability comes from our own group-commit flushes.
            .flush_every_ms(None)
            .cache_capacity(SLED_CACHE_BYTES);
        // sled 0.34 asserts on some damage instead of returning an error;
        // either way the index cannot be read.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or_else(|_| Err(sled::Error::Corruption { at: None, bt: () }));
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(err)) if err.to_string().contains("acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(QueueError::Open {
                        path: path.display().to_string(),
                        reason: "it is locked by another process; is another safd using \
                                 this data directory?"
                            .to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err @ sled::Error::Corruption { .. }) => {
                return Err(QueueError::IndexDamaged(err.to_string()));
            }
            Err(err) => {
                return Err(QueueError::Open {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                });
            }
        }
    }
}
