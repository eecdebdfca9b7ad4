//! The daemon's configuration file (`safd.toml`): what it may contain, and
//! reading it into checked settings.
//!
//! Every problem is reported as `FILE:LINE: KEY: what is wrong; the fix`,
//! all of them at once, before anything is opened.

mod check;

pub use check::{Checked, check};

use safd_runtime::Grants;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One problem found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no single place (the whole file).
    pub line: usize,
    /// Dotted key, e.g. `groups.mgmt.members`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

fn render(file: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let place = if p.line > 0 {
                format!("{}:{}", file.display(), p.line)
            } else {
                file.display().to_string()
            };
            if p.key.is_empty() {
                format!("{place}: {}", p.message)
            } else {
                format!("{place}: {}: {}", p.key, p.message)
            }
        })
        .collect();
    lines.join("\n")
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Identifies this safd to management servers; keep it stable.
    pub agent_id: Spanned<String>,
    /// Where the durable queue lives.
    pub data_dir: Spanned<PathBuf>,
    /// `<name>.wasm` + `<name>.toml` plugins.
    pub plugin_dir: Spanned<PathBuf>,
    /// Compiled plugin code (default: the user's cache directory).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub queue: QueueSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSection>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Stored bytes the queue may hold, in MiB.
    #[serde(default = "defaults::capacity_mib")]
    pub capacity_mib: Spanned<u64>,
    /// `block` (sources wait; nothing is dropped) or `drop_oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Percentage of capacity at which event 2001 is announced.
    #[serde(default = "defaults::high_water_percent")]
    pub high_water_percent: Spanned<u8>,
    /// Acknowledged events kept for catch-up, in MiB.
    #[serde(default = "defaults::retention_mib")]
    pub retention_mib: u64,
    /// Acknowledged events older than this are removed.
    #[serde(default = "defaults::retention_hours")]
    pub retention_hours: u64,
    /// Free space (MiB) kept on the data directory's file system.
    #[serde(default = "defaults::min_free_mib")]
    pub min_free_mib: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            capacity_mib: defaults::capacity_mib(),
            when_full: WhenFull::default(),
            high_water_percent: defaults::high_water_percent(),
            retention_mib: defaults::retention_mib(),
            retention_hours: defaults::retention_hours(),
            min_free_mib: defaults::min_free_mib(),
        }
    }
}

/// The admin API (status, metrics, catch-up, dead letters).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `host:port`; loopback by default. Port 0 picks a free port.
    #[serde(default = "defaults::admin_listen")]
    pub listen: Spanned<String>,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
            token: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    DropOldest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Plugin name (the file `<plugin>.wasm` in `plugin_dir`).
    pub plugin: Spanned<String>,
    /// Handed to the plugin as JSON.
    #[serde(default = "defaults::table")]
    pub config: Spanned<toml::Table>,
    #[serde(default)]
    pub grants: Grants,
    /// Events per poll.
    #[serde(default = "defaults::poll_events")]
    pub max_events: Spanned<u32>,
    /// Bytes per poll.
    #[serde(default = "defaults::poll_bytes")]
    pub max_bytes: Spanned<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    Failover,
    Broadcast,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// `failover` (the first member is the primary, the others backups in
    /// order) or `broadcast` (every member gets everything).
    pub mode: GroupMode,
    /// Destination plugin serving every member.
    pub plugin: Spanned<String>,
    #[serde(default = "defaults::table")]
    pub config: Spanned<toml::Table>,
    #[serde(default)]
    pub grants: Grants,
    pub members: Spanned<Vec<MemberSection>>,
    #[serde(default = "defaults::batch_events")]
    pub batch_max_events: Spanned<usize>,
    #[serde(default = "defaults::batch_bytes")]
    pub batch_max_bytes: Spanned<usize>,
    /// A call taking longer makes the member unreachable (a silent peer).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::probe_interval_ms")]
    pub probe_interval_ms: Spanned<u64>,
    /// Healthy probes in a row before failing back to a higher-priority
    /// member.
    #[serde(default = "defaults::failback_after")]
    pub failback_after: u32,
    /// Transient errors in a row after which a member is unreachable.
    #[serde(default = "defaults::transient_limit")]
    pub transient_limit: u32,
    /// For plugins that only confirm writes (plain TCP syslog): how long
    /// written events wait before they count as delivered; a failure
    /// within it sends them again.
    #[serde(default = "defaults::linger_ms")]
    pub linger_ms: Spanned<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    pub name: String,
    /// Handed to the plugin as the endpoint (for `mgmt-http` the server's
    /// base URL).
    pub address: String,
}

