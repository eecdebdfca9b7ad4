//! Checks every plugin gets: what it says about itself and how it judges
//! configs; and what makes an error case one safd can act on.

use super::Report;
use safd_connector::{ConnectorError, SessionError};
use safd_runtime::Plugin;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// A key no plugin's config has.
const UNKNOWN_KEY: &str = "conformance_unknown_key";

/// Generated configs given to `validate-config`.
const GENERATED_CONFIGS: usize = 40;

/// Check what the plugin says about itself; returns its config schema (as
/// text) when it answered, for the config checks.
pub(super) async fn describe(plugin: &Plugin, report: &mut Report) -> Option<String> {
    let check = "describe";
    let description = match plugin.describe().await {
        Ok(description) => description,
        Err(err) => {
            report.fail(check, format!("the call failed: {err}"));
            return None;
        }
    };
    let manifest = &plugin.manifest;
    let mut problems = Vec::new();
    if description.name != manifest.name {
        problems.push(format!(
            "name `{}`, but the manifest says `{}`",
            description.name, manifest.name
        ));
    }
    if description.version != manifest.version {
        problems.push(format!(
            "version `{}`, but the manifest says `{}` (rebuild so both come from one place)",
            description.version, manifest.version
        ));
    }
    if !is_semver(&description.version) {
        problems.push(format!(
            "version `{}` is not MAJOR.MINOR.PATCH",
            description.version
        ));
    }
    if description.kind != manifest.kind {
        problems.push(format!(
            "kind {}, but the manifest says {}",
            description.kind, manifest.kind
        ));
    }
    if description.summary.trim().is_empty() {
        problems.push("the summary is empty: one or two sentences for operators".to_owned());
    }
    problems.extend(schema_problems(&description.config_schema));
    report.expect(
        check,
        "name, version and kind match the manifest; summary and config schema well-formed",
        &problems,
    );
    Some(description.config_schema)
}

fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn schema_problems(schema: &str) -> Vec<String> {
    let schema: Value = match serde_json::from_str(schema) {
        Ok(schema) => schema,
        Err(err) => return vec![format!("the config schema is not JSON: {err}")],
    };
    let mut problems = Vec::new();
    if schema["type"] != "object" {
        problems.push(
            "the config schema's `type` is not \"object\" (configs are JSON objects)".to_owned(),
        );
    }
    match &schema["properties"] {
        Value::Null => {}
        Value::Object(properties) => {
            for (key, property) in properties {
                if !property.is_object() && !property.is_boolean() {
                    problems.push(format!(
                        "the config schema's property `{key}` is not a schema"
                    ));
                }
            }
        }
        _ => problems.push("the config schema's `properties` is not an object".to_owned()),
    }
    problems
}

