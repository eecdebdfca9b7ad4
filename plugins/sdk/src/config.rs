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
