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
