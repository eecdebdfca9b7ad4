//! The `[groups.NAME]` sections and their members.

use super::super::{ConfigFile, GroupMode, MemberSection, Problem, line_of};
use super::findings::{Findings, ranges};
use super::plugins::SectionPlugins;
use super::{fingerprint, to_usize};
use safd_connector::Acknowledgement;
use safd_engine::{GroupConfig, MemberConfig, Routes, Tuning};
use safd_event_block::names;
use safd_runtime::PluginKind;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Check every group section and create one plugin instance per member;
/// also the warnings for groups whose plugin only confirms writes.
pub(super) async fn check_groups(
    file: &ConfigFile,
    raw: &toml::Table,
    plugin_dir: &Path,
    plugins: &mut SectionPlugins<'_>,
    fingerprints: &mut BTreeMap<String, String>,
    findings: &mut Findings<'_>,
) -> (Vec<GroupConfig>, Vec<Problem>) {
    let mut warnings = Vec::new();
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
                section.sha256.as_ref(),
                &section.config,
                PluginKind::Destination,
                &key,
                findings,
            )
            .await
        else {
            continue;
        };
        fingerprints.insert(
            key.clone(),
            fingerprint(raw, "groups", name, &plugin, &config),
        );
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
            } else if let Err(why) = safd_runtime::grant_covering(&section.grants, &member.address)
            {
                // Only checked where the plugin asks for network access:
                // without it no grant would help (its manifest decides).
                let capabilities = plugin.manifest.capabilities;
                if capabilities.http || capabilities.tcp {
                    findings.at(
                        &section.members,
                        format!("{key}.grants"),
                        format!("member `{}`: {why}", member.name),
                    );
                }
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
        let streams = match &section.streams {
            None => Routes::all(),
            Some(patterns) => Routes::matching(patterns.get_ref()).unwrap_or_else(|problem| {
                findings.at(patterns, format!("{key}.streams"), problem);
                Routes::all()
            }),
        };
        let min_severity = section.min_severity.as_ref().and_then(|name| {
            let found = safd_connector::Severity::from_name(name.get_ref());
            if found.is_none() {
                findings.at(
                    name,
                    format!("{key}.min_severity"),
                    format!(
                        "`{}` is not a severity: use one of debug, info, warning, minor, major, critical",
                        name.get_ref()
                    ),
                );
            }
            found
        });
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
            streams,
            min_severity,
        });
    }
    (groups, warnings)
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
