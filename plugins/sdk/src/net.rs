//! Waiting for sockets: std's networking has blocking reads on one socket
//! and non-blocking ones, but no way to sleep until any of several sockets
//! has something to read. A plugin that serves many peers from one poll
//! would otherwise sleep and look again, and a guest's sleep ends on the
//! host's timer, which counts whole milliseconds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Wait until one of `sockets` can be read (data, a peer's close, a
/// connection to accept on a listener), or `timeout` has passed; true when
/// one can. The wait wakes when the socket does, not on a timer; `timeout`
/// is counted in whole milliseconds, rounded up.
pub fn wait_readable<'a>(
    sockets: impl IntoIterator<Item = BorrowedFd<'a>>,
    timeout: Duration,
) -> io::Result<bool> {
    let mut fds: Vec<libc::pollfd> = sockets
        .into_iter()
        .map(|socket| libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = timeout.as_micros().div_ceil(1000);
    let millis = libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()`
    // pollfd entries for the whole call, and every fd in it is borrowed
    // from a socket that outlives the call.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    match ready {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn wakes_when_a_peer_writes_and_times_out_when_none_does() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // A pending connection makes the listener readable.
        assert!(wait_readable([listener.as_fd()], Duration::from_secs(5)).unwrap());
        let (server, _) = listener.accept().unwrap();

        let started = Instant::now();
        assert!(!wait_readable([server.as_fd()], Duration::from_millis(20)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(20));

        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            client.write_all(b"x").unwrap();
            client
        });
        let started = Instant::now();
        assert!(
            wait_readable([listener.as_fd(), server.as_fd()], Duration::from_secs(10)).unwrap()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(writer.join().unwrap());
    }
}
