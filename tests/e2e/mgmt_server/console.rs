//! The web console in a real headless browser (Chromium): delivered events
//! appear in the table, with severity colours, and safd's own events are
//! highlighted. `cargo xtask test` installs Chromium when it is missing.

use crate::support::browser::rendered_dom;
use crate::support::mgmt::{Server, TOKEN, event};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn delivered_events_appear_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.register("prod1-safd", json!({"ems": 2}));
    server.deliver("prod1-safd", "ems", &[(1, "ems-1"), (2, "ems-2")]);
    let mut failover = event(1, "safd-1");
    failover["severity"] = json!("major");
    failover["body"] = json!("group mgmt failed over from primary to backup");
    failover["attributes"] = json!([["event_id", "1002"]]);
    let (status, _) = server.post(
        "events",
        &json!({"agent_id": "prod1-safd", "group": "mgmt", "epoch": 3,
                "batches": [{"stream": "safd", "events": [failover]}]}),
    );
    assert_eq!(status, 200);

    let url = format!("{}/console#token={TOKEN}", server.base);
    // The first render can race the server's first answers on a loaded
    // machine; retry within a deadline rather than sleeping.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dom = loop {
        let dom = rendered_dom(&url);
        if dom.contains("data-id=\"ems-2\"") || Instant::now() > deadline {
            break dom;
        }
    };
    for id in ["ems-1", "ems-2"] {
        assert!(
            dom.contains(&format!("<tr data-id=\"{id}\">")),
            "{id} missing:\n{dom}"
        );
    }
    assert!(
        dom.contains("<tr data-id=\"safd-1\" class=\"safd\">"),
        "{dom}"
    );
    assert!(dom.contains("sev sev-critical"), "{dom}");
    assert!(dom.contains("group mgmt failed over"), "{dom}");
    // The session table shows the agent.
    assert!(dom.contains("<td>prod1-safd</td>"), "{dom}");
    assert!(dom.contains("id=\"stored\">3<"), "{dom}");

    // Without the token the console says how to open it.
    let dom = rendered_dom(&format!("{}/console", server.base));
    assert!(dom.contains("#token=YOUR_TOKEN"), "{dom}");
}
