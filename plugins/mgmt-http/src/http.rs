//! One HTTP exchange over wasi:http, with timeouts.

use std::io::{Read, Write};
use std::time::Duration;
use wasi::http::outgoing_handler::{self, ErrorCode, RequestOptions};
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Where a server lives: `http://host:port[/prefix]`.
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
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after_secs: Option<u32>,
    pub body: Vec<u8>,
}

/// Why no reply came back.
#[derive(Debug)]
pub enum TransportError {
    /// safd's sandbox refused the request (authority not granted).
    Denied,
    /// The server could not be reached or did not answer in time.
    Unreachable(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

pub fn exchange(
    base: &BaseUrl,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&[u8]>,
    timeouts: Timeouts,
) -> Result<Reply, TransportError> {
    let unreachable = |what: &str| TransportError::Unreachable(what.to_owned());
    let headers = Fields::new();
    let auth = format!("Bearer {token}");
    headers
        .append("authorization", auth.as_bytes())
        .map_err(|e| unreachable(&format!("bad token header: {e:?}")))?;
    if body.is_some() {
        headers
            .append("content-type", b"application/json")
            .map_err(|e| unreachable(&format!("header: {e:?}")))?;
    }
    let request = OutgoingRequest::new(headers);
    let full_path = format!("{}{path}", base.prefix);
    let set = [
        request.set_method(&method),
        request.set_scheme(Some(if base.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        })),
        request.set_authority(Some(&base.authority)),
        request.set_path_with_query(Some(&full_path)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(unreachable(&format!(
            "cannot build a request to {}{full_path}",
            base.authority
        )));
    }
    let outgoing_body = request
        .body()
        .map_err(|()| unreachable("request body already taken"))?;
    let options = RequestOptions::new();
    // Unsupported options are not fatal: safd bounds every call anyway.
    let _ = options.set_connect_timeout(Some(timeouts.connect.as_nanos() as u64));
    let _ = options.set_first_byte_timeout(Some(timeouts.response.as_nanos() as u64));
    let _ = options.set_between_bytes_timeout(Some(timeouts.response.as_nanos() as u64));
    let pending = outgoing_handler::handle(request, Some(options)).map_err(map_error)?;
    if let Some(bytes) = body {
        let mut stream = outgoing_body
            .write()
            .map_err(|()| unreachable("request body stream already taken"))?;
        let written = stream
            .write_all(bytes)
            .and_then(|()| Write::flush(&mut stream));
        drop(stream);
        if let Err(err) = written {
            // The request itself failed (denied, refused): that answer is
            // the one worth reporting, not the broken body stream.
            pending.subscribe().block();
            if let Some(Ok(Err(code))) = pending.get() {
                return Err(map_error(code));
            }
            return Err(TransportError::Unreachable(format!(
                "sending the request: {err}"
            )));
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(map_error)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(map_error(code)),
        Some(Err(())) | None => return Err(unreachable("no response")),
    };
    let status = response.status();
    let retry_after_secs = response
        .headers()
        .get("retry-after")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    let incoming = response
        .consume()
        .map_err(|()| unreachable("response body already taken"))?;
    let mut body = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|()| unreachable("response body stream already taken"))?;
        stream
            .read_to_end(&mut body)
            .map_err(|e| TransportError::Unreachable(format!("reading the response: {e}")))?;
    }
    drop(IncomingBody::finish(incoming));
    Ok(Reply {
        status,
        retry_after_secs,
        body,
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        assert!(BaseUrl::parse("ftp://x").unwrap_err().contains("http://"));
        assert!(
            BaseUrl::parse("http:///path")
                .unwrap_err()
                .contains("no host")
        );
    }
}
