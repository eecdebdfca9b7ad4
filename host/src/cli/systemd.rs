//! Telling systemd how safd is doing (`Type=notify`): `READY=1` once the
//! queue is open and the sources and groups run, `RELOADING=1` … `READY=1`
//! around a reload, `STOPPING=1` at shutdown, each with a `STATUS=` line
//! for `systemctl status`. (`Type=notify-reload` would also want the
//! monotonic time with `RELOADING=1`; the unit uses `Type=notify` with
//! `ExecReload=safd reload`, which needs none.) The protocol is one datagram to the socket in
//! `$NOTIFY_SOCKET` (`sd_notify(3)`); without that variable (not under
//! systemd) nothing is sent. A send that fails is logged, never fatal:
//! systemd then says the start timed out, which is the right outcome.

use std::os::unix::net::UnixDatagram;

/// Send `state` (newline-separated `KEY=value` lines) to systemd, if safd
/// runs under it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&path, state) {
        tracing::warn!(
            "cannot tell systemd `{}`: {err}",
            state.lines().next().unwrap_or_default()
        );
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    match bytes.strip_prefix(b"@") {
        // An abstract socket (`@name`): Linux only.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
    }
}
