//! The `[sources.NAME]` sections.

use super::super::ConfigFile;
use super::findings::{Findings, ranges};
use super::fingerprint;
use super::plugins::SectionPlugins;
use safd_connector::PollLimits;
use safd_engine::PumpTuning;
use safd_runtime::{PluginKind, WasmSource};
use std::collections::BTreeMap;
use std::path::Path;

/// Check every source section and create its plugin instance.
pub(super) async fn check_sources(
    file: &ConfigFile,
    raw: &toml::Table,
    plugin_dir: &Path,
    plugins: &mut SectionPlugins<'_>,
    fingerprints: &mut BTreeMap<String, String>,
    findings: &mut Findings<'_>,
) -> Vec<(String, WasmSource, PumpTuning)> {
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
                section.sha256.as_ref(),
                &section.config,
                PluginKind::Source,
                &key,
                findings,
            )
            .await
        else {
            continue;
        };
        fingerprints.insert(
            key.clone(),
            fingerprint(raw, "sources", name, &plugin, &config),
        );
        if plugin.manifest.capabilities.files {
            check_directory_grant(&key, &config, &section.grants.dirs, |at, message| {
                findings.at(&section.plugin, at, message);
            });
        }
        if plugin.manifest.capabilities.listen {
            check_listen_grant(&key, &config, &section.grants.listen, |at, message| {
                findings.at(&section.plugin, at, message);
            });
        }
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
    sources
}

/// A source that listens (its manifest asks for `listen`) must be granted
/// the address it listens on; the address in its config's `listen` key (as
/// `net-in` names it) is checked against the grant here, where a mistake
/// costs a line of output rather than a source that cannot start.
fn check_listen_grant(
    key: &str,
    config: &str,
    granted: &[String],
    mut problem: impl FnMut(String, String),
) {
    let configured = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c.get("listen")?.as_str().map(str::to_owned));
    match configured {
        Some(address)
            if !granted
                .iter()
                .any(|g| g.parse::<std::net::SocketAddr>().ok() == address.parse().ok()) =>
        {
            problem(
                format!("{key}.grants.listen"),
                format!(
                    "the source listens on {address}, which is not granted: add \"{address}\" to \
                 grants.listen"
                ),
            )
        }
        None if granted.is_empty() => problem(
            format!("{key}.grants.listen"),
            "the plugin listens for connections but no address is granted: add the address it \
             listens on, e.g. grants.listen = [\"0.0.0.0:1514\"]"
                .to_owned(),
        ),
        _ => {}
    }
}

/// A source that reads files (its manifest asks for `files`) must be
/// granted the directory its config names in `directory` (as `ems-reader`
/// and `file-tail` name it), or a directory above it.
fn check_directory_grant(
    key: &str,
    config: &str,
    granted: &[std::path::PathBuf],
    mut problem: impl FnMut(String, String),
) {
    let Some(directory) = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c.get("directory")?.as_str().map(std::path::PathBuf::from))
    else {
        return;
    };
    if !granted.iter().any(|g| directory.starts_with(g)) {
        problem(
            format!("{key}.grants.dirs"),
            format!(
                "the source reads {}, which is not granted: add \"{}\" to grants.dirs",
                directory.display(),
                directory.display()
            ),
        );
    }
}
