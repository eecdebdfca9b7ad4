//! The plugin's configuration (JSON) and its checks.

use crate::client::Credentials;
use crate::nkey::KeyPair;
use crate::subject::{self, Template};
use safd_plugin_sdk::config;
use safd_plugin_sdk::types::ConfigProblem;
use serde::Deserialize;
use std::time::Duration;

/// What each message carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// The event as the management protocol's JSON object.
    #[default]
    Json,
    /// The event as a one-event sequenced event block (`wit/connector.wit`).
    EventBlock,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    stream: String,
    #[serde(default = "default_subject")]
    subject: String,
    #[serde(default)]
    payload: Payload,
    #[serde(default = "default_window")]
    window: u32,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    nkey_seed: Option<String>,
    #[serde(default)]
    create_stream: Option<RawCreateStream>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u32,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCreateStream {
    #[serde(default)]
    subjects: Option<Vec<String>>,
    #[serde(default = "default_replicas")]
    replicas: u32,
    #[serde(default = "default_storage")]
    storage: String,
    #[serde(default = "default_duplicate_window_s")]
    duplicate_window_s: u64,
}

fn default_subject() -> String {
    subject::DEFAULT.to_owned()
}
fn default_window() -> u32 {
    256
}
fn default_replicas() -> u32 {
    1
}
fn default_storage() -> String {
    "file".to_owned()
}
fn default_duplicate_window_s() -> u64 {
    // JetStream's own default.
    120
}
fn default_connect_timeout_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    10_000
}

pub const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["stream"],
  "properties": {
    "stream": {"type": "string", "minLength": 1, "description": "The JetStream stream the events go into; it must take the subjects the template makes"},
    "subject": {"type": "string", "default": "safd.{agent}.{stream}", "description": "Subject template: text with {agent}, {stream}, {severity} and {attr:NAME}; values are made single tokens"},
    "payload": {"enum": ["json", "event-block"], "default": "json", "description": "Each message's body: the event as the management protocol's JSON object, or as a one-event sequenced event block"},
    "window": {"type": "integer", "minimum": 1, "maximum": 65536, "default": 256, "description": "Publishes sent before waiting for JetStream's answers"},
    "token": {"type": "string", "minLength": 1, "description": "Authentication token (or token_file, or \"${VAR}\")"},
    "user": {"type": "string", "minLength": 1, "description": "User name, with password"},
    "password": {"type": "string", "minLength": 1, "description": "Password, with user (or password_file, or \"${VAR}\")"},
    "nkey_seed": {"type": "string", "minLength": 1, "description": "nkey seed (SU…) to sign the server's nonce with; better nkey_seed_file"},
    "create_stream": {
      "type": "object",
      "additionalProperties": false,
      "description": "Create the stream when it is missing",
      "properties": {
        "subjects": {"type": "array", "items": {"type": "string"}, "description": "Default: the subject template with each placeholder token as *"},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        "storage": {"enum": ["file", "memory"], "default": "file"},
        "duplicate_window_s": {"type": "integer", "minimum": 1, "default": 120, "description": "How long JetStream recognises a message id it stored"}
      }
    },
    "connect_timeout_ms": {"type": "integer", "minimum": 1, "default": 1000},
    "timeout_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "Give up waiting for an answer after this long"}
  }
}"#;

/// A stream to create when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStream {
    pub subjects: Vec<String>,
    pub replicas: u32,
    pub storage: String,
    pub duplicate_window: Duration,
}

impl CreateStream {
    /// JetStream's `$JS.API.STREAM.CREATE` body for stream `name`.
    pub fn request(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "subjects": self.subjects,
            "num_replicas": self.replicas,
            "storage": self.storage,
            "duplicate_window": u64::try_from(self.duplicate_window.as_nanos()).unwrap_or(u64::MAX),
            "retention": "limits",
            "discard": "old",
        })
    }
}

#[derive(Debug)]
pub struct Config {
    pub stream: String,
    pub subject: Template,
    pub payload: Payload,
    pub window: usize,
    pub credentials: Credentials,
    pub create_stream: Option<CreateStream>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// Parse and check; every problem names its key (never a secret's value).
pub fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, mut problems): (RawConfig, _) = config::parse_naming_unknown_keys(text, SCHEMA)?;
    if let Some(problem) = stream_name_problem(&raw.stream) {
        problems.push(ConfigProblem::new("stream", problem));
    }
    let subject = Template::parse(&raw.subject)
        .map_err(|e| problems.push(ConfigProblem::new("subject", e.to_string())))
        .ok();
    if !(1..=65_536).contains(&raw.window) {
        problems.push(ConfigProblem::new("window", "must be 1 to 65536"));
    }
    let credentials = credentials(&raw, &mut problems);
    let create_stream = raw.create_stream.as_ref().and_then(|c| {
        let before = problems.len();
        if !(1..=5).contains(&c.replicas) {
            problems.push(ConfigProblem::new(
                "create_stream.replicas",
                "must be 1 to 5 (JetStream's limit)",
            ));
        }
        if c.storage != "file" && c.storage != "memory" {
            problems.push(ConfigProblem::new(
                "create_stream.storage",
                format!("`{}` is neither `file` nor `memory`", c.storage),
            ));
        }
        if c.duplicate_window_s == 0 {
            problems.push(ConfigProblem::new(
                "create_stream.duplicate_window_s",
                "must be at least 1: it is what makes an event sent again stored once",
            ));
        }
        let subjects = c
            .subjects
            .clone()
            .unwrap_or_else(|| vec![stream_subjects(&raw.subject)]);
        if subjects.is_empty() || subjects.iter().any(|s| s.trim().is_empty()) {
            problems.push(ConfigProblem::new(
                "create_stream.subjects",
                "needs at least one subject, none empty",
            ));
        }
        (problems.len() == before).then(|| CreateStream {
            subjects,
            replicas: c.replicas,
            storage: c.storage.clone(),
            duplicate_window: Duration::from_secs(c.duplicate_window_s),
        })
    });
    for (key, value) in [
        ("connect_timeout_ms", raw.connect_timeout_ms),
        ("timeout_ms", raw.timeout_ms),
    ] {
        if value == 0 {
            problems.push(ConfigProblem::new(key, "must be at least 1"));
        }
    }
    match (subject, credentials) {
        (Some(subject), Some(credentials)) if problems.is_empty() => Ok(Config {
            stream: raw.stream,
            subject,
            payload: raw.payload,
            window: raw.window as usize,
            credentials,
            create_stream,
            connect_timeout: Duration::from_millis(u64::from(raw.connect_timeout_ms)),
            timeout: Duration::from_millis(u64::from(raw.timeout_ms)),
        }),
        _ => Err(problems),
    }
}

