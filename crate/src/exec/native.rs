//! The native code executor: a persistent `python3` process per solution path, sandboxed.
//!
//! Containment, from the outside in:
//! - its own process group, killed whole after the wall-clock limit (5 s plus a grace period)
//!   when the in-process alarm did not stop the code, and restarted on the next run;
//! - resource limits: address space, CPU time, file size, process count, no core files;
//! - its own empty network namespace where the kernel allows one;
//! - a scratch working directory, removed with the executor;
//! - inside Python, an audit hook (PEP 578) that refuses process creation, sockets, native
//!   library loading and any write outside the scratch directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde::Deserialize;

use super::{CodeExecutor, ExecOutcome, TIME_LIMIT_SECS};
use crate::error::{Error, Result};

const DRIVER: &str = include_str!("driver.py");

/// Limits and the interpreter of a [`PythonSandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The interpreter (`python3` on `PATH` by default).
    pub python: PathBuf,
    /// Per-run limit enforced inside Python with SIGALRM (the official 5 s).
    pub time_limit: Duration,
    /// Extra wall-clock time before the process is killed when the alarm did not stop the code.
    pub kill_grace: Duration,
    /// How long the interpreter may take to start (imports sympy).
    pub start_timeout: Duration,
    /// Address-space limit in bytes.
    pub memory_bytes: u64,
    /// Largest file the code may write, in bytes.
    pub file_size_bytes: u64,
    /// CPU seconds for the whole life of one interpreter.
    pub cpu_seconds: u64,
    /// Process limit (effective for unprivileged users; the audit hook covers the rest).
    pub max_processes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            python: PathBuf::from("python3"),
            time_limit: Duration::from_secs(TIME_LIMIT_SECS),
            kill_grace: Duration::from_secs(2),
            start_timeout: Duration::from_secs(60),
            memory_bytes: 2 << 30,
            file_size_bytes: 16 << 20,
            cpu_seconds: 600,
            max_processes: 64,
        }
    }
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Running {
    fn kill(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Deserialize)]
struct Reply {
    kind: String,
    #[serde(default)]
    stdout: String,
    #[serde(default, rename = "type")]
    error_type: String,
    #[serde(default)]
    message: String,
}

/// A sandboxed Python interpreter that keeps its namespace between runs (one solution path).
pub struct PythonSandbox {
    config: SandboxConfig,
    scratch: tempfile::TempDir,
    running: Option<Running>,
}

