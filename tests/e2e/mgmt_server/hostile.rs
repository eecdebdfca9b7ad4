//! Hostile input against the real `safd-mgmt` process: names that break
//! the rules, malformed and oversized requests, and requests that ask the
//! server to hold more than a client may. Every case checks the answer,
//! that the server lives on, that what it stored before is intact and that
//! a normal delivery still works; the stream cases check its memory.

use crate::support::mgmt::{Body, Server, binary_body, event};
use safd_event_block::delivery;
use serde_json::{Value, json};

with_each_body!(
    names_that_break_the_rules_are_refused_naming_the_field_and_never_alias_another,
    oversized_fields_reject_their_event_alone_with_a_short_reason,
    a_client_cannot_make_the_server_hold_more_streams_than_its_limits,
    a_stream_cannot_be_made_to_hold_unbounded_gaps,
);

/// An error answer is short whatever the request held.
const MAX_ERROR_BYTES: usize = 1_024;

fn deliver_body(agent: &str, group: &str, stream: &str, events: Vec<Value>) -> Value {
    json!({"agent_id": agent, "group": group, "epoch": 1,
           "batches": [{"stream": stream, "events": events}]})
}

fn register_body(agent: &str, member: &str, stored: Value) -> Value {
    json!({"agent_id": agent, "group": "mgmt", "member": member, "role": "primary",
           "epoch": 1, "active": true, "stored": stored, "acknowledged": {}})
}

/// Resident memory the server stays under through every hostile case
/// (docs/protocol.md, Names and limits).
const RSS_BOUND_KIB: u64 = 256 << 10;

/// The server lives, stays within its memory bound, still holds the three
/// events of `a1`/`ems` delivered first, and takes a normal delivery.
fn still_serves(server: &mut Server, next_seq: u64) {
    assert!(server.is_running(), "safd-mgmt died");
    let rss = server.rss_kib();
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB");
    let held = server.events("agent=a1&stream=ems");
    let mut seqs: Vec<u64> = held.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs[..3], [1, 2, 3], "{held:?}");
    let id = format!("next-{next_seq}");
    let answer = server.deliver("a1", "ems", &[(next_seq, &id)]);
    assert_eq!(answer["acknowledged"], json!({"ems": next_seq}), "{answer}");
}

fn error_of(status: u16, answer: &Value) -> String {
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap().to_owned();
    assert!(error.len() <= MAX_ERROR_BYTES, "{} bytes", error.len());
    error
}

fn names_that_break_the_rules_are_refused_naming_the_field_and_never_alias_another(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let long = "n".repeat(129);
    let bad_names = [
        "a\u{0}b",
        "a\nb",
        "a\rb",
        "\u{1b}[31mred",
        "a\u{7f}",
        "a\u{85}",
        "evil\u{202e}txt",
        "zero\u{200b}width",
        "",
        " padded",
        "padded ",
        &long,
    ];
    for bad in bad_names {
        let good = || event(1, "x");
        for (field, body) in [
            ("agent_id", deliver_body(bad, "g", "s", vec![good()])),
            ("group", deliver_body("a9", bad, "s", vec![good()])),
            (
                "batches[0].stream",
                deliver_body("a9", "g", bad, vec![good()]),
            ),
        ] {
            let (status, answer) = server.post("events", &body);
            let error = error_of(status, &answer);
            assert!(error.starts_with(field), "{bad:?}: {error}");
            assert!(!error.chars().any(char::is_control), "{error:?}");
        }
        for (field, body) in [
            ("agent_id", register_body(bad, "primary", json!({}))),
            ("member", register_body("a9", bad, json!({}))),
            (
                "stored stream",
                register_body("a9", "primary", json!({ bad: 1 })),
            ),
        ] {
            let (status, answer) = server.post("register", &body);
            let error = error_of(status, &answer);
            assert!(error.starts_with(field), "{bad:?}: {error}");
        }
    }
    // Nothing of it was stored, under any name.
    let (_, stats) = server.get("stats");
    assert_eq!(stats["streams"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["counters"]["stored"], 3, "{stats}");

    // The report: agent "a\0b" stream "c", a restart, then agent "a"
    // stream "b". The first is refused; the second is stored as itself.
    let (status, _) = server.post(
        "events",
        &deliver_body("a\u{0}b", "g", "c", vec![event(1, "x1"), event(2, "x2")]),
    );
    assert_eq!(status, 400);
    server.kill();
    let mut server = Server::start_for(body, dir.path(), &[]);
    let answer = server.deliver("a", "b", &[(1, "b1"), (2, "b2"), (3, "b3")]);
    assert_eq!(answer["acknowledged"], json!({"b": 3}));
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["stored"], 6, "{stats}");
    assert_eq!(stats["counters"]["duplicates"], 0, "{stats}");
    let ids: Vec<Value> = server
        .events("agent=a&stream=b")
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!("b3"), json!("b2"), json!("b1")]);
    still_serves(&mut server, 4);
}

