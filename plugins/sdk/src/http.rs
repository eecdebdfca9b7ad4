//! HTTP for destinations, over wasi:http: safd checks every request's
//! authority against the destination's `grants.http` and does TLS itself
//! (`grants.tls`), so a plugin sends plain requests and never sees a key.
//!
//! What this adds to raw wasi:http, each a mistake made before:
//!
//! - a body goes with `Content-Length`: wasi:http otherwise streams it
//!   chunked, and a receiver that reads only `Content-Length` (Python's
//!   `http.server`, many small webhooks) sees an empty body, answers 200,
//!   and the events count as delivered;
//! - connect and response timeouts on every request;
//! - redirects are not followed (wasi:http never does): a 3xx is an error
//!   naming where it pointed, so the operator fixes the member's address;
//! - [`status_error`]: the status → WIT error table, written once.
//!
//! ```ignore
//! let base = BaseUrl::parse(&endpoint.address)?;
//! let reply = http::exchange(&base, Request::post("/hook", "application/json", &body)
//!     .bearer(&token), timeouts)
//!     .map_err(|e| e.into_connector_error(&base))?;
//! if !reply.is_success() {
//!     return Err(http::status_error(&reply, "POST /hook to http://…"));
//! }
//! ```

use crate::types::{Backpressure, ConnectorError};
use std::io::{Read, Write};
use std::time::Duration;
use wasi::http::outgoing_handler::{self, ErrorCode, RequestOptions};
use wasi::http::types::{Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};

pub use wasi::http::types::Method;

/// The longest excerpt of a receiver's answer put into an error: it ends
/// up in safd's log and in dead letters.
const MAX_DETAIL_CHARS: usize = 200;

/// Where a receiver lives: `http://host:port[/prefix]` (a member's
/// address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub https: bool,
    pub authority: String,
    /// Path prefix without a trailing slash (often empty).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(address: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = address.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = address.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "address `{address}` must start with http:// or https:// (e.g. http://10.0.0.5:8471)"
            ));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("address `{address}` has no host"));
        }
        Ok(Self {
            https,
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The URL of `path` (which starts with `/`, or is empty) for messages.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority, self.prefix)
    }
}

/// One request: a method, a path under the base URL (with its query, if
/// any), headers, and a body sent with `Content-Length`.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<(&'a str, &'a [u8])>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Self::new(Method::Get, path)
    }

    pub fn head(path: &'a str) -> Self {
        Self::new(Method::Head, path)
    }

    /// A POST of `body` with its `content_type`.
    pub fn post(path: &'a str, content_type: &'a str, body: &'a [u8]) -> Self {
        Self {
            body: Some((content_type, body)),
            ..Self::new(Method::Post, path)
        }
    }

    pub fn new(method: Method, path: &'a str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
}

/// How long a request may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open the connection.
    pub connect: Duration,
    /// To the first byte of the answer, and between its bytes.
    pub response: Duration,
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after_secs: Option<u32>,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why no reply came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// safd's sandbox refused the request: the authority is not in the
    /// destination's `grants.http`.
    Denied,
    /// The receiver could not be reached or did not answer in time.
    Unreachable(String),
}

impl TransportError {
    /// The WIT error for it: a refusal by the sandbox is `unauthorized`
    /// naming the grant to add; anything else `unavailable`, so the group
    /// fails over.
    pub fn into_connector_error(self, base: &BaseUrl) -> ConnectorError {
        match self {
            TransportError::Denied => ConnectorError::Unauthorized(format!(
                "safd's sandbox refused the request to {}: add `{}` to this destination's \
                 grants.http",
                base.url(""),
                base.authority
            )),
            TransportError::Unreachable(why) => {
                ConnectorError::Unavailable(format!("{}: {why}", base.url("")))
            }
        }
    }
}

