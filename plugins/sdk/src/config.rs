//! Parsing a plugin's config text.
//!
//! safd hands every plugin its config as JSON text (the operator writes it as
//! a TOML table in `safd.toml`; safd converts it). [`parse`] turns that text
//! into the plugin's own `serde` type and reports a failure as a
//! [`ConfigProblem`] that names the offending key, which is what
//! `validate-config` and the session constructors should return.

use crate::types::ConfigProblem;
use serde::de::DeserializeOwned;

/// Parse `text` (JSON) into `T`, naming the failing path on error.
///
/// Use `#[serde(deny_unknown_fields)]` on `T` so that a misspelt key is
/// reported instead of silently ignored.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ConfigProblem> {
    let text = if text.trim().is_empty() { "{}" } else { text };
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
