//! Setting a damaged sled index aside so it can be rebuilt from the
//! segment files. Its files are moved, not deleted: dead letters and group
//! state live only there, and an operator may want them back.

use std::path::{Path, PathBuf};

/// The files and directories sled 0.34 keeps in its directory.
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// Move sled's files out of `dir` into a new `index-damaged-<time>`
/// directory beside the segments; returns where they went.
pub(crate) fn set_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let aside = dir.join(format!(
        "index-damaged-{}",
        crate::clock::now_micros() / 1_000_000
    ));
    std::fs::create_dir(&aside)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_sled_file) {
            std::fs::rename(entry.path(), aside.join(&name))?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(aside)
}