/// Send `request` to `base` and read the whole answer.
pub fn exchange(
    base: &BaseUrl,
    request: Request<'_>,
    timeouts: Timeouts,
) -> Result<Reply, TransportError> {
    let unreachable = |what: String| TransportError::Unreachable(what);
    let headers = Fields::new();
    let append = |name: &str, value: &[u8]| {
        headers
            .append(name, value)
            .map_err(|e| unreachable(format!("header `{name}`: {e:?}")))
    };
    for (name, value) in &request.headers {
        append(name, value.as_bytes())?;
    }
    if let Some((content_type, bytes)) = request.body {
        append("content-type", content_type.as_bytes())?;
        // Without it wasi:http sends the body chunked (see the module's
        // documentation).
        append("content-length", bytes.len().to_string().as_bytes())?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let full_path = format!("{}{}", base.prefix, request.path);
    let set = [
        outgoing.set_method(&request.method),
        outgoing.set_scheme(Some(if base.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        })),
        outgoing.set_authority(Some(&base.authority)),
        outgoing.set_path_with_query(Some(&full_path)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(unreachable(format!(
            "cannot build a request to {}",
            base.url(request.path)
        )));
    }
    let outgoing_body = outgoing
        .body()
        .map_err(|()| unreachable("request body already taken".into()))?;
    let options = RequestOptions::new();
    // Unsupported options are not fatal: safd bounds every call anyway.
    let _ = options.set_connect_timeout(Some(nanos(timeouts.connect)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeouts.response)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeouts.response)));
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(map_error)?;
    // With `Content-Length`, hyper has the whole body once the last byte
    // is written and drops its end of the stream: a flush after that says
    // "closed" although everything went. So a failed write is judged by
    // the answer: a response means the request went out whole (hyper never
    // completes a request whose body fell short of its length; a receiver
    // may also answer early, e.g. 413, which is worth reporting as such).
    let mut sending = Ok(());
    if let Some((_, bytes)) = request.body {
        match outgoing_body.write() {
            Ok(mut stream) => {
                sending = stream
                    .write_all(bytes)
                    .and_then(|()| Write::flush(&mut stream))
                    .map_err(|e| format!("sending the request: {e}"));
            }
            Err(()) => sending = Err("request body stream already taken".to_owned()),
        }
    }
    if sending.is_ok() {
        OutgoingBody::finish(outgoing_body, None).map_err(map_error)?;
    } else {
        drop(outgoing_body);
    }
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        // The request itself failed (denied, refused): that answer is
        // the one worth reporting, not the broken body stream.
        Some(Ok(Err(code))) => return Err(map_error(code)),
        Some(Err(())) | None => {
            return Err(unreachable(
                sending.err().unwrap_or_else(|| "no response".to_owned()),
            ));
        }
    };
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .first()
            .and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned))
    };
    let retry_after_secs = header("retry-after").and_then(|v| v.trim().parse().ok());
    let location = header("location");
    let incoming = response
        .consume()
        .map_err(|()| unreachable("response body already taken".into()))?;
    let mut body = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|()| unreachable("response body stream already taken".into()))?;
        stream
            .read_to_end(&mut body)
            .map_err(|e| unreachable(format!("reading the response: {e}")))?;
    }
    drop(IncomingBody::finish(incoming));
    Ok(Reply {
        status,
        retry_after_secs,
        location,
        body,
    })
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn map_error(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied => TransportError::Denied,
        ErrorCode::ConnectionRefused => TransportError::Unreachable("connection refused".into()),
        ErrorCode::ConnectionTimeout => TransportError::Unreachable("connection timed out".into()),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            TransportError::Unreachable("no answer in time".into())
        }
        ErrorCode::DnsError(e) => TransportError::Unreachable(format!(
            "name not resolved: {}",
            e.rcode.unwrap_or_default()
        )),
        // safd's sender says in one sentence what went wrong (a refused
        // TLS certificate, say) and what to do.
        ErrorCode::InternalError(Some(explained)) => TransportError::Unreachable(explained),
        other => TransportError::Unreachable(format!("{other:?}")),
    }
}

