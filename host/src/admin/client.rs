//! The admin API's client, for `safd status`, `safd catchup`, `safd dlq` and
//! `safd reload`.

use super::{CatchUpRequest, DeadLetterView, Status};
use crate::reload::ReloadReport;
use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

/// Where a running safd's admin API is, and its token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(address: &str, token: Option<String>) -> Self {
        let base = if address.starts_with("http://") {
            address.trim_end_matches('/').to_owned()
        } else {
            format!("http://{address}")
        };
        Self { base, token }
    }

    fn agent() -> ureq::Agent {
        Self::agent_waiting(std::time::Duration::from_secs(30))
    }

    fn agent_waiting(timeout: std::time::Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into()
    }

    fn answer<T: DeserializeOwned>(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response.with_context(|| {
            format!(
                "cannot reach safd's admin API at {}; is safd running, and is [admin] listen \
                 this address? (--admin / SAFD_ADMIN)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {path}"))?;
        if status != 200 {
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("{path}: {status}: {detail}");
        }
        serde_json::from_str(&body).with_context(|| format!("the answer to {path} is not JSON"))
    }

    fn with_token<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    pub fn status(&self) -> anyhow::Result<Status> {
        let url = format!("{}/status", self.base);
        self.answer("/status", self.with_token(Self::agent().get(&url)).call())
    }

    pub fn catch_up(&self, request: &CatchUpRequest) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/catchup", self.base);
        self.answer(
            "/catchup",
            self.with_token(Self::agent().post(&url)).send_json(request),
        )
    }

    pub fn dead_letters(&self, group: &str) -> anyhow::Result<Vec<DeadLetterView>> {
        let url = format!("{}/dlq", self.base);
        self.answer(
            "/dlq",
            self.with_token(Self::agent().get(&url))
                .query("group", group)
                .call(),
        )
    }

    pub fn replay(&self, group: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/dlq/replay", self.base);
        self.answer(
            "/dlq/replay",
            self.with_token(Self::agent().post(&url))
                .query("group", group)
                .send_json(serde_json::json!({})),
        )
    }

    pub fn reload(&self) -> anyhow::Result<ReloadReport> {
        let url = format!("{}/reload", self.base);
        self.answer(
            "/reload",
            // A new plugin file is compiled before the answer: minutes for
            // a large component on a slow machine.
            self.with_token(Self::agent_waiting(std::time::Duration::from_secs(600)).post(&url))
                .send_json(serde_json::json!({})),
        )
    }
}
