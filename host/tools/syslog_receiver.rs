//! A syslog receiver for the benchmarks: listens on a loopback port and
//! counts the lines safd's syslog plugin writes over every connection it
//! opens, each line by its number (so a loss and a duplicate do not cancel
//! out), and notes when the last missing one came. safd's own events
//! (stream `safd`) are not counted.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a line's number is found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineKey {
    /// The event id ends in `:OFFSET` or `/OFFSET`, the byte offset of a
    /// line of `line_bytes` bytes (file-tail's and net-in's ids).
    IdOffset { line_bytes: u64 },
    /// The body holds `request NNNNNNNNN` (nine digits): the number.
    RequestNumber,
}

pub(crate) struct Receiver {
    pub(crate) address: SocketAddr,
    /// Lines received, repeats included.
    pub(crate) lines: Arc<AtomicU64>,
    /// Distinct lines received.
    pub(crate) distinct: Arc<AtomicU64>,
    completed: Arc<Mutex<Option<Instant>>>,
}

/// What the receiving threads share.
struct Tally {
    expected: u64,
    key: LineKey,
    /// One bit per line.
    seen: Vec<AtomicU64>,
    lines: Arc<AtomicU64>,
    distinct: Arc<AtomicU64>,
    completed: Arc<Mutex<Option<Instant>>>,
}

impl Tally {
    fn new(expected: u64, key: LineKey) -> Self {
        Self {
            expected,
            key,
            seen: (0..expected.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            lines: Arc::default(),
            distinct: Arc::default(),
            completed: Arc::default(),
        }
    }

    /// Count line number `line`.
    fn line(&self, line: u64) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        let Some(word) = usize::try_from(line / 64)
            .ok()
            .and_then(|w| self.seen.get(w))
        else {
            return;
        };
        let bit = 1u64 << (line % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0
            && self.distinct.fetch_add(1, Ordering::Relaxed) + 1 == self.expected
            && let Ok(mut done) = self.completed.lock()
        {
            *done = Some(Instant::now());
        }
    }
}

impl Receiver {
    pub(crate) fn start(expected: u64, key: LineKey) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let tally = Arc::new(Tally::new(expected, key));
        let receiver = Self {
            address,
            lines: tally.lines.clone(),
            distinct: tally.distinct.clone(),
            completed: tally.completed.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let tally = tally.clone();
                std::thread::spawn(move || count_lines(&mut stream, &tally));
            }
        });
        Ok(receiver)
    }

    pub(crate) fn completed(&self) -> Option<Instant> {
        self.completed.lock().ok().and_then(|d| *d)
    }

    /// The group of a safd configuration that delivers to this receiver:
    /// the syslog plugin over plain TCP, newline framing, large batches.
    pub(crate) fn group_config(&self) -> String {
        format!(
            r#"[groups.siem]
mode = "failover"
plugin = "syslog"
config = {{ transport = "tcp", framing = "newline" }}
grants = {{ tcp = ["{receiver}"] }}
members = [{{ name = "receiver", address = "{receiver}" }}]
"#,
            receiver = self.address
        )
    }
}

/// The head of a benchmark's safd configuration: agent, queue directory,
/// plugin directory, an admin API on a free port.
pub(crate) fn config_head(queue: &std::path::Path, plugins: &std::path::Path) -> String {
    format!(
        r#"agent_id = "bench-safd"
data_dir = "{queue}"
plugin_dir = "{plugins}"

[admin]
listen = "127.0.0.1:0"

"#,
        queue = queue.display(),
        plugins = plugins.display(),
    )
}

/// The start of a syslog line from one of safd's own events (stream
/// `safd`), which the receiver does not count.
const OWN_EVENT: &[u8] = b"[safd@32473 id=\"safd:";
/// Where the event id starts in the structured data.
const ID: &[u8] = b" id=\"";
/// What precedes the number in a `RequestNumber` body.
const REQUEST: &[u8] = b"request ";
/// How much of a line is kept to find its number: its start holds the id;
/// a body comes after the attributes, well within this.
const HEAD: usize = 4096;

/// The offset at the end of the event id in `head` (after its last `:`
/// or `/`).
fn id_offset(head: &[u8], id: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let start = id.find(head)? + ID.len();
    let rest = head.get(start..)?;
    let end = memchr::memchr(b'"', rest)?;
    let value = rest.get(..end)?;
    let separator = memchr::memrchr2(b':', b'/', value)?;
    std::str::from_utf8(value.get(separator + 1..)?)
        .ok()?
        .parse()
        .ok()
}

/// The nine digits after the last `request ` in `line`.
fn request_number(line: &[u8], request: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let at = request.find_iter(line).last()? + REQUEST.len();
    std::str::from_utf8(line.get(at..at + 9)?)
        .ok()?
        .parse()
        .ok()
}

fn count_lines(stream: &mut impl Read, tally: &Tally) {
    let mut buf = vec![0u8; 1 << 20];
    // The start of a line cut by the end of a read.
    let mut carry: Vec<u8> = Vec::with_capacity(HEAD);
    // SIMD searches: the receiver shares the machine with the safd it
    // measures, so it must cost as little CPU as it can.
    let own_event = memchr::memmem::Finder::new(OWN_EVENT);
    let id = memchr::memmem::Finder::new(ID);
    let request = memchr::memmem::Finder::new(REQUEST);
    let count = |line: &[u8]| {
        if own_event.find(line).is_some() {
            return;
        }
        let number = match tally.key {
            LineKey::IdOffset { line_bytes } => id_offset(line, &id).map(|o| o / line_bytes),
            LineKey::RequestNumber => request_number(line, &request),
        };
        if let Some(number) = number {
            tally.line(number);
        }
    };
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            if carry.is_empty() {
                count(&chunk[..end.min(HEAD)]);
            } else {
                let take = end.min(HEAD.saturating_sub(carry.len()));
                carry.extend_from_slice(&chunk[..take]);
                count(&carry);
                carry.clear();
            }
            chunk = &chunk[end + 1..];
        }
        let take = chunk.len().min(HEAD.saturating_sub(carry.len()));
        carry.extend_from_slice(&chunk[..take]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_once_by_their_number() {
        let head = b"<134>1 2026-11-22T10:00:00Z web01 safd - - [safd@32473 \
                     id=\"000000000000abcd00000000000000ff:2560\" stream=\"app\" seq=\"11\"";
        let finder = memchr::memmem::Finder::new(ID);
        assert_eq!(id_offset(head, &finder), Some(2560));
        assert_eq!(
            id_offset(b" id=\"127.0.0.1:4000/1764/512\"", &finder),
            Some(512)
        );
        assert_eq!(id_offset(b"no id here", &finder), None);
        let request = memchr::memmem::Finder::new(REQUEST);
        assert_eq!(
            request_number(b"x request 1 - request 000000042 GET", &request),
            Some(42)
        );

        let tally = Tally::new(3, LineKey::IdOffset { line_bytes: 256 });
        for offset in [0, 256, 256, 0] {
            tally.line(offset / 256);
        }
        // A repeat is counted as received, not as another line: the run
        // is not complete while line 3 is missing.
        assert_eq!(tally.lines.load(Ordering::Relaxed), 4);
        assert_eq!(tally.distinct.load(Ordering::Relaxed), 2);
        assert!(tally.completed.lock().unwrap().is_none());
        tally.line(2);
        assert!(tally.completed.lock().unwrap().is_some());
    }
}
