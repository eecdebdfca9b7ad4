//! A headless browser (Chromium) for the tests of web pages: the page's
//! DOM once its scripts ran, or a screenshot of it. `cargo xtask test`
//! installs Chromium when it is missing.

use std::path::Path;
use std::process::Command;

/// The DOM of the page at `url` after its scripts ran (Chromium's
/// `--dump-dom`).
pub fn rendered_dom(url: &str) -> String {
    String::from_utf8(chromium(&["--dump-dom", url])).unwrap()
}

/// A PNG of the page at `url` after its scripts ran, written to `path`.
pub fn screenshot(url: &str, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    chromium(&[
        &format!("--screenshot={}", path.display()),
        "--window-size=1280,1100",
        "--hide-scrollbars",
        url,
    ]);
}

fn chromium(args: &[&str]) -> Vec<u8> {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // No connections to Google's services on a closed network.
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            // Let the page's fetches and first refresh finish.
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}); `cargo xtask test` installs it (Debian package `chromium`)")
        });
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
