"""Run untrusted Python programs, each in a fresh, limited, network-less process.

Model code is hostile by accident (infinite loops, memory blow-ups, forks, writes, sockets,
`exit(0)` before the asserts), so a verdict is only "passed" when the harness writes a random
sentinel after the last test ran. Isolation per program:

- a fresh process (forked from a warm worker, so no interpreter start per program), in its own
  session and process group, its own temp dir as cwd, HOME and TMPDIR, a scrubbed environment;
- rlimits: address space, CPU seconds, processes, file size, open files, no core dumps;
- a wall-clock timeout, after which the whole group (and, in a PID namespace, every process the
  program left behind) is killed;
- as root: the program runs as an unprivileged uid/gid (nobody), and the worker lives in new
  network, mount and PID namespaces: no network interface but a down loopback, private empty
  tmpfs on /tmp, /var/tmp, /dev/shm and /run/lock (wiped after each program), and `kill(-1)`
  reaches only the program's own processes. Where namespaces are not permitted, socket creation
  is disabled inside the program before its code runs.

This module imports only the standard library: the warm worker runs it as a script
(`python -I sandbox.py`), so it must not need failtune on the path.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# A program is a list of (part name, source) run in order in one namespace. The part named
# "tests" is where a failing assert means `assertion_failed`; a syntax error anywhere means
# `syntax_error`.
Program = Sequence[tuple[str, str]]

REASONS = (
    "passed",
    "no_code",
    "syntax_error",
    "runtime_error:<Type>",
    "assertion_failed:<test>",
    "timeout",
    "memory",
    "exited_early",
    "killed",
)
SANDBOX_UID = SANDBOX_GID = 65534  # nobody: owns nothing, may write only where it is given
_WIPED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable: private tmpfs each
_MAX_REPLY = 1 << 20  # a program flooding the verdict pipe is not read past this
_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_IMPORT_VIEWS = "/tmp/.python"  # kept across programs; root-owned in a sticky dir
# Imported once in the warm worker so programs do not pay for them (forked children share them).
_WARM_IMPORTS = (
    "array bisect cmath collections copy dataclasses datetime decimal fractions functools hashlib "
    "heapq itertools json math operator random re resource socket statistics string sys "
    "traceback typing unicodedata encodings.idna"
)


@dataclass(frozen=True)
class Limits:
    """Per-program limits; `cpu_seconds` defaults to the wall-clock timeout plus one second."""

    timeout: float = 20.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int | None = None
    processes: int = 64
    file_bytes: int = 16 << 20
    open_files: int = 64


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str
    seconds: float


# ---------------------------------------------------------------- inside the program's process


def _harness(parts: Program, sentinel: str, result_fd: int) -> None:
    """Run the parts in one namespace and write `<sentinel> <reason>` once, from this pid only.

    Builtins are restored after the candidate ran, and the tests get a private copy of them, so
    a program that patches `abs`, `print` or `AssertionError` cannot change how tests judge it.
    """
    import builtins
    import traceback

    write, getpid, me, exit_now = os.write, os.getpid, os.getpid(), os._exit
    table = vars(builtins)
    pristine = dict(table)
    # Held locally: the program may delete or replace any builtin name before they are needed.
    type_of, base_exception, memory_error = type, BaseException, MemoryError
    assertion_error, system_exit = AssertionError, SystemExit
    test_lines = dict(parts).get("tests", "").splitlines()

    def report(reason: str) -> None:
        if getpid() == me:  # a fork of the program reaching here must not speak for it
            with contextlib.suppress(OSError):
                write(result_fd, (sentinel + " " + reason + "\n").encode())
        exit_now(0)

    try:
        compiled = [(name, _compile(name, src)) for name, src in parts]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        report("syntax_error")
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    sys.setrecursionlimit(3000)
    for name, code in compiled:
        if name == "tests":
            table.clear()
            table.update(pristine)
            namespace = {**namespace, "__builtins__": dict(pristine), **_JUDGES}
        try:
            exec(code, namespace)
        except system_exit:
            report("exited_early")
        except memory_error:
            report("memory")
        except assertion_error as e:
            frames = traceback.extract_tb(e.__traceback__)
            if name == "tests" and frames and frames[-1].filename == "<tests>":
                lineno = frames[-1].lineno or 0
                line = test_lines[lineno - 1].strip() if 0 < lineno <= len(test_lines) else ""
                report("assertion_failed:" + line[:200])
            report("runtime_error:AssertionError")
        except base_exception as e:  # the program's own failure, whatever it raised
            report("runtime_error:" + type_of(e).__name__)
    report("passed")


def _compile(name: str, source: str) -> object:
    if name != "tests":
        return compile(source, f"<{name}>", "exec")
    tree = _HonestAsserts().visit(ast.parse(source, "<tests>"))
    return compile(ast.fix_missing_locations(tree), "<tests>", "exec")


def _forged(value: object, method: str, type=type, getattr=getattr) -> bool:
    """True when `method` of the value's type was written by the program (not a real file).

    An object whose `__eq__` always answers True would otherwise pass every `assert f(x) == y`.
    Builtins are bound as defaults: the program may replace them while the tests run.
    """
    for klass in type(value).__mro__:
        if method in klass.__dict__:
            code = getattr(klass.__dict__[method], "__code__", None)
            return (
                code is not None
                and code.co_filename.startswith("<")
                and (code.co_filename not in ("<tests>", "<setup>"))
            )
    return False


def _honest_eq(a: object, b: object, type=type, bool=bool) -> bool:
    """`a == b`, decided by the side whose equality the program did not write."""
    if _forged(a, "__eq__") == _forged(b, "__eq__"):
        return bool(a == b)
    honest, other = (b, a) if _forged(a, "__eq__") else (a, b)
    return type(honest).__eq__(honest, other) is True


def _honest_truth(value: object, bool=bool) -> bool:
    if _forged(value, "__bool__") or _forged(value, "__len__"):
        return False
    return bool(value)


_JUDGES = {"__failtune_eq__": _honest_eq, "__failtune_truth__": _honest_truth}


class _HonestAsserts(ast.NodeTransformer):
    """Rewrite `assert a == b` / `a != b` / `assert x` so the program's own dunders don't judge."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        node.test = self._judge(node.test)
        return node

    def _judge(self, test: ast.expr) -> ast.expr:
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op = test.ops[0]
            if isinstance(op, ast.Eq | ast.NotEq):
                call = self._call("__failtune_eq__", test.left, test.comparators[0])
                return call if isinstance(op, ast.Eq) else ast.UnaryOp(ast.Not(), call)
            return test
        if isinstance(test, ast.BoolOp):
            test.values = [self._judge(v) for v in test.values]
            return test
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test.operand = self._judge(test.operand)
            return test
        if isinstance(test, ast.Compare):
            return test
        return self._call("__failtune_truth__", test)

    @staticmethod
    def _call(name: str, *args: ast.expr) -> ast.Call:
        return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), list(args), []), args[0])


