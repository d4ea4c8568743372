"""Graders: turn a completion into a verdict with a reason, never silently.

Every grader applies one truncation rule (`truncated`): text cut by the token cap has no
answer unless it had already stated its final answer with an explicit marker before the cut.
"""

import re
from dataclasses import dataclass

# The finish_reason of a generation cut by the token cap (max_new_tokens), in every backend.
TRUNCATED = "length"


@dataclass(frozen=True)
class Grade:
    """One verdict; `reason` says why, so a wrong grader can be audited."""

    correct: bool
    extracted: str | None
    reason: str


def truncated(finish_reason: str | None, explicit: bool) -> Grade | None:
    """The "truncated" verdict (no answer) for text cut by the token cap before it stated its
    final answer; None when the answer read counts.

    `explicit` says the answer read follows an explicit final-answer marker ("The answer is",
    "####", \\boxed{}, "Answer: B", as each grader defines them). Without one, whatever a cut
    text ends on (a number or a letter met mid-reasoning, a loop repeating a step) is where the
    cap happened to fall, not an answer the model gave, even when it equals the gold.
    """
    if finish_reason == TRUNCATED and not explicit:
        return Grade(False, None, "truncated")
    return None


# A hallucinated next turn: a later line starting "Question:", "Q:", "User:"..., or a chat token.
_FOLLOWUP_RE = re.compile(
    r"^[ \t]*(?:[*_#>]+[ \t]*)?(?:question|problem|human|user|q)(?:[ \t]+[0-9]+)?"
    r"[ \t]*(?:[*_]+[ \t]*)?[:：]"
    r"|^[ \t]*###[ \t]*instruction"
    r"|<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>|</s>|<\|eot_id\|>|<\|end\|>"
    r"|<start_of_turn>|<end_of_turn>|\[INST\]|<\|(?:user|assistant|system)\|>",
    re.IGNORECASE | re.MULTILINE,
)


def cut_followup(text: str) -> str:
    """Drop a hallucinated next turn; a leading "Question:" restating the prompt is kept."""
    start = followup_start(text, len(text) - len(text.lstrip()) + 1)
    return text if start is None else text[:start]


def followup_start(text: str, after: int = 0) -> int | None:
    """Where the first hallucinated next turn starting at or after `after` begins, if any."""
    match = _FOLLOWUP_RE.search(text, after)
    return None if match is None else match.start()
