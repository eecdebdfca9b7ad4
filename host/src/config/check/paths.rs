//! What `safd run` will find at the paths a configuration names.

use std::path::Path;

/// Why the queue cannot live in `dir`, if it cannot: what `safd run`
/// would find when it opens the queue there.
pub(super) fn usable_data_dir(dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err(
            "is empty; give the directory the queue lives in, e.g. \"/var/lib/safd\"".to_owned(),
        );
    }
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {
            // Whether files can be created there is what counts (a
            // read-only mount, /proc, a directory of another user): try.
            tempfile::Builder::new()
                .prefix(".safd-check-")
                .tempfile_in(dir)
                .map(drop)
                .map_err(|e| {
                    format!(
                        "{}: safd cannot create files in it ({e}); give a writable directory",
                        dir.display()
                    )
                })
        }
        Ok(metadata) => Err(format!(
            "{} is not a directory (it is {}); give a directory (it is created if missing)",
            dir.display(),
            file_kind(dir, &metadata)
        )),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // Created on start: its nearest existing ancestor must be a
            // writable directory.
            let ancestor = dir
                .ancestors()
                .skip(1)
                .find(|a| a.as_os_str().is_empty() || a.exists())
                .map(|a| {
                    if a.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        a
                    }
                })
                .unwrap_or(Path::new("/"));
            if !ancestor.is_dir() {
                return Err(format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    ancestor.display()
                ));
            }
            tempfile::Builder::new()
                .prefix(".safd-check-")
                .tempdir_in(ancestor)
                .map(drop)
                .map_err(|e| {
                    format!(
                        "{} cannot be created in {} ({e}); create it for safd's user or give \
                         another directory",
                        dir.display(),
                        ancestor.display()
                    )
                })
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// The size of the file system `dir` is (or would be created) on, in MiB.
pub(super) fn file_system_mib(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|a| a.is_dir())?;
    fs2::total_space(existing).ok().map(|bytes| bytes >> 20)
}

/// What a path that is not a regular file is, for a message.
pub(super) fn file_kind(path: &Path, metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = metadata.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_fifo() {
        "a pipe"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    match std::fs::read_link(path) {
        Ok(target) => format!("{what}, through a link to {}", target.display()),
        Err(_) => what.to_owned(),
    }
}
