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
    sources
}
