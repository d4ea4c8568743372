"""Code answers: take the code out of a completion, run it against the tests in the sandbox.

A completion is correct only if every test ran to the end (see grading.sandbox). The verdict's
`extracted` is the code that ran, so a wrong extraction can be audited.
"""

from __future__ import annotations

import atexit
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from failtune.console import note
from failtune.errors import FailtuneError
from failtune.grading import Grade
from failtune.grading.sandbox import Limits, Program, Sandbox, Unsandboxed

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}


@dataclass(frozen=True)
class CodeTests:
    """What a problem runs the candidate against.

    `prelude` (HumanEval's signature and docstring) runs first, so a full function replaces it
    and a bare body completes it; `setup` runs after the candidate (MBPP builds test objects
    from the solution's own classes); `tests` is the asserts, ending in the last one.
    """

    tests: str
    entry_point: str | None = None
    prelude: str = ""
    setup: str = ""


def extract_code(completion: str, entry_point: str | None = None) -> str | None:
    """The Python a completion gives: a fenced block (the one defining `entry_point` if several
    do not), else the raw text. None when there is nothing but whitespace."""
    blocks = [body for tag, body in _FENCE.findall(completion) if tag.lower() in _PYTHON_TAGS]
    if blocks:
        defining = [b for b in blocks if entry_point and _defines(b, entry_point)]
        code = (defining or blocks)[0]
    else:
        code = completion
    return code if code.strip() else None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def build_program(code: str, tests: CodeTests) -> Program:
    """The parts run in order in one namespace: candidate, setup, tests."""
    if tests.prelude:
        if tests.entry_point and _defines(code, tests.entry_point):
            candidate = f"{tests.prelude}\n{code}"  # the full function replaces the stub
        else:
            candidate = tests.prelude + _as_body(code)
    else:
        candidate = code
    parts = [("candidate", candidate)]
    if tests.setup.strip():
        parts.append(("setup", tests.setup))
    parts.append(("tests", tests.tests))
    return parts


def _as_body(code: str) -> str:
    """A bare function body, indented as the model wrote it, or by four spaces if it was not."""
    lines = code.splitlines()
    if any(line.strip() and not line[0].isspace() for line in lines):
        return "\n".join("    " + line if line.strip() else line for line in lines) + "\n"
    return code.rstrip() + "\n"


def program_source(program: Program) -> str:
    """One script of the program's parts, as a plain one-process-per-program runner takes it."""
    return "\n".join(source for _, source in program)


_announced: set[str] = set()


@cache
def shared_sandbox(workers: int | None, limits: Limits, allow_unsandboxed: bool = False) -> Sandbox:
    """One pool of warm workers per setting, shared by every code task, closed at exit.

    Its isolation is printed once; where there is none it is refused unless allowed.
    """
    if not sys.platform.startswith("linux"):
        raise FailtuneError("grading code needs Linux (the sandbox uses fork, pidfd, rlimits)")
    try:
        sandbox = Sandbox(workers, limits, allow_unsandboxed)
    except Unsandboxed as e:
        raise FailtuneError(str(e)) from None
    atexit.register(sandbox.close)
    if sandbox.description not in _announced:
        _announced.add(sandbox.description)
        note(f"code sandbox: {sandbox.description}")
    return sandbox


def sandbox_record(sandbox: Sandbox) -> dict[str, object]:
    """What a manifest keeps of the isolation code was graded under."""
    policy = sandbox.isolation
    return {
        "isolation": policy["level"],
        "as_root": policy["as_root"],
        "detail": sandbox.description,
    }


def grade_code_many(items: Sequence[tuple[str, CodeTests]], sandbox: Sandbox) -> list[Grade]:
    """Grade (completion, tests) pairs; programs run in parallel in the sandbox."""
    grades: list[Grade | None] = []
    programs: list[Program] = []
    codes: list[str] = []
    for completion, tests in items:
        code = extract_code(completion, tests.entry_point)
        if code is None:
            grades.append(Grade(False, None, "no_code"))
            continue
        grades.append(None)
        programs.append(build_program(code, tests))
        codes.append(code)
    outcomes = iter(zip(codes, sandbox.run(programs), strict=True))
    result = []
    for grade in grades:
        if grade is None:
            code, outcome = next(outcomes)
            grade = Grade(outcome.passed, code, outcome.reason)
        result.append(grade)
    return result
