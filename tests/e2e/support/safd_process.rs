//! Running the `safd` binary as a process in tests: spawn, wait for its
//! admin API, stop it cleanly, and never leave one behind.
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn safd() -> Command {
    let mut command = Command::new(super::binary("safd"));
    command.env("SAFD_CACHE_DIR", super::plugin_cache());
    command
}

/// A running `safd`, killed when dropped so a failing test leaves no
/// daemon behind.
pub struct Daemon(Child);

impl Daemon {
    pub fn spawn(command: &mut Command) -> Self {
        Self(command.spawn().unwrap())
    }
}

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `condition` until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stop_cleanly(daemon: &mut Daemon, stderr: std::thread::JoinHandle<String>) -> String {
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut exited = None;
    wait_for(Duration::from_secs(20), "safd to exit", || {
        exited = daemon.try_wait().unwrap();
        exited.is_some()
    });
    let stderr = stderr.join().unwrap();
    assert!(exited.unwrap().success(), "{stderr}");
    stderr
}

pub fn run(path: &Path, stderr: Stdio) -> Daemon {
    Daemon::spawn(
        safd()
            .arg("run")
            .arg("-c")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(stderr),
    )
}

/// Start `safd run` and return it with its admin API's address (read from
/// its "running" line on stderr) and its whole stderr, available once it
/// exits.
pub fn run_with_admin(path: &Path) -> (Daemon, String, std::thread::JoinHandle<String>) {
    run_with_admin_env(path, &[])
}

/// [`run_with_admin`] with these variables in safd's environment.
pub fn run_with_admin_env(
    path: &Path,
    env: &[(&str, &str)],
) -> (Daemon, String, std::thread::JoinHandle<String>) {
    let mut daemon = Daemon::spawn(
        safd()
            .arg("run")
            .arg("-c")
            .arg(path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = std::io::BufReader::new(daemon.stderr.take().unwrap());
    let mut seen = String::new();
    let admin = loop {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "safd ended before running:\n{seen}");
        seen.push_str(&line);
        // The line is text, or a JSON object with it as `message`.
        let message = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(line);
        // `ip:port` for HTTP, `https://ip:port` for HTTPS.
        if let Some((_, address)) = message.trim().rsplit_once("admin API on ") {
            break address.trim_start_matches("http://").to_owned();
        }
    };
    // Keep draining stderr so safd never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        let mut rest = seen;
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (daemon, admin, rest)
}

/// `safd status --json` of the daemon whose admin API is at `admin`.
pub fn status(admin: &str) -> serde_json::Value {
    let output = safd()
        .args(["status", "--json", "--admin", admin])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `safd reload --json`: whether it succeeded, and its report.
pub fn reload(admin: &str) -> (bool, serde_json::Value) {
    let output = safd()
        .args(["reload", "--json", "--admin", admin])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}