#[test]
fn malformed_requests_get_a_short_400_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let good = deliver_body("a1", "g", "ems", vec![event(9, "e9")]);
    // Every field of a delivery with the wrong type.
    let wrong_types = [
        ("agent_id", json!(5)),
        ("group", json!([])),
        ("epoch", json!("one")),
        ("batches", json!({})),
    ];
    for (field, value) in wrong_types {
        let mut body = good.clone();
        body[field] = value;
        let (status, answer) = server.post("events", &body);
        let error = error_of(status, &answer);
        assert!(error.contains(&format!("`{field}`")), "{error}");
    }
    let event_fields = [
        ("seq", json!(-1)),
        ("id", json!(5)),
        ("time", json!(5)),
        ("severity", json!(null)),
        ("attributes", json!("x")),
        ("body", json!({"deep": 1})),
    ];
    for (field, value) in event_fields {
        let mut body = good.clone();
        body["batches"][0]["events"][0][field] = value;
        let (status, answer) = server.post("events", &body);
        let error = error_of(status, &answer);
        assert!(
            error.contains(&format!("batches[0].events[0].{field}")),
            "{error}"
        );
    }
    let mut body = good.clone();
    body["batches"][0]["stream"] = json!(7);
    let (status, answer) = server.post("events", &body);
    let error = error_of(status, &answer);
    assert!(error.contains("batches[0].stream"), "{error}");
    // And every field of a registration.
    let register = register_body("a1", "primary", json!({"ems": 3}));
    for (field, value) in [
        ("agent_id", json!(null)),
        ("group", json!(1.5)),
        ("member", json!(["m"])),
        ("role", json!({})),
        ("epoch", json!(-3)),
        ("active", json!("yes")),
        ("stored", json!([1, 2])),
        ("acknowledged", json!({"ems": "x"})),
    ] {
        let mut body = register.clone();
        body[field] = value;
        let (status, answer) = server.post("register", &body);
        let error = error_of(status, &answer);
        assert!(error.contains(&format!("`{field}")), "{error}");
    }
    let many: serde_json::Map<String, Value> =
        (0..10_001).map(|i| (format!("s{i}"), json!(1))).collect();
    let (status, answer) = server.post(
        "register",
        &register_body("a1", "primary", Value::Object(many)),
    );
    assert!(error_of(status, &answer).contains("names 10001 streams"));
    // The query API quotes too.
    let (status, answer) = server.get(&format!("query/events?severity={}", "s".repeat(30_000)));
    error_of(status, &answer);

    // A 10 MB field is quoted, not echoed.
    let huge = "h".repeat(10 << 20);
    for body in [
        json!({"agent_id": huge, "group": "g", "epoch": 1, "batches": []}),
        json!({"agent_id": "a1", "group": "g", "epoch": {"x": huge}, "batches": []}),
        json!({"agent_id": "a1", "group": "g", "epoch": 1, "batches": [], huge.clone(): 1}),
    ] {
        let (status, answer) = server.post("events", &body);
        error_of(status, &answer);
    }

    // Not JSON, not UTF-8, nested too deep, cut short, empty.
    let mut nested = "[".repeat(100_000);
    nested.push_str(&"]".repeat(100_000));
    let raw: [&[u8]; 5] = [
        b"{\"agent_id\": \"a\xff\xfe\", \"group\": \"g\", \"epoch\": 1, \"batches\": []}",
        nested.as_bytes(),
        b"{\"agent_id\": \"a1\", \"gro",
        b"",
        b"\x00\x01\x02",
    ];
    for body in raw {
        let (status, text) = server.post_bytes("events", body);
        assert_eq!(status, 400, "{text}");
        assert!(text.len() <= MAX_ERROR_BYTES, "{} bytes", text.len());
    }
    // Over the body limit: 413, which safd answers by splitting.
    let (status, _) = server.post_bytes("events", &vec![b' '; (16 << 20) + 1]);
    assert_eq!(status, 413);
    still_serves(&mut server, 4);
}

