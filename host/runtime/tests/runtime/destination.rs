//! Destination sessions through the real runtime and the fixture plugin.

use crate::common::*;
use safd_connector::{
    DestinationConnector, DestinationSession, SessionError, SessionInfo, StreamPosition,
};

async fn open(config: serde_json::Value) -> Box<dyn DestinationSession> {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-destination");
    let destination = plugin
        .destination("mgmt", config.to_string(), &no_grants())
        .await
        .unwrap();
    destination
        .open(primary("http://127.0.0.1:1"))
        .await
        .unwrap()
}

#[tokio::test]
async fn register_deliver_probe() {
    let mut session = open(serde_json::json!({
        "high_water": {"ems-prod1": 41},
        "reject_every": 5,
    }))
    .await;
    let registration = session.register(&SessionInfo::default()).await.unwrap();
    assert!(registration.service_ready);
    assert_eq!(
        registration.high_water,
        [StreamPosition {
            stream: "ems-prod1".into(),
            seq: 41
        }]
    );

    let report = session
        .deliver(&[batch("ems-prod1", 42..=50), batch("ems-prod2", 1..=3)])
        .await
        .unwrap();
    assert_eq!(
        report.acknowledged,
        [
            StreamPosition {
                stream: "ems-prod1".into(),
                seq: 50
            },
            StreamPosition {
                stream: "ems-prod2".into(),
                seq: 3
            },
        ]
    );
    let rejected: Vec<u64> = report.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(rejected, [45, 50]);
    assert!(session.probe().await.unwrap().service_ready);
}

#[tokio::test]
async fn a_trap_in_deliver_resets_the_session_which_then_works() {
    let mut session = open(serde_json::json!({ "script": ["ok", "trap"] })).await;
    session.register(&SessionInfo::default()).await.unwrap();
    session.deliver(&[batch("s", 1..=2)]).await.unwrap();
    let err = session.deliver(&[batch("s", 3..=4)]).await.unwrap_err();
    assert!(matches!(err, SessionError::Trapped(_)), "{err:?}");
    assert!(err.instance_was_reset());
    session.register(&SessionInfo::default()).await.unwrap();
    let report = session.deliver(&[batch("s", 3..=4)]).await.unwrap();
    assert_eq!(report.acknowledged[0].seq, 4);
}

#[tokio::test]
async fn not_ready_and_probe_errors_are_reported() {
    let mut session = open(serde_json::json!({
        "service_ready": false,
        "probe_script": ["error:unavailable"],
    }))
    .await;
    assert!(
        !session
            .register(&SessionInfo::default())
            .await
            .unwrap()
            .service_ready
    );
    let err = session.probe().await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Connector(safd_connector::ConnectorError::Unavailable(_))
        ),
        "{err:?}"
    );
    assert!(!session.probe().await.unwrap().service_ready);
}

/// The compatibility rule at work: `built-for-0.2.0/log-destination.wasm`
/// was built with the 0.2.0 SDK (its imports are `safd:connector/…@0.2.0`,
/// its manifest says 0.2.0); this host implements 0.2.1, and it loads,
/// registers and delivers it unchanged.
#[tokio::test]
async fn a_destination_built_for_0_2_0_still_delivers() {
    let runtime = runtime();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime/built-for-0.2.0");
    let plugin = runtime.load(&dir.join("log-destination.wasm")).unwrap();
    assert_eq!(plugin.manifest.api, "safd:connector@0.2.0");
    let destination = plugin
        .destination("old-log", r#"{"prefix": "old> "}"#.into(), &no_grants())
        .await
        .unwrap();
    let mut session = destination.open(primary("-")).await.unwrap();
    session.register(&SessionInfo::default()).await.unwrap();
    let report = session.deliver(&[batch("ems", 1..=3)]).await.unwrap();
    assert_eq!(
        report.acknowledged,
        vec![StreamPosition {
            stream: "ems".into(),
            seq: 3
        }]
    );
}
