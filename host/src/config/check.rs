//! Checking a parsed configuration against the plugins it names, and
//! turning it into what the engine is wired from.

use super::{
    ConfigError, ConfigFile, GroupMode, MemberSection, Problem, SourceSection, WhenFull, line_of,
};
use safd_connector::{Acknowledgement, PollLimits};
use safd_engine::{
    EngineOptions, GroupConfig, MemberConfig, PumpTuning, QueueOptions, Retention, Tuning,
};
use safd_event_block::names;
use safd_runtime::{ConfigProblem, Plugin, PluginKind, Runtime, WasmSource};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A checked configuration, its plugin instances created (not started).
#[derive(Debug)]
pub struct Checked {
    pub engine: EngineOptions,
    /// The admin API's address and token.
    pub admin: (std::net::SocketAddr, Option<String>),
    pub sources: Vec<(String, WasmSource, PumpTuning)>,
    pub groups: Vec<GroupConfig>,
    /// The file's `cache_dir`, if it sets one.
    pub cache_dir: Option<PathBuf>,
    /// Per `sources.NAME` / `groups.NAME`: its section as written and its
    /// plugin file's fingerprint. A reload restarts exactly the entries
    /// whose fingerprint changed.
    pub fingerprints: BTreeMap<String, String>,
    /// The runtime the plugins were loaded into; a reload loads into the
    /// same one instead of starting another wasmtime engine.
    pub runtime: Runtime,
    /// Acceptable but worth an operator's attention (a destination whose
    /// deliveries the receiver never confirms), with their lines.
    pub warnings: Vec<Problem>,
}

