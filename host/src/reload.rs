//! Reloading a running daemon's configuration (SIGHUP, `safd reload`).
//!
//! What can change safely is applied in place: sources and groups added,
//! removed, or restarted because their section or their plugin file
//! changed. A restarted source resumes from its durable cursor; a restarted
//! group settles its calls in flight and continues from its acknowledged
//! position; so nothing queued is lost, and safd sends nothing twice. The
//! agent id, the data directory, the queue's sizing, the admin API and the
//! cache directory belong to the open queue and listener: a change there is
//! reported as needing a restart and the running values stay.

use crate::config::{Checked, ConfigError};
use safd_connector::Severity;
use safd_connector::event_ids::{CONFIG_RELOAD_REFUSED, CONFIG_RELOADED};
use safd_engine::{Engine, Notice, QueueOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the running daemon was started from (or last reloaded to).
#[derive(Debug)]
pub struct Applied {
    agent_id: String,
    data_dir: PathBuf,
    queue: QueueOptions,
    admin: crate::config::AdminOptions,
    cache_dir: Option<PathBuf>,
    log_format: crate::config::LogFormat,
    /// Per `sources.NAME` / `groups.NAME` that runs: its fingerprint.
    running: BTreeMap<String, String>,
    runtime: safd_runtime::Runtime,
}

impl Applied {
    /// Call before the checked configuration is handed to the engine.
    pub fn of(checked: &Checked) -> Self {
        Self {
            agent_id: checked.engine.agent_id.clone(),
            data_dir: checked.engine.data_dir.clone(),
            queue: checked.engine.queue,
            admin: checked.admin.clone(),
            cache_dir: checked.cache_dir.clone(),
            log_format: checked.log_format,
            running: checked.fingerprints.clone(),
            runtime: checked.runtime.clone(),
        }
    }

    /// The runtime the running plugins live in (reloads load into it; a
    /// changed `cache_dir` needs a restart anyway).
    pub fn runtime(&self) -> &safd_runtime::Runtime {
        &self.runtime
    }

    /// The settings only a restart can change that differ in `next`.
    fn needs_restart(&self, next: &Checked) -> Vec<String> {
        let mut changed = Vec::new();
        if next.engine.agent_id != self.agent_id {
            changed.push(format!("agent_id (running: \"{}\")", self.agent_id));
        }
        if next.engine.data_dir != self.data_dir {
            changed.push(format!("data_dir (running: {})", self.data_dir.display()));
        }
        if next.engine.queue != self.queue {
            changed.push("queue".to_owned());
        }
        if next.admin.listen != self.admin.listen {
            changed.push(format!("admin.listen (running: {})", self.admin.listen));
        }
        if next.admin.token != self.admin.token {
            changed.push("admin.token".to_owned());
        }
        if next.admin.tls_files != self.admin.tls_files {
            changed.push("admin.tls".to_owned());
        }
        if next.cache_dir != self.cache_dir {
            changed.push("cache_dir".to_owned());
        }
        if next.log_format != self.log_format {
            changed.push("log.format".to_owned());
        }
        changed
    }
}

/// The outcome of a reload, as the admin API and the log give it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The file's problems; when there are any nothing was changed.
    pub problems: Vec<String>,
    pub added: Vec<String>,
    /// Restarted because their section or plugin file changed.
    pub restarted: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Changed in the file but kept at their running values until safd is
    /// restarted.
    pub needs_restart: Vec<String>,
    /// Entries the engine could not apply, with the reason.
    pub failed: Vec<String>,
}

impl ReloadReport {
    /// True when the file was accepted and everything in it applied (a
    /// setting waiting for a restart is not a failure).
    pub fn applied(&self) -> bool {
        self.problems.is_empty() && self.failed.is_empty()
    }

