//! The cursor safd stores for the tailer: per file, who it is and how far
//! its events were emitted.
//!
//! JSON, `{"v":1,"files":[{"ino":…,"fp":…,"name":…,"offset":…,"tail":[len,hash]}]}`:
//! small (a few files), and readable in `safd status` dumps.

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TailCursor {
    v: u32,
    pub(crate) files: Vec<FileCursor>,
}

/// One tracked file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileCursor {
    /// The file's identity as the host reports it (device and inode,
    /// hashed).
    pub(crate) ino: u64,
    /// Fingerprint of the file's first line (up to 64 bytes): tells a
    /// reused inode from the file it used to be, and recognises a copy.
    pub(crate) fp: Option<u64>,
    /// The name it had when last seen (for messages only).
    pub(crate) name: String,
    /// Just after the last line emitted.
    pub(crate) offset: u64,
    /// Length and hash of the bytes just before `offset` (up to 64):
    /// a copy of the file (copytruncate) has the same bytes there.
    pub(crate) tail: (u8, u64),
}

impl TailCursor {
    pub(crate) fn new(files: Vec<FileCursor>) -> Self {
        Self { v: VERSION, files }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let cursor: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a file-tail cursor: {e}"))?;
        if cursor.v != VERSION {
            return Err(format!(
                "file-tail cursor version {} is not {VERSION}",
                cursor.v
            ));
        }
        Ok(cursor)
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, and fast enough
/// for the at most 64 bytes it ever hashes.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