impl Checked {
    /// One line for the operator's terminal: names follow the rules,
    /// and a path's control characters are shown escaped.
    pub fn summary(&self) -> String {
        let members: usize = self.groups.iter().map(|g| g.members.len()).sum();
        let line = format!(
            "agent `{}`: {} source{} ({}), {} group{} ({}) with {members} member{}, queue in {}",
            self.engine.agent_id,
            self.sources.len(),
            plural(self.sources.len()),
            self.sources
                .iter()
                .map(|(name, ..)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.groups.len(),
            plural(self.groups.len()),
            self.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            plural(members),
            self.engine.data_dir.display(),
        );
        names::quote(&line, usize::MAX)
    }
}

/// A checked number (at most 64 MiB) as a size.
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Collects problems with their lines.
struct Findings<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Findings<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let line = if spanned.span().is_empty() {
            0
        } else {
            line_of(self.text, spanned.span().start)
        };
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn whole(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: 0,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A number outside `range` is a problem naming the range and unit.
    fn within<T: Copy + Into<u64>>(
        &mut self,
        value: &Spanned<T>,
        key: String,
        range: std::ops::RangeInclusive<u64>,
        unit: &str,
    ) {
        let number: u64 = (*value.get_ref()).into();
        if !range.contains(&number) {
            self.at(
                value,
                key,
                format!(
                    "is {number}; give {} to {} ({unit})",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// A name that breaks the rules (`safd_event_block::names`).
    fn name<T>(&mut self, spanned: &Spanned<T>, key: String, what: &str, name: &str) {
        if let Err(err) = names::check(name) {
            self.at(
                spanned,
                key,
                format!(
                    "{what} `{}` {err}; names go to the servers and their consoles \
                     (see docs/configuration.md, Names)",
                    names::quote(name, names::QUOTE_CHARS)
                ),
            );
        }
    }
}

/// Allowed ranges of the numbers a configuration sets: what safd can work
/// with, not what is wise (docs/configuration.md lists the defaults).
mod ranges {
    use std::ops::RangeInclusive;

    const MIB_MAX: u64 = 16 << 20; // 16 TiB
    pub const CAPACITY_MIB: RangeInclusive<u64> = 1..=MIB_MAX;
    pub const RETENTION_MIB: RangeInclusive<u64> = 0..=MIB_MAX;
    pub const RETENTION_HOURS: RangeInclusive<u64> = 0..=87_600; // 10 years
    pub const MIN_FREE_MIB: RangeInclusive<u64> = 0..=MIB_MAX;
    pub const HIGH_WATER_PERCENT: RangeInclusive<u64> = 1..=100;
    pub const EVENTS: RangeInclusive<u64> = 1..=65_536;
    pub const BYTES: RangeInclusive<u64> = 1_024..=(64 << 20);
    pub const TIMEOUT_MS: RangeInclusive<u64> = 10..=600_000;
    pub const PROBE_MS: RangeInclusive<u64> = 10..=3_600_000;
    pub const LINGER_MS: RangeInclusive<u64> = 0..=600_000;
    pub const COUNT: RangeInclusive<u64> = 1..=10_000;
}

/// Read `path`, check everything it says (including each plugin's own
/// check of its config and the grants), and create the plugin instances.
/// `runtime` is built from the file's `cache_dir` (or the caller's).
pub async fn check(
    path: &Path,
    runtime: impl FnOnce(Option<&Path>) -> anyhow::Result<Runtime>,
) -> Result<Checked, ConfigError> {
    let (text, file) = super::read(path)?;
    let runtime = runtime(file.cache_dir.as_deref()).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            line: 0,
            key: "cache_dir".into(),
            message: format!("{e:#}"),
        }],
    })?;
    let mut findings = Findings {
        text: &text,
        problems: Vec::new(),
    };
    // The file parsed above, so it parses as a plain table too.
    let raw = toml::from_str::<toml::Table>(&text).unwrap_or_default();
    let checked = check_file(&file, &raw, &runtime, &mut findings).await;
    if findings.problems.is_empty() {
        Ok(checked)
    } else {
        Err(ConfigError {
            file: path.to_owned(),
            problems: findings.problems,
        })
    }
}

async fn check_file(
    file: &ConfigFile,
    raw: &toml::Table,
    runtime: &Runtime,
    findings: &mut Findings<'_>,
) -> Checked {
    let mut fingerprints = BTreeMap::new();
    let mut warnings = Vec::new();
    if file.agent_id.get_ref().is_empty() {
        findings.at(
            &file.agent_id,
            "agent_id",
            "is empty; name this safd, e.g. \"prod1-safd\" (keep it stable: servers track it)",
        );
    } else {
        findings.name(
            &file.agent_id,
            "agent_id".into(),
            "the agent id",
            file.agent_id.get_ref(),
        );
    }
    let plugin_dir = file.plugin_dir.get_ref();
    if !plugin_dir.is_dir() {
        findings.at(
            &file.plugin_dir,
            "plugin_dir",
            format!(
                "{} is not a directory; point it at the directory holding <name>.wasm and \
                 <name>.toml",
                plugin_dir.display()
            ),
        );
    }
    if let Err(problem) = usable_data_dir(file.data_dir.get_ref()) {
        findings.at(&file.data_dir, "data_dir", problem);
    }
    let admin_listen = file
        .admin
        .listen
        .get_ref()
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| {
            findings.at(
                &file.admin.listen,
                "admin.listen",
                format!("{e}; give ip:port, e.g. \"127.0.0.1:8470\""),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 8470))
        });
    if let Some(token) = &file.admin.token {
        if token.trim().is_empty() {
            findings.whole("admin.token", "is empty; remove it or set a token");
        } else if let Some((at, c)) = token.char_indices().find(|&(_, c)| !c.is_ascii_graphic()) {
            findings.whole(
                "admin.token",
                format!(
                    "contains U+{:04X} at byte {at}, which cannot travel in an HTTP header; a \
                     token is printable ASCII without spaces",
                    u32::from(c)
                ),
            );
        }
    }
    let queue = &file.queue;
    findings.within(
        &queue.capacity_mib,
        "queue.capacity_mib".into(),
        ranges::CAPACITY_MIB,
        "MiB",
    );
    findings.within(
        &queue.high_water_percent,
        "queue.high_water_percent".into(),
        ranges::HIGH_WATER_PERCENT,
        "percent",
    );
    findings.within(
        &queue.retention_mib,
        "queue.retention_mib".into(),
        ranges::RETENTION_MIB,
        "MiB",
    );
    findings.within(
        &queue.retention_hours,
        "queue.retention_hours".into(),
        ranges::RETENTION_HOURS,
        "hours",
    );
    findings.within(
        &queue.min_free_mib,
        "queue.min_free_mib".into(),
        ranges::MIN_FREE_MIB,
        "MiB",
    );
    // A file system of size 0 is a pseudo one (/proc): data_dir's own
    // check says so.
    if let Some(total) = file_system_mib(file.data_dir.get_ref())
        && total > 0
        && *queue.min_free_mib.get_ref() >= total
    {
        findings.at(
            &queue.min_free_mib,
            "queue.min_free_mib",
            format!(
                "is {} MiB, but the file system of data_dir holds {total} MiB in all: no \
                 event could ever be stored; give less than {total}",
                queue.min_free_mib.get_ref()
            ),
        );
    }
    if file.sources.is_empty() {
        findings.whole(
            "sources",
            "no source configured; add a [sources.NAME] table (see docs/configuration.md)",
        );
    }
    if file.groups.is_empty() {
        findings.whole(
            "groups",
            "no destination group configured; add a [groups.NAME] table (see \
             docs/configuration.md)",
        );
    }

    let mut plugins = SectionPlugins::new(runtime);
    let mut sources = Vec::new();
    for (name, section) in &file.sources {
        let key = format!("sources.{name}");
        if name == safd_engine::SAFD_STREAM {
            findings.at(
                &section.plugin,
                key.clone(),
                format!("the name `{name}` is reserved for safd's own events; rename the source"),
            );
        }
        findings.name(&section.plugin, key.clone(), "the source name", name);
        findings.within(
            &section.max_events,
            format!("{key}.max_events"),
            ranges::EVENTS,
            "events",
        );
        findings.within(
            &section.max_bytes,
            format!("{key}.max_bytes"),
            ranges::BYTES,
            "bytes",
        );
        let Some((plugin, config)) = plugins
            .section(
                plugin_dir,
                &section.plugin,
                &section.config,
                PluginKind::Source,
                &key,
                findings,
            )
            .await
        else {
            continue;
        };
        fingerprints.insert(key.clone(), fingerprint(raw, "sources", name, &plugin));
        match plugin.source(name, config, &section.grants) {
            Ok(source) => sources.push((
                name.clone(),
                source,
                PumpTuning {
                    limits: PollLimits {
                        max_events: *section.max_events.get_ref(),
                        max_bytes: *section.max_bytes.get_ref(),
                    },
                    ..PumpTuning::default()
                },
            )),
            Err(e) => findings.at(&section.plugin, format!("{key}.grants"), e.to_string()),
        }
    }

    warnings.extend(colliding_ids(file, findings.text));

    let mut groups = Vec::new();
    for (name, section) in &file.groups {
        let key = format!("groups.{name}");
        findings.name(&section.plugin, key.clone(), "the group name", name);
        check_members(section.members.get_ref(), &section.members, &key, findings);
        for (value, field, range, unit) in [
            (
                &section.batch_max_events,
                "batch_max_events",
                ranges::EVENTS,
                "events",
            ),
            (
                &section.batch_max_bytes,
                "batch_max_bytes",
                ranges::BYTES,
                "bytes",
            ),
            (
                &section.request_timeout_ms,
                "request_timeout_ms",
                ranges::TIMEOUT_MS,
                "milliseconds",
            ),
            (
                &section.probe_interval_ms,
                "probe_interval_ms",
                ranges::PROBE_MS,
                "milliseconds",
            ),
            (
                &section.linger_ms,
                "linger_ms",
                ranges::LINGER_MS,
                "milliseconds",
            ),
        ] {
            findings.within(value, format!("{key}.{field}"), range, unit);
        }
        for (value, field) in [
            (&section.failback_after, "failback_after"),
            (&section.transient_limit, "transient_limit"),
        ] {
            findings.within(value, format!("{key}.{field}"), ranges::COUNT, "times");
        }
        let Some((plugin, config)) = plugins
            .section(
                plugin_dir,
                &section.plugin,
                &section.config,
                PluginKind::Destination,
                &key,
                findings,
            )
            .await
        else {
            continue;
        };
        fingerprints.insert(key.clone(), fingerprint(raw, "groups", name, &plugin));
        for member in section.members.get_ref() {
            if let Some(form) = &plugin.manifest.endpoint
                && let Err(why) = form.check(&member.address)
            {
                findings.at(
                    &section.members,
                    format!("{key}.members"),
                    format!(
                        "member `{}`: {why} (`{}` expects {form})",
                        member.name,
                        section.plugin.get_ref()
                    ),
                );
            }
        }
        let mut members = Vec::new();
        for member in section.members.get_ref() {
            // One instance per member: a hung call to one server must not
            // hold up the calls to another.
            let instance = format!("{name}.{}", member.name);
            match plugin
                .destination(&instance, config.clone(), &section.grants)
                .await
            {
                Ok(destination) => members.push(MemberConfig {
                    name: member.name.clone(),
                    address: member.address.clone(),
                    connector: Arc::new(destination),
                }),
                Err(e) => findings.at(&section.plugin, format!("{key}.grants"), e.to_string()),
            }
        }
        if members
            .first()
            .is_some_and(|m| m.connector.acknowledgement() == Acknowledgement::TransportWrite)
        {
            warnings.push(Problem {
                line: line_of(findings.text, section.plugin.span().start),
                key: format!("{key}.plugin"),
                message: format!(
                    "`{}` only confirms that events were written to the network, not that the \
                     receiver stored them: an event in flight when the receiver or the \
                     connection dies can be lost (guarantee G1 needs a destination with \
                     durable-commit acknowledgements; see the plugin's docs)",
                    section.plugin.get_ref()
                ),
            });
        }
        groups.push(GroupConfig {
            name: name.clone(),
            mode: match section.mode {
                GroupMode::Failover => safd_engine::GroupMode::Failover,
                GroupMode::Broadcast => safd_engine::GroupMode::Broadcast,
            },
            members,
            tuning: Tuning {
                batch_max_events: to_usize(*section.batch_max_events.get_ref()),
                batch_max_bytes: to_usize(*section.batch_max_bytes.get_ref()),
                request_timeout: Duration::from_millis(*section.request_timeout_ms.get_ref()),
                probe_interval: Duration::from_millis(*section.probe_interval_ms.get_ref()),
                failback_after: *section.failback_after.get_ref(),
                transient_limit: *section.transient_limit.get_ref(),
                linger: Duration::from_millis(*section.linger_ms.get_ref()),
                ..Tuning::default()
            },
        });
    }

    Checked {
        admin: (admin_listen, file.admin.token.clone()),
        engine: EngineOptions {
            agent_id: file.agent_id.get_ref().clone(),
            data_dir: file.data_dir.get_ref().clone(),
            queue: QueueOptions {
                capacity_bytes: queue.capacity_mib.get_ref().saturating_mul(1 << 20),
                when_full: match queue.when_full {
                    WhenFull::Block => safd_engine::WhenFull::Block,
                    WhenFull::DropOldest => safd_engine::WhenFull::DropOldest,
                },
                high_water_percent: *queue.high_water_percent.get_ref(),
                retention: Retention {
                    max_bytes: queue.retention_mib.get_ref().saturating_mul(1 << 20),
                    max_age: Duration::from_secs(
                        queue.retention_hours.get_ref().saturating_mul(3600),
                    ),
                },
                min_free_bytes: queue.min_free_mib.get_ref().saturating_mul(1 << 20),
            },
            retention_interval: Duration::from_secs(10),
        },
        sources,
        groups,
        cache_dir: file.cache_dir.clone(),
        fingerprints,
        runtime: runtime.clone(),
        warnings,
    }
}

