//! Who may do what. `--token` is the operator's: everything. A tokens file
//! (`--tokens`) gives each agent a token of its own, good for registering
//! and delivering as that agent only, and the console a read-only token:
//! a stolen agent token cannot write under another agent's name (and make
//! that agent trim events it believes delivered), nor read anyone's
//! events; the console's cannot write at all.
//!
//! The file (TOML):
//!
//! ```toml
//! console = "a-long-random-token"        # optional: read-only
//! [agents]
//! prod1-safd = "another-long-random-token"
//! prod2-safd = "a-third-one"
//! ```

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Largest tokens file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `--token`: every endpoint.
    Operator,
    /// An agent's own token: register and deliver as this agent id.
    Agent(Arc<str>),
    /// The console's token: reading only.
    Console,
}

/// What a request to an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `/health`: any token.
    Any,
    /// `/register`, `/events`: the operator or an agent (which agent is
    /// checked against the body).
    Agent,
    /// `/query/*`, `/stats`: the operator or the console.
    Read,
    /// `/admin/*`: the operator.
    Operator,
}

impl Caller {
    /// Why this caller may not make a request needing `need`, if it may not.
    pub fn refusal(&self, need: Need) -> Option<String> {
        match (self, need) {
            (Caller::Operator, _) | (_, Need::Any) => None,
            (Caller::Agent(_), Need::Agent) | (Caller::Console, Need::Read) => None,
            (Caller::Agent(id), _) => Some(format!(
                "this token is agent `{id}`'s: it may register and deliver as that agent, \
                 nothing else"
            )),
            (Caller::Console, _) => Some(
                "the console token reads only; it cannot register, deliver or switch the \
                      service"
                    .to_owned(),
            ),
        }
    }

