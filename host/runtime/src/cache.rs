//! Compiled-code cache.
//!
//! Compiling a component with Cranelift takes a noticeable fraction of a
//! second; safd compiles each plugin file once and keeps the machine code in
//! a directory it owns, keyed by the SHA-256 of the component bytes and by
//! the engine's compatibility hash (wasmtime version and compiler settings),
//! so a changed plugin or a new safd never picks up stale code. Code is only
//! ever deserialized from this directory, never from the plugin directory.
//! (wasmtime's own cache does the same but cannot tell `safd plugins list`
//! whether a plugin is already compiled.)
//!
//! Deserializing is `unsafe`: bytes that did not come from
//! `Component::serialize` are machine code run as is. So before anything is
//! loaded:
//! - the directory must be safd's alone: owned by safd's user, mode 0700,
//!   and no parent writable by others (unless sticky, as `/tmp` is). If it
//!   is not, the cache is not used (every plugin is compiled at load) and a
//!   warning names the directory and the fix;
//! - every entry carries an HMAC-SHA256 of its bytes under a key kept 0600
//!   beside the directory (`<dir>.key`), made at first use: an entry that
//!   was changed (tampered with, damaged, or written without the key) is
//!   refused and compiled again, never loaded.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache or was compiled just now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileOrigin {
    Cached,
    Compiled,
}

/// Starts every entry; the tag follows, then the serialized component.
const ENTRY_MAGIC: &[u8; 8] = b"SAFDCW1\0";
const TAG_BYTES: usize = 32;
const KEY_BYTES: usize = 32;

type Tagger = Hmac<Sha256>;

#[derive(Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// `None` when the directory is not safd's alone: nothing is loaded
    /// from it or written to it.
    key: Option<[u8; KEY_BYTES]>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .field("trusted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        // The compatibility hash only implements `Hash`; fold it into a
        // SHA-256 through a hasher adapter so the key is stable across runs.
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        let key = match private::verify(&dir).and_then(|()| load_or_create_key(&key_path(&dir))) {
            Ok(key) => Some(key),
            Err(problem) => {
                tracing::warn!(
                    cache = %dir.display(),
                    "the compiled-code cache is not used, plugins are compiled at every load: \
                     {problem}"
                );
                None
            }
        };
        Ok(Self {
            dir,
            engine_key,
            key,
        })
    }

    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{}-{}.cwasm", &digest[..32], self.engine_key))
    }

    /// True when compiled code for these bytes is in the cache.
    pub(crate) fn contains(&self, wasm: &[u8]) -> bool {
        self.key.is_some() && self.entry(wasm).is_file()
    }

    /// The compiled component for `wasm`, from the cache or compiled now.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CompileOrigin)> {
        let Some(key) = &self.key else {
            return Ok((
                Component::from_binary(engine, wasm)?,
                CompileOrigin::Compiled,
            ));
        };
        let entry = self.entry(wasm);
        if entry.is_file() {
            match read_authenticated(key, &entry).and_then(|bytes| deserialize(engine, bytes)) {
                Ok(component) => return Ok((component, CompileOrigin::Cached)),
                Err(err) => tracing::warn!(
                    path = %entry.display(),
                    "refusing a compiled-code cache entry, compiling the plugin again: {err:#}"
                ),
            }
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(err) = self.store(key, &entry, &component) {
            // A cache that cannot be written only costs compile time.
            tracing::warn!(path = %entry.display(), "could not cache compiled plugin: {err:#}");
        }
        Ok((component, CompileOrigin::Compiled))
    }

    fn store(
        &self,
        key: &[u8; KEY_BYTES],
        entry: &Path,
        component: &Component,
    ) -> wasmtime::Result<()> {
        let serialized = component.serialize()?;
        let mut bytes = Vec::with_capacity(ENTRY_MAGIC.len() + TAG_BYTES + serialized.len());
        bytes.extend_from_slice(ENTRY_MAGIC);
        bytes.extend_from_slice(&tag(key, entry, &serialized)?);
        bytes.extend_from_slice(&serialized);
        // Write then rename so a crash never leaves a truncated entry under
        // the final name.
        static UNIQUE: AtomicU64 = AtomicU64::new(0);
        let unique = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let tmp = entry.with_extension(format!("tmp{}-{unique}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, entry)?;
        Ok(())
    }
}

/// The key's file: beside the cache directory, not in it.
fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".key");
    dir.with_file_name(name)
}

/// The HMAC of an entry's serialized bytes, bound to its file name (which
/// names the component's digest and the engine).
fn tag(key: &[u8; KEY_BYTES], entry: &Path, serialized: &[u8]) -> wasmtime::Result<Vec<u8>> {
    Ok(tagger(key, entry, serialized)?
        .finalize()
        .into_bytes()
        .to_vec())
}

