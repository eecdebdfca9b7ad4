//! The `mgmt-http` plugin, run by safd's real runtime, against the real
//! `safd-mgmt` process on loopback.

use crate::support::mgmt::{Body, Server, TOKEN};
use crate::support::plugins::{plugin_path, runtime};
use safd_connector::{
    Attribute, ConnectorError, DestinationConnector, DestinationSession, Endpoint, Event,
    MemberRole, SequencedEvent, SessionError, SessionInfo, Severity, StreamBatch, StreamPosition,
};
use safd_runtime::Grants;

// The body follows the server: `--body-formats json` gets JSON, a server
// that lists the binary body gets it (each test checks which arrived).
with_each_body!(async:
    events_are_acknowledged_after_the_server_stored_them,
    any_text_and_time_arrive_unchanged,
    one_bad_event_is_rejected_and_the_rest_acknowledged,
    a_server_whose_service_is_down_is_reported_not_ready,
);

async fn open(server: &Server, token: &str, grant: Option<String>) -> Box<dyn DestinationSession> {
    let runtime = runtime();
    let plugin = runtime.load(&plugin_path("mgmt-http")).unwrap();
    let grants = Grants {
        http: grant.into_iter().collect(),
        ..Grants::default()
    };
    let config = serde_json::json!({"token": token, "timeout_ms": 3000}).to_string();
    let destination = plugin.destination("mgmt", config, &grants).await.unwrap();
    destination
        .open(Endpoint {
            member: "primary".into(),
            address: server.base.clone(),
            role: MemberRole::Primary,
        })
        .await
        .unwrap()
}

fn info(stored: u64) -> SessionInfo {
    SessionInfo {
        agent_id: "prod1-safd".into(),
        group: "mgmt".into(),
        epoch: 7,
        active: true,
        stored: vec![StreamPosition {
            stream: "ems".into(),
            seq: stored,
        }],
        acknowledged: Vec::new(),
    }
}

fn event(seq: u64, id: &str) -> SequencedEvent {
    SequencedEvent {
        seq,
        event: Event {
            id: id.into(),
            time: 1_710_119_830_002_311 + seq as i64,
            severity: Severity::Major,
            attributes: vec![
                Attribute::new("system", "\\PROD1"),
                Attribute::new("subsystem", "EXPAND"),
            ],
            body: format!("LDEV 123 \"$LHNY1\": LINE NOT READY\n\tcontinued é #{seq}"),
        },
    }
}

fn batch(events: Vec<SequencedEvent>) -> [StreamBatch; 1] {
    [StreamBatch {
        stream: "ems".into(),
        events: events.into(),
        left_out: Vec::new(),
    }]
}

async fn events_are_acknowledged_after_the_server_stored_them(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let mut session = open(&server, TOKEN, Some(server.authority())).await;

    let registration = session.register(&info(3)).await.unwrap();
    assert!(registration.service_ready);
    assert!(registration.high_water.is_empty());
    let catch_up = registration.catch_up.unwrap();
    assert_eq!(catch_up.epoch, 7);

    let report = session
        .deliver(&batch(
            (1..=3).map(|n| event(n, &format!("e{n}"))).collect(),
        ))
        .await
        .unwrap();
    assert_eq!(
        report.acknowledged,
        [StreamPosition {
            stream: "ems".into(),
            seq: 3
        }]
    );
    assert!(report.rejected.is_empty());

    // What the server stored is exactly what was sent.
    let stored = server.events("agent=prod1-safd");
    assert_eq!(stored.len(), 3);
    let first = stored.iter().find(|e| e["seq"] == 1).unwrap();
    assert_eq!(first["id"], "e1");
    assert_eq!(first["time"], 1_710_119_830_002_312i64);
    assert_eq!(first["severity"], "major");
    assert_eq!(
        first["attributes"],
        serde_json::json!([["system", "\\PROD1"], ["subsystem", "EXPAND"]])
    );
    assert_eq!(
        first["body"],
        "LDEV 123 \"$LHNY1\": LINE NOT READY\n\tcontinued é #1"
    );

    // Registering again reports the high-water.
    let registration = session.register(&info(3)).await.unwrap();
    assert_eq!(registration.high_water[0].seq, 3);
    assert!(registration.catch_up.is_none());
    assert!(session.probe().await.unwrap().service_ready);
    server.assert_deliveries_in(body);
}

