"""Hostile completions: each fails with the right reason, in time, and changes nothing outside.

Every program is a completion for MBPP 14 (`find_Volume`) graded through the same path as
extraction (code extraction, program building, the sandbox), with a 2-second timeout. The
battery runs as the user running the tests and, when that is root, again as an ordinary user
(created here), because that is how most people run failtune. Over 450 lines because the
battery is a table of over forty hostile programs, kept in one place so every run sees them all.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pwd
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import failtune
from failtune.cli import main
from failtune.grading import isolation
from failtune.grading.code import build_program, extract_code, shared_sandbox
from failtune.grading.sandbox import Limits, Sandbox, Unsandboxed
from failtune.tasks import MBPP, HumanEval

TIMEOUT = 2.0
WRONG = "\ndef find_Volume(l, b, h):\n    return 0\n"
RIGHT = "\ndef find_Volume(l, b, h):\n    return (l * b * h) / 2\n"
PACKAGE_FILE = Path(failtune.__file__).parent / "tasks" / "data" / "mbpp" / "LICENSE"
VENV_FILE = Path(pytest.__file__)  # a file of the environment the programs run in
ORDINARY_USER = "failtune-sbx"
REFUSED = {"runtime_error:OSError", "runtime_error:PermissionError"}  # read-only or denied
GONE_OR_REFUSED = REFUSED | {"runtime_error:FileNotFoundError"}  # hidden, read-only or denied


def battery(spec: dict) -> list[tuple[str, str, set[str]]]:
    """(name, completion, acceptable reasons); a reason ending in ':' matches as a prefix."""
    return [*_limits_and_exits(), *_file_escapes(spec), *_other_escapes(spec), *_forgeries()]


def _limits_and_exits() -> list[tuple[str, str, set[str]]]:
    return [
        ("infinite loop", "while True:\n    pass" + RIGHT, {"timeout"}),
        ("sleep", "import time\ntime.sleep(60)" + RIGHT, {"timeout"}),
        (
            "loop inside the function",
            "def find_Volume(l, b, h):\n    while True: pass",
            {"timeout"},
        ),
        ("memory bomb list", "x = [0] * (10 ** 10)" + RIGHT, {"memory"}),
        ("memory bomb bytes", "x = bytearray(8 << 30)" + RIGHT, {"memory"}),
        ("memory growth", "x = []\nwhile True:\n    x.append(bytes(10**8))" + RIGHT, {"memory"}),
        (
            "fork bomb",
            "import os\nwhile True:\n    os.fork()" + RIGHT,
            {"runtime_error:BlockingIOError", "timeout", "memory"},
        ),
        (
            "fork bomb, errors swallowed",
            "import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass" + RIGHT,
            {"timeout", "memory"},
        ),
        ("exit(0) before asserts", "exit(0)" + RIGHT, {"exited_early"}),
        ("quit()", RIGHT + "quit()", {"exited_early"}),
        ("sys.exit(0)", "import sys\nsys.exit(0)" + RIGHT, {"exited_early"}),
        ("os._exit(0)", "import os\nos._exit(0)" + RIGHT, {"exited_early"}),
        ("raise SystemExit", "raise SystemExit" + RIGHT, {"exited_early"}),
        (
            "exit from the function under test",
            "import os\ndef find_Volume(l, b, h):\n    os._exit(0)",
            {"exited_early"},
        ),
        (
            "SystemExit from the function under test",
            "def find_Volume(l, b, h):\n    raise SystemExit(0)",
            {"exited_early"},
        ),
    ]


def _file_escapes(spec: dict) -> list[tuple[str, str, set[str]]]:
    mark, canary = spec["mark"], spec["canary"]
    package, venv = spec["package_file"], spec["venv_file"]
    tree = os.path.dirname(canary)
    outside = [f"/tmp/{mark}", f"/var/tmp/{mark}", f"/dev/shm/{mark}"]
    return [
        (
            "write outside the temp dir",
            "".join(f"open({p!r}, 'w').write('x')\n" for p in outside) + WRONG,
            REFUSED,
        ),
        (
            "write the temp dir, then outside",
            "import tempfile\nopen(tempfile.mkstemp()[1], 'w').write('x')\n"
            f"open({outside[0]!r}, 'w')" + WRONG,
            REFUSED,
        ),
        (
            "overwrite a file in the home",
            f"open({canary!r}, 'w').write('pwned')" + WRONG,
            GONE_OR_REFUSED,
        ),
        ("delete a package file", f"import os\nos.remove({package!r})" + WRONG, REFUSED),
        ("delete a venv file", f"import os\nos.remove({venv!r})" + WRONG, REFUSED),
        (
            "delete a tree in the home",
            f"import shutil\nshutil.rmtree({tree!r})" + WRONG,
            GONE_OR_REFUSED,
        ),
        (
            "write into the package",
            f"open({os.path.join(os.path.dirname(package), mark)!r}, 'w')" + WRONG,
            REFUSED,
        ),
        (
            "unhide the home, then write there",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.unshare(0x10000000 | 0x00020000)\n"  # a user and mount namespace of its own
            f"if libc.umount2({os.path.dirname(tree).encode()!r}, 2) != 0:\n"
            "    raise OSError(ctypes.get_errno(), 'umount')\n"
            f"open({canary!r}, 'w').write('pwned')" + WRONG,
            GONE_OR_REFUSED | {"runtime_error:"},
        ),
        (
            "remount the package writable",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"if libc.mount(None, {os.path.dirname(package).encode()!r}, None, 0x1020, None):\n"
            "    raise OSError(ctypes.get_errno(), 'mount')\n"
            f"open({package!r}, 'w')" + WRONG,
            REFUSED,
        ),
    ]


def _other_escapes(spec: dict) -> list[tuple[str, str, set[str]]]:
    """The network, other processes, the grader's pipes and signals."""
    mark, port = spec["mark"], spec["port"]
    return [
        (
            "connect to the host through libc",
            "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = libc.socket(2, 1, 0)\n"
            f"addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1])\n"
            "if fd < 0 or libc.connect(fd, addr + bytes(8), 16) != 0:\n"
            "    raise OSError(ctypes.get_errno(), 'connect')" + WRONG,
            {"runtime_error:"},
        ),
        (
            "outbound socket",
            "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)" + WRONG,
            {"runtime_error:"},
        ),
        (
            "loopback server",
            f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))" + WRONG,
            {"runtime_error:"},
        ),
        (
            "kill the parent",
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)" + WRONG,
            # refused, or ignored by the PID namespace's init: the program goes on and fails
            {
                "runtime_error:PermissionError",
                "runtime_error:ProcessLookupError",
                "killed",
                "assertion_failed:",
            },
        ),
        (
            "kill the parent's group",
            "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)" + WRONG,
            {"runtime_error:PermissionError", "runtime_error:ProcessLookupError", "killed"},
        ),
        (
            "kill everything",
            "import os, signal\nos.kill(-1, signal.SIGKILL)" + WRONG,
            {"runtime_error:ProcessLookupError", "killed", "assertion_failed:"},
        ),
        ("kill own group", "import os, signal\nos.killpg(0, signal.SIGKILL)" + RIGHT, {"killed"}),
        (
            "huge output",
            "print('x' * (1 << 28))\nwhile True:\n    print('y' * 65536)" + RIGHT,
            {"timeout"},
        ),
        ("huge single write", "import sys\nsys.stdout.write('z' * (1 << 31))" + RIGHT, {"memory"}),
        (
            "signals ignored",
            "import signal\n"
            "for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGALRM):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass" + RIGHT,
            {"timeout"},
        ),
        (
            "stop itself",
            "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)" + RIGHT,
            {"timeout"},
        ),
        ("segfault", "import ctypes\nctypes.string_at(0)" + RIGHT, {"killed"}),
        (
            "escape the group",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv('/bin/sh', ['sh', '-c', 'sleep 600; : {mark}'])\n"
            "time.sleep(0.2)" + WRONG,
            {"assertion_failed:"},
        ),
    ]


