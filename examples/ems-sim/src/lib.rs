//! The EMS log simulator: a deterministic generator of realistic EMS events
//! ([`Generator`]) and a writer of rotating log files in format A or B
//! ([`LogWriter`]).

mod catalog;

use catalog::{KINDS, Kind, LOGTIME_DECREASE};
use safd_ems::{EmsEvent, Format, Process, Ssid, Subject, Zone};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What the generator produces.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Same seed, same events.
    pub seed: u64,
    /// The node, e.g. `\PROD1`.
    pub system: String,
    /// LOGTIME of the first event (µs since the Unix epoch).
    pub start: i64,
    /// Mean time between events outside bursts (µs).
    pub mean_gap_micros: i64,
    /// Every this many events a burst starts (0: none).
    pub burst_every: u64,
    /// Events per burst (logged within microseconds of each other).
    pub burst_size: u32,
    /// Every this many events the clock is set back (0: never), which the
    /// collector reports as event 524.
    pub setback_every: u64,
    pub setback_secs: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            system: "\\PROD1".into(),
            // 2024-03-11T01:00:00Z
            start: 1_710_118_800_000_000,
            mean_gap_micros: 50_000,
            burst_every: 5_000,
            burst_size: 200,
            setback_every: 0,
            setback_secs: 30,
        }
    }
}

/// Draws events from the catalog, deterministically for a seed.
#[derive(Debug)]
pub struct Generator {
    rng: fastrand::Rng,
    config: SimConfig,
    clock: i64,
    produced: u64,
    burst_left: u32,
    total_weight: u32,
}

impl Generator {
    pub fn new(config: SimConfig) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(config.seed),
            clock: config.start,
            produced: 0,
            burst_left: 0,
            total_weight: KINDS.iter().map(|k| k.weight).sum(),
            config,
        }
    }

    /// Move the clock to `micros` (live mode follows the wall clock).
    pub fn set_clock(&mut self, micros: i64) {
        self.clock = micros;
    }

    /// Events produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The next event.
    pub fn next_event(&mut self) -> EmsEvent {
        self.produced += 1;
        let n = self.produced;
        if self.config.setback_every > 0 && n.is_multiple_of(self.config.setback_every) {
            self.clock -= self.config.setback_secs * 1_000_000;
            let secs = self.config.setback_secs.to_string();
            return self.event(&LOGTIME_DECREASE, Some(&secs));
        }
        if self.config.burst_every > 0 && n.is_multiple_of(self.config.burst_every) {
            self.burst_left = self.config.burst_size;
        }
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.clock += self.rng.i64(1..1_000);
        } else {
            self.clock += self.rng.i64(1..=self.config.mean_gap_micros.max(1) * 2);
        }
        let mut pick = self.rng.u32(0..self.total_weight.max(1));
        let kind = KINDS
            .iter()
            .find(|k| {
                if pick < k.weight {
                    true
                } else {
                    pick -= k.weight;
                    false
                }
            })
            .unwrap_or(&KINDS[0]);
        self.event(kind, None)
    }

    fn event(&mut self, kind: &Kind, number: Option<&str>) -> EmsEvent {
        let n = number.map_or_else(|| self.rng.u32(1..10_000).to_string(), str::to_owned);
        let n1 = n.parse::<u32>().map_or(0, |v| v + 1).to_string();
        let ldev = self.rng.u32(1..400).to_string();
        let term = format!("TERM-{:04}", self.rng.u32(1..64));
        let text = kind
            .text
            .replace("{n1}", &n1)
            .replace("{n}", &n)
            .replace("{ldev}", &ldev)
            .replace("{term}", &term);
        let cpu = self.rng.u16(0..16);
        let pin = self.rng.u16(20..1000);
        let process = if kind.process == "cpu,pin" {
            Process {
                name: None,
                cpu: Some(cpu),
                pin: Some(pin),
            }
        } else {
            Process {
                name: Some(kind.process.to_owned()),
                cpu: Some(cpu),
                pin: Some(pin),
            }
        };
        let mut subjects = Vec::new();
        if matches!(kind.subsystem, "EXPAND" | "DSK") {
            subjects.push(Subject {
                token: "ZEMS-TKN-LDEV".into(),
                value: ldev,
            });
        }
        if let Some(name) = &process.name {
            subjects.push(Subject {
                token: "ZSPI-TKN-PROCESS-NAME".into(),
                value: name.clone(),
            });
        }
        // The subsystem creates the event shortly before the collector
        // logs it.
        let gentime = self.clock - self.rng.i64(0..5_000);
        EmsEvent {
            ssid: Ssid {
                owner: "TANDEM".into(),
                number: Some(kind.number),
                version: "H01".into(),
                name: kind.subsystem.into(),
            },
            event_number: kind.event_number,
            gentime,
            logtime: self.clock,
            system: self.config.system.clone(),
            process,
            emphasis: kind.emphasis,
            action_needed: kind.action_needed,
            subjects,
            text,
        }
    }
}

