//! The native code executor: a persistent `python3` process per solution path, isolated by
//! the kernel.
//!
//! Containment, from the outside in:
//! - [`Isolation::Kernel`] (the default): on Linux a bubblewrap sandbox with its own user, PID,
//!   mount, network and IPC namespaces, no capabilities, a seccomp filter and Landlock
//!   ([`super::linux`]); on macOS a `sandbox-exec` profile ([`super::macos`]). Where it cannot
//!   be set up, no code runs: starting fails with what is missing and how to get it. One
//!   sandbox per solution path, torn down with it ([`PythonSandbox::reset_blocking`] starts a
//!   new one); nothing the code starts outlives it.
//! - its own process group and session, killed whole after the wall-clock limit (5 s plus a
//!   grace period) when the in-process alarm did not stop the code, and restarted on the next run;
//! - resource limits: address space, CPU time, file size, process count, no core files; the
//!   scratch directory is a size-capped `tmpfs` inside the sandbox;
//! - a bounded channel: each reply line is read up to [`MAX_REPLY_BYTES`]; a longer one ends the
//!   sandbox; what the code prints is kept up to 64 KiB in the driver and cut to
//!   [`super::OUTPUT_LIMIT_CHARS`] for the model.
//!
//! [`Isolation::Unsandboxed`] (only on the user's explicit request) keeps the limits, a host
//! scratch directory, a network namespace where the kernel allows one, and an audit hook
//! inside Python, which is not a security boundary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::{CodeExecutor, ExecOutcome, TIME_LIMIT_SECS, TRUNCATION_MARKER};
use crate::error::{Error, Result};

const DRIVER: &str = include_str!("driver.py");

/// The longest reply line read from the sandbox; a longer one is a protocol violation.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// What the driver keeps of one run's output, in characters, before genprm cuts it further.
const OUTPUT_KEEP_CHARS: usize = 64 << 10;

/// How the interpreter is kept away from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Isolation the kernel enforces (bubblewrap, seccomp and Landlock on Linux; `sandbox-exec`
    /// on macOS). Fails closed: where it cannot be set up, no code runs.
    #[default]
    Kernel,
    /// No isolation beyond resource limits and an audit hook inside Python, which hostile code
    /// can undo: only when the user asks for it explicitly (`--allow-unsandboxed-code`).
    Unsandboxed,
}

/// Limits and the interpreter of a [`PythonSandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The interpreter (`python3` on `PATH` by default).
    pub python: PathBuf,
    /// How the interpreter is isolated.
    pub isolation: Isolation,
    /// The bubblewrap executable (`bwrap` on `PATH` by default; Linux).
    pub bwrap: PathBuf,
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
    /// Size of the whole scratch directory, in bytes (the sandbox's `tmpfs`).
    pub scratch_bytes: u64,
    /// CPU seconds for the whole life of one interpreter.
    pub cpu_seconds: u64,
    /// Process limit (the seccomp filter refuses new processes altogether).
    pub max_processes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            python: PathBuf::from("python3"),
            isolation: Isolation::Kernel,
            bwrap: PathBuf::from("bwrap"),
            time_limit: Duration::from_secs(TIME_LIMIT_SECS),
            kill_grace: Duration::from_secs(2),
            start_timeout: Duration::from_secs(60),
            memory_bytes: 2 << 30,
            file_size_bytes: 16 << 20,
            scratch_bytes: 64 << 20,
            cpu_seconds: 600,
            max_processes: 64,
        }
    }
}

/// One line from the sandbox, or why there is none.
enum Line {
    Text(String),
    TooLong,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    /// The start of what the process wrote on stderr (bubblewrap's set-up errors).
    stderr: Arc<Mutex<Vec<u8>>>,
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

    fn stderr_text(&self) -> String {
        let bytes = self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        super::terminal_safe(String::from_utf8_lossy(&bytes).trim()).into_owned()
    }
}

#[derive(Deserialize)]
struct Reply {
    kind: String,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    omitted: u64,
    #[serde(default, rename = "type")]
    error_type: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    landlock: u32,
}

/// A sandboxed Python interpreter that keeps its namespace between runs (one solution path).
pub struct PythonSandbox {
    config: SandboxConfig,
    /// The host scratch directory ([`Isolation::Unsandboxed`] only; the sandbox has its own).
    scratch: Option<tempfile::TempDir>,
    running: Option<Running>,
    landlock: u32,
}