/// JetStream stream names may not hold `.`, `*`, `>`, whitespace or path
/// separators (they name files on the server).
fn stream_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty; name the JetStream stream the events go into".to_owned());
    }
    name.chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        .map(|c| {
            format!(
                "{c:?} may not appear in a JetStream stream name (no `.`, `*`, `>`, \
                 whitespace or path separators)"
            )
        })
}

/// One kind of credentials at most.
fn credentials(raw: &RawConfig, problems: &mut Vec<ConfigProblem>) -> Option<Credentials> {
    let kinds = [
        raw.token.is_some(),
        raw.user.is_some() || raw.password.is_some(),
        raw.nkey_seed.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        problems.push(ConfigProblem::new(
            "",
            "give one kind of credentials: token, user with password, or nkey_seed",
        ));
        return None;
    }
    match (&raw.token, &raw.user, &raw.password, &raw.nkey_seed) {
        (Some(token), ..) => Some(Credentials::Token(token.clone())),
        (_, Some(user), Some(password), _) => Some(Credentials::UserPassword {
            user: user.clone(),
            password: password.clone(),
        }),
        (_, Some(_), None, _) => {
            problems.push(ConfigProblem::new("password", "is needed with user"));
            None
        }
        (_, None, Some(_), _) => {
            problems.push(ConfigProblem::new("user", "is needed with password"));
            None
        }
        (.., Some(seed)) => match KeyPair::from_seed(seed) {
            Ok(pair) => Some(Credentials::Nkey(pair)),
            Err(err) => {
                problems.push(ConfigProblem::new("nkey_seed", err.to_string()));
                None
            }
        },
        _ => Some(Credentials::None),
    }
}

/// The subjects a stream must take for `template`: each token that holds a
/// placeholder becomes `*`.
fn stream_subjects(template: &str) -> String {
    template
        .split('.')
        .map(|token| if token.contains('{') { "*" } else { token })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problems(json: serde_json::Value) -> Vec<(String, String)> {
        parse(&json.to_string())
            .unwrap_err()
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn a_stream_alone_is_enough() {
        let config = parse(r#"{"stream": "EMS"}"#).unwrap();
        assert_eq!(config.window, 256);
        assert_eq!(config.payload, Payload::Json);
        assert!(matches!(config.credentials, Credentials::None));
        assert!(config.create_stream.is_none());
    }

    #[test]
    fn create_stream_defaults_to_the_subjects_the_template_makes() {
        let config = parse(
            r#"{"stream": "EMS", "subject": "ems.{agent}.{severity}.all",
                "create_stream": {"replicas": 3}}"#,
        )
        .unwrap();
        let create = config.create_stream.unwrap();
        assert_eq!(create.subjects, ["ems.*.*.all"]);
        let request = create.request("EMS");
        assert_eq!(request["num_replicas"], 3);
        assert_eq!(request["storage"], "file");
        assert_eq!(request["duplicate_window"], 120_000_000_000u64);
    }

    #[test]
    fn every_problem_names_its_key_and_no_secret() {
        let found = problems(serde_json::json!({
            "stream": "a.b",
            "subject": "safd.{host}",
            "window": 0,
            "create_stream": {"replicas": 7, "storage": "tape", "duplicate_window_s": 0, "storag": "x"},
            "timeout_ms": 0,
            "windw": 5,
        }));
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "stream",
            "subject",
            "window",
            "create_stream.replicas",
            "create_stream.storage",
            "create_stream.duplicate_window_s",
            "timeout_ms",
            // Unknown keys, each named, beside the other problems.
            "windw",
            "create_stream.storag",
        ] {
            assert!(keys.contains(&key), "{key} missing in {found:?}");
        }
        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBX";
        let found = problems(serde_json::json!({"stream": "S", "nkey_seed": seed}));
        assert_eq!(found[0].0, "nkey_seed");
        assert!(!found[0].1.contains(seed));
        let found = problems(serde_json::json!({"stream": "S", "token": "t", "user": "u"}));
        assert!(found[0].1.contains("one kind of credentials"));
        let found = problems(serde_json::json!({"stream": "S", "user": "u"}));
        assert_eq!(found[0].0, "password");
    }
}
