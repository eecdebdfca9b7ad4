//! Protocol version 1 against the real `safd-mgmt` process.

use crate::support::mgmt::{Body, Server, TOKEN, binary_body, event};
use safd_event_block::delivery;
use serde_json::json;

with_each_body!(
    registering_reports_high_water_and_asks_for_what_is_missing,
    replayed_and_out_of_order_batches_are_stored_once,
    each_agent_token_acts_as_its_agent_only_and_the_console_token_only_reads,
    a_query_answers_the_newest_events_up_to_its_limit,
    a_service_that_is_down_spools_to_the_inbox_and_releases_it,
    a_restart_keeps_events_high_waters_and_sessions,
    queries_filter_by_severity_and_time,
);

fn registering_reports_high_water_and_asks_for_what_is_missing(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let first = server.register("a1", json!({"ems": 5}));
    assert_eq!(first["high_water"], json!({}));
    assert_eq!(first["service_ready"], true);
    assert_eq!(
        first["catch_up"],
        json!({"epoch": 3, "from": {"positions": {"ems": 1}}})
    );

    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    let again = server.register("a1", json!({"ems": 5}));
    assert_eq!(again["high_water"], json!({"ems": 3}));
    assert_eq!(again["catch_up"]["from"], json!({"positions": {"ems": 4}}));
    // Nothing missing: no catch-up request.
    let level = server.register("a1", json!({"ems": 3}));
    assert!(level.get("catch_up").is_none(), "{level}");

    let (_, sessions) = server.get("query/sessions");
    assert_eq!(sessions[0]["agent_id"], "a1");
    assert_eq!(sessions[0]["epoch"], 3);
}

fn replayed_and_out_of_order_batches_are_stored_once(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let answer = server.deliver("a1", "ems", &[(3, "e3"), (4, "e4")]);
    assert_eq!(answer["acknowledged"], json!({"ems": 4}));
    assert_eq!(
        server.register("a1", json!({}))["high_water"],
        json!({"ems": 4})
    );

    // The earlier part arrives later (a catch-up): contiguous from 1 now.
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2")]);
    assert_eq!(
        server.register("a1", json!({}))["high_water"],
        json!({"ems": 4})
    );
    // The same batch again, and an overlapping one.
    let answer = server.deliver("a1", "ems", &[(1, "e1"), (2, "e2")]);
    assert_eq!(answer["acknowledged"], json!({"ems": 2}));
    server.deliver("a1", "ems", &[(4, "e4"), (5, "e5")]);
    assert_eq!(server.stored(), 5);
    assert_eq!(server.events("agent=a1").len(), 5);

    // The same event id under a new seq (a source re-read after a deep
    // catch-up): acknowledged, counted as held, stored once.
    let answer = server.deliver("a1", "ems", &[(6, "e5")]);
    assert_eq!(answer["acknowledged"], json!({"ems": 6}));
    assert_eq!(server.stored(), 5);
    assert_eq!(
        server.register("a1", json!({}))["high_water"],
        json!({"ems": 6})
    );

    // A gap keeps the high-water below it.
    server.deliver("a1", "ems", &[(9, "e9")]);
    assert_eq!(
        server.register("a1", json!({}))["high_water"],
        json!({"ems": 6})
    );

    // Other agents are separate.
    server.deliver("a2", "ems", &[(1, "e1")]);
    assert_eq!(server.stored(), 7);

    // So are other streams of one agent: two sources configured alike
    // (same EMS system and collector) give the first event of each file
    // the same id, and both are stored — also after a restart, when the
    // id index is rebuilt from disk.
    server.deliver("a1", "ems-copy", &[(1, "e1")]);
    assert_eq!(server.stored(), 8);
    server.assert_deliveries_in(body);
    let data = dir.path().to_owned();
    server.kill();
    let server = Server::start_for(body, &data, &[]);
    server.deliver("a1", "ems-copy", &[(2, "e2")]);
    server.deliver("a1", "ems", &[(10, "e10")]);
    assert_eq!(server.stored(), 10);
    // Within one stream, a known id under a new seq is still held once.
    server.deliver("a1", "ems-copy", &[(3, "e1")]);
    assert_eq!(server.stored(), 10);
    assert_eq!(server.events("agent=a1").len(), 9);
}

