"""The grading pool's worker process (started by rewards.pool): grades in its main thread."""

from __future__ import annotations

import os
import sys
from typing import Any

from failtune.rewards.grader import RewardGrader
from failtune.rewards.pool import receive_message, send_message


def serve() -> None:
    """The worker: task options in, then batches of items in and their records (or the error
    grading raised) out, until its input closes. Prints of the graders go to stderr."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer.fileno()
    grader = RewardGrader(receive_message(requests, None), workers=1)
    while (items := receive_message(requests, None)) is not None:
        try:
            reply: tuple[str, Any] = ("ok", grader.records(items))
        except Exception as error:  # raised again in the caller, as extract would raise it
            reply = ("error", error)
        send_message(replies, reply)