def _disable_sockets() -> None:
    """Fallback when no network namespace is allowed: any socket creation raises."""
    import _socket
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in the sandbox")

    for module in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "fromfd", "create_server"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def _enter_child(request: dict, workdir: str, result_fd: int, isolation: dict) -> None:
    """In the forked child: detach, limit, drop privileges, then run the harness."""
    import resource

    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, 1 << 16)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(
            {"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        )
        tempfile.tempdir = workdir
        lim = request["limits"]
        cpu = lim["cpu_seconds"] or int(lim["timeout"]) + 1
        for kind, value in (
            (resource.RLIMIT_AS, lim["memory_bytes"]),
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_NPROC, lim["processes"]),
            (resource.RLIMIT_FSIZE, lim["file_bytes"]),
            (resource.RLIMIT_NOFILE, lim["open_files"]),
            (resource.RLIMIT_CORE, 0),
        ):
            soft, hard = value if isinstance(value, tuple) else (value, value)
            resource.setrlimit(kind, (soft, hard))
        if isolation["drop_user"]:
            os.setgroups([])
            os.setgid(SANDBOX_GID)
            os.setuid(SANDBOX_UID)
        if not isolation["network_namespace"]:
            _disable_sockets()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGPIPE else signal.SIG_IGN)
    except BaseException:
        os._exit(3)  # could not confine the program: it does not run, the verdict is "killed"
    _harness(request["parts"], request["sentinel"], result_fd)


