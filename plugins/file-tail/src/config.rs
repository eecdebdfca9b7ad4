//! The plugin's configuration (JSON) and its checks.

use safd_plugin_sdk::config;
use safd_plugin_sdk::types::{ConfigProblem, Severity};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    directory: String,
    #[serde(default = "default_pattern")]
    pattern: String,
    #[serde(default = "default_max_line_bytes")]
    max_line_bytes: u32,
    #[serde(default)]
    multiline_start: Option<String>,
    #[serde(default = "default_multiline_timeout_ms")]
    multiline_timeout_ms: u32,
    #[serde(default = "default_read_from")]
    read_from: String,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default = "default_rotate_wait_ms")]
    rotate_wait_ms: u32,
    #[serde(default = "default_scan_interval_ms")]
    scan_interval_ms: u32,
    #[serde(default = "default_max_events")]
    max_events: u32,
    #[serde(default = "default_max_bytes")]
    max_bytes: u32,
}

fn default_pattern() -> String {
    "*.log".to_owned()
}
fn default_max_line_bytes() -> u32 {
    64 * 1024
}
fn default_multiline_timeout_ms() -> u32 {
    1000
}
fn default_read_from() -> String {
    "beginning".to_owned()
}
fn default_severity() -> String {
    "info".to_owned()
}
fn default_rotate_wait_ms() -> u32 {
    5000
}
fn default_scan_interval_ms() -> u32 {
    250
}
fn default_max_events() -> u32 {
    4096
}
fn default_max_bytes() -> u32 {
    4 << 20
}

/// The validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) directory: String,
    pub(crate) pattern: Glob,
    pub(crate) max_line_bytes: usize,
    pub(crate) multiline_start: Option<regex::Regex>,
    pub(crate) multiline_timeout: Duration,
    /// Files found at the very first start (no cursor) are read from
    /// their end instead of their beginning.
    pub(crate) start_at_end: bool,
    pub(crate) severity: Severity,
    pub(crate) rotate_wait: Duration,
    pub(crate) scan_interval: Duration,
    pub(crate) max_events: u32,
    pub(crate) max_bytes: u32,
}

pub(crate) const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["directory"],
  "properties": {
    "directory": {"type": "string", "description": "directory of the log files, granted read-only (grants.dirs)"},
    "pattern": {"type": "string", "default": "*.log", "description": "file names to tail: a glob with * and ?, e.g. app.log* (files rotated away under another name are still read to their end)"},
    "max_line_bytes": {"type": "integer", "minimum": 256, "default": 65536, "description": "a longer line (or multi-line event) is emitted in pieces of at most this size, each with attribute part = 1, 2, …"},
    "multiline_start": {"type": "string", "description": "regular expression: a line that matches begins a new event, other lines are appended to the current one (e.g. ^\\d{4}-\\d\\d-\\d\\d)"},
    "multiline_timeout_ms": {"type": "integer", "minimum": 1, "default": 1000, "description": "a multi-line event is emitted once no line was added for this long"},
    "read_from": {"enum": ["beginning", "end"], "default": "beginning", "description": "where to start in files found at the very first start; files appearing later are always read from their beginning"},
    "severity": {"enum": ["debug", "info", "warning", "minor", "major", "critical"], "default": "info"},
    "rotate_wait_ms": {"type": "integer", "minimum": 0, "default": 5000, "description": "a file renamed to a name outside the pattern is still read until it has been quiet this long"},
    "scan_interval_ms": {"type": "integer", "minimum": 10, "default": 250, "description": "how often the directory is listed for new and renamed files"},
    "max_events": {"type": "integer", "minimum": 1, "default": 4096},
    "max_bytes": {"type": "integer", "minimum": 1024, "default": 4194304}
  }
}"#;

