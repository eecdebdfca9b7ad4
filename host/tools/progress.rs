//! Progress of a benchmark's long waits: a bar on a terminal, a plain line
//! every few seconds otherwise (a CI log, a file), so a run of minutes is
//! never silent.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// How often a plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    what: String,
    total: u64,
    started: Instant,
    shown: Shown,
}

enum Shown {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    /// Progress towards `total` of `what` (e.g. "events at the server").
    pub(crate) fn new(what: &str, total: u64) -> Self {
        let shown = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "  {msg} [{bar:30}] {human_pos}/{human_len} ({eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_owned());
            Shown::Bar(bar)
        } else {
            Shown::Lines {
                last: Instant::now(),
            }
        };
        Self {
            what: what.to_owned(),
            total,
            started: Instant::now(),
            shown,
        }
    }

    /// `done` of the total so far.
    pub(crate) fn set(&mut self, done: u64) {
        match &mut self.shown {
            Shown::Bar(bar) => {
                bar.set_position(done.min(self.total));
                let per_sec = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{}, {per_sec:.0}/s", self.what));
            }
            Shown::Lines { last } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!(
                        "  {}: {done} of {} ({:.0} %) after {:.0} s",
                        self.what,
                        self.total,
                        percent(done, self.total),
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// The wait is over: the bar is cleared (the figures follow), a plain
    /// log gets its last line.
    pub(crate) fn finish(self) {
        match self.shown {
            Shown::Bar(bar) => bar.finish_and_clear(),
            Shown::Lines { .. } => eprintln!(
                "  {}: {} in {:.1} s",
                self.what,
                self.total,
                self.started.elapsed().as_secs_f64()
            ),
        }
    }
}

fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percent_of_nothing_is_done() {
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(percent(250, 1000), 25.0);
    }
}
