//! The daemon's configuration file (`safd.toml`): what it may contain, and
//! reading it into checked settings.
//!
//! Every problem is reported as `FILE:LINE: KEY: what is wrong; the fix`,
//! all of them at once, before anything is opened.

mod check;

pub use check::{AdminOptions, Checked, check};

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
            // Keys are the file's own text: a control character in a table
            // name is shown escaped, not sent to the terminal.
            let key = safd_event_block::names::quote(&p.key, usize::MAX);
            if key.is_empty() {
                format!("{place}: {}", p.message)
            } else {
                format!("{place}: {key}: {}", p.message)
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
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]`: the form of safd's log on stderr.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (the default) or `json`; `--log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
}

/// The form of log lines on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the record's fields.
    Json,
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
    pub retention_mib: Spanned<u64>,
    /// Acknowledged events older than this are removed.
    #[serde(default = "defaults::retention_hours")]
    pub retention_hours: Spanned<u64>,
    /// Free space (MiB) kept on the data directory's file system.
    #[serde(default = "defaults::min_free_mib")]
    pub min_free_mib: Spanned<u64>,
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
    /// `"${NAME}"`: the environment variable's value.
    #[serde(default)]
    pub token: Option<String>,
    /// The token read from this file instead (its final line break
    /// dropped).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS instead of HTTP: `cert_file` and `key_file`, and `ca_file`
    /// to require client certificates that CA signed.
    #[serde(default)]
    pub tls: Option<safd_runtime::TlsFiles>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
            token: None,
            token_file: None,
            tls: None,
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
    /// The plugin file's SHA-256 (hex), when pinned: another file is
    /// refused.
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
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
    /// The plugin file's SHA-256 (hex), when pinned: another file is
    /// refused.
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    #[serde(default = "defaults::table")]
    pub config: Spanned<toml::Table>,
    #[serde(default)]
    pub grants: Grants,
    /// The streams the group delivers (globs); default: all.
    #[serde(default)]
    pub streams: Option<Spanned<Vec<String>>>,
    /// The least severity it delivers (`debug` … `critical`); default: all.
    #[serde(default)]
    pub min_severity: Option<Spanned<String>>,
    pub members: Spanned<Vec<MemberSection>>,
    #[serde(default = "defaults::batch_events")]
    pub batch_max_events: Spanned<u64>,
    #[serde(default = "defaults::batch_bytes")]
    pub batch_max_bytes: Spanned<u64>,
    /// A call taking longer makes the member unreachable (a silent peer).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::probe_interval_ms")]
    pub probe_interval_ms: Spanned<u64>,
    /// Healthy probes in a row before failing back to a higher-priority
    /// member.
    #[serde(default = "defaults::failback_after")]
    pub failback_after: Spanned<u32>,
    /// Transient errors in a row after which a member is unreachable.
    #[serde(default = "defaults::transient_limit")]
    pub transient_limit: Spanned<u32>,
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
    pub fn retention_mib() -> Spanned<u64> {
        unspanned(256)
    }
    pub fn retention_hours() -> Spanned<u64> {
        unspanned(24)
    }
    pub fn min_free_mib() -> Spanned<u64> {
        unspanned(64)
    }
    /// Polls and deliveries take what is ready up to these limits, so a
    /// quiet source still sends one event at once; under load 4 096 per
    /// batch cost about 2.6 s of CPU per million events file → syslog where
    /// 1 024 / 512 cost 3.5 (docs/benchmarks.md, "Defaults").
    pub fn poll_events() -> Spanned<u32> {
        unspanned(4096)
    }
    pub fn poll_bytes() -> Spanned<u32> {
        unspanned(4 << 20)
    }
    pub fn batch_events() -> Spanned<u64> {
        unspanned(4096)
    }
    pub fn batch_bytes() -> Spanned<u64> {
        unspanned(4 << 20)
    }
    pub fn request_timeout_ms() -> Spanned<u64> {
        unspanned(3000)
    }
    pub fn probe_interval_ms() -> Spanned<u64> {
        unspanned(1000)
    }
    pub fn failback_after() -> Spanned<u32> {
        unspanned(3)
    }
    pub fn transient_limit() -> Spanned<u32> {
        unspanned(3)
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

/// The largest configuration file read: a real one is a few KiB; this
/// stops `-c /dev/zero` (or a file with a million sections) from costing
/// memory before anything is checked.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Read and parse `path`; syntax and type errors come back with their line
/// and key, all of them (see [`read_past_errors`]). (safd itself goes on
/// to check the rest: `check`.)
#[cfg(test)]
fn read(path: &Path) -> Result<(String, ConfigFile), ConfigError> {
    let read = read_past_errors(path)?;
    if read.problems.is_empty() {
        Ok((read.text, read.file))
    } else {
        Err(ConfigError {
            file: path.to_owned(),
            problems: read.problems,
        })
    }
}

/// A file read past its type errors and unknown keys.
pub(crate) struct ReadPastErrors {
    /// The text with the lines of those problems blanked (same lines).
    pub(crate) text: String,
    /// What that text says.
    pub(crate) file: ConfigFile,
    /// The problems, in the order found.
    pub(crate) problems: Vec<Problem>,
}

/// The most problems of one file reported before giving up.
const MAX_PARSE_PROBLEMS: usize = 32;

/// Read and parse `path`. A `key = value` line whose key is unknown or
/// whose value has the wrong type is a problem; the line is then blanked
/// and the rest read again, so that one run names every such line (and
/// the checks that follow see the rest of the file). A syntax error, or a
/// problem that is not one line's (a missing key, a table header), ends
/// the reading: `Err` with what was found.
pub(crate) fn read_past_errors(path: &Path) -> Result<ReadPastErrors, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let mut text = read_limited(path).map_err(|message| {
        fail(vec![Problem {
            line: 0,
            key: String::new(),
            message,
        }])
    })?;
    let mut problems: Vec<Problem> = Vec::new();
    // The keys blanked so far: a "missing field" that names one of their
    // parts is their echo (the line that held it is gone), not a problem
    // of its own.
    let mut blanked: Vec<String> = Vec::new();
    loop {
        let found = match parse(&text) {
            Ok(file) => {
                problems.sort_by_key(|p| p.line);
                return Ok(ReadPastErrors {
                    text,
                    file,
                    problems,
                });
            }
            Err(found) => found,
        };
        let echo = found.problem.message.starts_with("missing field")
            && blanked.iter().any(|key| {
                key.split('.')
                    .any(|part| found.problem.message.contains(&format!("`{part}`")))
            });
        // A syntax error after a blank is the blank's doing (it cut a
        // multi-line value): what was found before stands.
        let blank_made_it = found.syntax && !blanked.is_empty();
        let line = found.problem.line;
        let can_blank = !found.syntax
            && line
                .checked_sub(1)
                .and_then(|i| text.lines().nth(i))
                .is_some_and(blankable);
        if !echo && !blank_made_it {
            problems.push(found.problem.clone());
        }
        if !can_blank || problems.len() >= MAX_PARSE_PROBLEMS {
            problems.sort_by_key(|p| p.line);
            return Err(fail(problems));
        }
        blanked.push(found.problem.key);
        text = blank_line(&text, line);
    }
}

