//! A program under test (a relay, a service) as a child process, for the tests that kill and
//! restart it: its stderr goes to a log file of its own, which a failing test prints.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The folder the processes log to: `target/relay-logs` of the workspace, beside the other logs of
/// the relay's tests.
pub fn log_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"))
}

/// Runs `command` to its end (a one-off such as `outbox-relay setup`) and returns what it printed;
/// panics naming `what`, with its stderr, when it cannot start or exits unsuccessfully.
pub fn run_successfully(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A running child process, logging to `<log_dir>/<label>-<n>.log`; SIGKILLed when dropped.
pub struct Process {
    pub label: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Spawns `command`, its stdout discarded and its stderr to a new log file.
    pub fn spawn(mut command: Command, label: &str) -> Process {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let dir = log_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the log folder {}: {e}", dir.display()));
        let log = dir.join(format!(
            "{label}-{}.log",
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating the log {}: {e}", log.display()));
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {label}: {e}"));
        Process {
            label: label.to_owned(),
            log,
            child,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status; after `timeout`, SIGKILL and a panic with the log.
    ///
    /// The signal waits (up to `timeout`) for the process's first log line: the relay installs
    /// its handlers before it logs anything, and a SIGTERM before that ends a process by the
    /// signal's default action, which is not the graceful stop a test asks for here.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.log_text().is_empty() && self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {}", self.label);
        self.wait_exit(timeout).unwrap_or_else(|| {
            self.kill();
            panic!(
                "{} did not stop on SIGTERM within {timeout:?}:\n{}",
                self.label,
                self.log_text()
            )
        })
    }

    /// A graceful stop: SIGTERM ([`Process::terminate`]), and exit status 0, or a panic with
    /// the status and the log.
    pub fn stop_gracefully(&mut self, timeout: Duration) {
        let status = self.terminate(timeout);
        assert!(
            status.success(),
            "{}: graceful stop: {status}\n{}",
            self.label,
            self.log_text()
        );
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
