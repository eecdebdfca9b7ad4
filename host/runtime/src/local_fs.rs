//! Whether a granted directory lies on a local filesystem, where a plugin's
//! file reads may run on the thread that called it.
//!
//! wasmtime-wasi hands every file read of a guest to tokio's blocking pool
//! and waits for it: a thread hand-off (futex wake, two context switches)
//! per read. For an EMS log on a local disk the read itself takes
//! microseconds, and the hand-offs dominated ingest: 1 000 000 format-B
//! events through ems-reader into the queue took 5.7 s with 142 000
//! context switches, 3.9 s with 27 000 reading on the calling thread
//! (`allow_blocking_current_thread`). On a network filesystem a read can
//! hang for as long as the server is away; there the hand-off stays, so
//! a hung mount holds only the plugin's call (which the call timeout then
//! ends), never one of the runtime's threads.

use std::path::Path;

/// `statfs` magic numbers of network and cluster filesystems (and FUSE,
/// which may be either).
#[cfg(target_os = "linux")]
const REMOTE: [i64; 14] = [
    0x6969,      // NFS
    0x517B,      // SMB
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
    0x00C3_6400, // Ceph
    0x5346_414F, // AFS
    0x7375_7245, // Coda
    0x0102_1997, // 9P
    0x0116_1970, // GFS2
    0x7461_636F, // OCFS2
    0x0BD0_0BD0, // Lustre
    0x4750_4653, // GPFS
    0x1373_3883, // BeeGFS
];

/// True when every directory in `dirs` is on a local filesystem (and there
/// is at least one); false when one is remote or cannot be told.
pub(crate) fn all_local(dirs: &[impl AsRef<Path>]) -> bool {
    !dirs.is_empty() && dirs.iter().all(|dir| is_local(dir.as_ref()))
}

#[cfg(target_os = "linux")]
fn is_local(dir: &Path) -> bool {
    match rustix::fs::statfs(dir) {
        Ok(stat) => {
            // `f_type` is i64 on x86_64 and narrower on other targets.
            #[allow(clippy::useless_conversion)]
            let kind = i64::from(stat.f_type);
            !REMOTE.contains(&kind)
        }
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn is_local(_dir: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_temporary_directory_is_local_and_nothing_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(all_local(&[dir.path()]), cfg!(target_os = "linux"));
        let none: [&Path; 0] = [];
        assert!(!all_local(&none));
        assert!(!all_local(&[Path::new("/no/such/directory")]));
    }
}