fn oversized_fields_reject_their_event_alone_with_a_short_reason(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_for(body, dir.path(), &[]);
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let mut long_id = event(5, "x");
    long_id["id"] = json!("i".repeat(1_025));
    let mut long_key = event(6, "e6");
    long_key["attributes"] = json!([["k".repeat(257), "v"]]);
    let mut long_value = event(7, "e7");
    long_value["attributes"] = json!([["k", "v".repeat((64 << 10) + 1)]]);
    let mut many = event(8, "e8");
    many["attributes"] = json!(
        (0..257)
            .map(|i| [format!("k{i}"), "v".to_owned()])
            .collect::<Vec<_>>()
    );
    let mut long_body = event(9, "e9");
    long_body["body"] = json!("b".repeat((2 << 20) + 1));
    // A severity is a number in the binary body: only JSON can make it
    // long.
    let mut long_severity = event(10, "e10");
    if body == Body::Json {
        long_severity["severity"] = json!("s".repeat(1 << 20));
    }
    let events = vec![
        event(4, "e4"),
        long_id,
        long_key,
        long_value,
        many,
        long_body,
        long_severity,
        event(11, "e11"),
    ];
    let (status, answer) = server.post("events", &deliver_body("a1", "g", "ems", events));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acknowledged"], json!({"ems": 11}));
    let rejected = answer["rejected"].as_array().unwrap();
    let seqs: Vec<u64> = rejected
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let mut expected_seqs = vec![5, 6, 7, 8, 9];
    if body == Body::Json {
        expected_seqs.push(10);
    }
    assert_eq!(seqs, expected_seqs, "{answer}");
    for (rejection, expected) in rejected.iter().zip([
        "id is 1025 bytes long",
        "an attribute key is 257 bytes long",
        "attribute `k` is 65537 bytes long",
        "257 attributes",
        "body is 2097153 bytes long",
        "(1048576 bytes)",
    ]) {
        let reason = rejection["reason"].as_str().unwrap();
        assert!(reason.contains(expected), "{reason}");
        assert!(reason.len() <= 300, "{reason}");
    }
    assert_eq!(server.stored(), if body == Body::Json { 5 } else { 6 });
    server.assert_deliveries_in(body);
    still_serves(&mut server, 12);
}

/// One small event in each of `count` streams (100 000 make 11 MB).
fn many_streams(agent: &str, count: usize, prefix: &str) -> Value {
    let small = json!({"seq": 1, "id": "x", "time": "2024-03-11T01:17:10Z",
                       "severity": "info", "body": ""});
    let batches: Vec<Value> = (0..count)
        .map(|i| json!({"stream": format!("{prefix}{i}"), "events": [small]}))
        .collect();
    json!({"agent_id": agent, "group": "g", "epoch": 1, "batches": batches})
}

/// The report: one 15 MB delivery covering 100 000 new streams added
/// ~1.3 GB to the server, six of them 6.2 GB.
fn a_client_cannot_make_the_server_hold_more_streams_than_its_limits(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_for(body, dir.path(), &[]);
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let before = server.rss_kib();
    for round in 0..6 {
        let request = many_streams("a2", 100_000, &format!("r{round}-"));
        let (status, answer) = match body {
            Body::Json => server.post_bytes("events", request.to_string().as_bytes()),
            Body::Binary => {
                let bytes = binary_body(&request).unwrap();
                server.post_typed("events", delivery::CONTENT_TYPE, &bytes)
            }
        };
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        // The first 100 new streams are opened; the others wait for the
        // agent's next delivery.
        let acknowledged = answer["acknowledged"].as_object().unwrap();
        assert_eq!(acknowledged.len(), 100);
        assert_eq!(answer["rejected"], json!([]));
    }
    let after = server.rss_kib();
    eprintln!("RSS {before} KiB → {after} KiB after six 100 000-stream deliveries");
    assert!(
        after < 256 << 10,
        "RSS {after} KiB (was {before} KiB before the deliveries)"
    );
    let (_, stats) = server.get("stats");
    assert_eq!(stats["streams"].as_array().unwrap().len(), 601);
    server.assert_deliveries_in(body);
    still_serves(&mut server, 4);
    server.kill();

    // The per-agent and per-server limits reject, naming the flag.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_for(
        body,
        dir.path(),
        &["--max-streams-per-agent", "5", "--max-streams", "9"],
    );
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let (_, answer) = server.post("events", &many_streams("a2", 7, "s"));
    assert_eq!(answer["acknowledged"].as_object().unwrap().len(), 5);
    let reasons: Vec<&str> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0].contains("--max-streams-per-agent"),
        "{reasons:?}"
    );
    let (_, answer) = server.post("events", &many_streams("a3", 7, "s"));
    assert_eq!(answer["acknowledged"].as_object().unwrap().len(), 3);
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--max-streams)"),
        "{answer}"
    );
    // Known streams still take events; the refused ones were not kept.
    let (_, stats) = server.get("stats");
    assert_eq!(stats["streams"].as_array().unwrap().len(), 9);
    still_serves(&mut server, 4);
}