/// The WIT error for a receiver's answer that is not 2xx, by the table
/// below (`what`: the request, for the message, e.g. `POST
/// http://…/hook`). What safd then does is the case's (docs/plugins.md):
///
/// | status | case | safd |
/// |---|---|---|
/// | 3xx | `fatal` | redirects are not followed: the message names the `Location`; fix the member's address |
/// | 400, 413, 415, 422 | `rejected` | the batch is permanently unacceptable: it goes to the dead letters |
/// | 401, 403, 407 | `unauthorized` | the member counts as unreachable (a wrong token, 1010) |
/// | 404, 405 | `fatal` | the path is wrong: retried once, then event by event, then dead letters |
/// | 408, 500, 502, 504 | `transient` | retried on the same member; `transient_limit` in a row make it unreachable |
/// | 429 | `backpressure` | waits `Retry-After` (1 s without it), at most 5 s, on the same member |
/// | 503 | `backpressure` with `Retry-After`, else `unavailable` | unavailable: the group fails over |
/// | other 4xx | `rejected` | as 400 |
/// | other | `transient` | as 500 |
pub fn status_error(reply: &Reply, what: &str) -> ConnectorError {
    let detail = String::from_utf8_lossy(&reply.body);
    let detail = safd_event_block::names::quote(detail.trim(), MAX_DETAIL_CHARS);
    let status = reply.status;
    let message = if detail.is_empty() {
        format!("{what} answered {status}")
    } else {
        format!("{what} answered {status}: {detail}")
    };
    let backpressure = |secs: u32| {
        ConnectorError::Backpressure(Backpressure {
            retry_after_ms: secs.saturating_mul(1000),
            message: message.clone(),
        })
    };
    match status {
        300..=399 => ConnectorError::Fatal(format!(
            "{message}; redirects are not followed: set the member's address to {}",
            reply.location.as_deref().unwrap_or("where it points")
        )),
        401 | 403 | 407 => ConnectorError::Unauthorized(message),
        404 | 405 => ConnectorError::Fatal(format!("{message} (is the address's path right?)")),
        408 | 500 | 502 | 504 => ConnectorError::Transient(message),
        429 => backpressure(reply.retry_after_secs.unwrap_or(1)),
        503 => match reply.retry_after_secs {
            Some(secs) => backpressure(secs),
            None => ConnectorError::Unavailable(message),
        },
        400..=499 => ConnectorError::Rejected(message),
        _ => ConnectorError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply(status: u16, retry_after_secs: Option<u32>) -> Reply {
        Reply {
            status,
            retry_after_secs,
            location: (status == 301).then(|| "http://new:80/hook".to_owned()),
            body: b"busy".to_vec(),
        }
    }

    #[test]
    fn base_urls_give_scheme_authority_and_prefix() {
        let url = BaseUrl::parse("http://10.0.0.5:8471").unwrap();
        assert_eq!(
            (url.https, url.authority.as_str(), url.prefix.as_str()),
            (false, "10.0.0.5:8471", "")
        );
        let url = BaseUrl::parse("https://gw:8080/mgmt/").unwrap();
        assert_eq!(
            (url.https, url.authority.as_str(), url.prefix.as_str()),
            (true, "gw:8080", "/mgmt")
        );
        assert_eq!(url.url("/x"), "https://gw:8080/mgmt/x");
        assert!(BaseUrl::parse("ftp://x").unwrap_err().contains("http://"));
        assert!(
            BaseUrl::parse("http:///path")
                .unwrap_err()
                .contains("no host")
        );
    }

    #[test]
    fn statuses_map_to_the_case_safd_acts_on() {
        let case = |status, retry| match status_error(&reply(status, retry), "POST /hook") {
            ConnectorError::Fatal(m) => format!("fatal {m}"),
            ConnectorError::Rejected(_) => "rejected".to_owned(),
            ConnectorError::Unauthorized(_) => "unauthorized".to_owned(),
            ConnectorError::Transient(_) => "transient".to_owned(),
            ConnectorError::Unavailable(_) => "unavailable".to_owned(),
            ConnectorError::Backpressure(b) => format!("backpressure {}", b.retry_after_ms),
            ConnectorError::BadCursor(_) => "bad cursor".to_owned(),
        };
        assert!(case(301, None).contains("set the member's address to http://new:80/hook"));
        assert_eq!(case(400, None), "rejected");
        assert_eq!(case(422, None), "rejected");
        assert_eq!(case(401, None), "unauthorized");
        assert!(case(404, None).starts_with("fatal POST /hook answered 404: busy"));
        assert_eq!(case(500, None), "transient");
        assert_eq!(case(429, None), "backpressure 1000");
        assert_eq!(case(503, Some(3)), "backpressure 3000");
        assert_eq!(case(503, None), "unavailable");
        assert_eq!(case(418, None), "rejected");
    }
}
