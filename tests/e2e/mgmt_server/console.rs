//! The web console in a real headless browser (Chromium): delivered events
//! appear in the table, with severity colours, and safd's own events are
//! highlighted; filters narrow the table; the intake is plotted. A
//! screenshot is kept in `target/test-artifacts/console.png`. `cargo xtask
//! test` installs Chromium when it is missing.

use crate::support::browser::{rendered_dom, screenshot};
use crate::support::mgmt::{Server, TOKEN, event};
use crate::support::target_dir;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn delivered_events_appear_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.register("prod1-safd", json!({"ems": 2}));
    // Events of a second and a half ago, so that the lag plot shows that.
    let now = jiff::Timestamp::now();
    let mut ems = [event(1, "ems-1"), event(2, "ems-2")];
    for event in &mut ems {
        event["time"] = json!((now - jiff::SignedDuration::from_millis(1500)).to_string());
    }
    let (status, _) = server.post(
        "events",
        &json!({"agent_id": "prod1-safd", "group": "mgmt", "epoch": 3,
                "batches": [{"stream": "ems", "events": ems}]}),
    );
    assert_eq!(status, 200);
    let mut failover = event(1, "safd-1");
    failover["severity"] = json!("major");
    failover["time"] = json!(now.to_string());
    failover["body"] = json!("group mgmt failed over from primary to backup");
    failover["attributes"] = json!([["event_id", "1002"]]);
    let (status, _) = server.post(
        "events",
        &json!({"agent_id": "prod1-safd", "group": "mgmt", "epoch": 3,
                "batches": [{"stream": "safd", "events": [failover]}]}),
    );
    assert_eq!(status, 200);

    let url = format!("{}/console#token={TOKEN}", server.base);
    let dom = rendered_until(&url, |dom| dom.contains("data-id=\"ems-2\""));
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

    // Both deliveries are on the plots: events per second, and their lag
    // (mean and longest).
    for plot in ["rate-plot", "lag-plot"] {
        let max = svg_data(&dom, plot, "data-max");
        assert!(max > 0.0, "{plot}: max {max}\n{dom}");
        assert!(svg_data(&dom, plot, "data-points") >= 1.0, "{dom}");
    }
    assert!(dom.contains("<polyline class=\"rate\""), "{dom}");
    assert!(dom.contains("<polyline class=\"lag-max\""), "{dom}");

    // Filters, opened from the fragment as a bookmark would: severity at
    // least major and a text (ignoring case) leave safd's failover event
    // only; a stream leaves that stream's.
    let filtered = rendered_until(&format!("{url}&severity=major&text=FAILED%20OVER"), |dom| {
        dom.contains("data-id=\"safd-1\"")
    });
    assert!(!filtered.contains("data-id=\"ems-1\""), "{filtered}");
    let ems_only = rendered_until(&format!("{url}&stream=ems"), |dom| {
        dom.contains("data-id=\"ems-1\"")
    });
    assert!(ems_only.contains("data-id=\"ems-2\""), "{ems_only}");
    assert!(!ems_only.contains("data-id=\"safd-1\""), "{ems_only}");

    // A picture of it, kept as the test's artifact.
    let png = target_dir().join("test-artifacts").join("console.png");
    let _ = std::fs::remove_file(&png);
    screenshot(&url, &png);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );

    // Without the token the console says how to open it.
    let dom = rendered_dom(&format!("{}/console", server.base));
    assert!(dom.contains("#token=YOUR_TOKEN"), "{dom}");
}

/// The page's DOM once `ready` holds of it: the first render can race the
/// server's first answers on a loaded machine, so retry within a deadline
/// rather than sleeping.
fn rendered_until(url: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dom = rendered_dom(url);
        if ready(&dom) || Instant::now() > deadline {
            return dom;
        }
    }
}

/// A number the console writes on a plot, e.g. `data-max`.
fn svg_data(dom: &str, id: &str, attribute: &str) -> f64 {
    let svg = &dom[dom.find(&format!("id=\"{id}\"")).unwrap()..];
    let svg = &svg[..svg.find('>').unwrap()];
    let at = svg.find(&format!("{attribute}=\"")).unwrap() + attribute.len() + 2;
    svg[at..at + svg[at..].find('"').unwrap()].parse().unwrap()
}