/// Why the queue cannot live in `dir`, if it cannot: what `safd run`
/// would find when it opens the queue there.
fn usable_data_dir(dir: &Path) -> Result<(), String> {
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
fn file_system_mib(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|a| a.is_dir())?;
    fs2::total_space(existing).ok().map(|bytes| bytes >> 20)
}

/// A section as written (its JSON form, so formatting does not count) and
/// the fingerprint of the plugin file it runs.
fn fingerprint(raw: &toml::Table, table: &str, name: &str, plugin: &Plugin) -> String {
    let section = raw
        .get(table)
        .and_then(|t| t.get(name))
        .and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_default();
    format!("{section} {}", plugin.fingerprint)
}

fn check_members(
    members: &[MemberSection],
    spanned: &Spanned<Vec<MemberSection>>,
    key: &str,
    findings: &mut Findings<'_>,
) {
    if members.is_empty() {
        findings.at(
            spanned,
            format!("{key}.members"),
            "is empty; list at least one: members = [{ name = \"primary\", address = \"…\" }]",
        );
    }
    let mut seen = HashSet::new();
    for member in members {
        if member.name.is_empty() {
            findings.at(
                spanned,
                format!("{key}.members"),
                "a member has an empty name",
            );
        } else if names::check(&member.name).is_err() {
            findings.name(
                spanned,
                format!("{key}.members"),
                "the member name",
                &member.name,
            );
        } else if !seen.insert(member.name.as_str()) {
            findings.at(
                spanned,
                format!("{key}.members"),
                format!(
                    "member `{}` is listed twice; names must differ",
                    member.name
                ),
            );
        }
        if member.address.trim().is_empty() {
            findings.at(
                spanned,
                format!("{key}.members"),
                format!("member `{}` has an empty address", member.name),
            );
        }
    }
}

