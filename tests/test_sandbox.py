"""Hostile completions: each fails with the right reason, in time, and changes nothing outside.

Every program is a completion for MBPP 14 (`find_Volume`) graded through the same path as
extraction (code extraction, program building, the sandbox), with a 2-second timeout.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

import failtune
from failtune.grading.code import build_program, extract_code
from failtune.grading.sandbox import Limits, Sandbox
from failtune.tasks import MBPP

TIMEOUT = 2.0
WRONG = "\ndef find_Volume(l, b, h):\n    return 0\n"
RIGHT = "\ndef find_Volume(l, b, h):\n    return (l * b * h) / 2\n"
PACKAGE_FILE = Path(failtune.__file__).parent / "tasks" / "data" / "mbpp" / "LICENSE"
MARK = f"failtune-hostile-{os.getpid()}"


def battery(canary: Path) -> list[tuple[str, str, set[str]]]:
    """(name, completion, acceptable reasons); a reason ending in ':' matches as a prefix."""
    outside = [f"/tmp/{MARK}", f"/var/tmp/{MARK}", f"/dev/shm/{MARK}", str(canary)]
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
        (
            "write outside the temp dir",
            "".join(f"open({p!r}, 'w').write('x')\n" for p in outside[:3]) + WRONG,
            {"assertion_failed:"},
        ),
        (
            "overwrite a file outside",
            f"open({str(canary)!r}, 'w').write('pwned')" + WRONG,
            {"runtime_error:FileNotFoundError", "runtime_error:PermissionError"},
        ),
        (
            "delete a package file",
            f"import os\nos.remove({str(PACKAGE_FILE)!r})" + WRONG,
            {"runtime_error:PermissionError"},
        ),
        (
            "delete a tree",
            f"import shutil\nshutil.rmtree({str(canary.parent)!r})" + WRONG,
            {"runtime_error:FileNotFoundError", "runtime_error:PermissionError"},
        ),
        (
            "write into the package",
            f"open({str(PACKAGE_FILE.parent / MARK)!r}, 'w')" + WRONG,
            {"runtime_error:PermissionError"},
        ),
        (
            "outbound socket",
            "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)" + WRONG,
            {"runtime_error:"},
        ),
        (
            "loopback server",
            "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))" + WRONG,
            {"runtime_error:"},
        ),
        (
            "kill the parent",
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)" + WRONG,
            {"runtime_error:PermissionError", "runtime_error:ProcessLookupError", "killed"},
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
            "    while True: time.sleep(1)" + WRONG,
            {"assertion_failed:"},
        ),
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


def _leftovers() -> list[int]:
    """Sandboxed processes (uid nobody, forked from a sandbox worker) still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        if uid == "65534" and b"grading/sandbox.py" in cmdline and " Z " not in status:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="full containment (unprivileged uid, namespaces) needs root; as another user a "
    "program may change that user's files",
)
def test_hostile_battery(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    canary.chmod(0o666)
    tmp_path.chmod(0o777)
    package_digest = _digest(PACKAGE_FILE)
    problem = next(p for p in MBPP().load("test") if p.id == "mbpp/test/14")
    tests = MBPP().tests_for(problem)
    cases = battery(canary)
    programs = [build_program(extract_code(code) or "", tests) for _, code, _ in cases]
    with Sandbox(2, Limits(timeout=TIMEOUT)) as sandbox:
        started = time.monotonic()
        outcomes = sandbox.run(programs)
        wall = time.monotonic() - started
        wrong = {
            name: o.reason
            for (name, _, accepted), o in zip(cases, outcomes, strict=True)
            if o.passed or not _matches(o.reason, accepted)
        }
        assert wrong == {}
        slow = {name: o.seconds for (name, _, _), o in zip(cases, outcomes, strict=True)
                if o.seconds > TIMEOUT + 2}  # fmt: skip
        assert slow == {}
        # The sandbox survived all of it and still grades a right answer as right.
        after = sandbox.run([build_program(RIGHT, tests)] * 4)
        assert [o.reason for o in after] == ["passed"] * 4
        if sandbox.isolation.get("pid_namespace"):
            assert _leftovers() == []
    # Two workers in parallel: the whole battery takes about half its summed time.
    assert wall < sum(o.seconds for o in outcomes) / 2 + 2 * TIMEOUT
    assert canary.read_text() == "untouched" and _digest(PACKAGE_FILE) == package_digest
    assert not (PACKAGE_FILE.parent / MARK).exists()
    for path in (f"/tmp/{MARK}", f"/var/tmp/{MARK}", f"/dev/shm/{MARK}"):
        assert not Path(path).exists(), path


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


def test_fallback_without_namespaces_still_refuses_sockets_and_early_exits() -> None:
    """Where namespaces are not permitted, sockets are disabled in the program itself."""
    from dataclasses import asdict

    from failtune.grading.sandbox import _run_one

    isolation = {
        "network_namespace": False,
        "pid_namespace": False,
        "private_tmp": False,
        "drop_user": False,
        "import_paths": {},
    }
    verdicts = []
    for code in (
        "import socket\nsocket.socket()",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import os\nos._exit(0)",
        "def f():\n    return 1",
    ):
        request = {
            "parts": [["candidate", code], ["tests", "assert f() == 1\n"]],
            "sentinel": os.urandom(8).hex(),
            "limits": asdict(Limits(timeout=TIMEOUT)),
        }
        verdicts.append(_run_one(request, isolation)["reason"])
    assert verdicts == [
        "runtime_error:PermissionError",
        "runtime_error:PermissionError",
        "exited_early",
        "passed",
    ]
