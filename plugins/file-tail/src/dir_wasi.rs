//! The granted directory through wasi:filesystem: listing with file
//! identities, opening, positional reads.
//!
//! Used directly rather than through `std::fs` because a tailer needs each
//! file's identity (device and inode, which wasi reports as a metadata
//! hash) to follow a file across a rename, and std exposes it on wasip2
//! only behind an unstable feature.

use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
};

/// A regular file in the directory.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) ino: u64,
}

pub(crate) struct Directory {
    handle: Descriptor,
    path: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("path", &self.path)
            .finish()
    }
}

/// An open file, read by position.
pub(crate) struct File(Descriptor);

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("File")
    }
}

fn describe(code: ErrorCode) -> String {
    format!("{code:?}").to_lowercase()
}

impl Directory {
    /// The granted directory `path` (a preopen or a directory below one).
    pub(crate) fn open(path: &str) -> Result<Self, String> {
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let preopens = get_directories();
        // The longest granted directory that contains `path`.
        let best = preopens
            .into_iter()
            .filter(|(_, guest)| {
                let guest = guest.trim_end_matches('/');
                path == guest
                    || guest.is_empty()
                    || path
                        .strip_prefix(guest)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, guest)| guest.len());
        let Some((preopen, guest)) = best else {
            return Err(format!(
                "`{path}` is not granted to this plugin; grant it with grants.dirs = [\"{path}\"]"
            ));
        };
        let rest = path[guest.trim_end_matches('/').len()..].trim_start_matches('/');
        let handle = if rest.is_empty() {
            preopen
        } else {
            preopen
                .open_at(
                    PathFlags::SYMLINK_FOLLOW,
                    rest,
                    OpenFlags::DIRECTORY,
                    DescriptorFlags::READ,
                )
                .map_err(|code| format!("cannot open `{path}`: {}", describe(code)))?
        };
        Ok(Self {
            handle,
            path: path.to_owned(),
        })
    }

    /// The regular files in the directory with their identities.
    pub(crate) fn list(&self) -> Result<Vec<Entry>, String> {
        let stream = self
            .handle
            .read_directory()
            .map_err(|code| format!("cannot list `{}`: {}", self.path, describe(code)))?;
        let mut entries = Vec::new();
        while let Some(entry) = stream
            .read_directory_entry()
            .map_err(|code| format!("cannot list `{}`: {}", self.path, describe(code)))?
        {
            if entry.type_ != DescriptorType::RegularFile {
                continue;
            }
            // A file deleted between listing and this call is just gone.
            if let Ok(hash) = self
                .handle
                .metadata_hash_at(PathFlags::empty(), &entry.name)
            {
                entries.push(Entry {
                    name: entry.name,
                    ino: hash.lower,
                });
            }
        }
        Ok(entries)
    }

    /// Open `name` for reading, with its identity as of the open.
    pub(crate) fn open_file(&self, name: &str) -> Result<(File, u64), String> {
        let file = self
            .handle
            .open_at(
                PathFlags::empty(),
                name,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .map_err(|code| format!("cannot open `{}/{name}`: {}", self.path, describe(code)))?;
        let ino = file
            .metadata_hash()
            .map_err(|code| format!("cannot stat `{}/{name}`: {}", self.path, describe(code)))?
            .lower;
        Ok((File(file), ino))
    }
}

impl File {
    /// Current size and last modification (seconds since the epoch and
    /// nanoseconds).
    pub(crate) fn stat(&self) -> Result<(u64, Option<(u64, u32)>), String> {
        let stat = self.0.stat().map_err(describe)?;
        Ok((
            stat.size,
            stat.data_modification_timestamp
                .map(|t| (t.seconds, t.nanoseconds)),
        ))
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    ///
    /// The host answers at most 64 KiB per read: a longer range is
    /// gathered into one buffer of its final size. (Growing it piece by
    /// piece left a plugin's memory — which never shrinks — holding every
    /// doubling: ~0.5 MiB touched to read 200 KB.)
    pub(crate) fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut out: Vec<u8> = Vec::new();
        while (out.len() as u64) < len {
            let (chunk, end) = self
                .0
                .read(len - out.len() as u64, offset + out.len() as u64)
                .map_err(describe)?;
            let done = end || chunk.is_empty();
            if out.is_empty() && (done || chunk.len() as u64 == len) {
                return Ok(chunk);
            }
            if out.capacity() == 0 {
                out.reserve_exact(usize::try_from(len).unwrap_or(usize::MAX));
            }
            out.extend_from_slice(&chunk);
            if done {
                break;
            }
        }
        Ok(out)
    }
}
