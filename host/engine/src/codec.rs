//! Record encoding: a version byte, a CRC-32 of the payload, then the payload
//! in postcard (a compact serde format). A record that fails these checks is
//! reported as damaged so the caller can quarantine it instead of crashing
//! on it at every start.

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

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    postcard::from_bytes(checked_payload(bytes)?).map_err(|e| RecordError::Decode(e.to_string()))
}

/// Decode only the leading field of a record (after the full checks), for
/// callers that need a header field without the bulk of the record.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    postcard::take_from_bytes(checked_payload(bytes)?)
        .map(|(value, _)| value)
        .map_err(|e| RecordError::Decode(e.to_string()))
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
