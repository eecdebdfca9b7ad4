//! Per-group state: acknowledged seqs and the fencing epoch.

use crate::common::raw_open;
use safd_connector::{Event, Severity};
use safd_engine::Queue;

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            id: format!("ev-{i}"),
            time: i as i64,
            severity: Severity::Info,
            attributes: Vec::new(),
            body: "x".into(),
        })
        .collect()
}

#[tokio::test]
async fn acks_move_forward_only_and_never_past_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(dir.path()).unwrap();
    queue.ingest("ems", &events(10), None).await.unwrap();
    assert_eq!(queue.ack("mgmt", "ems", 4).await.unwrap(), 4);
    assert_eq!(
        queue.ack("mgmt", "ems", 2).await.unwrap(),
        4,
        "acks never go back"
    );
    assert_eq!(
        queue.ack("mgmt", "ems", 99).await.unwrap(),
        10,
        "clamped to stored"
    );
    assert_eq!(queue.ack("mgmt", "unknown", 5).await.unwrap(), 0);
    // Groups are independent (broadcast members each keep their own).
    assert_eq!(queue.ack("siem", "ems", 3).await.unwrap(), 3);
    let mgmt = queue.group("mgmt").await;
    assert_eq!(mgmt.acked.get("ems"), Some(&10));
    assert_eq!(queue.group("siem").await.acked.get("ems"), Some(&3));
}

#[tokio::test]
async fn group_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        queue.ingest("ems", &events(10), None).await.unwrap();
        assert_eq!(
            queue.change_active("mgmt", Some("primary")).await.unwrap(),
            1
        );
        queue.ack("mgmt", "ems", 7).await.unwrap();
        assert_eq!(
            queue.change_active("mgmt", Some("backup")).await.unwrap(),
            2
        );
        queue.flush().await.unwrap();
    }
    let (queue, report) = Queue::open(dir.path()).unwrap();
    let state = &report.groups["mgmt"];
    assert_eq!(state.epoch, 2);
    assert_eq!(state.active.as_deref(), Some("backup"));
    assert_eq!(state.acked.get("ems"), Some(&7));
    assert_eq!(queue.group("mgmt").await, *state);
    // Total outage: nobody active, and the epoch still moves on.
    assert_eq!(queue.change_active("mgmt", None).await.unwrap(), 3);
    assert_eq!(queue.group("mgmt").await.active, None);
}

#[tokio::test]
async fn a_damaged_group_record_can_never_accept_a_stale_epoch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = Queue::open(dir.path()).unwrap();
        for _ in 0..5 {
            queue.change_active("mgmt", Some("primary")).await.unwrap();
        }
    }
    {
        let db = raw_open(dir.path());
        let tree = db.open_tree("saf").unwrap();
        tree.insert(b"Gmgmt", &b"\x01garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    let (queue, report) = Queue::open(dir.path()).unwrap();
    assert_eq!(report.quarantined, ["state of group `mgmt`"]);
    let epoch = queue.group("mgmt").await.epoch;
    assert!(epoch > 5, "epoch {epoch} could collide with an old one");
    let next = queue.change_active("mgmt", Some("backup")).await.unwrap();
    assert_eq!(next, epoch + 1);
}
