//! The cursor safd stores for the reader: where to resume, the logtime
//! there, and the furthest position ever emitted (so that a seek does not
//! emit the go-back window twice).
//!
//! Layout (big endian): version u8 = 1, file u32, offset u64, logtime i64,
//! high-water file u32, high-water offset u64 — 33 bytes.

use safd_ems::tail::Position;

const VERSION: u8 = 1;
const LEN: usize = 33;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReaderCursor {
    pub(crate) position: Position,
    pub(crate) logtime: i64,
    pub(crate) high_water: Position,
}

impl ReaderCursor {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.position.file.to_be_bytes());
        out.extend_from_slice(&self.position.offset.to_be_bytes());
        out.extend_from_slice(&self.logtime.to_be_bytes());
        out.extend_from_slice(&self.high_water.file.to_be_bytes());
        out.extend_from_slice(&self.high_water.offset.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != LEN || bytes[0] != VERSION {
            return Err(format!(
                "not an ems-reader cursor (expected {LEN} bytes, version {VERSION})"
            ));
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            position: Position {
                file: u32_at(1),
                offset: u64_at(5),
            },
            logtime: u64_at(13) as i64,
            high_water: Position {
                file: u32_at(21),
                offset: u64_at(25),
            },
        })
    }
}
