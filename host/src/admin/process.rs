//! The process metrics every Prometheus exporter has (`process_*`), read
//! from Linux's `/proc`: CPU time, memory, file descriptors, start time.
//! Elsewhere they are left out, not made up.

/// The `process_*` samples: (name, type, help, value).
pub fn samples() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let mut out = Vec::new();
    // Times in /proc/<pid>/stat are in USER_HZ, which Linux fixes at 100
    // for what it shows user space, whatever the kernel's own tick.
    const USER_HZ: f64 = 100.0;
    if let Some(stat) = read("/proc/self/stat") {
        // The fields after the command name, which is in parentheses and
        // may hold spaces: field 3 (state) is the first of them.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (field(14), field(15)) {
                out.push((
                    "process_cpu_seconds_total",
                    "counter",
                    "User and system CPU time spent, in seconds.",
                    (user + system) / USER_HZ,
                ));
            }
            if let (Some(start), Some(boot)) = (field(22), boot_time()) {
                out.push((
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since the Unix epoch, in seconds.",
                    boot + start / USER_HZ,
                ));
            }
            if let Some(virtual_bytes) = field(23) {
                out.push((
                    "process_virtual_memory_bytes",
                    "gauge",
                    "Virtual memory size, in bytes.",
                    virtual_bytes,
                ));
            }
        }
    }
    if let Some(rss) = read("/proc/self/status").and_then(|status| kib(&status, "VmRSS:")) {
        out.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            rss,
        ));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push((
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        ));
    }
    if let Some(max) = read("/proc/self/limits").and_then(|limits| max_open_files(&limits)) {
        out.push((
            "process_max_fds",
            "gauge",
            "The limit of open file descriptors.",
            max,
        ));
    }
    out
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `/proc/stat`'s `btime`: when the machine booted, in Unix seconds.
fn boot_time() -> Option<f64> {
    read("/proc/stat")?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `KEY: N kB` line of `/proc/self/status`, in bytes.
fn kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find_map(|line| line.strip_prefix(key))?;
    let kib: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_its_metrics() {
        let samples = samples();
        let value = |name: &str| {
            samples
                .iter()
                .find(|s| s.0 == name)
                .map(|s| s.3)
                .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
