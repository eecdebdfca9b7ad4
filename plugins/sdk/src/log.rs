//! Structured logging into safd's log.
//!
//! Records are tagged by the host with the connector instance's name, so a
//! message need not repeat it. Printing to stdout or stderr also reaches the
//! host's log, but without a level or fields.

use crate::source_bindings::safd::connector::log::{Level, emit};

/// Log `message` at `level` with extra `fields`.
///
/// In a native build (a plugin's unit tests) there is no host to log into:
/// the record goes to stderr, where the test harness shows it for a failed
/// test.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    if cfg!(target_family = "wasm") {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        emit(level, message, &fields);
    } else {
        eprintln!("[{level:?}] {message} {fields:?}");
    }
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}

pub use crate::source_bindings::safd::connector::log::Level as LogLevel;
