//! Parsing a plugin's config text.
//!
//! safd hands every plugin its config as JSON text (the operator writes it as
//! a TOML table in `safd.toml`; safd converts it). [`parse`] turns that text
//! into the plugin's own `serde` type and reports a failure as a
//! [`ConfigProblem`] that names the offending key, which is what
//! `validate-config` and the session constructors should return.

use crate::types::{ConfigProblem, Severity};
use serde::de::DeserializeOwned;

/// Parse `text` (JSON) into `T`, naming the failing path on error.
///
/// Use `#[serde(deny_unknown_fields)]` on `T` so that a misspelt key is
/// reported instead of silently ignored.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ConfigProblem> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    // serde reads a struct from a JSON array too (its fields in order), so
    // `[]` would pass as a config of defaults: a config is an object.
    if let Some(first) = text.trim_start().chars().next()
        && first != '{'
    {
        return Err(ConfigProblem::new(
            "",
            "the config is not a JSON object: write it as a table (`config = { … }`)",
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigProblem::new(path, err.into_inner().to_string())
    })
}

/// [`parse`] that names **every** unknown key at once, not only the
/// first: each key of `text` that `schema` (the plugin's JSON Schema, as
/// `describe` returns it) does not declare, at every level the schema
/// closes with `"additionalProperties": false`, is a problem with its
/// path; the rest is then parsed without them, so the plugin's own checks
/// can add theirs to the same answer. `Ok` carries the unknown-key
/// problems beside the value (empty when there are none); `Err` when the
/// value itself does not parse (that problem after the unknown keys).
pub fn parse_naming_unknown_keys<T: DeserializeOwned>(
    text: &str,
    schema: &str,
) -> Result<(T, Vec<ConfigProblem>), Vec<ConfigProblem>> {
    let (Ok(mut value), Ok(schema)) = (
        serde_json::from_str::<serde_json::Value>(if text.trim().is_empty() { "{}" } else { text }),
        serde_json::from_str::<serde_json::Value>(schema),
    ) else {
        // Text that is not JSON (or a schema that is not): `parse` says why.
        return parse(text)
            .map(|value| (value, Vec::new()))
            .map_err(|p| vec![p]);
    };
    let mut unknown = Vec::new();
    remove_unknown_keys(&mut value, &schema, "", &mut unknown);
    match parse::<T>(&value.to_string()) {
        Ok(parsed) => Ok((parsed, unknown)),
        Err(problem) => {
            unknown.push(problem);
            Err(unknown)
        }
    }
}

/// Take out of `value` every key `schema` does not allow, each noted as a
/// problem at its path.
fn remove_unknown_keys(
    value: &mut serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    let (Some(object), Some(properties)) = (
        value.as_object_mut(),
        schema.get("properties").and_then(|p| p.as_object()),
    ) else {
        return;
    };
    let closed = schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false));
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match properties.get(&key) {
            Some(inner) => {
                if let Some(child) = object.get_mut(&key) {
                    remove_unknown_keys(child, inner, &at, problems);
                }
            }
            None if closed => {
                object.remove(&key);
                let known: Vec<String> = properties.keys().map(|k| format!("`{k}`")).collect();
                problems.push(ConfigProblem::new(
                    at,
                    format!("unknown key `{key}`; expected one of {}", known.join(", ")),
                ));
            }
            None => {}
        }
    }
}

/// A problem when `value` lies outside `range`, naming the range and its
/// unit (`"is 0; give 1 to 600000 (milliseconds)"`), as safd's own checks
/// do. Upper bounds matter as much as lower ones: a timeout of 49 days is
/// a typo, not a choice.
pub fn check_range(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Option<ConfigProblem> {
    (!range.contains(&value)).then(|| {
        ConfigProblem::new(
            key,
            format!(
                "is {value}; give {} to {} ({unit})",
                range.start(),
                range.end()
            ),
        )
    })
}

/// The severity named `name` at `key`, or the problem naming the six
/// there are.
pub fn severity(key: &str, name: &str) -> Result<Severity, ConfigProblem> {
    Severity::from_name(name).ok_or_else(|| {
        ConfigProblem::new(
            key,
            format!(
                "unknown severity `{name}`: use debug, info, warning, minor, major or critical"
            ),
        )
    })
}

/// Join problems into one line for a constructor's error message.
pub fn describe_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_name_their_bounds_and_unit() {
        assert!(check_range("t", 5, 1..=10, "ms").is_none());
        let problem = check_range("t", 0, 1..=10, "milliseconds").unwrap();
        assert_eq!(problem.path, "t");
        assert_eq!(problem.message, "is 0; give 1 to 10 (milliseconds)");
    }

    #[test]
    fn every_unknown_key_is_named_at_every_level_and_the_rest_still_parses() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[serde(default)]
            depth: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            limit: u32,
            #[serde(default)]
            inner: Option<Inner>,
        }
        let schema = r#"{"type": "object", "additionalProperties": false, "properties": {
            "limit": {"type": "integer"},
            "inner": {"type": "object", "additionalProperties": false,
                      "properties": {"depth": {"type": "integer"}}}}}"#;
        let (value, unknown) = parse_naming_unknown_keys::<Example>(
            r#"{"limit": 3, "limt": 1, "inner": {"depth": 2, "dpth": 1}, "extra": true}"#,
            schema,
        )
        .unwrap();
        assert_eq!(value.limit, 3);
        assert_eq!(value.inner.unwrap().depth, 2);
        let mut paths: Vec<&str> = unknown.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["extra", "inner.dpth", "limt"]);
        let limt = unknown.iter().find(|p| p.path == "limt").unwrap();
        assert_eq!(
            limt.message,
            "unknown key `limt`; expected one of `inner`, `limit`"
        );
        // A value that does not parse comes after the unknown keys.
        let problems = parse_naming_unknown_keys::<Example>(r#"{"limit": "x", "limt": 1}"#, schema)
            .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["limt", "limit"]);
        // Not JSON: the one problem `parse` gives.
        let problems = parse_naming_unknown_keys::<Example>("limit = 3", schema).unwrap_err();
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn parse_names_the_failing_key() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            #[allow(dead_code)]
            limit: u32,
        }
        let problem = parse::<Example>(r#"{"limit": "x"}"#).unwrap_err();
        assert_eq!(problem.path, "limit");
        let problem = parse::<Example>(r#"{"limt": 1}"#).unwrap_err();
        assert!(
            problem.message.contains("unknown field `limt`"),
            "{problem:?}"
        );
        // A struct of defaults would read `[]` as itself; a config is an object.
        #[derive(Debug, serde::Deserialize)]
        struct Defaults {
            #[serde(default)]
            #[allow(dead_code)]
            limit: u32,
        }
        assert!(parse::<Defaults>("[]").is_err());
        assert!(parse::<Defaults>(" ").is_ok());
    }
}