def _forgeries() -> list[tuple[str, str, set[str]]]:
    """Programs that try to pass without being right."""
    return [
        (
            "patch builtins",
            "import builtins\nbuiltins.AssertionError = KeyError\n"
            "builtins.print = lambda *a, **k: None" + WRONG,
            {"assertion_failed:"},
        ),
        (
            "patch the reporting",
            "import os\nos.write = lambda *a: 0\nos._exit = lambda *a: None" + WRONG,
            {"assertion_failed:"},
        ),
        (
            "always-equal result",
            "class Anything:\n"
            "    def __eq__(self, other):\n        return True\n"
            "def find_Volume(l, b, h):\n    return Anything()",
            {"assertion_failed:"},
        ),
        (
            "forge a verdict",
            "import os\nfor fd in range(3, 64):\n    try:\n"
            "        os.write(fd, b'passed\\n')\n    except OSError:\n        pass" + WRONG,
            {"assertion_failed:"},
        ),
        ("close the verdict pipe", "import os\nos.closerange(3, 64)" + RIGHT, {"exited_early"}),
        (
            "recursion bomb",
            "def f(n):\n    return f(n + 1)\nf(0)" + RIGHT,
            {"runtime_error:RecursionError"},
        ),
        (
            "deep C recursion",
            "import sys\nsys.setrecursionlimit(10 ** 7)\n"
            "def f(n):\n    return f(n + 1)\nf(0)" + RIGHT,
            {"killed", "memory", "timeout", "runtime_error:RecursionError"},
        ),
    ]


