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

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
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

#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        restrict_to_owner(&dir)?;
        // The compatibility hash only implements `Hash`; fold it into a
        // SHA-256 through a hasher adapter so the key is stable across runs.
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self { dir, engine_key })
    }

    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{}-{}.cwasm", &digest[..32], self.engine_key))
    }

    /// True when compiled code for these bytes is in the cache.
    pub(crate) fn contains(&self, wasm: &[u8]) -> bool {
        self.entry(wasm).is_file()
    }

    /// The compiled component for `wasm`, from the cache or compiled now.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CompileOrigin)> {
        let entry = self.entry(wasm);
        if entry.is_file() {
            match deserialize(engine, &entry) {
                Ok(component) => return Ok((component, CompileOrigin::Cached)),
                Err(err) => tracing::warn!(
                    path = %entry.display(),
                    "discarding unusable compiled-code cache entry: {err:#}"
                ),
            }
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(err) = self.store(&entry, &component) {
            // A cache that cannot be written only costs compile time.
            tracing::warn!(path = %entry.display(), "could not cache compiled plugin: {err:#}");
        }
        Ok((component, CompileOrigin::Compiled))
    }

    fn store(&self, entry: &Path, component: &Component) -> wasmtime::Result<()> {
        let bytes = component.serialize()?;
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

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // Read into memory rather than `deserialize_file`, which maps the file:
    // a mapped cache entry that is truncated or rewritten underneath the
    // daemon would kill it with SIGBUS.
    let bytes = std::fs::read(path)?;
    // SAFETY: wasmtime requires that deserialized bytes were produced by
    // `Component::serialize` of a compatible engine. Entries in this
    // directory are only written by `CompileCache::store` (the directory is
    // created by safd and restricted to its user), and the engine key in the
    // file name plus wasmtime's own header check reject other engines.
    unsafe { Component::deserialize(engine, bytes) }
}

#[cfg(unix)]
fn restrict_to_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path) -> std::io::Result<()> {
    Ok(())
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
