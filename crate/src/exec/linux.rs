//! Kernel isolation for the native sandbox on Linux, built from two well-kept parts:
//!
//! - **bubblewrap** (`bwrap`, Debian's `bubblewrap`; Flatpak's sandbox, and what OpenAI's Codex
//!   CLI and Anthropic's sandbox-runtime use on Linux) sets up new user, PID, mount, network,
//!   IPC, UTS and cgroup namespaces, maps the sandbox to an unprivileged user, drops every
//!   capability, sets `no_new_privs`, starts a new session (no controlling terminal), and builds
//!   a root file system that holds only what Python needs, read-only: `/usr` (and the `/lib`,
//!   `/bin` links), the interpreter's own installation, `/etc/ld.so.cache`, a few character
//!   devices (`/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`), a `/proc`
//!   that shows only the sandbox's own processes, and one writable, size-capped `tmpfs` at
//!   `/tmp` (the scratch directory, gone with the sandbox). bwrap works as root (CI) and for an
//!   ordinary user on stock distributions: Ubuntu 24.04 allows unprivileged user namespaces to
//!   binaries with an AppArmor profile, and Ubuntu's `bwrap` has one.
//! - **seccompiler** (rust-vmm; Firecracker's filter compiler) compiles a seccomp-BPF filter,
//!   handed to bwrap with `--add-seccomp-fd`, against what a math check never needs: starting
//!   processes (`fork`, `vfork`, `clone` without `CLONE_THREAD`, new namespaces), `ptrace` and
//!   `process_vm_*`, `pidfd_*`, mounts, keyrings, `bpf`, `perf_event_open`, `io_uring`,
//!   `userfaultfd`, device nodes (`mknod`), kernel modules, and sockets other than Unix ones.
//!   Threads still work (sympy and Python may start them).
//!
//! The driver adds Landlock where the kernel has it (writes only under `/tmp`, no TCP, signals
//! and abstract Unix sockets scoped to the sandbox) as one more layer. Nothing of this depends
//! on Python behaving: the code runs as an attacker would want, inside walls the kernel keeps.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{LazyLock, Mutex};

use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use crate::error::{Error, Result};

/// Where the scratch directory is inside the sandbox (its working directory and `$HOME`).
pub const SCRATCH: &str = "/tmp";

/// What running `python -I` outside the sandbox says about its own installation (no user code
/// runs there): the interpreter and the directories it imports from.
#[derive(Debug, Clone, serde::Deserialize)]
struct PythonInstall {
    executable: PathBuf,
    dirs: Vec<PathBuf>,
}

const PROBE: &str = "import json, os, sys\n\
dirs = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]\n\
dirs += [p for p in sys.path if p]\n\
print(json.dumps({'executable': sys.executable, 'dirs': dirs}))";

static PROBED: LazyLock<Mutex<BTreeMap<PathBuf, PythonInstall>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn probe(python: &Path) -> Result<PythonInstall> {
    if let Some(found) = PROBED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(python) {
        return Ok(found.clone());
    }
    let out = Command::new(python)
        .args(["-I", "-c", PROBE])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Exec(format!("cannot start {}: {e}", python.display())))?;
    let install: PythonInstall = serde_json::from_slice(&out.stdout)
        .map_err(|_| Error::Exec(format!("{} is not a working Python 3 interpreter (its installation could not be read)", python.display())))?;
    PROBED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(python.to_path_buf(), install.clone());
    Ok(install)
}

/// The read-only directories the interpreter needs, outside `/usr` (already bound): its
/// installation and import path, never `/`, a home directory itself or one of its parents.
fn python_binds(install: &PythonInstall) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = install
        .dirs
        .iter()
        .chain(std::iter::once(&install.executable))
        .filter_map(|d| std::fs::canonicalize(d).ok().map(|real| (d.clone(), real)))
        .flat_map(|(given, real)| [given, real])
        .filter(|d| d.is_absolute() && d.components().count() > 2)
        .filter(|d| !d.starts_with("/usr") && !d.starts_with("/proc") && !d.starts_with("/dev"))
        .filter(|d| home.as_ref().is_none_or(|h| !h.starts_with(d)))
        .filter(|d| d.components().all(|c| !matches!(c, Component::ParentDir)))
        .collect();
    dirs.sort();
    dirs.dedup();
    // Keep only the outermost of nested directories.
    let mut kept: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !kept.iter().any(|k| d.starts_with(k)) {
            kept.push(d);
        }
    }
    kept
}

