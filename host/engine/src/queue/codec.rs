//! Record encoding: a version byte, a CRC-32 of the payload, then the payload
//! in postcard (a compact serde format). A record that fails these checks is
//! reported as damaged so the caller can quarantine it instead of crashing
//! on it at every start.

use safd_connector::{EventBlock, event_block};
use serde::Serialize;
use serde::de::DeserializeOwned;

const VERSION: u8 = 1;
const HEADER: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record too short ({0} bytes)")]
    Truncated(usize),
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("checksum mismatch")]
    Checksum,
    #[error("undecodable record: {0}")]
    Decode(String),
    #[error("cannot encode record: {0}")]
    Encode(String),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RecordError> {
    let mut header = Vec::with_capacity(256);
    header.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    let mut out =
        postcard::to_extend(value, header).map_err(|e| RecordError::Encode(e.to_string()))?;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Encode a stored chunk: one run of consecutive events of a stream.
///
/// Layout of the payload: `zigzag(ingested_at) varint(count)` and then the
/// events exactly as a source plugin sent them (the WIT event-block
/// encoding), so ingest stores a plugin's bytes without re-encoding them.
/// The chunk's index entry repeats `ingested_at`, so retention never reads
/// the chunk; here it keeps a chunk self-describing.
pub(crate) fn encode_chunk(ingested_at: i64, count: u32, events: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 16 + events.len());
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    event_block::put_varint(&mut out, event_block::zigzag(ingested_at));
    event_block::put_varint(&mut out, u64::from(count));
    out.extend_from_slice(events);
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The events of a stored chunk.
pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<EventBlock, RecordError> {
    let (count, events) = chunk_events(bytes)?;
    EventBlock::decode(events.to_vec(), count).map_err(|e| RecordError::Decode(e.to_string()))
}

/// A stored chunk's event count and its events' bytes (an event block),
/// checksum checked, the events not read.
pub(crate) fn chunk_events(bytes: &[u8]) -> Result<(u32, &[u8]), RecordError> {
    let payload = checked_payload(bytes)?;
    let decode_error = |e: postcard::Error| RecordError::Decode(e.to_string());
    let (_ingested_at, rest) = postcard::take_from_bytes::<i64>(payload).map_err(decode_error)?;
    let (count, rest) = postcard::take_from_bytes::<u32>(rest).map_err(decode_error)?;
    Ok((count, rest))
}

/// The ingest time a stored chunk carries.
pub(crate) fn chunk_ingested_at(bytes: &[u8]) -> Result<i64, RecordError> {
    postcard::take_from_bytes::<i64>(checked_payload(bytes)?)
        .map(|(time, _)| time)
        .map_err(|e| RecordError::Decode(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    postcard::from_bytes(checked_payload(bytes)?).map_err(|e| RecordError::Decode(e.to_string()))
}

fn checked_payload(bytes: &[u8]) -> Result<&[u8], RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    if crc32fast::hash(&bytes[HEADER..]) != stored {
        return Err(RecordError::Checksum);
    }
    Ok(&bytes[HEADER..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use safd_connector::{Attribute, Event, Severity};

    #[test]
    fn chunks_round_trip_and_reveal_damage() {
        let events: Vec<Event> = (0..40)
            .map(|n| Event {
                id: format!("ïd-{n}"),
                time: if n % 2 == 0 {
                    -n
                } else {
                    1_710_119_830_000_000 + n
                },
                severity: Severity::from_code((n % 6) as u8).unwrap(),
                attributes: (0..n % 4)
                    .map(|k| Attribute::new(format!("k{k}"), "v".repeat(k as usize * 70)))
                    .collect(),
                body: "β".repeat(n as usize * 7),
            })
            .collect();
        let block = EventBlock::from_events(&events);
        let stored = encode_chunk(-5, events.len() as u32, block.bytes());
        assert_eq!(decode_chunk(&stored).unwrap().to_events(), events);
        assert_eq!(chunk_ingested_at(&stored).unwrap(), -5);
        let mut damaged = stored.clone();
        damaged[10] ^= 1;
        assert!(matches!(decode_chunk(&damaged), Err(RecordError::Checksum)));
    }

    #[test]
    fn round_trip_and_damage_detection() {
        let value = (42u64, "hello".to_owned(), vec![1u8, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), value);

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(&flipped),
            Err(RecordError::Checksum)
        );
        let mut future = bytes.clone();
        future[0] = 9;
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(&future),
            Err(RecordError::Version(9))
        );
        assert_eq!(decode::<u64>(&bytes[..3]), Err(RecordError::Truncated(3)));
    }
}
