//! Loading the plugins the sections name, once each.

use super::findings::Findings;
use super::paths::file_kind;
use super::secrets;
use safd_runtime::{ConfigProblem, Plugin, PluginKind, Runtime};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// The plugins the sections name, each loaded once however many sections
/// name it, and each distinct config checked once: the memory and time of
/// a check do not grow with copies of a section.
pub(super) struct SectionPlugins<'r> {
    runtime: &'r Runtime,
    loaded: HashMap<String, Result<Arc<Plugin>, String>>,
    validated: HashMap<(String, String), Result<Vec<ConfigProblem>, String>>,
    /// The top-level keys of each plugin's config schema, asked for only
    /// when a section uses `KEY_file` or `${NAME}`.
    schema_keys: HashMap<String, HashSet<String>>,
}

impl<'r> SectionPlugins<'r> {
    pub(super) fn new(runtime: &'r Runtime) -> Self {
        Self {
            runtime,
            loaded: HashMap::new(),
            validated: HashMap::new(),
            schema_keys: HashMap::new(),
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

    /// The top-level keys of `plugin`'s config schema (none when it has no
    /// readable schema: then no `KEY_file` stands for anything).
    async fn schema_keys(&mut self, plugin: &Plugin, name: &str) -> HashSet<String> {
        if let Some(keys) = self.schema_keys.get(name) {
            return keys.clone();
        }
        let keys: HashSet<String> = match plugin.describe().await {
            Ok(description) => {
                serde_json::from_str::<serde_json::Value>(&description.config_schema)
                    .ok()
                    .and_then(|schema| {
                        schema["properties"]
                            .as_object()
                            .map(|properties| properties.keys().cloned().collect())
                    })
                    .unwrap_or_default()
            }
            Err(_) => HashSet::new(),
        };
        self.schema_keys.insert(name.to_owned(), keys.clone());
        keys
    }

    /// Load the plugin a section names, check its kind and have it check
    /// its config. Returns the plugin and its config as JSON when all is
    /// well.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn section(
        &mut self,
        plugin_dir: &Path,
        name: &Spanned<String>,
        sha256: Option<&Spanned<String>>,
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
        if let Some(pinned) = sha256
            && !pinned.get_ref().eq_ignore_ascii_case(&plugin.sha256)
        {
            findings.at(
                pinned,
                format!("{key}.sha256"),
                format!(
                    "{} has SHA-256 {}, not the pinned {}: the file was replaced. Check where \
                     it came from; if it is the one you want, pin its digest \
                     (`safd plugins list` shows it)",
                    plugin.wasm_path.display(),
                    plugin.sha256,
                    pinned.get_ref()
                ),
            );
            return None;
        }
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
        let json = if secrets::uses_secrets(config.get_ref()) {
            let schema_keys = self.schema_keys(&plugin, name.get_ref()).await;
            match secrets::resolve(config.get_ref(), &schema_keys) {
                Ok(resolved) => resolved.to_string(),
                Err(problems) => {
                    for problem in problems {
                        findings.at(
                            config,
                            format!("{key}.config.{}", problem.path),
                            problem.message,
                        );
                    }
                    return None;
                }
            }
        } else {
            match serde_json::to_string(config.get_ref()) {
                Ok(json) => json,
                Err(e) => {
                    findings.at(config, format!("{key}.config"), e.to_string());
                    return None;
                }
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

/// Plugin names in `dir`, for "did you mean".
pub(super) fn available(dir: &Path) -> String {
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