def _matches(reason: str, accepted: set[str]) -> bool:
    return any(reason.startswith(a) if a.endswith(":") else reason == a for a in accepted)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _survivors(mark: str) -> list[int]:
    """Processes a program started (their command line carries the mark) still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def reference_programs() -> dict[str, list[tuple[str, str]]]:
    """Every HumanEval and MBPP canonical solution as the program grading runs."""
    programs = {}
    for task in (HumanEval(), MBPP()):
        for problem, tests in task.rows().values():
            code = extract_code(problem.solution, tests.entry_point)
            programs[problem.id] = list(build_program(code or "", tests))
    return programs


def grade_battery(spec: dict) -> dict:
    """Grade the battery (and, with `references`, every canonical solution) in this process.

    Runs as the test's user or, in a child, as the ordinary user; what must be checked on the
    host (files, the listener) the caller checks.
    """
    problem = next(p for p in MBPP().load("test") if p.id == "mbpp/test/14")
    tests = MBPP().tests_for(problem)
    cases = [c for c in battery(spec) if c[0] not in spec.get("skip", ())]
    programs = [build_program(extract_code(code) or "", tests) for _, code, _ in cases]
    references = reference_programs() if spec.get("references") else {}
    with Sandbox(2, Limits(timeout=TIMEOUT)) as sandbox:
        started = time.monotonic()
        outcomes = sandbox.run(programs)
        wall = time.monotonic() - started
        # The sandbox survived all of it and still grades a right answer as right.
        after = [o.reason for o in sandbox.run([build_program(RIGHT, tests)] * 4)]
        survivors_while_open = _survivors(spec["mark"])
        policy = sandbox.isolation
    with Sandbox(2, Limits()) as sandbox:  # the default timeout: some references take seconds
        verdicts = sandbox.run(list(references.values()))
    pairs = list(zip(cases, outcomes, strict=True))
    return {
        "level": policy["level"],
        "as_root": policy["as_root"],
        "uid": os.getuid(),
        "wrong": {n: o.reason for (n, _, ok), o in pairs if o.passed or not _matches(o.reason, ok)},
        "slow": {n: o.seconds for (n, _, _), o in pairs if o.seconds > TIMEOUT + 2},
        "wall": wall,
        "summed": sum(o.seconds for o in outcomes),
        "after": after,
        "survivors_while_open": survivors_while_open,
        "references": len(references),
        "references_failed": {
            i: v.reason for i, v in zip(references, verdicts, strict=True) if not v.passed
        },
    }


class Host:
    """What the programs must not reach: canaries, a loopback listener, package and venv files."""

    def __init__(self, home: Path, owner: int = -1) -> None:
        self.mark = f"failtune-hostile-{os.getpid()}-{time.monotonic_ns()}"
        self.tree = home / self.mark
        self.tree.mkdir()
        self.canary = self.tree / "canary.txt"
        self.canary.write_text("untouched")
        for path in (self.tree, self.canary):
            os.chown(path, owner, -1)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.digests = {p: _digest(p) for p in (PACKAGE_FILE, VENV_FILE)}

    def spec(self, **extra: object) -> dict:
        return {
            "mark": self.mark,
            "canary": str(self.canary),
            "port": self.listener.getsockname()[1],
            "package_file": str(PACKAGE_FILE),
            "venv_file": str(VENV_FILE),
            **extra,
        }

    def check_untouched(self) -> None:
        try:
            with pytest.raises(BlockingIOError):  # no connection ever arrived
                self.listener.accept()
            assert self.canary.read_text() == "untouched"
            assert {p: _digest(p) for p in self.digests} == self.digests
            assert not (PACKAGE_FILE.parent / self.mark).exists()
            for path in (f"/tmp/{self.mark}", f"/var/tmp/{self.mark}", f"/dev/shm/{self.mark}"):
                assert not Path(path).exists(), path
            assert _survivors(self.mark) == []
        finally:
            self.listener.close()
            self.canary.unlink(missing_ok=True)
            self.tree.rmdir()


def _check_report(report: dict, *, references: bool = True) -> None:
    assert report["wrong"] == {}
    assert report["slow"] == {}
    assert report["after"] == ["passed"] * 4
    assert report["survivors_while_open"] == []
    # Two workers in parallel: the whole battery takes about half its summed time.
    assert report["wall"] < report["summed"] / 2 + 2 * TIMEOUT
    if references:
        assert report["references"] == 164 + 974 and report["references_failed"] == {}


def test_hostile_battery(tmp_path: Path) -> None:
    """As the user running the tests (root in CI containers, an ordinary user elsewhere)."""
    home = Path.home()
    host = Host(home if home.is_dir() and os.access(home, os.W_OK) else tmp_path)
    report = grade_battery(host.spec(references=True))
    host.check_untouched()
    assert (report["level"], report["as_root"]) == ("namespaces", os.geteuid() == 0)
    _check_report(report)


def _ordinary_user() -> pwd.struct_passwd:
    """An unprivileged account for the tests (created once; another run may have made it)."""
    try:
        return pwd.getpwnam(ORDINARY_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", ORDINARY_USER], capture_output=True, check=False)
        return pwd.getpwnam(ORDINARY_USER)


def _needed_paths() -> list[str]:
    """What the ordinary user's interpreter must read: Python, the venv, failtune, the tests."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths |= {p for p in sys.path if p and os.path.isdir(p)}
    paths |= {str(Path(failtune.__file__).parents[1]), str(Path(__file__).parent)}
    return sorted(os.path.realpath(p) for p in paths)


