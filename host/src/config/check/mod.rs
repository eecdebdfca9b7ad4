//! Checking a parsed configuration against the plugins it names, and
//! turning it into what the engine is wired from.

use super::{ConfigError, ConfigFile, Problem, WhenFull};
use safd_engine::{EngineOptions, GroupConfig, PumpTuning, QueueOptions, Retention};
use safd_event_block::names;
use safd_runtime::{Plugin, Runtime, WasmSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod findings;
mod groups;
mod ids;
mod paths;
mod plugins;
mod secrets;
mod sources;

use findings::{Findings, ranges};
use ids::colliding_ids;
use paths::{file_system_mib, usable_data_dir};
use plugins::SectionPlugins;

/// How the admin API is served.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub listen: std::net::SocketAddr,
    pub token: Option<String>,
    /// `[admin] tls` as written (what a reload compares).
    pub tls_files: Option<safd_runtime::TlsFiles>,
    /// Its server configuration, read from those files.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// A checked configuration, its plugin instances created (not started).
#[derive(Debug)]
pub struct Checked {
    pub engine: EngineOptions,
    /// The admin API's address, token and TLS.
    pub admin: AdminOptions,
    pub sources: Vec<(String, WasmSource, PumpTuning)>,
    pub groups: Vec<GroupConfig>,
    /// The file's `cache_dir`, if it sets one.
    pub cache_dir: Option<PathBuf>,
    /// `[log] format` (the running log keeps the form it started with).
    pub log_format: crate::config::LogFormat,
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

/// Read `path`, check everything it says (including each plugin's own
/// check of its config and the grants), and create the plugin instances.
/// `runtime` is built from the file's `cache_dir` (or the caller's).
pub async fn check(
    path: &Path,
    runtime: impl FnOnce(Option<&Path>) -> anyhow::Result<Runtime>,
) -> Result<Checked, ConfigError> {
    // Past its type errors and unknown keys: those lines are problems,
    // and the rest of the file is checked as well.
    let super::ReadPastErrors {
        text,
        file,
        problems,
    } = super::read_past_errors(path)?;
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
        problems,
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
    let admin_token = admin_token(&file.admin, findings);
    if !admin_listen.ip().is_loopback() && admin_token.is_none() {
        findings.at(
            &file.admin.listen,
            "admin.listen",
            format!(
                "`{admin_listen}` reaches beyond this machine and admin.token is not set: \
                 anyone who can connect could reload safd, start catch-ups and replay dead \
                 letters; set admin.token, or listen on 127.0.0.1"
            ),
        );
    }
    let admin_tls = file.admin.tls.as_ref().and_then(|files| {
        safd_runtime::server_config(files, "admin.tls")
            .map_err(|err| findings.whole("admin.tls", err.to_string()))
            .ok()
    });
    if let Some(token) = &admin_token {
        if token.trim().is_empty() {
            findings.whole("admin.token", "is empty; remove it or set a token");
        } else if let Some(problem) = names::header_token_problem(token) {
            findings.whole("admin.token", problem);
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
    let sources = sources::check_sources(
        file,
        raw,
        plugin_dir,
        &mut plugins,
        &mut fingerprints,
        findings,
    )
    .await;

    warnings.extend(colliding_ids(file, findings.text));

    let (groups, group_warnings) = groups::check_groups(
        file,
        raw,
        plugin_dir,
        &mut plugins,
        &mut fingerprints,
        findings,
    )
    .await;
    warnings.extend(group_warnings);
    warnings.extend(unrouted_streams(file, &groups, findings.text));

    Checked {
        admin: AdminOptions {
            listen: admin_listen,
            token: admin_token,
            tls_files: file.admin.tls.clone(),
            tls: admin_tls,
        },
        log_format: file.log.format,
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

/// A section as written (its JSON form, so formatting does not count) and
/// the fingerprint of the plugin file it runs.
/// `[admin] token`, `token = "${NAME}"` or `token_file`, read.
fn admin_token(admin: &super::AdminSection, findings: &mut Findings<'_>) -> Option<String> {
    match (&admin.token, &admin.token_file) {
        (Some(_), Some(_)) => {
            findings.whole(
                "admin.token_file",
                "give admin.token or admin.token_file, not both",
            );
            None
        }
        (Some(token), None) => match secrets::variable(token) {
            Some(Ok(value)) => Some(value),
            Some(Err(problem)) => {
                findings.whole("admin.token", problem);
                None
            }
            None => Some(token.clone()),
        },
        (None, Some(path)) => match secrets::read_file(path) {
            Ok(value) => Some(value),
            Err(problem) => {
                findings.whole("admin.token_file", problem);
                None
            }
        },
        (None, None) => None,
    }
}

/// What a reload compares to tell whether a section changed: its text,
/// the config the plugin gets (secrets read from files and the environment
/// included, hashed, so a new token in a file counts as a change without
/// the token being kept here), and the plugin file.
pub(super) fn fingerprint(
    raw: &toml::Table,
    table: &str,
    name: &str,
    plugin: &Plugin,
    config_json: &str,
) -> String {
    use std::hash::{Hash, Hasher};
    let section = raw
        .get(table)
        .and_then(|t| t.get(name))
        .and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_default();
    let mut resolved = std::collections::hash_map::DefaultHasher::new();
    config_json.hash(&mut resolved);
    format!(
        "{section} {:016x} {}",
        resolved.finish(),
        plugin.fingerprint
    )
}

/// A warning for each stream (every source's, and safd's own) that no
/// group delivers: its events are stored and, in time, trimmed unread.
fn unrouted_streams(file: &ConfigFile, groups: &[GroupConfig], text: &str) -> Vec<Problem> {
    if groups.is_empty() {
        return Vec::new();
    }
    let routed = |stream: &str| groups.iter().any(|g| g.streams.routes(stream));
    let mut out: Vec<Problem> = file
        .sources
        .iter()
        .filter(|(name, _)| !routed(name))
        .map(|(name, section)| Problem {
            line: super::line_of(text, section.plugin.span().start),
            key: format!("sources.{name}"),
            message: format!(
                "no group delivers stream `{name}` (every group's `streams` leaves it out): its \
                 events are stored and trimmed by retention, never delivered"
            ),
        })
        .collect();
    if !routed(safd_engine::SAFD_STREAM) {
        out.push(Problem {
            line: 0,
            key: "groups".to_owned(),
            message: format!(
                "no group delivers safd's own stream `{}` (failovers, catch-ups, queue \
                 alarms): add it to a group's `streams` so a server sees them",
                safd_engine::SAFD_STREAM
            ),
        });
    }
    out
}
