//! `safd top`: a running safd at a glance, refreshed every second — per
//! stream the ingest rate, what is queued and how old the oldest
//! unacknowledged event is; per group member its health, whether it is
//! active and the delivery rate; per source its state and restarts; the
//! queue's fill and the data disk. Rates are the differences between two
//! `/status` answers. `q` (or Esc, or Ctrl-C) quits.

use super::admin::{AdminArgs, age, bytes, queue_line};
use crate::admin::Status;
use crate::admin::client::AdminClient;
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let client = args.admin.client()?;
    let interval = Duration::from_secs_f64(args.interval.clamp(0.2, 60.0));
    // The terminal and the admin client both block: one thread of its own.
    tokio::task::spawn_blocking(move || live(&client, interval)).await??;
    Ok(ExitCode::SUCCESS)
}

/// Two answers apart: what the rates are computed from.
struct Sample {
    status: Status,
    at: Instant,
}

fn live(client: &AdminClient, interval: Duration) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> anyhow::Result<()> {
        let mut previous: Option<Sample> = None;
        let mut current: Option<Sample> = None;
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                let mut error = None;
                match client.status() {
                    Ok(status) => {
                        previous = current.take();
                        current = Some(Sample {
                            status,
                            at: Instant::now(),
                        });
                    }
                    Err(err) => error = Some(format!("{err:#}")),
                }
                terminal.draw(|frame| {
                    draw(frame, current.as_ref(), previous.as_ref(), error.as_deref())
                })?;
            }
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                    || (key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL));
                if quit {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::try_restore()?;
    result
}

/// Per second, from `before` to `now`.
fn rate(now: u64, before: Option<u64>, seconds: f64) -> String {
    match before {
        Some(before) if seconds > 0.0 => {
            format!("{:.0}", now.saturating_sub(before) as f64 / seconds)
        }
        _ => "-".to_owned(),
    }
}

/// A bordered table titled `title`: its columns as (header, width), a
/// width of 0 taking the rest of the line.
fn table<'a>(title: &'a str, rows: Vec<Row<'a>>, columns: &[(&'a str, u16)]) -> Table<'a> {
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|&(_, width)| match width {
            0 => Constraint::Min(20),
            width => Constraint::Length(width),
        })
        .collect();
    let header: Vec<&str> = columns.iter().map(|&(name, _)| name).collect();
    Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title))
}

fn draw(
    frame: &mut ratatui::Frame<'_>,
    current: Option<&Sample>,
    previous: Option<&Sample>,
    error: Option<&str>,
) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let Some(current) = current else {
        let text = error.unwrap_or("asking safd…");
        frame.render_widget(
            Paragraph::new(format!("safd top: {text}\n\nq quits")),
            frame.area(),
        );
        return;
    };
    let status = &current.status;
    let seconds = previous.map_or(0.0, |p| (current.at - p.at).as_secs_f64());
    let before = previous.map(|p| &p.status);

    let mut header = vec![
        Line::styled(
            format!(
                "safd top — agent {} — up {} — q quits",
                status.agent_id,
                age(status.uptime_secs)
            ),
            bold,
        ),
        Line::raw(format!("queue {}", queue_line(&status.queue))),
    ];
    if let Some(error) = error {
        header.push(Line::raw(format!("(not refreshed: {error})")));
    }

    // Streams: ingest rate from the seqs assigned.
    let stream_rows: Vec<Row<'_>> = status
        .streams
        .iter()
        .map(|s| {
            let previous_next = before.and_then(|b| {
                b.streams
                    .iter()
                    .find(|p| p.name == s.name)
                    .map(|p| p.next_seq)
            });
            let lanes = status.groups.iter().flat_map(|g| &g.lanes);
            let unacknowledged: u64 = lanes.clone().filter_map(|l| l.lag.get(&s.name)).sum();
            let oldest = lanes
                .filter_map(|l| l.oldest_unacknowledged_secs.get(&s.name))
                .max()
                .copied()
                .unwrap_or(0);
            Row::new(vec![
                s.name.clone(),
                rate(s.next_seq, previous_next, seconds),
                s.stored_events.to_string(),
                bytes(s.bytes),
                unacknowledged.to_string(),
                age(oldest),
            ])
        })
        .collect();
    let streams = table(
        "streams",
        stream_rows,
        &[
            ("STREAM", 20),
            ("IN/S", 10),
            ("STORED", 12),
            ("BYTES", 11),
            ("UNACKED", 12),
            ("OLDEST", 10),
        ],
    );

    // Members: the delivery rate of a lane is its active member's.
    let mut member_rows = Vec::new();
    for group in &status.groups {
        for lane in &group.lanes {
            let acknowledged: u64 = lane.acknowledged.values().sum();
            let previous_acknowledged = before.and_then(|b| {
                b.groups
                    .iter()
                    .flat_map(|g| &g.lanes)
                    .find(|l| l.cursor == lane.cursor)
                    .map(|l| l.acknowledged.values().sum::<u64>())
            });
            for member in &lane.members {
                let active = lane.active.as_deref() == Some(member.name.as_str());
                member_rows.push(Row::new(vec![
                    lane.cursor.clone(),
                    member.name.clone(),
                    member.health.clone(),
                    if active { "yes" } else { "" }.to_owned(),
                    lane.epoch.to_string(),
                    if active {
                        rate(acknowledged, previous_acknowledged, seconds)
                    } else {
                        String::new()
                    },
                    member.last_error.clone().unwrap_or_default(),
                ]));
            }
        }
    }
    let members = table(
        "groups",
        member_rows,
        &[
            ("GROUP", 16),
            ("MEMBER", 12),
            ("HEALTH", 12),
            ("ACTIVE", 7),
            ("EPOCH", 6),
            ("OUT/S", 9),
            ("LAST ERROR", 0),
        ],
    );

    let source_rows: Vec<Row<'_>> = status
        .sources
        .iter()
        .map(|s| {
            Row::new(vec![
                s.stream.clone(),
                s.state.clone(),
                age(s.since_secs),
                s.failures.to_string(),
                s.restarts.to_string(),
                s.last_error.clone().unwrap_or_default(),
            ])
        })
        .collect();
    let sources = table(
        "sources",
        source_rows,
        &[
            ("SOURCE", 20),
            ("STATE", 10),
            ("SINCE", 8),
            ("FAILURES", 9),
            ("RESTARTS", 9),
            ("LAST ERROR", 0),
        ],
    );

    let heights = [
        Constraint::Length(header.len() as u16),
        Constraint::Length(status.streams.len() as u16 + 3),
        Constraint::Length(
            status
                .groups
                .iter()
                .flat_map(|g| &g.lanes)
                .map(|l| l.members.len() as u16)
                .sum::<u16>()
                + 3,
        ),
        Constraint::Length(status.sources.len() as u16 + 3),
        Constraint::Min(3),
    ];
    let [top, middle, lower, bottom, rest] = Layout::vertical(heights).areas(frame.area());
    frame.render_widget(Paragraph::new(header), top);
    frame.render_widget(streams, middle);
    frame.render_widget(members, lower);
    frame.render_widget(sources, bottom);
    // safd's numbered events, the newest that fit, newest last.
    let room = usize::from(rest.height.saturating_sub(2));
    let skip = status.recent_events.len().saturating_sub(room);
    let events: Vec<Line<'_>> = status
        .recent_events
        .iter()
        .skip(skip)
        .map(|n| Line::raw(format!("{} [{}] {}", n.time, n.id, n.message)))
        .collect();
    frame.render_widget(
        Paragraph::new(events).block(Block::bordered().title("recent events")),
        rest,
    );
}