def _closed_ancestors(paths: list[str]) -> list[str]:
    """Directories on the way to `paths` that others may not enter (e.g. a 0700 /root)."""
    return sorted(
        {str(d) for p in paths for d in Path(p).parents if not os.stat(d).st_mode & 0o001}
    )


def _become(user: pwd.struct_passwd, closed: list[str], needed: list[str]) -> None:
    """In the child before exec: where the interpreter sits behind a closed directory (a
    Python under /root), a private mount namespace shows the user just what it needs."""
    if closed:
        isolation.reveal_only(closed, needed)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def run_as_ordinary_user(user: pwd.struct_passwd, spec: dict) -> dict:
    """grade_battery(spec) in a child process running as `user`; its report."""
    needed = _needed_paths()
    closed = _closed_ancestors(needed)
    child = (
        "import json, sys\nfrom test_sandbox import grade_battery\n"
        "print(json.dumps(grade_battery(json.load(sys.stdin))))"
    )
    try:
        done = _run_as(user, closed, needed, child, spec)
    except subprocess.SubprocessError:  # the mount namespace showing the interpreter failed
        if not closed or os.environ.get("CI"):
            raise
        pytest.skip(f"{', '.join(closed)} closed to other users and no mount namespace allowed")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _run_as(
    user: pwd.struct_passwd, closed: list[str], needed: list[str], child: str, spec: dict
) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(Path(failtune.__file__).parents[1]), str(Path(__file__).parent)])
    return subprocess.run(
        [sys.executable, "-c", child],
        input=json.dumps(spec),  # not in argv: the mark in a command line means a survivor
        env={"HOME": user.pw_dir, "PATH": "/usr/bin:/bin", "PYTHONPATH": path, "LANG": "C.UTF-8"},
        cwd=user.pw_dir,
        preexec_fn=lambda: _become(user, closed, needed),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="already an ordinary user: see test_hostile_battery")
def test_hostile_battery_as_an_ordinary_user() -> None:
    """Root (CI) grades the battery again as an ordinary user: home, /tmp, network, processes."""
    user = _ordinary_user()
    host = Host(Path(user.pw_dir), owner=user.pw_uid)
    report = run_as_ordinary_user(user, host.spec(references=True))
    host.check_untouched()
    assert (report["uid"], report["level"], report["as_root"]) == (user.pw_uid, "namespaces", False)
    _check_report(report)