pub(crate) fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, mut problems): (RawConfig, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    if raw.directory.trim().is_empty() {
        problems.push(ConfigProblem::new(
            "directory",
            "must name the directory of the log files",
        ));
    }
    let pattern = Glob::new(&raw.pattern).unwrap_or_else(|why| {
        problems.push(ConfigProblem::new("pattern", why));
        Glob::new("*").unwrap_or(Glob(Vec::new()))
    });
    let multiline_start = match raw.multiline_start.as_deref().map(regex::Regex::new) {
        Some(Ok(regex)) => Some(regex),
        Some(Err(err)) => {
            problems.push(ConfigProblem::new(
                "multiline_start",
                format!("is not a valid regular expression: {err}"),
            ));
            None
        }
        None => None,
    };
    let start_at_end = match raw.read_from.as_str() {
        "beginning" => false,
        "end" => true,
        other => {
            problems.push(ConfigProblem::new(
                "read_from",
                format!("unknown value `{other}`: use \"beginning\" or \"end\""),
            ));
            false
        }
    };
    let severity = config::severity("severity", &raw.severity).unwrap_or_else(|problem| {
        problems.push(problem);
        Severity::Info
    });
    for (key, value, range, unit) in [
        (
            "max_line_bytes",
            raw.max_line_bytes,
            256..=(16 << 20),
            "bytes",
        ),
        (
            "multiline_timeout_ms",
            raw.multiline_timeout_ms,
            1..=3_600_000,
            "milliseconds",
        ),
        (
            "rotate_wait_ms",
            raw.rotate_wait_ms,
            0..=3_600_000,
            "milliseconds",
        ),
        (
            "scan_interval_ms",
            raw.scan_interval_ms,
            10..=3_600_000,
            "milliseconds",
        ),
        ("max_events", raw.max_events, 1..=65_536, "events"),
        ("max_bytes", raw.max_bytes, 1_024..=(64 << 20), "bytes"),
    ] {
        problems.extend(config::check_range(key, u64::from(value), range, unit));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let millis = |ms: u32| Duration::from_millis(u64::from(ms));
    Ok(Config {
        directory: raw.directory,
        pattern,
        max_line_bytes: raw.max_line_bytes as usize,
        multiline_start,
        multiline_timeout: millis(raw.multiline_timeout_ms),
        start_at_end,
        severity,
        rotate_wait: millis(raw.rotate_wait_ms),
        scan_interval: millis(raw.scan_interval_ms),
        max_events: raw.max_events,
        max_bytes: raw.max_bytes,
    })
}

/// A file-name glob: `*` any run of characters, `?` one character.
#[derive(Debug, Clone)]
pub(crate) struct Glob(Vec<char>);

impl Glob {
    fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("is empty; write a file-name glob such as *.log".to_owned());
        }
        if pattern.contains('/') {
            return Err(format!(
                "`{pattern}` contains `/`: the pattern matches file names inside `directory`; \
                 put the path in `directory`"
            ));
        }
        Ok(Self(pattern.chars().collect()))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        // Where the last `*` was, and how much of the name it took.
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.0.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(&c) if c == '?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.0[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_match_like_the_shell() {
        let glob = |p: &str| Glob::new(p).unwrap();
        assert!(glob("*.log").matches("app.log"));
        assert!(glob("*.log").matches(".log"));
        assert!(!glob("*.log").matches("app.log.1"));
        assert!(glob("app.log*").matches("app.log.1"));
        assert!(glob("a?c").matches("abc") && !glob("a?c").matches("ac"));
        assert!(glob("*a*b*").matches("xxaxxbxx") && !glob("*a*b*").matches("bxa"));
        assert!(glob("é*").matches("été"));
        assert!(Glob::new("").is_err());
        assert!(Glob::new("logs/*.log").unwrap_err().contains("directory"));
    }

    /// Against a regular expression made from the same glob, for patterns
    /// and names from a fixed-seed generator over a small alphabet (so
    /// that they match often).
    #[test]
    fn globs_agree_with_the_regular_expression_they_stand_for() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..5_000 {
            let pattern: String = (0..1 + next(6))
                .map(|_| ['a', 'b', '.', '*', '?'][next(5) as usize])
                .collect();
            let regex = format!(
                "^{}$",
                pattern
                    .chars()
                    .map(|c| match c {
                        '*' => ".*".to_owned(),
                        '?' => ".".to_owned(),
                        c => regex::escape(&c.to_string()),
                    })
                    .collect::<String>()
            );
            let regex = regex::Regex::new(&regex).unwrap();
            let glob = Glob::new(&pattern).unwrap();
            for _ in 0..20 {
                let name: String = (0..next(8))
                    .map(|_| ['a', 'b', '.'][next(3) as usize])
                    .collect();
                assert_eq!(
                    glob.matches(&name),
                    regex.is_match(&name),
                    "pattern {pattern:?}, name {name:?}"
                );
            }
        }
    }

    #[test]
    fn the_config_names_each_bad_key_with_its_range() {
        let config = parse(r#"{"directory": "/var/log/app"}"#).unwrap();
        assert!(config.pattern.matches("x.log"));
        assert_eq!(config.max_events, 4096);
        let problems = parse(
            r#"{"directory": "", "read_from": "middle", "severity": "loud",
                "scan_interval_ms": 1, "max_bytes": 99999999999}"#,
        );
        // max_bytes does not fit a u32: serde refuses it first, alone.
        assert_eq!(problems.unwrap_err()[0].path, "max_bytes");
        let problems = parse(
            r#"{"directory": "", "read_from": "middle", "severity": "loud",
                "scan_interval_ms": 1}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["directory", "read_from", "severity", "scan_interval_ms"]
        );
        assert_eq!(
            problems[3].message,
            "is 1; give 10 to 3600000 (milliseconds)"
        );
    }
}