/// The first problem of one parse.
struct ParseProblem {
    problem: Problem,
    /// Not TOML at all (as opposed to TOML safd does not expect).
    syntax: bool,
}

fn parse(text: &str) -> Result<ConfigFile, ParseProblem> {
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
        let span = e.span();
        let line = span.as_ref().map_or(0, |span| line_of(text, span.start));
        let key = span.map(|span| key_at(text, span)).unwrap_or_default();
        ParseProblem {
            problem: Problem {
                line,
                key,
                message: toml_message(&e),
            },
            syntax: true,
        }
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // toml's `Spanned` shows up in the path as a field of its own.
        let key = e
            .path()
            .to_string()
            .split('.')
            .filter(|part| !part.starts_with("$__serde_spanned"))
            .collect::<Vec<_>>()
            .join(".");
        let key = if key.is_empty() || key == "?" {
            String::new()
        } else {
            key
        };
        let e = e.into_inner();
        let line = e.span().map_or(0, |span| line_of(text, span.start));
        ParseProblem {
            problem: Problem {
                line,
                key,
                message: toml_message(&e),
            },
            syntax: false,
        }
    })
}

/// A line that holds one `key = value` and nothing that opens or closes
/// more than itself: blanking it leaves the rest of the file whole.
fn blankable(line: &str) -> bool {
    let line = line.trim();
    if line.starts_with('[') || !line.contains('=') {
        return false;
    }
    let opens = line.matches(['[', '{']).count();
    let closes = line.matches([']', '}']).count();
    opens == closes && !line.contains("\"\"\"") && !line.contains("'''")
}