#[test]
fn bad_events_are_rejected_alone_and_bad_requests_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut bad = event(2, "e2");
    bad["severity"] = json!("urgent");
    let (status, answer) = server.post(
        "events",
        &json!({"agent_id": "a1", "group": "g", "epoch": 1,
                "batches": [{"stream": "ems", "events": [event(1, "e1"), bad, event(3, "e3")]}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["acknowledged"], json!({"ems": 3}));
    assert_eq!(answer["rejected"][0]["seq"], 2);
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("severity `urgent`"),
        "{answer}"
    );
    assert_eq!(server.stored(), 2);
    // A rejected seq is settled: the high-water passes it.
    assert_eq!(
        server.register("a1", json!({}))["high_water"],
        json!({"ems": 3})
    );

    let (status, answer) = server.post_raw("events", "{\"agent_id\": 5}");
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("agent_id"),
        "{answer}"
    );
    let (status, _) = server.post("no-such-endpoint", &json!({}));
    assert_eq!(status, 404);
}

#[test]
fn every_endpoint_wants_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = json!({"agent_id": "a1", "group": "g", "epoch": 1, "batches": []});
    let (status, answer) = server.post_with("events", &body, None);
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("Bearer"),
        "{answer}"
    );
    let (status, _) = server.post_with("events", &body, Some("guess"));
    assert_eq!(status, 401);
    let (status, _) = server.post_with("admin/service", &json!({"ready": false}), Some("guess"));
    assert_eq!(status, 401);
    let (status, _) = server.post_with("events", &body, Some(TOKEN));
    assert_eq!(status, 200);
}

/// `--tokens`: an agent's token registers and delivers as that agent only
/// (never as another, so it cannot raise another's high-water), reads
/// nothing; the console's reads only; each refusal is a counted 403.
fn each_agent_token_acts_as_its_agent_only_and_the_console_token_only_reads(body: Body) {
    const A1: &str = "a1-token-0123456789";
    const CONSOLE: &str = "console-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("console = \"{CONSOLE}\"\n[agents]\na1 = \"{A1}\"\na2 = \"a2-token-0123456789\"\n"),
    )
    .unwrap();
    let server = Server::start_for(
        body,
        &dir.path().join("db"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let register = |agent: &str| {
        json!({"agent_id": agent, "group": "mgmt", "member": "primary", "role": "primary",
               "epoch": 3, "active": true, "stored": {"ems": 9}, "acknowledged": {}})
    };
    let deliver = |agent: &str, seq: u64| {
        json!({"agent_id": agent, "group": "mgmt", "epoch": 3,
               "batches": [{"stream": "ems", "events": [event(seq, &format!("{agent}-{seq}"))]}]})
    };
    let mut refused = 0;
    let mut expect_403 = |(status, answer): (u16, serde_json::Value), says: &str| {
        assert_eq!(status, 403, "{answer}");
        let error = answer["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{error}");
        refused += 1;
    };

    // a1's token: as a1, yes; as a2, no.
    assert_eq!(
        server.post_with("register", &register("a1"), Some(A1)).0,
        200
    );
    assert_eq!(
        server.post_with("events", &deliver("a1", 1), Some(A1)).0,
        200
    );
    expect_403(
        server.post_with("register", &register("a2"), Some(A1)),
        "cannot register or deliver as `a2`",
    );
    expect_403(
        server.post_with("events", &deliver("a2", 1), Some(A1)),
        "cannot register or deliver as `a2`",
    );
    // ... nor read, nor switch the service.
    expect_403(server.get_with("query/events", A1), "agent `a1`'s");
    expect_403(
        server.post_with("admin/service", &json!({"ready": false}), Some(A1)),
        "agent `a1`'s",
    );
    // The console reads, and only reads.
    let (status, events) = server.get_with("query/events?agent=a1", CONSOLE);
    assert_eq!(status, 200, "{events}");
    assert_eq!(events.as_array().unwrap().len(), 1);
    expect_403(
        server.post_with("events", &deliver("a1", 2), Some(CONSOLE)),
        "reads only",
    );
    expect_403(
        server.post_with("admin/service", &json!({"ready": false}), Some(CONSOLE)),
        "reads only",
    );
    assert_eq!(server.get_with("health", CONSOLE).0, 200);
    assert_eq!(server.get_with("health", A1).0, 200);
    // Nothing was written as a2, and every refusal was counted.
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["stored"], 1, "{stats}");
    assert_eq!(stats["counters"]["forbidden"], refused, "{stats}");
    assert!(server.events("agent=a2").is_empty());
    // The operator's token still does everything.
    assert_eq!(server.post("events", &deliver("a2", 1)).0, 200);

    // SIGHUP reads the file again: a3 added, a1 withdrawn.
    const A3: &str = "a3-token-0123456789";
    assert_eq!(
        server.post_with("register", &register("a3"), Some(A3)).0,
        401
    );
    std::fs::write(
        &tokens,
        format!("console = \"{CONSOLE}\"\n[agents]\na3 = \"{A3}\"\n"),
    )
    .unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    crate::support::safd_process::wait_for(
        std::time::Duration::from_secs(20),
        "a3's token accepted after SIGHUP",
        || server.post_with("register", &register("a3"), Some(A3)).0 == 200,
    );
    assert_eq!(
        server.post_with("events", &deliver("a1", 3), Some(A1)).0,
        401
    );
}