    /// What happened to each source and group, by outcome, in the order
    /// they are shown.
    pub fn sections(&self) -> [(&'static str, &[String]); 5] {
        [
            ("added", &self.added),
            ("restarted", &self.restarted),
            ("removed", &self.removed),
            ("unchanged", &self.unchanged),
            ("failed", &self.failed),
        ]
    }

    pub fn summary(&self) -> String {
        if !self.problems.is_empty() {
            return format!(
                "reload refused, the running configuration stays: {}",
                self.problems.join("; ")
            );
        }
        let mut parts: Vec<String> = self
            .sections()
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(label, entries)| format!("{label}: {}", entries.join(", ")))
            .collect();
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "needs a restart to take effect (running values kept): {}",
                self.needs_restart.join(", ")
            ));
        }
        format!("reloaded; {}", parts.join("; "))
    }
}

/// Apply a re-read configuration (or the problems found in it) to the
/// running engine, and announce the outcome as event 5001 or 5002.
pub async fn apply(
    engine: &Engine,
    applied: &mut Applied,
    next: Result<Checked, ConfigError>,
) -> ReloadReport {
    let report = match next {
        Ok(checked) => apply_checked(engine, applied, checked).await,
        Err(err) => ReloadReport {
            problems: err.to_string().lines().map(str::to_owned).collect(),
            ..ReloadReport::default()
        },
    };
    let summary = report.summary();
    let notice = if !report.problems.is_empty() {
        Notice::new(CONFIG_RELOAD_REFUSED, summary)
    } else if report.applied() && report.needs_restart.is_empty() {
        Notice::new(CONFIG_RELOADED, summary)
    } else {
        Notice::new(CONFIG_RELOADED, summary).with_severity(Severity::Warning)
    };
    engine.notices().emit(notice);
    report
}

async fn apply_checked(engine: &Engine, applied: &mut Applied, next: Checked) -> ReloadReport {
    let mut report = ReloadReport {
        needs_restart: applied.needs_restart(&next),
        ..ReloadReport::default()
    };
    let fingerprints = next.fingerprints;
    let wanted = |key: &str| fingerprints.get(key).cloned().unwrap_or_default();

    // Removed first: a source renamed in the file frees nothing another
    // needs, but a smaller set of groups frees queue room sooner.
    let gone: Vec<String> = applied
        .running
        .keys()
        .filter(|key| !fingerprints.contains_key(*key))
        .cloned()
        .collect();
    for key in gone {
        let result = match key.split_once('.') {
            Some(("sources", name)) => engine.remove_source(name).await,
            Some((_, name)) => engine.remove_group(name).await,
            None => continue,
        };
        match result {
            Ok(()) => {
                applied.running.remove(&key);
                report.removed.push(key);
            }
            Err(err) => report.failed.push(format!("{key}: {err}")),
        }
    }

    for (name, source, tuning) in next.sources {
        let key = format!("sources.{name}");
        let fingerprint = wanted(&key);
        let outcome = match applied.running.get(&key) {
            Some(running) if *running == fingerprint => {
                report.unchanged.push(key);
                continue;
            }
            Some(_) => match engine.remove_source(&name).await {
                Ok(()) => {
                    applied.running.remove(&key);
                    &mut report.restarted
                }
                Err(err) => {
                    report.failed.push(format!("{key}: {err}"));
                    continue;
                }
            },
            None => &mut report.added,
        };
        match engine.add_source(&name, Arc::new(source), tuning) {
            Ok(()) => {
                outcome.push(key.clone());
                applied.running.insert(key, fingerprint);
            }
            Err(err) => report.failed.push(format!("{key}: {err}")),
        }
    }

    for group in next.groups {
        let key = format!("groups.{}", group.name);
        let fingerprint = wanted(&key);
        let result = match applied.running.get(&key) {
            Some(running) if *running == fingerprint => {
                report.unchanged.push(key);
                continue;
            }
            Some(_) => engine
                .replace_group(group)
                .await
                .map(|()| &mut report.restarted),
            None => engine.add_group(group).map(|()| &mut report.added),
        };
        match result {
            Ok(outcome) => {
                outcome.push(key.clone());
                applied.running.insert(key, fingerprint);
            }
            Err(err) => {
                // A group that failed to restart is stopped; the next reload
                // starts it again.
                applied.running.remove(&key);
                report.failed.push(format!("{key}: {err}"));
            }
        }
    }
    report
}
