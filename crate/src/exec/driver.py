# genprm's Python sandbox driver. Started by the Rust `PythonSandbox` in a scratch directory with
# resource limits; it reads one JSON request per line from its private input and answers one JSON
# line on its private output. Each request's code runs with `exec` in one namespace that lives as
# long as the process (one solution path), stdout captured, with a SIGALRM time limit, exactly as
# GenPRM's official CodeExecutor does. An audit hook refuses what a sandbox must not do: starting
# processes, network sockets, loading native libraries, and writing outside the scratch directory.
import contextlib
import io
import json
import os
import signal
import sys

SCRATCH = os.path.realpath(os.getcwd())
TIME_LIMIT = int(os.environ.get("GENPRM_TIME_LIMIT", "5"))

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
    sys.addaudithook(_audit)
    _reply({"ready": True})
    for line in _proto_in:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        code = request.get("code", "")
        sys.stdin = io.StringIO("")  # `exit()` closes stdin; every run starts with a fresh one
        sys.stderr = io.StringIO()
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                with _Timeout():
                    exec(code, namespace)
            _reply({"kind": "ok", "stdout": buf.getvalue()})
        except TimeoutError as e:
            _reply({"kind": "timeout", "message": str(e)})
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: the sandbox outlives them
            try:
                message = str(e)
            except Exception:
                message = "<unprintable>"
            _reply({"kind": "error", "type": type(e).__name__, "message": message})


main()