/// Writes events to a byte stream — a TCP connection, as an EMS printing
/// distributor writes its text to a network printer (format A), or JSON
/// Lines (format B) — for safd's net-in source.
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    out: BufWriter<W>,
    format: Format,
    zone: Zone,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(out: W, format: Format, zone: Zone) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, out),
            format,
            zone,
            written: 0,
        }
    }

    pub fn write(&mut self, event: &EmsEvent) -> std::io::Result<()> {
        let record = match self.format {
            Format::A => safd_ems::text::render(event, &self.zone),
            Format::B => safd_ems::json::render(event),
        };
        self.out.write_all(record.as_bytes())?;
        self.written += 1;
        Ok(())
    }

    /// Send what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// Writes events to rotating log files `ZZEV0000`, `ZZEV0001`, … in a
/// directory, purging the oldest beyond `keep_files`.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    format: Format,
    zone: Zone,
    rotate_bytes: u64,
    keep_files: usize,
    index: u32,
    file: BufWriter<File>,
    size: u64,
    written: u64,
}

/// A log file's number from its name (`ZZEV0012` → 12).
pub fn log_file_number(name: &str) -> Option<u32> {
    name.strip_prefix("ZZEV")?.parse().ok()
}

/// The name of log file `index`.
pub fn log_file_name(index: u32) -> String {
    format!("ZZEV{index:04}")
}

impl LogWriter {
    /// Continue after the newest log file already in `dir` (created if
    /// missing), or start with `ZZEV0000`.
    pub fn create(
        dir: &Path,
        format: Format,
        zone: Zone,
        rotate_bytes: u64,
        keep_files: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let newest = existing_files(dir)?.last().map(|(n, _)| *n);
        let index = newest.map_or(0, |n| n + 1);
        let file = open(dir, index)?;
        Ok(Self {
            dir: dir.to_owned(),
            format,
            zone,
            rotate_bytes,
            keep_files,
            index,
            file: BufWriter::with_capacity(1 << 16, file),
            size: 0,
            written: 0,
        })
    }

    pub fn write(&mut self, event: &EmsEvent) -> std::io::Result<()> {
        let record = match self.format {
            Format::A => safd_ems::text::render(event, &self.zone),
            Format::B => safd_ems::json::render(event),
        };
        if self.size > 0 && self.size + record.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        self.file.write_all(record.as_bytes())?;
        self.size += record.len() as u64;
        self.written += 1;
        Ok(())
    }

    /// Make what was written visible to readers.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.index += 1;
        self.file = BufWriter::with_capacity(1 << 16, open(&self.dir, self.index)?);
        self.size = 0;
        if self.keep_files > 0 {
            let files = existing_files(&self.dir)?;
            let excess = files.len().saturating_sub(self.keep_files);
            for (_, path) in files.into_iter().take(excess) {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

fn open(dir: &Path, index: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log_file_name(index)))
}

/// The log files in `dir`, oldest first.
pub fn existing_files(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(log_file_number) {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}