/// The `bwrap` command line that runs `python` with `args` in a fresh sandbox whose scratch
/// directory holds at most `scratch_bytes`; `seccomp` are the filters' file descriptors, which
/// the command inherits.
pub(crate) fn command(bwrap: &Path, python: &Path, args: &[&str], scratch_bytes: u64, seccomp: &[i32], env: &[(&str, &str)]) -> Result<Command> {
    let install = probe(python)?;
    let mut cmd = Command::new(bwrap);
    // bubblewrap's own processes (the sandbox's PID 1 among them) get no environment either:
    // genprm's (an API key, say) must not be readable from /proc/1/environ.
    cmd.env_clear();
    cmd.args(["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
    cmd.args(["--uid", "65534", "--gid", "65534", "--disable-userns", "--hostname", "sandbox"]);
    cmd.args(["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => {
                cmd.arg("--symlink").arg(target).arg(&host);
            }
            Err(_) if host.is_dir() => {
                cmd.arg("--ro-bind").arg(&host).arg(&host);
            }
            Err(_) => {}
        }
    }
    cmd.args(["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]);
    for dir in python_binds(&install) {
        cmd.arg("--ro-bind").arg(&dir).arg(&dir);
    }
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let d = format!("/dev/{dev}");
        cmd.args(["--dev-bind", &d, &d]);
    }
    cmd.args(["--proc", "/proc"]);
    cmd.args(["--size", &scratch_bytes.to_string(), "--perms", "0700", "--tmpfs", SCRATCH]);
    cmd.args(["--remount-ro", "/", "--chdir", SCRATCH]);
    for (k, v) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", SCRATCH),
        ("TMPDIR", SCRATCH),
        ("LANG", "C.UTF-8"),
        ("PYTHONIOENCODING", "utf-8"),
    ]
    .iter()
    .chain(env)
    {
        cmd.args(["--setenv", k, v]);
    }
    for fd in seccomp {
        cmd.args(["--add-seccomp-fd", &fd.to_string()]);
    }
    cmd.arg("--").arg(&install.executable).args(args);
    Ok(cmd)
}

/// The two seccomp filters as BPF programs: what fails with `EPERM`, and `clone3`, which fails
/// with `ENOSYS` so that the C library falls back to `clone` (whose flags the first filter can
/// inspect).
pub(crate) fn seccomp_programs() -> Result<[Vec<u8>; 2]> {
    let arch = target_arch()?;
    let bad = |e: seccompiler::BackendError| Error::Exec(format!("cannot build the seccomp filter: {e}"));
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in denied_syscalls() {
        denied.insert(nr, Vec::new());
    }
    let cond = |arg: u8, len, op, value| SeccompCondition::new(arg, len, op, value).map_err(bad);
    // Processes: a clone that is not a thread, or that asks for a namespace.
    let mut clone_rules = vec![SeccompRule::new(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), 0)?]).map_err(bad)?];
    for flag in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ] {
        let f = flag as u64;
        clone_rules.push(SeccompRule::new(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f)?]).map_err(bad)?);
    }
    denied.insert(libc::SYS_clone, clone_rules);
    // Sockets other than Unix ones (which the network namespace confines anyway).
    denied.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?]).map_err(bad)?],
    );
    // Typing into a terminal (there is none after `--new-session`; refused anyway).
    denied.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![cond(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::TIOCSTI as u64)?]).map_err(bad)?],
    );
    let eperm = SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).map_err(bad)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(bad)?;
    let compile = |f: SeccompFilter| -> Result<Vec<u8>> {
        let program: seccompiler::BpfProgram = f.try_into().map_err(bad)?;
        Ok(program.iter().flat_map(|i| [&i.code.to_ne_bytes()[..], &[i.jt, i.jf], &i.k.to_ne_bytes()[..]].concat()).collect())
    };
    Ok([compile(eperm)?, compile(clone3)?])
}

fn target_arch() -> Result<TargetArch> {
    #[cfg(target_arch = "x86_64")]
    return Ok(TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Ok(TargetArch::aarch64);
    #[cfg(target_arch = "riscv64")]
    return Ok(TargetArch::riscv64);
    #[allow(unreachable_code)]
    Err(Error::Exec(format!("no seccomp filter for this processor ({})", std::env::consts::ARCH)))
}

/// System calls a math check never needs, refused outright.
fn denied_syscalls() -> Vec<i64> {
    use libc::*;
    let mut v = vec![
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_process_madvise,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pidfd_getfd,
        SYS_kcmp,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_move_mount,
        SYS_open_tree,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_unshare,
        SYS_setns,
        SYS_add_key,
        SYS_request_key,
        SYS_keyctl,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_mknodat,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_syslog,
        SYS_acct,
        SYS_quotactl,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_personality,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([SYS_fork, SYS_vfork, SYS_mknod, SYS_iopl, SYS_ioperm, SYS_uselib]);
    v
}

/// A pipe holding `bytes` to be read once, its read end inheritable: how a seccomp program is
/// handed to bwrap. The bytes fit in the pipe's buffer (a few KiB against 64 KiB).
pub(crate) fn inheritable_pipe_with(bytes: &[u8]) -> Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Exec(format!("cannot create a pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut w = std::fs::File::from(write);
    std::io::Write::write_all(&mut w, bytes).map_err(|e| Error::Exec(format!("cannot write the seccomp filter: {e}")))?;
    drop(w);
    Ok(read)
}

/// The advice when bubblewrap is missing or cannot create a sandbox.
pub fn unavailable_hint() -> &'static str {
    "genprm runs the model's Python only inside a sandbox the kernel enforces, built with bubblewrap: \
     install it (Debian/Ubuntu: `apt install bubblewrap`; Fedora: `dnf install bubblewrap`; Arch: `pacman -S bubblewrap`), \
     and on systems that restrict user namespaces use the distribution's own `bwrap` (Ubuntu 24.04 ships an AppArmor profile for it). \
     Otherwise pass --no-execute to judge without running code, or --allow-unsandboxed-code to run it without isolation (unsafe: \
     the code can read your files)"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_programs_compile() {
        let [a, b] = seccomp_programs().unwrap();
        assert!(a.len() > 100 && a.len() % 8 == 0, "{}", a.len());
        assert!(b.len() % 8 == 0 && !b.is_empty());
    }

    #[test]
    fn python_binds_never_expose_a_home_or_the_root() {
        let install = PythonInstall {
            executable: PathBuf::from("/usr/bin/python3"),
            dirs: vec![PathBuf::from("/"), PathBuf::from("/usr/lib/python3.11"), PathBuf::from("/opt")],
        };
        assert!(python_binds(&install).is_empty(), "{:?}", python_binds(&install));
    }
}
