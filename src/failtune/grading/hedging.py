"""Two answers in one reply: offered side by side, or the later one superseding the earlier.

A reply that gives "\\boxed{18}" and then "\\boxed{20}" with nothing but a few words between them,
or with words offering the second as an alternative ("Alternatively, ..."), hedges: a grader
refuses it unless the two agree. Working or a correction ("Wait, ...") between them makes the
later one the answer, as the last step of a solution that boxed an intermediate result. The
numeric and the MATH graders both decide it here, so a hedge means the same to both.
"""

import re
from collections.abc import Sequence

# Plain text between two answers this short, without working, offers them side by side.
GAP_CHARS = 160

CORRECTION_RE = re.compile(
    r"\b(?:wait|actually|mistake|error|incorrect|wrong|oops|correction|re-?check\w*|re-?evaluat\w*"
    r"|reconsider\w*|on[ \t]+second[ \t]+thought|scratch[ \t]+that|let[ \t]+me[ \t]+(?:re-?)?"
    r"(?:verify|correct|fix))\b",
    re.IGNORECASE,
)
HEDGE_RE = re.compile(
    r"\b(?:alternatively|otherwise|either|or[ \t]+(?:possibly|maybe|perhaps|if)|another[ \t]+"
    r"(?:possible[ \t]+)?(?:answer|interpretation|reading|possibility)|could[ \t]+also"
    r"|might[ \t]+(?:also[ \t]+)?be|also[ \t]+(?:possible|acceptable|accepted|valid|correct)"
    r"|depending|would[ \t]+(?:instead[ \t]+)?be|however,?[ \t]+if)\b",
    re.IGNORECASE,
)
# Working: a calculation ("= 18", "3 \times 6", "16 - 3").
WORKING_RE = re.compile(r"[0-9][^\n]{0,40}?(?:=|\\times|\\cdot|[-+*/])[^\n]{0,40}?[0-9]|=")


def side_by_side(gap: str) -> bool:
    """Whether the text between two answers offers them as alternatives (see the docstring)."""
    if CORRECTION_RE.search(gap):
        return False
    if len(gap) <= GAP_CHARS and not WORKING_RE.search(gap):
        return True
    return len(gap) <= 2 * GAP_CHARS and HEDGE_RE.search(gap) is not None


def offered_beside(text: str, answers: Sequence[tuple[int, int]], final_start: int) -> list[int]:
    """Indices of the earlier answers (their (start, end) spans in `text`, in order) offered side
    by side with the one starting at `final_start`, nearest first; the walk back stops at the
    first one that working or a correction separates from the next."""
    found: list[int] = []
    end = final_start
    for index in range(len(answers) - 1, -1, -1):
        start, stop = answers[index]
        if not side_by_side(text[stop:end]):
            break
        found.append(index)
        end = start
    return found
