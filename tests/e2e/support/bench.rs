//! Running a `safd-tools` benchmark at a tiny size and reading its report.

use std::path::Path;

/// Run `safd-tools COMMAND --plugins PLUGINS ARGS…` with its report and
/// work directory in `dir`, and return each figure's median by the start
/// of its label. Exit status 1 (a target missed, expected of a debug
/// build) is accepted; anything else fails. Its stderr, not a terminal
/// here, must show the progress of its waits as plain lines.
pub fn run_tiny(
    dir: &Path,
    command: &str,
    plugins: &Path,
    args: &[&str],
) -> impl Fn(&str) -> f64 + use<> {
    let out = dir.join("report");
    let output = std::process::Command::new(super::binary("safd-tools"))
        .env("SAFD_CACHE_DIR", super::plugin_cache())
        .arg(command)
        .arg("--plugins")
        .arg(plugins)
        .args(args)
        .args(["--runs", "1"])
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(dir.join("work"))
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}: {stderr}",
        output.status
    );
    // "  events at the server: 2000 in 1.3 s"
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("  ") && line.contains(" in ") && line.ends_with(" s")),
        "no progress line in:\n{stderr}"
    );
    assert!(out.join(format!("{command}.md")).is_file());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(format!("{command}.json"))).unwrap(),
    )
    .unwrap();
    medians(report)
}

/// The median of a bench report's figure whose label starts with the
/// given text.
pub fn medians(report: serde_json::Value) -> impl Fn(&str) -> f64 {
    move |label: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["figure"].as_str().unwrap().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in {report}"))["median"]
            .as_f64()
            .unwrap()
    }
}