impl PythonSandbox {
    /// Starts an interpreter; fails with a clear message when `python3` is missing or broken,
    /// or when the isolation cannot be set up.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let mut sandbox = PythonSandbox { config, scratch: None, running: None, landlock: 0 };
        sandbox.start()?;
        Ok(sandbox)
    }

    /// The Landlock ABI the sandbox applied (0: none, or not on Linux).
    pub fn landlock_abi(&self) -> u32 {
        self.landlock
    }

    fn command(&mut self) -> Result<(Command, Vec<std::os::fd::OwnedFd>)> {
        let c = &self.config;
        let time_limit = c.time_limit.as_secs().max(1).to_string();
        let keep = OUTPUT_KEEP_CHARS.to_string();
        // Resolve the interpreter on our PATH: the child's environment is cleared.
        let python = resolve_program(&c.python);
        let args = ["-I", "-B", "-u", "-c", DRIVER];
        match c.isolation {
            Isolation::Kernel => {
                let env = [("GENPRM_TIME_LIMIT", time_limit.as_str()), ("GENPRM_OUTPUT_KEEP", keep.as_str())];
                let (cmd, fds, scratch) = kernel_command(c, &python, &args, &env)?;
                self.scratch = scratch;
                Ok((cmd, fds))
            }
            Isolation::Unsandboxed => {
                let scratch = new_scratch()?;
                let mut cmd = Command::new(&python);
                cmd.args(args)
                    .current_dir(scratch.path())
                    .env_clear()
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                    .env("HOME", scratch.path())
                    .env("TMPDIR", scratch.path())
                    .env("LANG", "C.UTF-8")
                    .env("PYTHONIOENCODING", "utf-8")
                    .env("GENPRM_TIME_LIMIT", &time_limit)
                    .env("GENPRM_OUTPUT_KEEP", &keep)
                    .env("GENPRM_AUDIT_HOOK", "1");
                self.scratch = Some(scratch);
                Ok((cmd, Vec::new()))
            }
        }
    }

    fn start(&mut self) -> Result<()> {
        let (mut cmd, inherited) = self.command()?;
        let c = &self.config;
        let limits = [
            (libc::RLIMIT_AS, c.memory_bytes),
            (libc::RLIMIT_FSIZE, c.file_size_bytes),
            (libc::RLIMIT_CPU, c.cpu_seconds),
            (libc::RLIMIT_NPROC, c.max_processes),
            (libc::RLIMIT_CORE, 0),
        ];
        let unsandboxed = c.isolation == Isolation::Unsandboxed;
        let keep: Vec<i32> = inherited.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
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
                for &fd in &keep {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                if unsandboxed {
                    // No network: a fresh, empty network namespace where the kernel allows one.
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
                    }
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_owned();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && self.config.isolation == Isolation::Kernel {
                Error::Exec(format!("{} was not found. {}", program.to_string_lossy(), sandbox_hint()))
            } else {
                Error::Exec(format!("cannot start {}: {e}", program.to_string_lossy()))
            }
        })?;
        drop(inherited);
        let stdin = child.stdin.take().ok_or_else(|| Error::Exec("no stdin pipe".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Exec("no stdout pipe".into()))?;
        let stderr_pipe = child.stderr.take().ok_or_else(|| Error::Exec("no stderr pipe".into()))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || read_lines(stdout, &tx));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            // Keep the first 4 KiB for error messages; drain the rest.
            let mut buf = [0u8; 4096];
            let mut pipe = stderr_pipe;
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut kept = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        let running = Running { child, stdin, lines, stderr };
        let first = running.lines.recv_timeout(self.config.start_timeout);
        if let Ok(Line::Text(line)) = &first
            && let Ok(ready) = serde_json::from_str::<Ready>(line)
            && ready.ready
        {
            self.landlock = ready.landlock;
            self.running = Some(running);
            return Ok(());
        }
        // Let the process finish writing why it failed.
        std::thread::sleep(Duration::from_millis(50));
        let stderr = running.stderr_text();
        running.kill();
        let python = self.config.python.display();
        let why = match first {
            Ok(Line::Text(line)) => format!("{python} did not start the sandbox driver (unexpected first line {:?})", super::terminal_safe(&line)),
            Ok(Line::TooLong) => format!("{python} did not start the sandbox driver (an over-long first line)"),
            Err(RecvTimeoutError::Timeout) => format!("{python} did not start the sandbox driver (timed out)"),
            Err(RecvTimeoutError::Disconnected) if self.config.isolation == Isolation::Kernel && stderr.contains("bwrap") => {
                return Err(Error::Exec(format!("the sandbox could not be set up: {stderr}. {}", sandbox_hint())));
            }
            Err(RecvTimeoutError::Disconnected) => format!("{python} did not start the sandbox driver (it exited; is it Python 3.8 or newer?)"),
        };
        Err(Error::Exec(if stderr.is_empty() { why } else { format!("{why}: {stderr}") }))
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
    fn finish(&mut self, reply: std::result::Result<Line, RecvTimeoutError>) -> ExecOutcome {
        match reply {
            Ok(Line::TooLong) => {
                self.stop();
                ExecOutcome::Error {
                    kind: "RuntimeError".into(),
                    message: format!("the sandbox's reply was longer than {MAX_REPLY_BYTES} bytes"),
                }
            }
            Ok(Line::Text(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(r) if r.kind == "ok" && r.omitted > 0 => ExecOutcome::Ok { stdout: format!("{}{TRUNCATION_MARKER}", r.stdout) },
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

    /// Kills the interpreter (and, isolated, its whole sandbox) and starts a fresh one in a
    /// fresh scratch directory.
    pub fn reset_blocking(&mut self) {
        self.stop();
        self.scratch = None;
        // A failed start is reported by the next run.
        let _ = self.start();
    }
}

/// Reads reply lines of at most [`MAX_REPLY_BYTES`]; a longer one is reported once and ends
/// the reading.
fn read_lines(stdout: impl Read, tx: &std::sync::mpsc::Sender<Line>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut buf = Vec::new();
        match (&mut reader).take(MAX_REPLY_BYTES as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if buf.last() != Some(&b'\n') && buf.len() > MAX_REPLY_BYTES => {
                let _ = tx.send(Line::TooLong);
                break;
            }
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                if tx.send(Line::Text(line)).is_err() {
                    break;
                }
            }
        }
    }
}

/// A command ready to spawn: the descriptors it inherits, and a host scratch directory that
/// lives as long as it (where the sandbox does not make its own).
type Prepared = (Command, Vec<std::os::fd::OwnedFd>, Option<tempfile::TempDir>);

#[cfg(target_os = "linux")]
fn kernel_command(c: &SandboxConfig, python: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Result<Prepared> {
    let bwrap = resolve_program(&c.bwrap);
    let programs = super::linux::seccomp_programs()?;
    let fds = programs.iter().map(|p| super::linux::inheritable_pipe_with(p)).collect::<Result<Vec<_>>>()?;
    let raw: Vec<i32> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let mut env = env.to_vec();
    env.push(("GENPRM_LANDLOCK", "1"));
    let cmd = super::linux::command(&bwrap, python, args, c.scratch_bytes, &raw, &env)?;
    Ok((cmd, fds, None))
}

#[cfg(target_os = "macos")]
fn kernel_command(_: &SandboxConfig, python: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Result<Prepared> {
    let scratch = new_scratch()?;
    let cmd = super::macos::command(python, args, scratch.path(), env)?;
    Ok((cmd, Vec::new(), Some(scratch)))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn kernel_command(_: &SandboxConfig, _: &std::path::Path, _: &[&str], _: &[(&str, &str)]) -> Result<Prepared> {
    Err(Error::Exec(format!("{}", sandbox_hint())))
}

/// What to do when the kernel's isolation is unavailable on this system.
pub fn sandbox_hint() -> &'static str {
    #[cfg(target_os = "linux")]
    return super::linux::unavailable_hint();
    #[cfg(target_os = "macos")]
    return super::macos::unavailable_hint();
    #[allow(unreachable_code)]
    "genprm runs the model's Python only inside a sandbox the operating system enforces, which it can set up on Linux and macOS. \
     Pass --no-execute to judge without running code, or --allow-unsandboxed-code to run it without isolation (unsafe: the code can \
     read your files), or use the browser page, where Python runs in an isolated frame"
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