    /// Why this caller may not act as `agent_id`, if it may not.
    pub fn acting_as(&self, agent_id: &str) -> Option<String> {
        match self {
            Caller::Agent(id) if &**id != agent_id => Some(format!(
                "this token is agent `{id}`'s; it cannot register or deliver as `{}`",
                safd_event_block::names::quote(agent_id, 64)
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    console: Option<String>,
    #[serde(default)]
    agents: BTreeMap<String, String>,
}

/// Every token the server accepts, with who it stands for. Clones share
/// one set: a reload of the tokens file changes it for all of them.
#[derive(Debug, Clone)]
pub struct Credentials {
    tokens: Arc<std::sync::RwLock<Arc<Tokens>>>,
}

type Tokens = Vec<(String, Caller)>;

impl Credentials {
    fn of(tokens: Tokens) -> Self {
        Self {
            tokens: Arc::new(std::sync::RwLock::new(Arc::new(tokens))),
        }
    }

    /// The operator's token alone (no tokens file).
    pub fn operator_only(token: &str) -> Self {
        Self::of(vec![(token.to_owned(), Caller::Operator)])
    }

    /// The operator's token and those of the tokens file at `path`.
    pub fn load(operator: &str, path: &Path) -> anyhow::Result<Self> {
        Ok(Self::of(read_tokens(operator, path)?))
    }

    /// Read the tokens file at `path` again and accept its tokens from
    /// now on (SIGHUP); a file that cannot be used changes nothing. The
    /// number of agents with a token.
    pub fn reload(&self, operator: &str, path: &Path) -> anyhow::Result<usize> {
        let tokens = Arc::new(read_tokens(operator, path)?);
        let agents = count_agents(&tokens);
        match self.tokens.write() {
            Ok(mut current) => *current = tokens,
            Err(poisoned) => *poisoned.into_inner() = tokens,
        }
        Ok(agents)
    }

    fn current(&self) -> Arc<Tokens> {
        match self.tokens.read() {
            Ok(tokens) => tokens.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Who `presented` belongs to. Every token is compared, each in
    /// constant time, so the answer's timing tells nothing about which
    /// came close.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let mut found = None;
        for (token, caller) in self.current().iter() {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// How many agents have their own token.
    pub fn agents(&self) -> usize {
        count_agents(&self.current())
    }
}

/// The operator's token and those of the tokens file at `path`, checked.
fn read_tokens(operator: &str, path: &Path) -> anyhow::Result<Tokens> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--tokens {}: cannot read it", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        bail!(
            "--tokens {}: not a regular file of at most 1 MiB",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--tokens {}: cannot read it", path.display()))?;
    let file: TokensFile = toml::from_str(&text)
        .with_context(|| format!("--tokens {}: not a tokens file", path.display()))?;
    let mut tokens = vec![(operator.to_owned(), Caller::Operator)];
    if let Some(console) = file.console {
        tokens.push((console, Caller::Console));
    }
    for (agent, token) in file.agents {
        if let Err(problem) = safd_event_block::names::check(&agent) {
            bail!("--tokens {}: agent id: {problem}", path.display());
        }
        tokens.push((token, Caller::Agent(Arc::from(agent))));
    }
    for (i, (token, caller)) in tokens.iter().enumerate() {
        let from_file = *caller != Caller::Operator;
        if from_file && (token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic())) {
            bail!(
                "--tokens {}: the token of {} must be at least 16 printable ASCII \
                 characters without spaces",
                path.display(),
                describe(caller)
            );
        }
        if tokens[..i].iter().any(|(other, _)| other == token) {
            bail!(
                "--tokens {}: the token of {} is also another's; give each its own",
                path.display(),
                describe(caller)
            );
        }
    }
    Ok(tokens)
}

fn count_agents(tokens: &Tokens) -> usize {
    tokens
        .iter()
        .filter(|(_, caller)| matches!(caller, Caller::Agent(_)))
        .count()
}

fn describe(caller: &Caller) -> String {
    match caller {
        Caller::Operator => "--token".to_owned(),
        Caller::Agent(id) => format!("agent `{id}`"),
        Caller::Console => "the console".to_owned(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reload_replaces_the_tokens_for_every_clone_and_a_bad_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[agents]\nprod1 = \"prod1-token-0123456\"\n").unwrap();
        let credentials = Credentials::load("operator-token", &path).unwrap();
        let serving = credentials.clone();
        std::fs::write(&path, "[agents]\nprod2 = \"prod2-token-0123456\"\n").unwrap();
        assert_eq!(credentials.reload("operator-token", &path).unwrap(), 1);
        assert_eq!(serving.caller("prod1-token-0123456"), None);
        assert_eq!(
            serving.caller("prod2-token-0123456"),
            Some(Caller::Agent(Arc::from("prod2")))
        );
        std::fs::write(&path, "agents = 3").unwrap();
        let err = credentials.reload("operator-token", &path).unwrap_err();
        assert!(format!("{err:#}").contains("not a tokens file"), "{err:#}");
        assert!(serving.caller("prod2-token-0123456").is_some());
        assert_eq!(serving.caller("operator-token"), Some(Caller::Operator));
    }

    #[test]
    fn each_token_stands_for_its_caller_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "console = \"console-token-0123456\"\n[agents]\nprod1 = \"prod1-token-0123456\"\n",
        )
        .unwrap();
        let credentials = Credentials::load("operator-token", &path).unwrap();
        assert_eq!(credentials.caller("operator-token"), Some(Caller::Operator));
        assert_eq!(
            credentials.caller("console-token-0123456"),
            Some(Caller::Console)
        );
        let agent = credentials.caller("prod1-token-0123456").unwrap();
        assert_eq!(agent, Caller::Agent(Arc::from("prod1")));
        assert_eq!(credentials.caller("prod1-token-012345"), None);
        assert!(agent.acting_as("prod1").is_none());
        assert!(
            agent
                .acting_as("prod2")
                .unwrap()
                .contains("cannot register or deliver as `prod2`")
        );
        assert!(agent.refusal(Need::Read).is_some());
        assert!(agent.refusal(Need::Agent).is_none());
        assert!(Caller::Console.refusal(Need::Agent).is_some());
        assert!(Caller::Console.refusal(Need::Read).is_none());
        assert!(Caller::Console.refusal(Need::Operator).is_some());
        assert_eq!(credentials.agents(), 1);

        std::fs::write(&path, "[agents]\na = \"short\"\n").unwrap();
        let err = Credentials::load("operator-token", &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent `a`") && err.contains("16 printable"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[agents]\na = \"same-token-0123456789\"\nb = \"same-token-0123456789\"\n",
        )
        .unwrap();
        let err = Credentials::load("operator-token", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("give each its own"), "{err}");
        std::fs::write(&path, "agent = 1").unwrap();
        let err = format!(
            "{:#}",
            Credentials::load("operator-token", &path).unwrap_err()
        );
        assert!(err.contains("not a tokens file"), "{err}");
    }
}
