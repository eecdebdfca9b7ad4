//! The directory through `std::fs`, for native builds: the same face as
//! `dir_wasi.rs` (which the plugin uses inside the sandbox), so that the
//! tailer's logic — file identity across renames, truncation and copies,
//! line framing — runs in native unit tests against real files.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// A regular file in the directory.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) ino: u64,
}

#[derive(Debug)]
pub(crate) struct Directory {
    path: PathBuf,
}

/// An open file, read by position.
#[derive(Debug)]
pub(crate) struct File(std::fs::File);

impl Directory {
    pub(crate) fn open(path: &str) -> Result<Self, String> {
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err(format!("`{}` is not a directory", path.display()));
        }
        Ok(Self { path })
    }

    /// The regular files in the directory with their identities.
    pub(crate) fn list(&self) -> Result<Vec<Entry>, String> {
        let describe = |e: std::io::Error| format!("cannot list `{}`: {e}", self.path.display());
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(describe)? {
            let entry = entry.map_err(describe)?;
            // Not following links, as wasi's entry type does not; a file
            // deleted between listing and this call is just gone.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_file() {
                entries.push(Entry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    ino: metadata.ino(),
                });
            }
        }
        Ok(entries)
    }

    /// Open `name` for reading, with its identity as of the open.
    pub(crate) fn open_file(&self, name: &str) -> Result<(File, u64), String> {
        let path = self.path.join(name);
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
        let ino = file
            .metadata()
            .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?
            .ino();
        Ok((File(file), ino))
    }
}

impl File {
    /// Current size and last modification (seconds since the epoch and
    /// nanoseconds).
    pub(crate) fn stat(&self) -> Result<(u64, Option<(u64, u32)>), String> {
        let metadata = self.0.metadata().map_err(|e| e.to_string())?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()));
        Ok((metadata.len(), modified))
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub(crate) fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut out = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
        let mut filled = 0;
        while filled < out.len() {
            let n = self
                .0
                .read_at(&mut out[filled..], offset + filled as u64)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        out.truncate(filled);
        Ok(out)
    }
}