impl PythonSandbox {
    /// Starts an interpreter; fails with a clear message when `python3` is missing or broken.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let scratch = new_scratch()?;
        let mut sandbox = PythonSandbox { config, scratch, running: None };
        sandbox.start()?;
        Ok(sandbox)
    }

    /// The scratch directory the code runs in.
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.scratch.path()
    }

    fn start(&mut self) -> Result<()> {
        let c = &self.config;
        let limits = [
            (libc::RLIMIT_AS, c.memory_bytes),
            (libc::RLIMIT_FSIZE, c.file_size_bytes),
            (libc::RLIMIT_CPU, c.cpu_seconds),
            (libc::RLIMIT_NPROC, c.max_processes),
            (libc::RLIMIT_CORE, 0),
        ];
        // Resolve the interpreter on our PATH: the child's environment is cleared.
        let python = resolve_program(&c.python);
        let mut cmd = Command::new(&python);
        cmd.args(["-I", "-B", "-u", "-c", DRIVER])
            .current_dir(self.scratch.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.scratch.path())
            .env("TMPDIR", self.scratch.path())
            .env("LANG", "C.UTF-8")
            .env("PYTHONIOENCODING", "utf-8")
            .env("GENPRM_TIME_LIMIT", c.time_limit.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                for (resource, value) in limits {
                    let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                    libc::setrlimit(resource, &lim);
                }
                // No network: a fresh, empty network namespace (as root, or inside a user namespace).
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| Error::Exec(format!("cannot start {}: {e}", c.python.display())))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Exec("no stdin pipe".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Exec("no stdout pipe".into()))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let running = Running { child, stdin, lines };
        match running.lines.recv_timeout(c.start_timeout) {
            Ok(line) if line.contains("\"ready\"") => {
                self.running = Some(running);
                Ok(())
            }
            other => {
                running.kill();
                Err(Error::Exec(format!(
                    "{} did not start the sandbox driver ({})",
                    c.python.display(),
                    match other {
                        Ok(line) => format!("unexpected first line {line:?}"),
                        Err(RecvTimeoutError::Timeout) => "timed out".into(),
                        Err(RecvTimeoutError::Disconnected) => "it exited; is it Python 3.8 or newer?".into(),
                    }
                )))
            }
        }
    }

    /// Runs one code block, blocking until it finishes or is stopped.
    pub fn run_blocking(&mut self, code: &str) -> ExecOutcome {
        let deadline = self.config.time_limit + self.config.kill_grace;
        match self.send(code) {
            Err(outcome) => outcome,
            Ok(running) => {
                let reply = running.lines.recv_timeout(deadline);
                self.finish(reply)
            }
        }
    }

    /// Runs one code block without blocking the thread: the reply is awaited on another
    /// thread, so other work (the other samples of a batch) goes on meanwhile.
    pub async fn run_async(&mut self, code: &str) -> ExecOutcome {
        let deadline = self.config.time_limit + self.config.kill_grace;
        let lines = match self.send(code) {
            Err(outcome) => return outcome,
            Ok(running) => std::mem::replace(&mut running.lines, channel().1),
        };
        let (lines, reply) = OffThread::spawn(move || {
            let reply = lines.recv_timeout(deadline);
            (lines, reply)
        })
        .await;
        if let Some(running) = self.running.as_mut() {
            running.lines = lines;
        }
        self.finish(reply)
    }

    /// Starts the interpreter if needed and sends it `code`.
    fn send(&mut self, code: &str) -> std::result::Result<&mut Running, ExecOutcome> {
        if self.running.is_none()
            && let Err(e) = self.start()
        {
            return Err(ExecOutcome::Error { kind: "RuntimeError".into(), message: e.to_string() });
        }
        let request = serde_json::json!({ "code": code }).to_string();
        let sent = match self.running.as_mut() {
            None => return Err(ExecOutcome::Error { kind: "RuntimeError".into(), message: "the sandbox is not running".into() }),
            Some(running) => writeln!(running.stdin, "{request}").and_then(|()| running.stdin.flush()),
        };
        if sent.is_err() {
            self.stop();
            return Err(ExecOutcome::Error { kind: "RuntimeError".into(), message: "the Python process exited".into() });
        }
        self.running.as_mut().ok_or_else(|| ExecOutcome::Error { kind: "RuntimeError".into(), message: "the sandbox is not running".into() })
    }

    /// The outcome of a reply line (or of none within the deadline).
    fn finish(&mut self, reply: std::result::Result<String, RecvTimeoutError>) -> ExecOutcome {
        match reply {
            Ok(line) => match serde_json::from_str::<Reply>(&line) {
                Ok(r) if r.kind == "ok" => ExecOutcome::Ok { stdout: r.stdout },
                Ok(r) if r.kind == "timeout" => ExecOutcome::Timeout { message: r.message },
                Ok(r) => ExecOutcome::Error { kind: r.error_type, message: r.message },
                Err(_) => {
                    // Something forged our channel; the namespace can no longer be trusted.
                    self.stop();
                    ExecOutcome::Error { kind: "RuntimeError".into(), message: "the sandbox protocol was corrupted".into() }
                }
            },
            Err(RecvTimeoutError::Timeout) => {
                self.stop();
                ExecOutcome::timed_out()
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.running.as_mut().and_then(|r| r.child.wait().ok());
                self.stop();
                let how = status.map_or_else(|| "exited".to_string(), describe_exit);
                ExecOutcome::Error { kind: "RuntimeError".into(), message: format!("the Python process {how}") }
            }
        }
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    /// Kills the interpreter and starts a fresh one in a fresh scratch directory.
    pub fn reset_blocking(&mut self) {
        self.stop();
        if let Ok(s) = new_scratch() {
            self.scratch = s;
        }
        // A failed start is reported by the next run.
        let _ = self.start();
    }
}

/// `name` looked up on `PATH` when it has no directory part, as a shell would.
fn resolve_program(name: &std::path::Path) -> PathBuf {
    if name.components().count() > 1 {
        return name.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| name.to_path_buf())
}

fn new_scratch() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("genprm-sandbox-").tempdir().map_err(|e| Error::Exec(format!("cannot create a scratch directory: {e}")))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(libc::SIGKILL)) => "was killed (a resource limit was reached)".into(),
        (_, Some(libc::SIGXCPU)) => "ran out of CPU time".into(),
        (_, Some(libc::SIGXFSZ)) => "wrote a file over the size limit".into(),
        (_, Some(sig)) => format!("died on signal {sig}"),
        (Some(code), _) => format!("exited with status {code}"),
        _ => "exited".into(),
    }
}

impl Drop for PythonSandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

impl CodeExecutor for PythonSandbox {
    async fn run(&mut self, code: &str) -> ExecOutcome {
        self.run_async(code).await
    }
    async fn reset(&mut self) {
        self.reset_blocking();
    }
}

/// A closure run on its own thread, awaited as a future (no async runtime needed: the thread
/// wakes whoever polls it).
struct OffThread<T> {
    shared: std::sync::Arc<std::sync::Mutex<(Option<T>, Option<std::task::Waker>)>>,
}

impl<T: Send + 'static> OffThread<T> {
    fn spawn(work: impl FnOnce() -> T + Send + 'static) -> Self {
        let shared = std::sync::Arc::new(std::sync::Mutex::new((None, None::<std::task::Waker>)));
        let theirs = shared.clone();
        std::thread::spawn(move || {
            let value = work();
            let waker = {
                let mut s = theirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                s.0 = Some(value);
                s.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        OffThread { shared }
    }
}

impl<T> std::future::Future for OffThread<T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let mut s = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.0.take() {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