/// The plugin writes JSON by hand for speed: every character that needs
/// escaping, on either side of the fast eight-byte scan, and times before
/// 1970 and far ahead arrive exactly as sent.
async fn any_text_and_time_arrive_unchanged(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let mut session = open(&server, TOKEN, Some(server.authority())).await;
    session.register(&info(0)).await.unwrap();
    let control: String = (0u8..0x20).map(char::from).collect();
    let texts = [
        String::new(),
        "plain ASCII text longer than one eight-byte word".to_owned(),
        "\"quoted\" \\path\\ \u{7f} é 漢字 🚀".to_owned(),
        format!("{control}after"),
        format!("0123456{control}"),
        "abcdefgh\"".to_owned(),
        "abcdefg\\".to_owned(),
    ];
    let times = [
        0,
        -1,
        -86_400_000_001,
        951_782_400_000_000,     // 2000-02-29
        253_402_200_000_999_999, // 9999-12-31T21:46:40.999999, near the top of the range
    ];
    let events: Vec<SequencedEvent> = texts
        .iter()
        .zip(times.iter().cycle())
        .enumerate()
        .map(|(n, (text, &time))| {
            let seq = n as u64 + 1;
            SequencedEvent {
                seq,
                event: Event {
                    id: format!("id {text}"),
                    time,
                    severity: Severity::Info,
                    attributes: vec![Attribute::new(text.as_str(), text.as_str())],
                    body: text.clone(),
                },
            }
        })
        .collect();
    let report = session.deliver(&batch(events.clone())).await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let stored = server.events("agent=prod1-safd&limit=100");
    assert_eq!(stored.len(), events.len());
    for sent in &events {
        let got = stored.iter().find(|e| e["seq"] == sent.seq).unwrap();
        assert_eq!(got["body"], sent.event.body.as_str());
        assert_eq!(got["id"], sent.event.id.as_str());
        assert_eq!(got["time"], sent.event.time, "seq {}", sent.seq);
        assert_eq!(
            got["attributes"],
            serde_json::json!([[sent.event.body, sent.event.body]])
        );
    }
    server.assert_deliveries_in(body);
}

async fn one_bad_event_is_rejected_and_the_rest_acknowledged(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &[]);
    let mut session = open(&server, TOKEN, Some(server.authority())).await;
    session.register(&info(3)).await.unwrap();
    let report = session
        .deliver(&batch(vec![event(1, "e1"), event(2, ""), event(3, "e3")]))
        .await
        .unwrap();
    assert_eq!(report.acknowledged[0].seq, 3);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].seq, 2);
    assert!(report.rejected[0].reason.contains("id is empty"));
    assert_eq!(server.stored(), 2);
    server.assert_deliveries_in(body);
}

async fn a_server_whose_service_is_down_is_reported_not_ready(body: Body) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_for(body, dir.path(), &["--service-down"]);
    let mut session = open(&server, TOKEN, Some(server.authority())).await;
    let registration = session.register(&info(1)).await.unwrap();
    assert!(!registration.service_ready);
    let health = session.probe().await.unwrap();
    assert!(!health.service_ready);
    assert!(health.detail.contains("inbox"), "{}", health.detail);
    // It still accepts into its durable inbox.
    let report = session.deliver(&batch(vec![event(1, "e1")])).await.unwrap();
    assert_eq!(report.acknowledged[0].seq, 1);
    server.assert_deliveries_in(body);
}

#[tokio::test]
async fn a_killed_server_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let grant = server.authority();
    let mut session = open(&server, TOKEN, Some(grant)).await;
    session.register(&info(1)).await.unwrap();
    let base = server.base.clone();
    server.kill();
    let err = session
        .deliver(&batch(vec![event(1, "e1")]))
        .await
        .unwrap_err();
    let SessionError::Connector(ConnectorError::Unavailable(message)) = &err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(message.contains(&base), "{message}");
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut session = open(&server, "not-the-token", Some(server.authority())).await;
    let err = session.register(&info(1)).await.unwrap_err();
    assert!(
        matches!(&err, SessionError::Connector(ConnectorError::Unauthorized(m)) if m.contains("401")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_authority_that_is_not_granted_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut session = open(&server, TOKEN, Some("127.0.0.1:1".into())).await;
    let err = session.register(&info(1)).await.unwrap_err();
    // The sandbox's refusal, told apart from a receiver's 401.
    let SessionError::NotGranted(message) = &err else {
        panic!("expected a missing grant, got {err:?}");
    };
    assert!(message.contains("grants.http"), "{message}");
    // Nothing reached the server.
    assert!(
        server
            .get("query/sessions")
            .1
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// A long-lived session holds no more host objects after thousands of
/// calls than after a few: deliveries and probes give back every request,
/// response, body and stream they use (a leak traps the plugin at its
/// resource limit).
#[tokio::test]
async fn thousands_of_calls_leak_no_host_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut session = open(&server, TOKEN, Some(server.authority())).await;
    session.register(&info(0)).await.unwrap();
    for n in 1..=3000u64 {
        session
            .deliver(&batch(vec![event(n, &format!("e{n}"))]))
            .await
            .unwrap_or_else(|e| panic!("delivery {n}: {e}"));
        if n % 10 == 0 {
            session
                .probe()
                .await
                .unwrap_or_else(|e| panic!("probe after {n}: {e}"));
        }
    }
}
