//! Instances whose memory keeps growing are rebuilt between calls, at a
//! point where nothing of them is needed, before they run out mid-call.

use crate::common::*;
use safd_connector::event_ids::{PLUGIN_RECYCLED, PLUGIN_TRAPPED};
use safd_connector::{
    Cursor, DestinationConnector, Notice, NoticeSink, PollLimits, SessionInfo, SourceConnector,
};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Collected(Mutex<Vec<Notice>>);

impl NoticeSink for Collected {
    fn emit(&self, notice: Notice) {
        self.0.lock().unwrap().push(notice);
    }
}

impl Collected {
    fn count(&self, id: u32) -> usize {
        self.0.lock().unwrap().iter().filter(|n| n.id == id).count()
    }
}

/// 2 MiB kept per delivery under the tests' 32 MiB limit: without the
/// rebuild the 16th delivery would trap.
#[tokio::test]
async fn a_leaking_destination_is_rebuilt_between_deliveries_and_never_traps() {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-destination");
    let notices = Arc::new(Collected::default());
    runtime.report_to(notices.clone());
    let destination = plugin
        .destination(
            "leaky",
            serde_json::json!({ "leak_kib_per_delivery": 2048 }).to_string(),
            &no_grants(),
        )
        .await
        .unwrap();
    let mut session = destination.open(primary("leaky")).await.unwrap();
    session.register(&SessionInfo::default()).await.unwrap();
    for n in 0..40u64 {
        let report = session
            .deliver(&[batch("s", n * 2 + 1..=n * 2 + 2)])
            .await
            .unwrap_or_else(|e| panic!("delivery {n}: {e}"));
        assert_eq!(report.acknowledged[0].seq, n * 2 + 2);
    }
    assert_eq!(notices.count(PLUGIN_TRAPPED), 0);
    // 75 % of 32 MiB is reached about every 11 deliveries.
    assert!(notices.count(PLUGIN_RECYCLED) >= 3, "{:?}", notices.0);
}

/// A source is rebuilt only where everything it read was committed, and
/// resumes from that cursor: nothing read twice, nothing skipped. 1 MiB
/// kept per poll: 75 % of the limit is reached every 20-odd polls, and the
/// next commit is at most 4 polls later.
#[tokio::test]
async fn a_leaking_source_is_rebuilt_after_a_commit_and_resumes_exactly() {
    let runtime = runtime();
    let plugin = fixture(&runtime, "fixture-source");
    let notices = Arc::new(Collected::default());
    runtime.report_to(notices.clone());
    let source = plugin
        .source(
            "leaky",
            serde_json::json!({ "events_per_poll": 4, "leak_kib_per_poll": 1024 }).to_string(),
            &no_grants(),
        )
        .unwrap();
    let mut session = source.open(None).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..80 {
        let batch = session
            .poll(PollLimits::default())
            .await
            .unwrap_or_else(|e| panic!("poll {n}: {e}"));
        ids.extend(batch.events.to_events().into_iter().map(|e| e.id));
        // Four of five batches are committed only with a later one, so
        // most polls find the instance ahead of its last commit.
        let cursor: Cursor = batch.cursor.unwrap();
        if n % 5 == 4 {
            session.commit(&cursor).await.unwrap();
        }
    }
    assert_eq!(notices.count(PLUGIN_TRAPPED), 0);
    assert!(notices.count(PLUGIN_RECYCLED) >= 3, "{:?}", notices.0);
    let expected: Vec<String> = (0..320).map(|n| format!("fx-{n}")).collect();
    assert_eq!(ids.len(), expected.len());
    assert_eq!(ids, expected, "events repeated or skipped across rebuilds");
}
