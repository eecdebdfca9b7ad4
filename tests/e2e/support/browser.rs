//! A headless browser (Chromium) for the tests of web pages: the page's
//! DOM once its scripts ran. `cargo xtask test` installs Chromium when it
//! is missing.

use std::process::Command;

/// The DOM of the page at `url` after its scripts ran (Chromium's
/// `--dump-dom`).
pub fn rendered_dom(url: &str) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Let the page's fetches and first refresh finish.
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}); `cargo xtask test` installs it (Debian package `chromium`)")
        });
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
