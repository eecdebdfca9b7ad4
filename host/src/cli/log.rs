//! Where safd's log goes and in what form: text (coloured only on a
//! terminal) or JSON lines, chosen by `--log-format`, `SAFD_LOG_FORMAT` or
//! the configuration's `[log] format`. The daemon's few lines for the
//! operator (running, stopping, a reload's summary) take the same form, so
//! that under systemd or a log collector every line of stderr parses.

use std::io::IsTerminal;
use std::sync::OnceLock;

pub use crate::config::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Install the log subscriber; `filter` as for `SAFD_LOG`.
pub fn init(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    use tracing_subscriber::prelude::*;
    let _ = FORMAT.set(format);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .init(),
    }
}

/// A line for the operator on stderr, whatever the log level: as it is in
/// text form, as a JSON object (`level` "INFO", target `safd`) in JSON form.
pub fn say(message: &str) {
    match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "level": "INFO",
                "target": "safd",
                "message": message,
            });
            eprintln!("{line}");
        }
    }
}