/// A query answers its `limit` newest events, whatever the log holds
/// beyond them, across streams.
fn a_query_answers_the_newest_events_up_to_its_limit(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    for batch in 0..40u64 {
        let stream = if batch % 2 == 0 { "ems" } else { "app" };
        let first = batch / 2 * 5 + 1;
        let events: Vec<(u64, String)> = (first..first + 5)
            .map(|seq| (seq, format!("{stream}-{seq}")))
            .collect();
        let events: Vec<(u64, &str)> = events.iter().map(|(s, id)| (*s, id.as_str())).collect();
        server.deliver("a1", stream, &events);
    }
    let got = server.events("limit=12");
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // The last two batches (app 96–100, ems 96–100) and two of the one
    // before, newest first.
    assert_eq!(
        ids,
        [
            "app-100", "app-99", "app-98", "app-97", "app-96", "ems-100", "ems-99", "ems-98",
            "ems-97", "ems-96", "app-95", "app-94"
        ]
    );
    assert_eq!(server.events("stream=ems&limit=3").len(), 3);
    assert_eq!(server.events("limit=10000").len(), 200);
    server.assert_deliveries_in(body);
}

fn a_service_that_is_down_spools_to_the_inbox_and_releases_it(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &["--service-down"]);
    let (_, health) = server.get("health");
    assert_eq!(health["service_ready"], false);
    assert_eq!(server.register("a1", json!({}))["service_ready"], false);

    // Accepted durably (acknowledged) but held back from the service.
    let answer = server.deliver("a1", "ems", &[(1, "e1"), (2, "e2")]);
    assert_eq!(answer["acknowledged"], json!({"ems": 2}));
    assert!(server.events("").is_empty());
    assert!(
        server.get("health").1["detail"]
            .as_str()
            .unwrap()
            .contains("inbox 2")
    );

    // Still held after a restart.
    server.kill();
    let server = Server::start_for(body, dir.path(), &[]);
    assert_eq!(server.get("health").1["service_ready"], false);
    assert!(server.events("").is_empty());

    let (status, health) = server.post("admin/service", &json!({"ready": true}));
    assert_eq!(status, 200);
    assert_eq!(health["service_ready"], true);
    assert_eq!(server.events("").len(), 2);
    assert!(
        server.get("health").1["detail"]
            .as_str()
            .unwrap()
            .contains("inbox 0")
    );
}

fn a_restart_keeps_events_high_waters_and_sessions(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    server.register("a1", json!({"ems": 3}));
    server.deliver("a1", "ems", &[(1, "e1"), (2, "e2"), (3, "e3")]);
    server.kill();

    let server = Server::start_for(body, dir.path(), &[]);
    assert_eq!(server.stored(), 3);
    assert_eq!(server.events("agent=a1&stream=ems").len(), 3);
    let (_, sessions) = server.get("query/sessions");
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(
        server.register("a1", json!({"ems": 3}))["high_water"],
        json!({"ems": 3})
    );
    // Replays after the restart are still recognised, by seq and by id
    // (the id index is rebuilt from disk).
    server.deliver("a1", "ems", &[(2, "e2"), (3, "e3")]);
    server.deliver("a1", "ems", &[(4, "e1")]);
    assert_eq!(server.stored(), 3);
    assert_eq!(
        server.register("a1", json!({"ems": 4}))["high_water"],
        json!({"ems": 4})
    );
    let (_, stats) = server.get("stats");
    assert_eq!(stats["counters"]["duplicates"], 3, "{stats}");
    assert_eq!(stats["streams"][0]["high_water"], 4, "{stats}");
}

fn queries_filter_by_severity_and_time(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let mut info = event(2, "e2");
    info["severity"] = json!("info");
    info["time"] = json!("2024-03-12T00:00:00Z");
    server.post(
        "events",
        &json!({"agent_id": "a1", "group": "g", "epoch": 1,
                "batches": [{"stream": "ems", "events": [event(1, "e1"), info]}]}),
    );
    assert_eq!(server.events("severity=major").len(), 1);
    assert_eq!(server.events("since=2024-03-11T12:00:00Z").len(), 1);
    assert_eq!(server.events("until=2024-03-11T12:00:00Z")[0]["id"], "e1");
    let (status, answer) = server.get("query/events?severity=loud");
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("loud"),
        "{answer}"
    );
}

