//! Checking a parsed configuration against the plugins it names, and
//! turning it into what the engine is wired from.

use super::{
    ConfigError, ConfigFile, GroupMode, MemberSection, Problem, SourceSection, WhenFull, line_of,
};
use safd_connector::{Acknowledgement, PollLimits};
use safd_engine::{
    EngineOptions, GroupConfig, MemberConfig, PumpTuning, QueueOptions, Retention, Tuning,
};
use safd_runtime::{Plugin, PluginKind, Runtime, WasmSource};
use std::collections::{BTreeMap, HashSet};
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
    pub fn summary(&self) -> String {
        let members: usize = self.groups.iter().map(|g| g.members.len()).sum();
        format!(
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
        )
    }
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

    fn positive<T: Default + PartialEq>(&mut self, value: &Spanned<T>, key: String) {
        if *value.get_ref() == T::default() {
            self.at(value, key, "must be more than 0");
        }
    }
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
    if file.agent_id.get_ref().trim().is_empty() {
        findings.at(
            &file.agent_id,
            "agent_id",
            "is empty; name this safd, e.g. \"prod1-safd\" (keep it stable: servers track it)",
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
    if file.data_dir.get_ref().is_file() {
        findings.at(
            &file.data_dir,
            "data_dir",
            "is a file; give a directory (it is created if missing)",
        );
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
    if file
        .admin
        .token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        findings.whole("admin.token", "is empty; remove it or set a token");
    }
    let queue = &file.queue;
    findings.positive(&queue.capacity_mib, "queue.capacity_mib".into());
    if !(1..=100).contains(queue.high_water_percent.get_ref()) {
        findings.at(
            &queue.high_water_percent,
            "queue.high_water_percent",
            "must be between 1 and 100",
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
        findings.positive(&section.max_events, format!("{key}.max_events"));
        findings.positive(&section.max_bytes, format!("{key}.max_bytes"));
        let Some((plugin, config)) = plugin_for(
            runtime,
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
        check_members(section.members.get_ref(), &section.members, &key, findings);
        findings.positive(&section.batch_max_events, format!("{key}.batch_max_events"));
        findings.positive(&section.batch_max_bytes, format!("{key}.batch_max_bytes"));
        findings.positive(
            &section.request_timeout_ms,
            format!("{key}.request_timeout_ms"),
        );
        findings.positive(
            &section.probe_interval_ms,
            format!("{key}.probe_interval_ms"),
        );
        let Some((plugin, config)) = plugin_for(
            runtime,
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
                batch_max_events: *section.batch_max_events.get_ref(),
                batch_max_bytes: *section.batch_max_bytes.get_ref(),
                request_timeout: Duration::from_millis(*section.request_timeout_ms.get_ref()),
                probe_interval: Duration::from_millis(*section.probe_interval_ms.get_ref()),
                failback_after: section.failback_after,
                transient_limit: section.transient_limit,
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
                    max_bytes: queue.retention_mib.saturating_mul(1 << 20),
                    max_age: Duration::from_secs(queue.retention_hours.saturating_mul(3600)),
                },
                min_free_bytes: queue.min_free_mib.saturating_mul(1 << 20),
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
        if member.name.trim().is_empty() {
            findings.at(
                spanned,
                format!("{key}.members"),
                "a member has an empty name",
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

/// Load the plugin a section names, check its kind and have it check its
/// config. Returns the plugin and its config as JSON when all is well.
async fn plugin_for(
    runtime: &Runtime,
    plugin_dir: &Path,
    name: &Spanned<String>,
    config: &Spanned<toml::Table>,
    kind: PluginKind,
    key: &str,
    findings: &mut Findings<'_>,
) -> Option<(Arc<Plugin>, String)> {
    let path = plugin_dir.join(format!("{}.wasm", name.get_ref()));
    if !path.is_file() {
        findings.at(
            name,
            format!("{key}.plugin"),
            format!(
                "no plugin `{}` in {} (found: {}); fix the name or drop the plugin there",
                name.get_ref(),
                plugin_dir.display(),
                available(plugin_dir)
            ),
        );
        return None;
    }
    let plugin = match runtime.load(&path) {
        Ok(plugin) => plugin,
        Err(e) => {
            findings.at(name, format!("{key}.plugin"), e.to_string());
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
    match plugin.validate_config(&json).await {
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

/// Plugin names in `dir`, for "did you mean".
fn available(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
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
