//! The admin API's client, for `safd status`, `safd catchup`, `safd dlq` and
//! `safd reload`.

use super::{CatchUpRequest, DeadLetterView, Status};
use crate::reload::ReloadReport;
use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

/// Where a running safd's admin API is, its token, and how to trust it.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    tls: Option<ureq::tls::TlsConfig>,
}

/// How the client checks an admin API served over TLS (`[admin] tls`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM bundle of the CA that signed the API's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key, for an API that wants one.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

impl AdminClient {
    /// `address`: `ip:port`, `http://…` or `https://…`; with `tls` files
    /// and no scheme, `https`.
    pub fn new(address: &str, token: Option<String>, tls: &ClientTls) -> anyhow::Result<Self> {
        let wants_tls =
            tls.ca_file.is_some() || tls.cert_file.is_some() || address.starts_with("https://");
        let base = if address.starts_with("http://") || address.starts_with("https://") {
            address.trim_end_matches('/').to_owned()
        } else if wants_tls {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        if base.starts_with("http://") && wants_tls {
            bail!("--admin {address} is plain http but TLS files are given: write https://");
        }
        let tls = wants_tls.then(|| tls_config(tls, "admin")).transpose()?;
        Ok(Self { base, token, tls })
    }

    fn agent(&self) -> ureq::Agent {
        self.agent_waiting(std::time::Duration::from_secs(30))
    }

    fn agent_waiting(&self, timeout: std::time::Duration) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if let Some(tls) = &self.tls {
            config = config.tls_config(tls.clone());
        }
        config.build().into()
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
        self.answer("/status", self.with_token(self.agent().get(&url)).call())
    }

    pub fn catch_up(&self, request: &CatchUpRequest) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/catchup", self.base);
        self.answer(
            "/catchup",
            self.with_token(self.agent().post(&url)).send_json(request),
        )
    }

    pub fn dead_letters(&self, group: &str) -> anyhow::Result<Vec<DeadLetterView>> {
        let url = format!("{}/dlq", self.base);
        self.answer(
            "/dlq",
            self.with_token(self.agent().get(&url))
                .query("group", group)
                .call(),
        )
    }

    pub fn replay(&self, group: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/dlq/replay", self.base);
        self.answer(
            "/dlq/replay",
            self.with_token(self.agent().post(&url))
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
            self.with_token(
                self.agent_waiting(std::time::Duration::from_secs(600))
                    .post(&url),
            )
            .send_json(serde_json::json!({})),
        )
    }
}

/// ureq's TLS for `tls`: rustls with ring (as the rest of safd), the CA of
/// `ca_file` (else the public roots), the client certificate if given.
/// `flag`: the options' prefix the errors name (`admin` for `--admin-ca`…).
pub(crate) fn tls_config(tls: &ClientTls, flag: &str) -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
    };
    let roots = match &tls.ca_file {
        Some(path) => {
            let pem = read(&format!("--{flag}-ca"), path)?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect::<Vec<Certificate<'static>>>();
            if certs.is_empty() {
                bail!("--{flag}-ca {}: holds no PEM certificate", path.display());
            }
            RootCerts::new_with_certs(&certs)
        }
        None => RootCerts::WebPki,
    };
    let client = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = ureq::tls::parse_pem(&read(&format!("--{flag}-cert"), cert)?)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect::<Vec<_>>();
            let key = PrivateKey::from_pem(&read(&format!("--{flag}-key"), key)?)
                .with_context(|| format!("--{flag}-key {}: no usable PEM key", key.display()))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        (None, None) => None,
        _ => bail!("--{flag}-cert and --{flag}-key go together"),
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(roots)
        .client_cert(client)
        .build())
}