mod defaults {
    use toml::Spanned;

    fn unspanned<T>(value: T) -> Spanned<T> {
        Spanned::new(0..0, value)
    }

    pub fn admin_listen() -> Spanned<String> {
        unspanned("127.0.0.1:8470".to_owned())
    }
    pub fn table() -> Spanned<toml::Table> {
        unspanned(toml::Table::new())
    }
    pub fn capacity_mib() -> Spanned<u64> {
        unspanned(1024)
    }
    pub fn high_water_percent() -> Spanned<u8> {
        unspanned(80)
    }
    pub fn retention_mib() -> u64 {
        256
    }
    pub fn retention_hours() -> u64 {
        24
    }
    pub fn min_free_mib() -> u64 {
        64
    }
    pub fn poll_events() -> Spanned<u32> {
        unspanned(1024)
    }
    pub fn poll_bytes() -> Spanned<u32> {
        unspanned(4 << 20)
    }
    pub fn batch_events() -> Spanned<usize> {
        unspanned(512)
    }
    pub fn batch_bytes() -> Spanned<usize> {
        unspanned(1 << 20)
    }
    pub fn request_timeout_ms() -> Spanned<u64> {
        unspanned(3000)
    }
    pub fn probe_interval_ms() -> Spanned<u64> {
        unspanned(1000)
    }
    pub fn failback_after() -> u32 {
        3
    }
    pub fn transient_limit() -> u32 {
        3
    }
    pub fn linger_ms() -> Spanned<u64> {
        unspanned(1000)
    }
}

/// The 1-based line of a byte offset (0 for an unspanned default).
pub fn line_of(text: &str, offset: usize) -> usize {
    if offset == 0 && text.is_empty() {
        return 0;
    }
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

/// Read and parse `path`; syntax and type errors come back with their line.
pub fn read(path: &Path) -> Result<(String, ConfigFile), ConfigError> {
    let fail = |line: usize, message: String| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            line,
            key: String::new(),
            message,
        }],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            0,
            format!("cannot read it: {e}; check the path given to -c"),
        )
    })?;
    let file = toml::from_str::<ConfigFile>(&text).map_err(|e| {
        let line = e.span().map_or(0, |span| line_of(&text, span.start));
        // The toml message repeats the source line; keep its first line.
        let message = e.message().lines().next().unwrap_or_default().to_owned();
        fail(line, format!("{message} (see docs/configuration.md)"))
    })?;
    Ok((text, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_from_one() {
        let text = "a = 1\nb = 2\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 6), 2);
    }

    #[test]
    fn the_example_configuration_reads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/safd.example.toml"
        ));
        let (_, file) = read(path).unwrap();
        assert_eq!(file.groups["mgmt"].members.get_ref().len(), 2);
        assert_eq!(file.sources["ems-prod1"].plugin.get_ref(), "ems-reader");
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safd.toml");
        std::fs::write(
            &path,
            "agent_id = \"a\"\ndata_dir = \"/d\"\nplugin_dir = \"/p\"\n[queue]\ncapacity = 5\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        assert_eq!(err.problems[0].line, 5, "{err}");
        assert!(
            err.to_string().contains("unknown field `capacity`"),
            "{err}"
        );
    }
}
