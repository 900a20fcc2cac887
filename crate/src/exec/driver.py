# genprm's Python sandbox driver. Started by the Rust `PythonSandbox`, normally inside a sandbox
# the kernel enforces (bubblewrap's namespaces, a seccomp filter, no capabilities: see
# crate/src/exec/linux.rs), in its scratch directory with resource limits. It reads one JSON
# request per line from its private input and answers one JSON line on its private output. Each
# request's code runs with `exec` in one namespace that lives as long as the process (one solution
# path), stdout captured (up to a cap), with a SIGALRM time limit, exactly as GenPRM's official
# CodeExecutor does.
#
# Nothing here is a security boundary: the code it runs can reach everything in this process.
# Before any such code runs, it adds Landlock where the kernel has it (a kernel-kept layer the
# code cannot undo). Only when the user explicitly runs code without isolation
# (GENPRM_AUDIT_HOOK=1) does it add the audit hook below, a best effort against accidents.
import contextlib
import io
import json
import os
import signal
import sys

SCRATCH = os.path.realpath(os.getcwd())
TIME_LIMIT = int(os.environ.get("GENPRM_TIME_LIMIT", "5"))
# What one run may print is kept up to this many characters (the rest is counted, not stored).
OUTPUT_KEEP = int(os.environ.get("GENPRM_OUTPUT_KEEP", "65536"))

# Private protocol channels; fds 0, 1 and 2 point at /dev/null so user code cannot reach them.
_proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
_proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
_null = os.open(os.devnull, os.O_RDWR)
for _fd in (0, 1, 2):
    os.dup2(_null, _fd)
sys.stdin = io.StringIO("")
sys.stderr = io.StringIO()

_BLOCKED = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.setuid", "os.setgid", "subprocess.Popen", "pty.spawn",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "resource.setrlimit", "resource.prlimit", "webbrowser.open", "sys.remote_exec",
}
_PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
    "os.truncate": (0,), "os.utime": (0,), "os.rename": (0, 1), "os.link": (0, 1),
    "os.symlink": (0, 1), "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,),
    "shutil.move": (0, 1), "shutil.make_archive": (0,), "os.chdir": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside_scratch(path):
    if isinstance(path, int):
        return True
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == SCRATCH or p.startswith(SCRATCH + os.sep)


def _audit(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"{event} is not allowed in the sandbox")
    if event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing and not _inside_scratch(path):
            raise PermissionError(f"writing {path!r} is not allowed in the sandbox (only the scratch directory)")
    elif event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
            if i < len(args) and not _inside_scratch(args[i]):
                raise PermissionError(f"{event} on {args[i]!r} is not allowed in the sandbox")


def _landlock():
    """Landlock (Linux 5.13+), applied to this process before any untrusted code runs: files may
    be written, made or removed only in the scratch directory; no TCP (ABI 4+); signals and
    abstract Unix sockets only within this sandbox (ABI 6+). Returns the ABI applied, 0 when
    the kernel has none."""
    try:
        import ctypes
    except ImportError:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    create, add_rule, restrict_self = 444, 445, 446  # the same numbers on every architecture
    abi = syscall(ctypes.c_long(create), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    write_file, truncate = 1 << 1, 1 << 14
    handled = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))
    if abi >= 2:
        handled |= 1 << 13  # refer
    if abi >= 3:
        handled |= truncate

    class Ruleset(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = Ruleset(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = syscall(ctypes.c_long(create), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for path, allowed in ((SCRATCH, handled), (os.devnull, write_file | (truncate if abi >= 3 else 0))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = PathBeneath(allowed, fd)
        if syscall(ctypes.c_long(add_rule), ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
        os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl")
    if syscall(ctypes.c_long(restrict_self), ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)
    return abi


class _Capped(io.TextIOBase):
    """stdout for one run: keeps the first OUTPUT_KEEP characters, counts the rest."""

    def __init__(self):
        self._parts = []
        self._kept = 0
        self.omitted = 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        room = OUTPUT_KEEP - self._kept
        if room > 0:
            self._parts.append(s[:room])
            self._kept += min(room, len(s))
        self.omitted += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self):
        return "".join(self._parts)


class _Timeout:
    def __enter__(self):
        signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(TIME_LIMIT)

    def __exit__(self, *exc):
        signal.alarm(0)

    @staticmethod
    def _fire(signum, frame):
        raise TimeoutError("Code execution timed out")


def _reply(obj):
    _proto_out.write(json.dumps(obj) + "\n")
    _proto_out.flush()


def main():
    namespace = {}
    # Warm the imports GenPRM's code uses most, before the hook makes the process stricter.
    for mod in ("math", "fractions", "decimal", "itertools", "sympy"):
        try:
            __import__(mod)
        except Exception:
            pass
    landlock = 0
    if os.environ.get("GENPRM_LANDLOCK") == "1":
        landlock = _landlock()
    if os.environ.get("GENPRM_AUDIT_HOOK") == "1":
        sys.addaudithook(_audit)
    _reply({"ready": True, "landlock": landlock})
    for line in _proto_in:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        code = request.get("code", "")
        sys.stdin = io.StringIO("")  # `exit()` closes stdin; every run starts with a fresh one
        sys.stderr = io.StringIO()
        buf = _Capped()
        try:
            with contextlib.redirect_stdout(buf):
                with _Timeout():
                    exec(code, namespace)
            _reply({"kind": "ok", "stdout": buf.getvalue(), "omitted": buf.omitted})
        except TimeoutError as e:
            _reply({"kind": "timeout", "message": str(e)})
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: the sandbox outlives them
            try:
                message = str(e)[:OUTPUT_KEEP]
            except Exception:
                message = "<unprintable>"
            _reply({"kind": "error", "type": type(e).__name__, "message": message})


main()
