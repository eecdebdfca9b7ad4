//! Sources that would give different events the same ids.

use super::super::{ConfigFile, Problem, SourceSection, line_of};
use std::collections::BTreeMap;

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
pub(super) fn colliding_ids(file: &ConfigFile, text: &str) -> Vec<Problem> {
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
