"""The harness inside a sandboxed program's process: run its parts, judge it honestly.

Standard library only: the sandbox worker loads this file by path (see grading/sandbox.py).
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from collections.abc import Sequence


def run(parts: Sequence[tuple[str, str]], sentinel: str, result_fd: int) -> None:
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