/// The HMAC state over an entry's name and serialized bytes.
fn tagger(key: &[u8; KEY_BYTES], entry: &Path, serialized: &[u8]) -> wasmtime::Result<Tagger> {
    let mut mac = Tagger::new_from_slice(key)?;
    mac.update(entry.file_name().unwrap_or_default().as_encoded_bytes());
    mac.update(&[0]);
    mac.update(serialized);
    Ok(mac)
}

/// The serialized component in `entry`, once its tag checks out.
fn read_authenticated(key: &[u8; KEY_BYTES], entry: &Path) -> wasmtime::Result<Vec<u8>> {
    // Read into memory rather than mapping the file: a mapped entry that is
    // truncated or rewritten underneath the daemon would kill it (SIGBUS).
    let bytes = std::fs::read(entry)?;
    let header = ENTRY_MAGIC.len() + TAG_BYTES;
    if bytes.len() < header || &bytes[..ENTRY_MAGIC.len()] != ENTRY_MAGIC {
        wasmtime::bail!("not an entry written by this safd (no header)");
    }
    let (stored_tag, serialized) = bytes[ENTRY_MAGIC.len()..].split_at(TAG_BYTES);
    if tagger(key, entry, serialized)?
        .verify_slice(stored_tag)
        .is_err()
    {
        wasmtime::bail!(
            "its authentication tag does not match: it was changed after safd wrote it"
        );
    }
    Ok(serialized.to_vec())
}

/// Read the cache key, or make one (0600, created exclusively).
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_BYTES], String> {
    let mut key = [0u8; KEY_BYTES];
    match std::fs::File::open(path) {
        Ok(mut file) => {
            private::verify_key_file(&file, path)?;
            file.read_exact(&mut key)
                .map_err(|e| format!("cannot read its key {}: {e}", path.display()))?;
            return Ok(key);
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot open its key {}: {err}", path.display())),
    }
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("cannot make a key (reading /dev/urandom): {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(path)
        .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()));
    match written {
        Ok(()) => Ok(key),
        // Another safd made it meanwhile: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(err) => Err(format!("cannot write its key {}: {err}", path.display())),
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: Vec<u8>) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that deserialized bytes were produced by
    // `Component::serialize` of a compatible engine. These bytes carry an
    // HMAC under safd's key that was checked just before (so they are bytes
    // `CompileCache::store` wrote), they come from a directory verified to
    // be writable by safd's user alone, and the engine key in the file name
    // plus wasmtime's own header check reject other engines.
    unsafe { Component::deserialize(engine, bytes) }
}

#[cfg(unix)]
mod private {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    /// The directory is safd's alone: owned by this user, nobody else may
    /// write to it, nor replace it through a parent.
    pub(super) fn verify(dir: &Path) -> Result<(), String> {
        let uid = rustix::process::geteuid().as_raw();
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory (a symlink?)", dir.display()));
        }
        if meta.uid() != uid {
            return Err(format!(
                "{} belongs to user {} (safd runs as {uid}); remove it, or set cache_dir to a \
                 directory of safd's own",
                dir.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make {} private (0700): {e}", dir.display()))?;
        }
        for parent in dir
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
        {
            let meta = std::fs::metadata(parent)
                .map_err(|e| format!("cannot inspect {}: {e}", parent.display()))?;
            let owner_ok = meta.uid() == uid || meta.uid() == 0;
            let sticky = meta.mode() & 0o1000 != 0;
            if !owner_ok || (meta.mode() & 0o022 != 0 && !sticky) {
                return Err(format!(
                    "its parent {} can be changed by other users (owner {}, mode {:o}); set \
                     cache_dir to a directory whose parents only safd's user or root can write",
                    parent.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ));
            }
        }
        Ok(())
    }

    /// The key file is this user's and nobody else's.
    pub(super) fn verify_key_file(file: &std::fs::File, path: &Path) -> Result<(), String> {
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        let uid = rustix::process::geteuid().as_raw();
        if meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "its key {} must belong to safd's user and be mode 0600 (it is owner {}, mode \
                 {:o}); remove it and safd makes a new one",
                path.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    }
}

#[cfg(not(unix))]
mod private {
    use std::path::Path;

    pub(super) fn verify(_dir: &Path) -> Result<(), String> {
        Ok(())
    }

    pub(super) fn verify_key_file(_file: &std::fs::File, _path: &Path) -> Result<(), String> {
        Ok(())
    }
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read from the inner state.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