/// The text with line `line` (1-based) emptied, the line count kept.
fn blank_line(text: &str, line: usize) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| match (i + 1 == line, l.ends_with('\n')) {
            (true, true) => "\n",
            (true, false) => "",
            (false, _) => l,
        })
        .collect()
}

/// The file's text, refused when it is not a regular file, larger than
/// [`MAX_CONFIG_BYTES`] or not UTF-8.
fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read it: {e}; check the path given to -c"))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}; check the path given to -c"))?;
    if !metadata.is_file() {
        return Err("is not a regular file; give the path of a safd.toml to -c".to_owned());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it as UTF-8 text: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "is larger than {} KiB, the most safd reads; a configuration is a few KiB",
            MAX_CONFIG_BYTES >> 10
        ));
    }
    Ok(text)
}

/// The toml message without the source excerpt it repeats.
fn toml_message(e: &toml::de::Error) -> String {
    let message = e.message().lines().next().unwrap_or_default();
    format!("{message} (see docs/configuration.md)")
}

/// The dotted key a parse error points at: the text at `span` (a key or a
/// table header), inside the table whose header precedes it.
fn key_at(text: &str, span: std::ops::Range<usize>) -> String {
    let at = text.get(span.clone()).unwrap_or_default().trim();
    let at = at.trim_start_matches('[').trim_end_matches(']').trim();
    let before = text.get(..span.start).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default()
        .trim();
    if line.starts_with('[') {
        // The span is (in) a table header: the header is the key.
        return line.trim_matches(['[', ']']).trim().to_owned();
    }
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| header.trim_matches(['[', ']']).trim());
    match table {
        Some(table) if !at.is_empty() => format!("{table}.{at}"),
        Some(table) => table.to_owned(),
        None => at.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names serde gives `T`, caught where its derived
    /// `Deserialize` names them (`deserialize_struct`).
    fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        struct Catch(std::rc::Rc<std::cell::Cell<&'static [&'static str]>>);
        impl<'de> serde::Deserializer<'de> for Catch {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.set(fields);
                Err(serde::de::Error::custom("caught"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let caught = std::rc::Rc::new(std::cell::Cell::new(&[][..]));
        let _ = T::deserialize(Catch(caught.clone()));
        caught.get()
    }

    /// The keys in the first column of each table row of `section` (the
    /// text under its `## ` heading) of docs/configuration.md.
    fn documented_keys(section: &str) -> std::collections::BTreeSet<String> {
        section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|row| {
                let first_cell = row.split(" |").next().unwrap_or_default();
                format!("`{first_cell}")
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every key the configuration reads is in docs/configuration.md's
    /// table for its section, and every key a table shows is read.
    #[test]
    fn every_key_is_documented_and_every_documented_key_exists() {
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .unwrap();
        let section = |heading: &str| -> String {
            let start = docs
                .find(&format!("## {heading}\n"))
                .unwrap_or_else(|| panic!("no section `{heading}`"));
            let body = &docs[start + heading.len() + 4..];
            body[..body.find("\n## ").unwrap_or(body.len())].to_owned()
        };
        let tables = ["queue", "admin", "log", "sources", "groups"];
        let top: Vec<&str> = fields_of::<ConfigFile>()
            .iter()
            .copied()
            .filter(|f| !tables.contains(f))
            .collect();
        for (heading, fields) in [
            ("Top level", top),
            ("`[queue]`", fields_of::<QueueSection>().to_vec()),
            ("`[admin]`", fields_of::<AdminSection>().to_vec()),
            ("`[log]`", fields_of::<LogSection>().to_vec()),
            ("`[sources.NAME]`", fields_of::<SourceSection>().to_vec()),
            ("`[groups.NAME]`", fields_of::<GroupSection>().to_vec()),
        ] {
            assert!(!fields.is_empty(), "no fields caught for {heading}");
            let read: std::collections::BTreeSet<String> =
                fields.iter().map(|f| (*f).to_owned()).collect();
            let documented = documented_keys(&section(heading));
            assert_eq!(
                documented, read,
                "docs/configuration.md {heading}: documented (left) and read (right) differ"
            );
        }
        // Members and grants are described inside their rows.
        let groups = section("`[groups.NAME]`");
        for field in fields_of::<MemberSection>() {
            assert!(
                groups.contains(&format!("{field} =")),
                "member key `{field}` undocumented"
            );
        }
        let plugins =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/plugins.md"))
                .unwrap();
        for field in fields_of::<Grants>()
            .iter()
            .chain(fields_of::<safd_runtime::TlsFiles>())
        {
            assert!(
                plugins.contains(&format!("{field} = ")) || plugins.contains(&format!("`{field}`")),
                "grant key `{field}` undocumented in docs/plugins.md"
            );
        }
    }

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

    fn problem_of(text: &str) -> Problem {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safd.toml");
        std::fs::write(&path, text).unwrap();
        read(&path).unwrap_err().problems.remove(0)
    }

    const HEAD: &str = "agent_id = \"a\"\ndata_dir = \"/d\"\nplugin_dir = \"/p\"\n";

    #[test]
    fn type_errors_and_duplicate_keys_name_the_key_and_line() {
        let problem = problem_of(&format!("{HEAD}[queue]\ncapacity_mib = \"big\"\n"));
        assert_eq!(
            (problem.line, problem.key.as_str()),
            (5, "queue.capacity_mib")
        );
        assert!(problem.message.contains("expected u64"), "{problem:?}");
        let problem = problem_of(&format!(
            "{HEAD}[groups.g]\nmode = \"failover\"\nplugin = \"p\"\nmembers = [{{ name = 1, address = \"x\" }}]\n"
        ));
        assert_eq!(
            (problem.line, problem.key.as_str()),
            (7, "groups.g.members.name")
        );
        let problem = problem_of(&format!(
            "{HEAD}[queue]\ncapacity_mib = 5\ncapacity_mib = 6\n"
        ));
        assert_eq!(
            (problem.line, problem.key.as_str()),
            (6, "queue.capacity_mib")
        );
        assert!(problem.message.contains("duplicate key"), "{problem:?}");
        let problem = problem_of(&format!(
            "{HEAD}[sources.a]\nplugin = \"x\"\n[sources.a]\nplugin = \"y\"\n"
        ));
        assert_eq!(problem.line, 6, "{problem:?}");
        assert_eq!(problem.key, "sources.a", "{problem:?}");
        let problem = problem_of("agent_id = 5\n");
        assert_eq!((problem.line, problem.key.as_str()), (1, "agent_id"));
    }

    #[test]
    fn what_is_not_a_small_regular_file_is_refused_before_it_is_read() {
        let problem = problem_of(&"#".repeat(MAX_CONFIG_BYTES as usize + 1));
        assert!(
            problem.message.contains("larger than 1024 KiB"),
            "{problem:?}"
        );
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            err.problems[0].message.contains("not a regular file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(
            err.problems[0].message.contains("not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn every_bad_line_is_named_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safd.toml");
        std::fs::write(
            &path,
            "agent_id = 5\ndata_dir = \"/d\"\nplugin_dir = \"/p\"\n[queue]\ncapacity = 5\n\
             capacity_mib = \"big\"\n[admin]\nlisten = \"127.0.0.1:1\"\ncolour = true\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        let found: Vec<(usize, &str)> = err
            .problems
            .iter()
            .map(|p| (p.line, p.key.as_str()))
            .collect();
        // agent_id's wrong type, then two unknown keys and a wrong type; the
        // "missing field agent_id" that blanking its line brings is no
        // problem of its own.
        assert_eq!(
            found,
            [
                (1, "agent_id"),
                (5, "queue.capacity"),
                (6, "queue.capacity_mib"),
                (9, "admin.colour")
            ],
            "{err}"
        );
        // A syntax error ends the reading at once.
        std::fs::write(&path, "agent_id = \"a\n[queue]\ncapacity = 5\n").unwrap();
        assert_eq!(read(&path).unwrap_err().problems.len(), 1);
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
