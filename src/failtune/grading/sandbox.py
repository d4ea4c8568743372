"""Run untrusted Python programs, each in a fresh, limited, network-less process.

Model code is hostile by accident (infinite loops, memory blow-ups, forks, writes, sockets,
`exit(0)` before the asserts), so a verdict is only "passed" when the harness writes a random
sentinel after the last test ran. Isolation per program:

- a fresh process (forked from a warm worker, so no interpreter start per program), in its own
  session and process group, its own temp dir as cwd, HOME and TMPDIR, a scrubbed environment;
- rlimits: address space, CPU seconds, processes, file size, open files, no core dumps;
- a wall-clock timeout, after which the whole group and every process the program left behind
  are killed;
- walls chosen by grading/isolation.py: namespaces (as root or as an ordinary user, with a
  read-only filesystem), else Landlock, else none, which `Sandbox` refuses unless allowed.

This module imports only the standard library: the warm worker runs it as a script
(`python -I sandbox.py`), so it must not need failtune on the path; it loads its two helpers,
harness.py (inside the program) and isolation.py (the walls), by their path for that reason.
"""

from __future__ import annotations

import contextlib
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

if __package__:
    from failtune.grading import harness, isolation
else:  # the worker: this file run as a script, failtune not importable, its siblings by path
    import importlib.util
    import types

    def _sibling(name: str) -> types.ModuleType:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
        spec = importlib.util.spec_from_file_location("_failtune_" + name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    harness, isolation = _sibling("harness"), _sibling("isolation")

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
_MAX_REPLY = 1 << 20  # a program flooding the verdict pipe is not read past this
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


def _enter_child(request: dict, workdir: str, result_fd: int, policy: dict) -> None:
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
        isolation.confine(policy, workdir)
        if not policy["network_namespace"]:
            isolation.disable_sockets()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGPIPE else signal.SIG_IGN)
    except BaseException:
        os._exit(3)  # could not confine the program: it does not run, the verdict is "killed"
    harness.run(request["parts"], request["sentinel"], result_fd)


# ---------------------------------------------------------------- the warm worker ("zygote")


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


def _run_one(request: dict, policy: dict) -> dict:
    started = time.monotonic()
    namespaces = policy["level"] == "namespaces"
    workdir = tempfile.mkdtemp(prefix="prog-", dir=isolation.WORK_ROOT if namespaces else None)
    if policy["drop_user"]:
        os.chown(workdir, isolation.SANDBOX_UID, isolation.SANDBOX_GID)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _enter_child(request, workdir, write_fd, policy)
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
    if policy["pid_namespace"]:  # pid 1 of the namespace: this reaches every leftover
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    _reap(policy)
    if not policy["pid_namespace"]:
        isolation.kill_descendants()
    text = b"".join(chunks).decode("utf-8", "replace")
    reason = _verdict(text.splitlines(), request["sentinel"], status, timed_out)
    shutil.rmtree(workdir, ignore_errors=True)
    seconds = round(time.monotonic() - started, 4)
    return {"passed": reason == "passed", "reason": reason, "seconds": seconds}


def _reap(policy: dict) -> None:
    """Collect every dead descendant (blocking in a PID namespace: all were just killed)."""
    flags = 0 if policy["pid_namespace"] else os.WNOHANG
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
    for name in _WARM_IMPORTS.split():
        __import__(name)
    # What programs must still read once everything else is hidden: the interpreter, its
    # libraries, and the failtune package (wherever the checkout or the venv lives).
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    interpreter = os.path.dirname(os.path.realpath(sys.executable))
    keep = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, interpreter, package]
    env = os.environ
    policy = isolation.isolate_worker(env.get(isolation.FORCE_ENV, ""), env.get("HOME", ""), keep)
    _write_message(replies, policy)
    while (request := _read_message(requests)) is not None:
        _write_message(replies, _run_one(request, policy))


# ---------------------------------------------------------------- the caller's side


class _Worker:
    def __init__(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.path.expanduser("~")}
        env[isolation.FORCE_ENV] = os.environ.get(isolation.FORCE_ENV, "")
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


class Unsandboxed(RuntimeError):
    """Neither namespaces nor Landlock are available, and running unsandboxed was not allowed."""


class Sandbox:
    """A pool of warm workers; `run` grades many programs in parallel, in input order.

    A worker that dies or stops answering (a program that found a way to kill it) is replaced,
    and that program's verdict is `killed`. Where no isolation is available it raises
    `Unsandboxed` unless `allow_unsandboxed` (the user's `--allow-unsandboxed-code`).
    """

    def __init__(
        self,
        workers: int | None = None,
        limits: Limits | None = None,
        allow_unsandboxed: bool = False,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.limits = limits or Limits()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        first = _Worker()  # started now, so a broken setup fails here and isolation is known
        self._all = [first]
        self._idle.put(first)
        self.isolation: dict = first.isolation
        self.description = isolation.describe(self.isolation)
        if self.isolation["level"] == "none" and not allow_unsandboxed:
            self.close()
            raise Unsandboxed(isolation.refusal(self.isolation))

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