/// The plugins the sections name, each loaded once however many sections
/// name it, and each distinct config checked once: the memory and time of
/// a check do not grow with copies of a section.
struct SectionPlugins<'r> {
    runtime: &'r Runtime,
    loaded: HashMap<String, Result<Arc<Plugin>, String>>,
    validated: HashMap<(String, String), Result<Vec<ConfigProblem>, String>>,
}

impl<'r> SectionPlugins<'r> {
    fn new(runtime: &'r Runtime) -> Self {
        Self {
            runtime,
            loaded: HashMap::new(),
            validated: HashMap::new(),
        }
    }

    /// The plugin file `name` in `plugin_dir`, loaded on first use.
    fn load(&mut self, plugin_dir: &Path, name: &str) -> Result<Arc<Plugin>, String> {
        let runtime = self.runtime;
        self.loaded
            .entry(name.to_owned())
            .or_insert_with(|| {
                let path = plugin_dir.join(format!("{name}.wasm"));
                match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.is_file() => {}
                    Ok(metadata) => {
                        return Err(format!(
                            "{} is not a regular file (it is {}); a plugin is a regular \
                             .wasm file beside its .toml",
                            path.display(),
                            file_kind(&path, &metadata)
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "no plugin `{name}` in {} (found: {}); fix the name or drop the \
                             plugin there",
                            plugin_dir.display(),
                            available(plugin_dir)
                        ));
                    }
                }
                runtime.load(&path).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Load the plugin a section names, check its kind and have it check
    /// its config. Returns the plugin and its config as JSON when all is
    /// well.
    #[allow(clippy::too_many_arguments)]
    async fn section(
        &mut self,
        plugin_dir: &Path,
        name: &Spanned<String>,
        config: &Spanned<toml::Table>,
        kind: PluginKind,
        key: &str,
        findings: &mut Findings<'_>,
    ) -> Option<(Arc<Plugin>, String)> {
        let plugin = match self.load(plugin_dir, name.get_ref()) {
            Ok(plugin) => plugin,
            Err(message) => {
                findings.at(name, format!("{key}.plugin"), message);
                return None;
            }
        };
        if plugin.kind() != kind {
            findings.at(
                name,
                format!("{key}.plugin"),
                format!(
                    "`{}` is a {} plugin; a {} is needed here",
                    name.get_ref(),
                    plugin.kind(),
                    kind
                ),
            );
            return None;
        }
        let json = match serde_json::to_string(config.get_ref()) {
            Ok(json) => json,
            Err(e) => {
                findings.at(config, format!("{key}.config"), e.to_string());
                return None;
            }
        };
        let validated = match self.validated.get(&(name.get_ref().clone(), json.clone())) {
            Some(validated) => validated.clone(),
            None => {
                let validated = plugin
                    .validate_config(&json)
                    .await
                    .map_err(|e| e.to_string());
                self.validated
                    .insert((name.get_ref().clone(), json.clone()), validated.clone());
                validated
            }
        };
        match validated {
            Ok(problems) if problems.is_empty() => Some((plugin, json)),
            Ok(problems) => {
                for problem in problems {
                    let at = if problem.path.is_empty() {
                        format!("{key}.config")
                    } else {
                        format!("{key}.config.{}", problem.path)
                    };
                    findings.at(config, at, problem.message);
                }
                None
            }
            Err(e) => {
                findings.at(
                    name,
                    format!("{key}.plugin"),
                    format!("the plugin failed to check its config: {e}"),
                );
                None
            }
        }
    }
}

/// What a path that is not a regular file is, for a message.
fn file_kind(path: &Path, metadata: &std::fs::Metadata) -> String {
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

/// Plugin names in `dir`, for "did you mean".
fn available(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_file())
        .map(|entry| PathBuf::from(entry.file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The config keys (with their defaults) that make a shipped source
/// plugin's event ids unique to a source: two sources of the plugin that
/// agree on all of them produce the same ids. Plugins not listed: two
/// sources with the same plugin and the same config.
fn id_scope(plugin: &str) -> Option<&'static [(&'static str, Option<&'static str>)]> {
    match plugin {
        // Ids are `system:collector:file:offset`.
        "ems-reader" => Some(&[("system", None), ("collector", Some("$0"))]),
        // Ids are the file's identity (inode, first-line fingerprint) and
        // the line's offset: the same files, the same ids.
        "file-tail" => Some(&[("directory", None), ("pattern", None)]),
        _ => None,
    }
}

/// A warning for every set of sources that would produce the same event
/// ids. safd and safd-mgmt keep streams apart, so nothing is lost there,
/// but a receiver that deduplicates on the id alone keeps one of two
/// different events.
fn colliding_ids(file: &ConfigFile, text: &str) -> Vec<Problem> {
    let mut by_scope: BTreeMap<(String, String), Vec<(&String, &SourceSection)>> = BTreeMap::new();
    for (name, section) in &file.sources {
        let plugin = section.plugin.get_ref();
        let config = section.config.get_ref();
        let scope = match id_scope(plugin) {
            Some(keys) => keys
                .iter()
                .map(|(key, default)| {
                    let value = match config.get(*key) {
                        Some(toml::Value::String(value)) => value.clone(),
                        Some(other) => other.to_string(),
                        None => default.unwrap_or("").to_owned(),
                    };
                    format!("{key} = {value:?}")
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => format!("config = {config}"),
        };
        by_scope
            .entry((plugin.clone(), scope))
            .or_default()
            .push((name, section));
    }
    by_scope
        .into_iter()
        .filter(|(_, sources)| sources.len() > 1)
        .filter_map(|((plugin, scope), sources)| {
            let (_, last) = sources.last()?;
            let names: Vec<String> = sources
                .iter()
                .map(|(name, _)| format!("sources.{name}"))
                .collect();
            let fix = match id_scope(&plugin) {
                Some(keys) => format!(
                    "give each its own {}",
                    keys.iter()
                        .map(|(key, _)| format!("`{key}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                None => "remove the copy".to_owned(),
            };
            Some(Problem {
                line: line_of(text, last.plugin.span().start),
                key: names.join(", "),
                message: format!(
                    "these {} `{plugin}` sources ({scope}) produce the same event ids for \
                     different events: safd and safd-mgmt keep their streams apart, but a \
                     receiver that deduplicates on the id alone keeps only one of them; {fix}",
                    names.len()
                ),
            })
        })
        .collect()
}