# ---------------------------------------------------------------- the warm worker ("zygote")


def _libc_call(name: str, *args: object) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, name)(*args) == 0


def _isolate_worker() -> dict:
    """Enter new net/mount/PID namespaces when permitted; report what holds.

    Returns in the process that serves requests: after a PID namespace the caller forks and the
    child (pid 1 of the namespace) serves; the parent only waits for it.
    """
    root = os.geteuid() == 0
    flags = _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWPID
    if root and _libc_call("unshare", flags):
        pid = os.fork()
        if pid:  # the outer process: stay until the namespace's init ends, then leave
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        mounted = _libc_call("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)
        for path in (*_WIPED, "/proc"):
            if not mounted or not os.path.isdir(path):
                continue
            kind, opts = (b"proc", None) if path == "/proc" else (b"tmpfs", b"mode=1777,size=512m")
            mounted = _libc_call(
                "mount", kind, path.encode(), kind, _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts
            )
        views = _expose_import_paths() if mounted else {}
        return _isolation(netns=True, pidns=True, private_tmp=mounted, drop_user=True, views=views)
    netns = _libc_call("unshare", _CLONE_NEWNET)
    return _isolation(netns=netns, pidns=False, private_tmp=False, drop_user=root, views={})


def _isolation(
    *, netns: bool, pidns: bool, private_tmp: bool, drop_user: bool, views: dict[str, str]
) -> dict:
    return {
        "network_namespace": netns,
        "pid_namespace": pidns,
        "private_tmp": private_tmp,
        "drop_user": drop_user,
        "import_paths": views,
    }


def _others_can_read(path: str) -> bool:
    path = os.path.abspath(path)
    ancestors = [os.path.dirname(path)]
    while ancestors[-1] != os.path.dirname(ancestors[-1]):
        ancestors.append(os.path.dirname(ancestors[-1]))
    return all(os.stat(a).st_mode & 0o001 for a in ancestors) and (
        os.stat(path).st_mode & 0o005 == 0o005
    )


def _expose_import_paths() -> dict[str, str]:
    """Read-only views of import dirs the unprivileged user cannot reach (Python under /root).

    The dropped-privilege program must still import the standard library and site-packages;
    the views live in the worker's private /tmp, outside what is wiped between programs.
    """
    views: dict[str, str] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry) or _others_can_read(entry):
            continue
        view = os.path.join(_IMPORT_VIEWS, str(len(views)))
        os.makedirs(view, mode=0o755)
        os.chmod(_IMPORT_VIEWS, 0o755)
        if _libc_call("mount", entry.encode(), view.encode(), None, _MS_BIND | _MS_REC, None):
            _libc_call(
                "mount", None, view.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None
            )
            views[entry] = view
    # This worker and its programs import through the views from now on, packages included.
    sys.path[:] = [views.get(p, p) for p in sys.path]
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = [_moved(p, views) for p in path]
    sys.path_importer_cache.clear()
    return views


def _moved(path: str, views: dict[str, str]) -> str:
    for old, new in views.items():
        if path == old or path.startswith(old + os.sep):
            return new + path[len(old) :]
    return path


