"""Worker processes that grade in their main thread, with a deadline per completion.

A reward called from a thread (verl's reward loop, OpenRLHF's asyncio.to_thread, an async TRL
reward) cannot run math-verify there: its timeouts use signal.alarm. Each worker here is a fresh
interpreter holding its own RewardGrader, grading in its main thread, where those timeouts work.
A batch not back by its deadline (a grader stuck past its own timeouts) counts as failed and its
worker is killed, so a hang costs those rewards, never the training run.

Workers are started as `python -c` subprocesses rather than through multiprocessing: its spawn
and forkserver methods re-run the caller's main script in every worker, which breaks the many
training scripts written without an `if __name__ == "__main__"` guard, and fork is unsafe in a
process that already runs threads (torch, the engines' event loops).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from failtune.rewards.items import Item

_SERVE = "from failtune.rewards.worker import serve; serve()"


def send_message(stream: BinaryIO, message: Any) -> None:
    body = pickle.dumps(message)
    stream.write(struct.pack("<Q", len(body)) + body)
    stream.flush()


def receive_message(fd: int, deadline: float | None) -> Any:
    """One message from `fd`; None when the deadline passes or the other end is gone."""
    head = _read_exactly(fd, 8, deadline)
    if head is None:
        return None
    body = _read_exactly(fd, struct.unpack("<Q", head)[0], deadline)
    return None if body is None else pickle.loads(body)


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks, left = [], size
    while left:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return None
        data = os.read(fd, min(left, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


class _Worker:
    def __init__(self, task_options: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests, self.replies = self.proc.stdin, self.proc.stdout.fileno()
        send_message(self.requests, task_options)

    def grade(self, items: list[Item], deadline: float) -> list[dict[str, Any]] | None:
        """The records, or None when they are not back by `deadline` (or the worker died)."""
        try:
            send_message(self.requests, items)
        except OSError:
            return None
        reply = receive_message(self.replies, deadline)
        if reply is None:
            return None
        status, value = reply
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def timed_out(item: Item) -> dict[str, Any]:
    """The record of a completion whose grading did not finish by its deadline."""
    return {
        "id": item.id,
        "completion": item.completion,
        "extracted": None,
        "correct": False,
        "reason": "grading_timeout",
        "finish_reason": item.finish_reason,
    }


class GradingPool:
    """At most `workers` warm worker processes; `records` splits a batch across them, in order.

    Callers beyond the workers wait for a free one; a deadline counts from when a worker takes
    the batch, so waiting never times a batch out.
    """

    def __init__(self, task_options: dict[str, Any], workers: int, item_timeout: float) -> None:
        self.task_options, self.workers, self.item_timeout = task_options, workers, item_timeout
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._starting = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        atexit.register(self.close)

    def records(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        size = -(-len(items) // self.workers)
        chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
        if len(chunks) == 1:
            return self._grade(chunks[0])
        with ThreadPoolExecutor(len(chunks)) as threads:
            return [row for rows in threads.map(self._grade, chunks) for row in rows]

    def _grade(self, chunk: list[Item]) -> list[dict[str, Any]]:
        worker = self._take()
        try:
            rows = worker.grade(chunk, time.monotonic() + self.item_timeout * len(chunk))
        except BaseException:
            self._idle.put(worker)  # grading raised: the worker itself is fine
            raise
        if rows is None:  # stuck or dead: killed, and replaced when next needed
            self._drop(worker)
            return [timed_out(item) for item in chunk]
        self._idle.put(worker)
        return rows

    def _take(self) -> _Worker:
        while True:
            with contextlib.suppress(queue.Empty):
                return self._idle.get_nowait()
            with self._lock:
                start = len(self._all) + self._starting < self.workers
                self._starting += start
            if start:
                return self._start()
            with contextlib.suppress(queue.Empty):  # re-check now and then: a stuck one may go
                return self._idle.get(timeout=0.5)

    def _start(self) -> _Worker:
        try:
            worker = _Worker(self.task_options)
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._all.append(worker)
        return worker

    def _drop(self, worker: _Worker) -> None:
        worker.close()
        with self._lock:
            self._all.remove(worker)

    def close(self) -> None:
        """Stop the workers (only in the process that started them: a forked child's copy
        must not kill its parent's)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()