/// The properties of a config schema with one simple `type`.
fn typed_properties(schema: Option<&str>) -> Vec<(String, String)> {
    let schema: Value = schema
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    schema["properties"]
        .as_object()
        .map(|properties| {
            properties
                .iter()
                .filter_map(|(key, p)| Some((key.clone(), p["type"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn configs(
    plugin: &Plugin,
    schema: Option<&str>,
    config: &str,
    seed: u64,
    report: &mut Report,
) {
    match plugin.validate_config(config).await {
        Ok(problems) if problems.is_empty() => {
            report.pass("validate-config: the given config", "accepted")
        }
        Ok(problems) => report.fail(
            "validate-config: the given config",
            format!(
                "refused ({}); give --config a working config",
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Err(err) => report.fail("validate-config: the given config", err.to_string()),
    }

    let mut problems = Vec::new();
    for (text, what) in [
        ("{\"unclosed\": ", "text that is not JSON"),
        ("[]", "a JSON array"),
        ("42", "a JSON number"),
    ] {
        match plugin.validate_config(text).await {
            Ok(found) if found.is_empty() => problems.push(format!("{what} was accepted")),
            Ok(found) if found.iter().any(|p| p.message.trim().is_empty()) => {
                problems.push(format!("a problem with {what} has no message"))
            }
            Ok(_) => {}
            Err(err) => problems.push(format!("{what}: {err}")),
        }
    }
    report.expect(
        "validate-config: malformed configs",
        "text that is not JSON, or not an object, is refused with a message",
        &problems,
    );

    let Ok(Value::Object(given)) = serde_json::from_str::<Value>(config) else {
        report.not_applicable(
            "validate-config: problems name their key",
            "the given config is not a JSON object",
        );
        return;
    };
    let mut problems = Vec::new();
    let mut with_unknown = given.clone();
    with_unknown.insert(UNKNOWN_KEY.to_owned(), json!(1));
    names_key(
        plugin,
        &with_unknown,
        UNKNOWN_KEY,
        "an unknown key",
        &mut problems,
    )
    .await;
    let properties = typed_properties(schema);
    for (key, kind) in &properties {
        let Some(wrong) = wrong_value(kind) else {
            continue;
        };
        let mut config = given.clone();
        config.insert(key.clone(), wrong.clone());
        let what = format!("`{key}` = {wrong} (the schema says {kind})");
        names_key(plugin, &config, key, &what, &mut problems).await;
    }
    report.expect(
        "validate-config: problems name their key",
        format!(
            "an unknown key and a wrong type for each of {} typed properties are refused, naming the key",
            properties.len()
        )
        .as_str(),
        &problems,
    );

    let mut rng = fastrand::Rng::with_seed(seed);
    let keys: Vec<String> = properties.into_iter().map(|(key, _)| key).collect();
    let mut problems = Vec::new();
    for _ in 0..GENERATED_CONFIGS {
        let generated = generated_config(&mut rng, &given, &keys);
        if let Err(err) = plugin.validate_config(&generated.to_string()).await {
            problems.push(format!("{generated}: {err}"));
            break;
        }
    }
    report.expect(
        "validate-config: generated configs",
        &format!("{GENERATED_CONFIGS} configs of random values answered without a trap"),
        &problems,
    );
}

/// Validate `config` and expect a problem whose path or message names `key`.
async fn names_key(
    plugin: &Plugin,
    config: &Map<String, Value>,
    key: &str,
    what: &str,
    problems: &mut Vec<String>,
) {
    let text = Value::Object(config.clone()).to_string();
    match plugin.validate_config(&text).await {
        Ok(found) if found.is_empty() => problems.push(format!("{what} was accepted")),
        Ok(found) => {
            if !found
                .iter()
                .any(|p| p.path.contains(key) || p.message.contains(key))
            {
                problems.push(format!(
                    "{what}: no problem names `{key}` (path or message); got {}",
                    found
                        .iter()
                        .map(|p| format!("`{}`: {}", p.path, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        Err(err) => problems.push(format!("{what}: {err}")),
    }
}

/// A value that is not of JSON Schema type `kind`.
fn wrong_value(kind: &str) -> Option<Value> {
    Some(match kind {
        "string" => json!(12345),
        "integer" | "number" => json!("not a number"),
        "boolean" => json!("yes"),
        "array" => json!("not a list"),
        "object" => json!(["not", "an", "object"]),
        _ => return None,
    })
}

/// The given config with some keys set to random values, or a random value.
fn generated_config(rng: &mut fastrand::Rng, given: &Map<String, Value>, keys: &[String]) -> Value {
    if rng.u8(..10) == 0 {
        return random_value(rng, 3);
    }
    let mut config = given.clone();
    for _ in 0..rng.usize(1..4) {
        let key = if keys.is_empty() || rng.bool() {
            random_text(rng)
        } else {
            keys[rng.usize(..keys.len())].clone()
        };
        config.insert(key, random_value(rng, 2));
    }
    Value::Object(config)
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(..9) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(u64::MAX),
        4 => json!(-1.5e300),
        5 if depth > 0 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        6 if depth > 0 => Value::Object(
            (0..rng.usize(..4))
                .map(|_| (random_text(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
        _ => json!(random_text(rng)),
    }
}

fn random_text(rng: &mut fastrand::Rng) -> String {
    const PIECES: &[&str] = &[
        "", "a", "/", "..", "\0", "é", "🙂", "%s", "\n", "0", "-1", "x:y",
    ];
    (0..rng.usize(..5))
        .map(|_| PIECES[rng.usize(..PIECES.len())])
        .collect::<String>()
        .repeat(rng.usize(1..3))
}

/// The longest wait a `backpressure` answer may ask for and still be an
/// answer safd can follow rather than an outage in disguise.
const LONGEST_BACKPRESSURE: Duration = Duration::from_secs(600);

/// Why `err` is not an answer safd can act on, or `None` when it is.
pub(super) fn unactionable(err: &SessionError) -> Option<String> {
    match err {
        SessionError::Trapped(trap) => Some(format!("trapped: {trap}")),
        SessionError::TimedOut(limit) => {
            Some(format!("exceeded its {} ms call limit", limit.as_millis()))
        }
        SessionError::Start(why) => Some(format!("could not start: {why}")),
        SessionError::Disabled { .. } => Some(err.to_string()),
        SessionError::NotGranted(_) => None,
        SessionError::Connector(error) => {
            let (case, message) = case_and_message(error);
            if message.trim().is_empty() {
                return Some(format!(
                    "`{case}` with an empty message: say what happened and what fixes it"
                ));
            }
            match error {
                ConnectorError::Backpressure { retry_after, .. } if retry_after.is_zero() => Some(
                    "`backpressure` asking for no wait: give retry-after-ms the receiver's hint"
                        .to_owned(),
                ),
                ConnectorError::Backpressure { retry_after, .. }
                    if *retry_after > LONGEST_BACKPRESSURE =>
                {
                    Some(format!(
                        "`backpressure` asking for {} s: a receiver away that long is \
                         `unavailable`, so the group can fail over",
                        retry_after.as_secs()
                    ))
                }
                _ => None,
            }
        }
    }
}

/// The WIT name of an error case and its text.
pub(super) fn case_and_message(error: &ConnectorError) -> (&'static str, &str) {
    match error {
        ConnectorError::Transient(m) => ("transient", m),
        ConnectorError::Unavailable(m) => ("unavailable", m),
        ConnectorError::Backpressure { message, .. } => ("backpressure", message),
        ConnectorError::Rejected(m) => ("rejected", m),
        ConnectorError::Unauthorized(m) => ("unauthorized", m),
        ConnectorError::Fatal(m) => ("fatal", m),
        ConnectorError::BadCursor(m) => ("bad-cursor", m),
    }
}

/// The error case of `err`, or how the call failed otherwise.
pub(super) fn case_of(err: &SessionError) -> &'static str {
    match err {
        SessionError::Connector(error) => case_and_message(error).0,
        SessionError::Trapped(_) => "a trap",
        SessionError::TimedOut(_) => "a timeout",
        SessionError::NotGranted(_) => "not granted",
        SessionError::Start(_) | SessionError::Disabled { .. } => "no instance",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_schemas_are_judged_as_the_contract_says() {
        assert!(is_semver("0.1.0"));
        assert!(is_semver("1.22.333-rc.1+build"));
        assert!(!is_semver("1.2"));
        assert!(!is_semver("v1.2.3"));
        assert!(
            schema_problems(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#).is_empty()
        );
        assert_eq!(schema_problems("{").len(), 1);
        assert_eq!(schema_problems(r#"{"type":"array"}"#).len(), 1);
        assert_eq!(
            schema_problems(r#"{"type":"object","properties":{"a":3}}"#).len(),
            1
        );
    }

    #[test]
    fn an_error_without_a_message_or_with_an_endless_wait_is_not_actionable() {
        let connector = |e| SessionError::Connector(e);
        assert!(unactionable(&connector(ConnectorError::Unavailable("down".into()))).is_none());
        assert!(unactionable(&connector(ConnectorError::Fatal(" ".into()))).is_some());
        let wait = |ms| {
            connector(ConnectorError::Backpressure {
                retry_after: Duration::from_millis(ms),
                message: "slow down".into(),
            })
        };
        assert!(unactionable(&wait(0)).is_some());
        assert!(unactionable(&wait(500)).is_none());
        assert!(unactionable(&wait(3_600_000)).is_some());
        assert!(unactionable(&SessionError::Trapped("unreachable".into())).is_some());
    }
}