/// The binary body is checked whole before anything of it is stored: bad
/// framing, bad UTF-8, seqs out of order or a wrong count get a 400 that
/// names the problem and the batch, and nothing of the request is kept.
#[test]
fn a_damaged_binary_body_is_refused_whole_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let request = |events: Vec<serde_json::Value>| {
        json!({"agent_id": "a1", "group": "mgmt", "epoch": 1,
               "batches": [{"stream": "ok", "events": [event(1, "ok1")]},
                           {"stream": "ems", "events": events}]})
    };
    let good = binary_body(&request(vec![event(1, "e1"), event(2, "e2")])).unwrap();
    let post = |bytes: &[u8]| {
        let (status, text) = server.post_typed("events", delivery::CONTENT_TYPE, bytes);
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap().to_owned();
        assert!(error.len() <= 400, "{error}");
        error
    };

    // Cut short.
    assert!(post(&good[..good.len() - 3]).contains("ends in the middle"));
    // Not UTF-8 in an event's text: the second batch is named.
    let mut bad = good.clone();
    let at = bad.windows(3).rposition(|w| w == b"e2)").unwrap();
    bad[at] = 0xff;
    let error = post(&bad);
    assert!(error.contains("batches[1], stream `ems`"), "{error}");
    assert!(error.contains("not valid UTF-8"), "{error}");
    // Seqs out of order (the JSON body allows it; the binary body, built
    // from the queue's blocks, never has it).
    let backwards = request(vec![event(2, "e2"), event(1, "e1")]);
    assert!(binary_body(&backwards).is_none());
    let backwards = one_batch(&[2, 1], 0);
    assert!(post(&backwards).contains("seq 1 follows seq 2"));
    // A count that does not match the block.
    let wrong = one_batch(&[1, 2], 1);
    let error = post(&wrong);
    assert!(error.contains("declares 3 events but holds 2"), "{error}");
    // Not a binary body at all.
    assert!(post(br#"{"agent_id": "a1"}"#).contains("does not start with `SAFD`"));
    // Nothing of any of them was stored, not even the good first batch.
    assert_eq!(server.stored(), 0);
    assert!(
        server.get("stats").1["streams"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The good body is taken, and an event beyond a limit is rejected
    // alone, as in JSON.
    let (status, _) = server.post_typed("events", delivery::CONTENT_TYPE, &good);
    assert_eq!(status, 200);
    assert_eq!(server.stored(), 3);
    let mut long_id = event(3, "x");
    long_id["id"] = json!("i".repeat(2_000));
    let body = binary_body(&request(vec![long_id, event(4, "e4")])).unwrap();
    let (status, text) = server.post_typed("events", delivery::CONTENT_TYPE, &body);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["rejected"][0]["seq"], 3, "{answer}");
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("id is 2000 bytes")
    );
    assert_eq!(answer["acknowledged"], json!({"ok": 1, "ems": 4}));
    assert_eq!(server.stored(), 4);
}

/// A binary body of one batch (agent `a1`, stream `ems`) holding events
/// with `seqs` in that order, its declared count `extra` above the truth.
fn one_batch(seqs: &[u64], extra: u32) -> Vec<u8> {
    let mut block = safd_event_block::BlockWriter::new();
    for seq in seqs {
        block.push_sequenced(*seq, &format!("e{seq}"), 0, 5, [("k", "v")], "text");
    }
    let (count, bytes) = block.finish();
    let mut body = Vec::new();
    delivery::put_header(&mut body, "a1", "mgmt", 1, 1);
    delivery::put_batch(&mut body, "ems", [], count + extra, &bytes);
    body
}

/// A server that lists only JSON refuses the binary body with 415 and
/// says so; register tells an agent which bodies a server reads.
#[test]
fn register_lists_the_bodies_a_server_reads() {
    let dir = tempfile::tempdir().unwrap();
    let both = Server::start(&dir.path().join("both"), &[]);
    assert_eq!(
        both.register("a1", json!({}))["body_formats"],
        json!([delivery::CONTENT_TYPE, "application/json"])
    );
    let json_only = Server::start_for(Body::Json, &dir.path().join("json"), &[]);
    assert_eq!(
        json_only.register("a1", json!({}))["body_formats"],
        json!(["application/json"])
    );
    let body = binary_body(&json!({"agent_id": "a1", "group": "mgmt", "epoch": 1,
        "batches": [{"stream": "ems", "events": [event(1, "e1")]}]}))
    .unwrap();
    let (status, text) = json_only.post_typed("events", delivery::CONTENT_TYPE, &body);
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("--body-formats json"), "{text}");
    assert_eq!(json_only.stored(), 0);
}