/// What one stream costs, measured: the figure docs/protocol.md states.
/// Streams are opened as a client at the default limits can: 100 per
/// delivery.
#[test]
fn memory_per_stream_stays_within_its_stated_bound() {
    const DELIVERIES: usize = 400;
    const BOUND_BYTES: u64 = 2_048;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-streams-per-agent", "10000"]);
    let open = |agent: &str, round: usize| {
        let (status, answer) =
            server.post("events", &many_streams(agent, 100, &format!("r{round}-")));
        assert_eq!(status, 200);
        assert_eq!(answer["acknowledged"].as_object().unwrap().len(), 100);
    };
    // Warm up the allocator and the index's cache with the same shape.
    for round in 0..100 {
        open("warm", round);
    }
    let before = server.rss_kib();
    for round in 0..DELIVERIES {
        open(&format!("a{}", round / 50), round);
    }
    let after = server.rss_kib();
    let streams = DELIVERIES as u64 * 100;
    let per_stream = (after.saturating_sub(before) << 10) / streams;
    eprintln!("{per_stream} bytes per stream ({before} KiB → {after} KiB for {streams} streams)");
    assert!(
        per_stream <= BOUND_BYTES,
        "{per_stream} bytes per stream; docs/protocol.md states at most {BOUND_BYTES}"
    );
}

fn a_stream_cannot_be_made_to_hold_unbounded_gaps(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_for(body, dir.path(), &[]);
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    // Every other seq: each opens a run of its own.
    let events: Vec<Value> = (1..=1_100u64)
        .map(|i| event(2 * i, &format!("g{i}")))
        .collect();
    let (status, answer) = server.post("events", &deliver_body("a1", "g", "gappy", events));
    assert_eq!(status, 200);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1_100 - 1_024);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("deliver the missing seqs first"),
        "{answer}"
    );
    // Filling a gap still works: it joins two runs.
    let answer = server.deliver("a1", "gappy", &[(3, "fill")]);
    assert_eq!(answer["rejected"], json!([]));
    still_serves(&mut server, 4);
}

/// A client that opens connections and says nothing, stops halfway
/// through its headers or its body, or opens more connections than the
/// server serves, holds nothing for long: each is cut at its limit, and
/// the server keeps answering others.
#[test]
fn slow_and_silent_clients_are_cut_at_their_limits() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            // Two seconds: the fourth connection below must come while
            // the three silent ones still hold their places, on a busy
            // machine too.
            "--header-timeout-secs",
            "2",
            "--request-timeout-secs",
            "1",
            "--max-connections",
            "3",
        ],
    );
    let address = server.authority();
    // How long until the server closes `stream` (None: not within 10 s),
    // and what it said first.
    let closed_after = |mut stream: TcpStream| -> (Option<Duration>, String) {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    return (
                        Some(started.elapsed()),
                        String::from_utf8_lossy(&answer).into(),
                    );
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (
                        Some(started.elapsed()),
                        String::from_utf8_lossy(&answer).into(),
                    );
                }
                Err(_) => return (None, String::from_utf8_lossy(&answer).into()),
            }
        }
    };

    // Headers begun and never finished: closed at the header timeout.
    let mut half = TcpStream::connect(&address).unwrap();
    half.write_all(b"GET /safd/v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (after, _) = closed_after(half);
    let after = after.expect("a half-sent header was never cut");
    assert!(after < Duration::from_secs(5), "cut after {after:?}");

    // A body that stops: 408 at the request timeout.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(
        format!(
            "POST /safd/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"agent_id\"",
            crate::support::mgmt::TOKEN
        )
        .as_bytes(),
    )
    .unwrap();
    let (after, said) = closed_after(slow);
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(after.expect("never answered") < Duration::from_secs(5));

    // Three silent connections take every place: a fourth is closed at
    // once; once they are gone, requests are served again. (A server of
    // its own, with a header timeout longer than any pause of a busy
    // machine: the places must stay taken.)
    drop(server);
    let server = Server::start(
        &dir.path().join("full-house"),
        &["--header-timeout-secs", "60", "--max-connections", "3"],
    );
    let address = server.authority();
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Each of them served (holding its place) before the fourth comes.
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(&address).unwrap();
    let _ = fourth.write_all(b"GET /safd/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let (after, said) = closed_after(fourth);
    assert!(said.is_empty(), "{said}");
    assert!(after.expect("the fourth was served") < Duration::from_secs(5));
    drop(silent);
    let mut served = false;
    crate::support::safd_process::wait_for(Duration::from_secs(30), "a place again", || {
        served = ureq::get(&server.url("health"))
            .header(
                "Authorization",
                &format!("Bearer {}", crate::support::mgmt::TOKEN),
            )
            .call()
            .is_ok_and(|response| response.status() == 200);
        served
    });
    assert!(served);
}
