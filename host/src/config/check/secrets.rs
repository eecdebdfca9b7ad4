//! Secrets out of the configuration file. In a connector's `config`, and
//! in `[admin]`:
//!
//! - a string value that is exactly `${NAME}` is the value of the
//!   environment variable `NAME` in safd's environment;
//! - a key `KEY_file = "/path"` stands for `KEY` = the file's content (its
//!   final line break dropped), where the plugin's schema has a `KEY` and no
//!   `KEY_file` of its own.
//!
//! safd reads both, so the plugin sees only the value; the file needs no
//! grant (the plugin never opens it). Nothing here is ever put into a
//! message: errors name the key, the variable or the file, never a value.

use std::collections::HashSet;
use std::path::Path;

/// Largest secret file read: a token or a key, not a log.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A problem with a secret, at a key under the section (`token_file`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SecretProblem {
    pub(super) path: String,
    pub(super) message: String,
}

/// Whether `config` uses either form, so that the plugin's schema is worth
/// asking for.
pub(super) fn uses_secrets(config: &toml::Table) -> bool {
    config
        .iter()
        .any(|(key, value)| key.ends_with("_file") || holds_reference(value))
}

fn holds_reference(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(text) => variable_name(text).is_some(),
        toml::Value::Array(items) => items.iter().any(holds_reference),
        toml::Value::Table(table) => table.values().any(holds_reference),
        _ => false,
    }
}

/// `NAME` of a value that is exactly `${NAME}`.
fn variable_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix("${")?.strip_suffix('}')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() || first == '_')
        .then_some(())
        .filter(|()| chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|()| name)
}

/// The value of `${NAME}` in safd's environment.
pub(super) fn variable(text: &str) -> Option<Result<String, String>> {
    let name = variable_name(text)?;
    Some(match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(format!(
            "`${{{name}}}` is empty in safd's environment; set it (systemd: Environment= or \
             EnvironmentFile=)"
        )),
        Err(_) => Err(format!(
            "`${{{name}}}` is not set in safd's environment; set it (systemd: Environment= or \
             EnvironmentFile=), or give the value another way"
        )),
    })
}

/// The content of a secret file, without its final line break.
pub(super) fn read_file(path: &Path) -> Result<String, String> {
    if !path.is_absolute() {
        return Err(format!(
            "`{}` must be an absolute path (safd's working directory is not yours)",
            path.display()
        ));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file", path.display()));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "`{}` holds {} bytes; a secret file holds one secret (at most {MAX_SECRET_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("`{}` is empty", path.display()));
    }
    Ok(value.to_owned())
}

/// `config` as the plugin gets it: `${NAME}` values and `KEY_file` keys
/// (for the keys `schema_keys` holds) resolved.
pub(super) fn resolve(
    config: &toml::Table,
    schema_keys: &HashSet<String>,
) -> Result<serde_json::Value, Vec<SecretProblem>> {
    let mut problems = Vec::new();
    let mut out = serde_json::Map::new();
    for (key, value) in config {
        let stands_for = key
            .strip_suffix("_file")
            .filter(|base| schema_keys.contains(*base) && !schema_keys.contains(key.as_str()));
        let Some(base) = stands_for else {
            let json = json_of(key, value, &mut problems);
            out.insert(key.clone(), json);
            continue;
        };
        let toml::Value::String(path) = value else {
            problems.push(SecretProblem {
                path: key.clone(),
                message: "give the path of a file holding the secret".to_owned(),
            });
            continue;
        };
        if config.contains_key(base) {
            problems.push(SecretProblem {
                path: key.clone(),
                message: format!("give `{base}` or `{key}`, not both"),
            });
            continue;
        }
        match read_file(Path::new(path)) {
            Ok(secret) => {
                out.insert(base.to_owned(), serde_json::Value::String(secret));
            }
            Err(message) => problems.push(SecretProblem {
                path: key.clone(),
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(serde_json::Value::Object(out))
    } else {
        Err(problems)
    }
}

/// `value` as JSON, `${NAME}` strings replaced.
fn json_of(
    path: &str,
    value: &toml::Value,
    problems: &mut Vec<SecretProblem>,
) -> serde_json::Value {
    match value {
        toml::Value::String(text) => match variable(text) {
            Some(Ok(secret)) => serde_json::Value::String(secret),
            Some(Err(message)) => {
                problems.push(SecretProblem {
                    path: path.to_owned(),
                    message,
                });
                serde_json::Value::Null
            }
            None => serde_json::Value::String(text.clone()),
        },
        toml::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| json_of(&format!("{path}[{i}]"), item, problems))
                .collect(),
        ),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(key, item)| {
                    (
                        key.clone(),
                        json_of(&format!("{path}.{key}"), item, problems),
                    )
                })
                .collect(),
        ),
        other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    fn keys(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn files_and_variables_become_the_values_and_problems_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret-from-file\n").unwrap();
        let config = table(&format!(
            "token_file = \"{}\"\ntimeout_ms = 5\nuser = \"${{PATH}}\"\nca_file = \"/x\"",
            token.display()
        ));
        assert!(uses_secrets(&config));
        let resolved =
            resolve(&config, &keys(&["token", "timeout_ms", "user", "ca_file"])).unwrap();
        assert_eq!(resolved["token"], "s3cret-from-file");
        assert_eq!(resolved["timeout_ms"], 5);
        assert_eq!(resolved["user"], std::env::var("PATH").unwrap().as_str());
        // A key of the plugin's own that ends in _file stays as it is.
        assert_eq!(resolved["ca_file"], "/x");
        assert!(resolved.get("token_file").is_none());

        let bad = table(&format!(
            "token = \"a\"\ntoken_file = \"{}\"\npassword_file = \"relative\"\nkey = \"${{SAFD_SURELY_UNSET_42}}\"",
            token.display()
        ));
        let problems = resolve(&bad, &keys(&["token", "password", "key"])).unwrap_err();
        let said: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said.iter()
                .any(|(k, m)| *k == "token_file" && m.contains("not both"))
        );
        assert!(
            said.iter()
                .any(|(k, m)| *k == "password_file" && m.contains("absolute"))
        );
        assert!(
            said.iter()
                .any(|(k, m)| *k == "key" && m.contains("SAFD_SURELY_UNSET_42"))
        );
        assert!(!format!("{said:?}").contains("s3cret"));
        assert!(!uses_secrets(&table("timeout_ms = 5\nname = \"$HOME\"")));
    }
}