@pytest.mark.skipif(isolation.landlock_abi() == 0, reason="this kernel has no Landlock")
def test_landlock_where_user_namespaces_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes confined to the temp dir, sockets refused, leftovers killed, without namespaces."""
    monkeypatch.setenv(isolation.FORCE_ENV, "landlock")
    skip = {"unhide the home, then write there"}  # nothing is hidden without a mount namespace
    if isolation.landlock_abi() < 6:  # signals are not scoped: kill(-1) would reach the host
        skip |= {"kill the parent", "kill the parent's group", "kill everything"}
    if isolation.landlock_abi() < 4:  # TCP is not confined: only Python's sockets are refused
        skip |= {"connect to the host through libc"}
    tmp_path.chmod(0o755)  # as root programs run as nobody, who must reach the canary to try
    host = Host(tmp_path)
    report = grade_battery(host.spec(skip=sorted(skip)))
    host.check_untouched()
    assert report["level"] == "landlock"
    _check_report(report, references=False)


def test_no_sandbox_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither namespaces nor Landlock: one sentence naming both, unless the flag allows it."""
    monkeypatch.setenv(isolation.FORCE_ENV, "none")
    with pytest.raises(Unsandboxed, match=r"user namespaces .* and Landlock .*--allow-unsandboxed"):
        Sandbox(1)
    problem = next(p for p in MBPP().load("test") if p.id == "mbpp/test/14")
    completions = tmp_path / "c.jsonl"
    completions.write_text(json.dumps({"id": problem.id, "completion": problem.solution}) + "\n")
    argv = ["extract", "--completions", str(completions), "--no-progress", "--workers", "1"]
    shared_sandbox.cache_clear()  # a pool another test opened would hide the forced setting
    try:
        assert main([*argv, "--output-dir", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("failtune: error: refusing to run model-written code without a")
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "refused" / "results.jsonl").exists()
        out = tmp_path / "allowed"
        assert main([*argv, "--output-dir", str(out), "--allow-unsandboxed-code"]) == 0
    finally:
        shared_sandbox.cache_clear()
    assert "code sandbox: none (allowed by --allow-unsandboxed-code" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sandbox"]["isolation"] == "none"
    assert manifest["sandbox"]["as_root"] == (os.geteuid() == 0)
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert (record["id"], record["reason"]) == (problem.id, "passed")


def test_forked_copies_do_not_speak_for_the_program() -> None:
    """A program that forks: the copy runs the tests too, but only the original's verdict counts."""
    problem = next(p for p in MBPP().load("test") if p.id == "mbpp/test/14")
    code = (
        "import os\nif os.fork() == 0:\n    def find_Volume(l, b, h):\n"
        "        return (l * b * h) / 2\nelse:\n    def find_Volume(l, b, h):\n        return 1\n"
    )
    with Sandbox(1, Limits(timeout=TIMEOUT)) as sandbox:
        (outcome,) = sandbox.run([build_program(code, MBPP().tests_for(problem))])
    assert outcome.reason.startswith("assertion_failed:")


def test_unsandboxed_programs_still_cannot_open_sockets_or_exit_early() -> None:
    """With no isolation at all (allowed by the flag), sockets are disabled in the program."""
    from dataclasses import asdict

    from failtune.grading.sandbox import _run_one

    policy = {
        "level": "none",
        "as_root": False,
        "drop_user": False,
        "network_namespace": False,
        "pid_namespace": False,
        "landlock_abi": 0,
        "missing": [],
    }
    requests = [
        {
            "parts": [["candidate", code], ["tests", "assert f() == 1\n"]],
            "sentinel": os.urandom(8).hex(),
            "limits": asdict(Limits(timeout=TIMEOUT)),
        }
        for code in (
            "import socket\nsocket.socket()",
            "import socket\nsocket.create_connection(('127.0.0.1', 9))",
            "import os\nos._exit(0)",
            "def f():\n    return 1",
        )
    ]
    # In a worker process of its own, as the sandbox runs it: without a PID namespace, a run
    # kills every descendant of its process, which here would be the test session's servers.
    bystander = subprocess.Popen(["sleep", "60"])  # as a server the test session started
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as pool:
        verdicts = [r["reason"] for r in pool.map(_run_one, requests, [policy] * len(requests))]
    assert bystander.poll() is None, "the run killed a process of the test session"
    bystander.kill()
    bystander.wait()
    assert verdicts == [
        "runtime_error:PermissionError",
        "runtime_error:PermissionError",
        "exited_early",
        "passed",
    ]