def _wipe(isolation: dict, workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    if isolation["private_tmp"]:
        for top in _WIPED:
            with contextlib.suppress(OSError):
                for entry in os.scandir(top):
                    if entry.path == _IMPORT_VIEWS:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def _verdict(lines: list[str], sentinel: str, status: int | None, timed_out: bool) -> str:
    for line in lines:
        if line.startswith(sentinel + " "):
            return line[len(sentinel) + 1 :]
    if timed_out:
        return "timeout"
    if status is not None and os.WIFSIGNALED(status):
        return "timeout" if os.WTERMSIG(status) == signal.SIGXCPU else "killed"
    if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        return "killed"
    return "exited_early"  # exited (any code) without the harness reaching its report


def _run_one(request: dict, isolation: dict) -> dict:
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="prog-", dir="/tmp" if isolation["private_tmp"] else None)
    if isolation["drop_user"]:
        os.chown(workdir, SANDBOX_UID, SANDBOX_GID)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _enter_child(request, workdir, write_fd, isolation)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    pidfd = os.pidfd_open(pid)
    deadline = started + request["limits"]["timeout"]
    chunks, status, timed_out = [], None, False
    watched = [read_fd, pidfd]
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(watched, [], [], left)
        if read_fd in ready:
            with contextlib.suppress(BlockingIOError):
                data = os.read(read_fd, 1 << 16)
                if not data:  # every writer closed it: only the exit is left to wait for
                    watched.remove(read_fd)
                elif sum(map(len, chunks)) < _MAX_REPLY:  # a flood is read and dropped
                    chunks.append(data)
        if pidfd in ready:
            status = os.waitpid(pid, 0)[1]
    with contextlib.suppress(BlockingIOError, OSError):
        chunks.append(os.read(read_fd, 1 << 16))
    os.close(read_fd)
    os.close(pidfd)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if isolation["pid_namespace"]:  # pid 1 of the namespace: this reaches every leftover
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    _reap(isolation)
    text = b"".join(chunks).decode("utf-8", "replace")
    reason = _verdict(text.splitlines(), request["sentinel"], status, timed_out)
    _wipe(isolation, workdir)
    seconds = round(time.monotonic() - started, 4)
    return {"passed": reason == "passed", "reason": reason, "seconds": seconds}


def _reap(isolation: dict) -> None:
    """Collect every dead descendant (blocking in a PID namespace: all were just killed)."""
    flags = 0 if isolation["pid_namespace"] else os.WNOHANG
    while True:
        try:
            if os.waitpid(-1, flags)[0] == 0:
                return
        except ChildProcessError:
            return


def _read_message(stream) -> dict | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    return json.loads(stream.read(struct.unpack("<I", head)[0]))


def _write_message(stream, message: dict) -> None:
    body = json.dumps(message).encode()
    stream.write(struct.pack("<I", len(body)) + body)
    stream.flush()


def _serve() -> None:
    """Worker loop: one request in, one forked program, one verdict out; ends at EOF."""
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    isolation = _isolate_worker()
    for name in _WARM_IMPORTS.split():
        __import__(name)
    _write_message(replies, isolation)
    while (request := _read_message(requests)) is not None:
        _write_message(replies, _run_one(request, isolation))


# ---------------------------------------------------------------- the caller's side


class _Worker:
    def __init__(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        self.isolation = self._receive(60.0)

    def _receive(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        message = _read_message(self.proc.stdout) if ready else None
        if message is None:
            raise RuntimeError("sandbox worker stopped answering")
        return message

    def run(self, request: dict, timeout: float) -> dict:
        assert self.proc.stdin is not None
        _write_message(self.proc.stdin, request)
        return self._receive(timeout)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class Sandbox:
    """A pool of warm workers; `run` grades many programs in parallel, in input order.

    A worker that dies or stops answering (a program that found a way to kill it) is replaced,
    and that program's verdict is `killed`.
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.limits = limits or Limits()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        first = _Worker()  # started now, so a broken setup fails here and isolation is known
        self._all = [first]
        self._idle.put(first)
        self.isolation: dict = first.isolation

    def _take(self) -> _Worker:
        with contextlib.suppress(queue.Empty):
            return self._idle.get_nowait()
        worker = _Worker()
        with self._lock:
            self._all.append(worker)
        return worker

    def _run(self, program: Program) -> Outcome:
        request = {
            "parts": [list(p) for p in program],
            "sentinel": os.urandom(16).hex(),
            "limits": asdict(self.limits),
        }
        worker = self._take()
        started = time.monotonic()
        try:
            reply = worker.run(request, self.limits.timeout + 30)
        except (RuntimeError, OSError, ValueError):
            worker.close()
            with self._lock:
                self._all.remove(worker)
            return Outcome(False, "killed", time.monotonic() - started)
        self._idle.put(worker)
        return Outcome(reply["passed"], reply["reason"], reply["seconds"])

    def run(self, programs: Sequence[Program]) -> list[Outcome]:
        if len(programs) <= 1 or self.workers == 1:
            return [self._run(p) for p in programs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self._run, programs))

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
