"""Find the final answer of a long LaTeX solution the way a careful MATH grader reads it.

1. Cut a hallucinated next turn, read after a closed ``</think>`` (a thinking block never closed
   gives no answer), and drop trailing "Note:" asides that follow an answer.
2. Final-answer markers, the last one that holds an answer wins: ``\\boxed{}`` / ``\\fbox{}``,
   a ``# Answer`` heading with the answer on the next line (PRM800K's format), a
   ``**Final Answer**`` line, ``Answer:`` / ``**Answer:**`` / ``Final Answer:`` and "the (final)
   answer is", and "... is our answer" after it. A marker followed by prose that is no answer
   ("the answer is consistent with...", "the answer is not 7") is skipped.
3. Boxes next to each other, joined only by "and", "or", commas or ``x =``, are one answer of
   several values ("$\\boxed{-2}$ and $\\boxed{1}$"). An earlier answer offered beside the final
   one with no working between ("\\boxed{18}\\n\\n\\boxed{20}") or as an alternative
   ("Alternatively, ... \\boxed{20}") is a rival: the grader refuses the pair unless they are
   equal. One that working or a correction ("Wait, ...") separates from it is superseded.
4. Without a marker: a short reply is its own answer ("**Yes**", "$\\frac{1}{2}$"); otherwise the
   last sentence with math states it ("So the area is $24$ square units."), unless that
   sentence states none: a negation ("... is not divisible by 7") or a question.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from failtune.grading import followup_start
from failtune.grading.hedging import WORKING_RE, offered_beside
from failtune.grading.latex import Box, boxes, clean

# A reply this short, on one line and of a few words, is its own answer ("**Yes**", "12").
_SHORT_REPLY_CHARS = 80
_SHORT_REPLY_WORDS = 3
# How much of a reply's end is read: a final answer, its rivals and its working fit in it.
_TAIL_CHARS = 16_000
# How far after a marker its answer may run (a line); markers tried, from the last one back.
_SEGMENT_CHARS = 400
_MAX_MARKERS = 256
# Blank or markup-only lines skipped after a heading ("# Answer\n\n5").
_NEXT_LINES = 3

_MARKER_RE = re.compile(
    r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*(?:final[ \t]+)?answer[ \t]*(?:\*\*|__)?"
    r"[ \t]*[:：]?[ \t]*(?:\*\*|__)?[ \t]*$"
    r"|\b(?:final[ \t]+)?answer[ \t]*(?:\*\*|__)?[ \t]*[:：][ \t]*(?:\*\*|__)?"
    r"|\b(?:final[ \t]+|correct[ \t]+)?answer[ \t]+(?:is|would[ \t]+be|should[ \t]+be)\b"
    r"[ \t]*(?:[:：][ \t]*)?(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
# "Therefore, $6$ is our answer.": the answer comes before its marker.
_POST_MARKER_RE = re.compile(r"\bis[ \t]+(?:our|the|my)[ \t]+(?:final[ \t]+)?answer\b", re.I)
# "We can check our answer:", "To verify the answer:": no answer follows.
_CHECKING_RE = re.compile(
    r"\b(?:check|verify|confirm|double-check|test|plug|substitute)\w*[ \t]+(?:(?:our|the|my|this"
    r"|that)[ \t]+)?(?:final[ \t]+)?\W*$",
    re.IGNORECASE,
)
# Right before a box: it names a value the solution rejects.
_REJECTED_RE = re.compile(
    r"\b(?:not|rather[ \t]+than|instead[ \t]+of)[ \t]*(?:\$|\\\()?[ \t]*$", re.IGNORECASE
)
_NOTE_RE = re.compile(r"^[ \t>*_]*notes?\b[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# Prose a marker can be followed by that is not an answer.
_NOT_AN_ANSWER_RE = re.compile(
    r"^\W*(?:a|an|that|this|to|not|no|never|in|as|because|correct|right|wrong|incorrect"
    r"|if|when|then|we|let|so|suppose|check\w*|greater|less|more|fewer|larger|smaller|bigger|at"
    r"|consistent|indeed|reasonable|clear|valid|given|found|below|above|as[ \t]+follows"
    r"|straightforward|obtained|determined|the[ \t]+(?:same|one|number|value|sum|product))\b",
    re.IGNORECASE,
)
_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|cannot|can't|isn't|aren't|doesn't|don't|neither|nor|impossible)\b",
    re.IGNORECASE,
)
_MATH_RE = re.compile(
    r"\$\$(.{1,2000}?)\$\$|(?<!\\)\$((?:\\.|[^$\\]){1,2000}?)\$|\\\((.{1,2000}?)\\\)"
    r"|\\\[(.{1,2000}?)\\\]",
    re.DOTALL,
)
# Sign-offs after a solution ("I hope this helps! If you have 2 more questions, ask.").
_SIGN_OFF_RE = re.compile(
    r"\b(?:i[ \t]+hope[ \t]+(?:this|that|it)[ \t]+helps|hope[ \t]+(?:this|that)[ \t]+helps"
    r"|let[ \t]+me[ \t]+know|feel[ \t]+free|if[ \t]+you[ \t]+have\b[^.!?]*\bquestions?"
    r"|good[ \t]+luck)",
    re.IGNORECASE,
)
# A last sentence that names a text answer: "... is Evelyn.", "the graph is an ellipse."
_TEXT_STATED_RE = re.compile(
    r"\b(?:is|are)[ \t]+(?:an?[ \t]+|the[ \t]+)?([A-Za-z][A-Za-z \t]{0,30}?)[ \t]*[.!]?\s*$",
    re.IGNORECASE,
)
_PROSE_WORD_RE = re.compile(r"\b[A-Za-z]{3,}\b")
_HAS_VALUE_RE = re.compile(r"[0-9]|\\[A-Za-z]|\$")
# Where a stated answer ends: a sentence end outside math, or a clause that explains it.
_CLAUSE_END_RE = re.compile(
    r"\.(?=\s|$)|[;?]|\s\((?!\s*[-0-9a-z\\,]+\s*[),])|,?\s+(?:since|because|as|so|where|which"
    r"|i\.e\.|meaning|giving|hence|thus|for|if|when)\b"
    r"|,\s+(?:(?:and|but)\s+)?(?:then|now|so|this|that|we|it|which|where)\b",
    re.IGNORECASE,
)
# After this in the last sentence comes its stated value ("the area is", "=", "equals").
_STATES_RE = re.compile(r"=|\b(?:is|are|equals|be|gives|get|obtain|becomes)\b", re.IGNORECASE)
# Text between two boxes that only joins values: "and", "or", commas, "x =".
_JOIN_TEXT_RE = re.compile(r"\\(?:text|mbox|textrm)\s*\{|\\(?:q?quad)\b|\\\\|&|[{}$]|\\[()\[\],;]")
_ASSIGNED_RE = re.compile(r"(?:\\?[A-Za-z]+(?:_\{?\w+\}?)?|\([A-Za-z, ]+\))\s*=")
_JOIN_RE = re.compile(r"^[\s,;.:]*(?:(?:and|or|either)\b[\s,;.:]*)*$", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """The final answer a solution gives, as written (clean it before comparing)."""

    answer: str
    explicit: bool  # read after an explicit marker (a box, "# Answer", "The answer is"...)
    rivals: tuple[str, ...] = ()  # other answers offered beside it; equal to it, or a hedge
    parts: tuple[str, ...] = ()  # the bodies of the boxes the answer joins, when several


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    answer: str
    box: Box | None = None
    parts: tuple[str, ...] = ()


def read_answer(completion: str) -> Reading | None:
    """The final answer of a solution; None when it states none."""
    text = _final_part(str(completion))
    if text is None:
        return None
    text = text[-_TAIL_CHARS:]  # the final answer is at the end; no scan grows with the text
    candidates = _before_note(text, _before_followup(text, _candidates(text)))
    if not candidates:
        text = text[: followup_start(text, len(text) - len(text.lstrip()) + 1)]
        answer = _unmarked(text)
        return None if answer is None else Reading(answer, explicit=False)
    final = _group(text, candidates)
    rivals = _rivals(text, candidates, final)
    return Reading(final.answer, True, tuple(r.answer for r in rivals), final.parts)


def _final_part(text: str) -> str | None:
    """The text after a closed thinking block; None inside one never closed."""
    if _THINK_CLOSE in text:
        return text.rsplit(_THINK_CLOSE, 1)[1]
    return None if _THINK_OPEN in text else text


def _candidates(text: str) -> list[_Candidate]:
    """Every answer a marker gives, in order. A marker whose text holds a box or another marker
    ("Final Answer: The final answer is $5$") yields to it; so does "... is our answer" right
    after a box. An answer of plain words counts only in a solution without boxes ("The final
    answer is positive, because..." after a box is a remark); a box holding nothing
    (``\\boxed{\\phantom{2}}`` used as notation) is no answer, nor is a box rejected
    ("..., not $\\boxed{-60}$")."""
    found = [
        _Candidate(b.start, b.end, b.body, b)
        for b in boxes(text)
        if clean(b.body) and not _REJECTED_RE.search(text, max(0, b.start - 24), b.start)
    ]
    box_spans = [(c.start, c.end) for c in found]
    markers = [m for m in list(_MARKER_RE.finditer(text))[-_MAX_MARKERS:] if not _checking(text, m)]
    starts = [m.start() for m in markers] + [start for start, _ in box_spans]
    for marker in markers:
        segment, start, end = _segment(text, marker.end())
        if any(start <= s < end for s in starts):
            continue
        answer = _stated(segment)
        if answer is not None and (not box_spans or _HAS_VALUE_RE.search(answer)):
            found.append(_Candidate(marker.start(), end, answer))
    for marker in list(_POST_MARKER_RE.finditer(text))[-_MAX_MARKERS:]:
        chunk_start = _sentence_start(text, marker.start())
        if any(chunk_start <= end <= marker.start() for _, end in box_spans):
            continue
        answer = _before(text[chunk_start : marker.start()])
        if answer is not None:
            found.append(_Candidate(marker.start(), marker.end(), answer))
    return sorted(found, key=lambda c: c.start)


def _checking(text: str, marker: re.Match[str]) -> bool:
    """True for "We can check our answer:", "To verify the answer:" (no answer follows)."""
    return _CHECKING_RE.search(text, max(0, marker.start() - 40), marker.start()) is not None


def _before_followup(text: str, candidates: list[_Candidate]) -> list[_Candidate]:
    """Drop what a hallucinated next turn ("Question: ...") after an answer offers; such a line
    before any answer ("Question 6: yes, ...") is part of the solution."""
    if not candidates:
        return candidates
    start = followup_start(text, candidates[0].end)
    return candidates if start is None else [c for c in candidates if c.end <= start]


def _before_note(text: str, candidates: list[_Candidate]) -> list[_Candidate]:
    """Drop what a trailing "Note:" aside offers after an answer ("Note: $\\boxed{3}$ is also
    accepted"); a note followed by more working is part of the solution."""
    for note in _NOTE_RE.finditer(text):
        before = [c for c in candidates if c.end <= note.start()]
        if before and not WORKING_RE.search(text, note.end()):
            return before
    return candidates


def _segment(text: str, start: int) -> tuple[str, int, int]:
    """What a marker points at: the rest of its line, or the next line with content when the
    marker ends its line ("# Answer\\n\\n5"); with where it starts and ends in `text`."""
    line_end = _line_end(text, start)
    if text[start:line_end].strip(" \t*_:"):
        return text[start:line_end], start, line_end
    position = line_end + 1
    for _ in range(_NEXT_LINES):
        if position >= len(text):
            break
        end = _line_end(text, position)
        if text[position:end].strip(" \t*_$\\[]"):
            return text[position:end], position, end
        position = end + 1
    return "", start, line_end


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start, start + _SEGMENT_CHARS)
    return min(len(text), start + _SEGMENT_CHARS) if end == -1 else end


def _stated(segment: str) -> str | None:
    """The answer a marker's text states, up to the end of its clause; None for prose that is
    no answer."""
    text = segment.replace("**", "").replace("__", "").strip(" \t:*_")
    if not text or _NOT_AN_ANSWER_RE.match(text):
        return None
    answer = _clause(text)
    if not answer or _NEGATION_RE.search(_outside_math(answer)):
        return None
    words = _outside_math(answer).split()
    if not _HAS_VALUE_RE.search(answer) and len(words) > 4:
        return None
    if len(_PROSE_WORD_RE.findall(re.sub(r"\\[A-Za-z]+", " ", _outside_math(answer)))) >= 2:
        return _sentence_value(answer)  # "**Final Answer**\nThere are 252 paths."
    return answer


def _clause(text: str) -> str:
    """`text` up to its first clause end outside math, and without the words that follow its
    last math ("$12$ square units, since ..." -> "$12$")."""
    masked = _MATH_RE.sub(lambda m: "x" * len(m.group()), text)
    end = _CLAUSE_END_RE.search(masked)
    clause = text[: end.start()] if end else text
    maths = list(_MATH_RE.finditer(clause))
    if maths and not re.search(r"[0-9\\]", clause[maths[-1].end() :]):
        clause = clause[: maths[-1].end()]
    if maths and not re.search(r"[0-9\\]", clause[: maths[0].start()]):
        clause = clause[maths[0].start() :]  # "the final answer $x = 2$" -> "$x = 2$"
    return clause.strip(" \t,:")


def _outside_math(text: str) -> str:
    return _MATH_RE.sub(" ", text)


def _sentence_start(text: str, position: int) -> int:
    return max(text.rfind("\n", 0, position), text.rfind(". ", 0, position)) + 1


def _before(chunk: str) -> str | None:
    """The value right before "is our answer": its math, or its last word."""
    chunk = chunk.strip()
    maths = list(_MATH_RE.finditer(chunk))
    if maths and not chunk[maths[-1].end() :].strip():
        return _math_body(maths[-1])
    words = chunk.split()
    return words[-1] if words and _HAS_VALUE_RE.search(words[-1]) else None


def _math_body(match: re.Match[str]) -> str:
    return next(g for g in match.groups() if g is not None)


def _group(text: str, candidates: list[_Candidate]) -> _Candidate:
    """The last answer, with the boxes just before it that only join values ("$\\boxed{-2}$
    and $\\boxed{1}$"), as one answer of several values."""
    final = candidates[-1]
    if final.box is None:
        return final
    values, parts, start = [final.answer], [final.answer], final.start
    for previous in reversed(candidates[:-1]):
        if previous.box is None:
            break
        joined = _joined(text[previous.end : start])
        if joined is None:
            break
        values.insert(0, f"{previous.answer}{joined}")
        parts.insert(0, previous.answer)
        start = previous.start
    if len(parts) == 1:
        return final
    return _Candidate(start, final.end, "".join(values), final.box, tuple(parts))


def _joined(between: str) -> str | None:
    """The separator to write between two boxes whose gap only joins them (" or " when the gap
    says "or", else ", "), or None when the gap holds more than that."""
    gap = _ASSIGNED_RE.sub(" ", _JOIN_TEXT_RE.sub(" ", between))
    if not _JOIN_RE.match(gap):
        return None
    return " or " if re.search(r"\bor\b", gap, re.IGNORECASE) else ", "


def _rivals(text: str, candidates: list[_Candidate], final: _Candidate) -> list[_Candidate]:
    """Earlier answers offered beside the final one (step 3 of the docstring)."""
    earlier = [c for c in candidates if c.end <= final.start]
    found = offered_beside(text, [(c.start, c.end) for c in earlier], final.start)
    return [earlier[i] for i in found]


def _unmarked(text: str) -> str | None:
    """The answer of a reply without any marker (step 4 of the docstring)."""
    stripped = text.replace("**", "").replace("__", "").strip()
    if not stripped:
        return None
    short = len(stripped) <= _SHORT_REPLY_CHARS and "\n" not in stripped
    if short and len(_outside_math(stripped).split()) <= _SHORT_REPLY_WORDS:
        answer = stripped.rstrip(".").strip()
        return None if _NEGATION_RE.search(_outside_math(answer)) else answer
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", _without_sign_off(stripped)) if p.strip()]
    sentences = _sentences(paragraphs[-1])
    named = _TEXT_STATED_RE.search(sentences[-1]) if sentences else None
    if named and not _NEGATION_RE.search(sentences[-1]):
        return named.group(1)  # "So the fastest student is Evelyn.", "... is an ellipse."
    for sentence in reversed(sentences):
        if not _HAS_VALUE_RE.search(sentence):
            continue
        bare = _outside_math(sentence)
        if _NEGATION_RE.search(bare) or bare.rstrip().endswith("?"):
            return None
        return _sentence_value(sentence)
    return None


def _without_sign_off(text: str) -> str:
    """The text before a sign-off in its last paragraph, when a value comes before it."""
    match = _SIGN_OFF_RE.search(text, text.rfind("\n\n") + 1)
    if match is None:
        return text
    start = max(text.rfind(". ", 0, match.start()), text.rfind("! ", 0, match.start()))
    head = text[: max(start + 1, text.rfind("\n", 0, match.start()) + 1)]
    return head if _HAS_VALUE_RE.search(head) else text


def _sentences(paragraph: str) -> list[str]:
    """A paragraph's sentences, not split inside math ("$0.5$", "$x = 1. $")."""
    masked = _MATH_RE.sub(lambda m: "x" * len(m.group()), paragraph)
    cuts = [0, *(m.end() for m in re.finditer(r"[.!?](?=\s)|\n", masked)), len(paragraph)]
    return [paragraph[a:b].strip() for a, b in itertools.pairwise(cuts) if b > a]


def _sentence_value(sentence: str) -> str:
    """What a concluding sentence states: everything after its last "is" / "are" / "=" outside
    math when math follows it ("... are $2$ and $3$"), else the right side of its last math
    ("We find $m + n = 16$." -> "16")."""
    masked = _MATH_RE.sub(lambda m: "x" * len(m.group()), sentence)
    states = list(_STATES_RE.finditer(masked))
    maths = list(_MATH_RE.finditer(sentence))
    cut = states[-1].end() if states else None
    if cut is not None and (not maths or maths[-1].start() >= cut):
        return _clause(sentence[cut:]) or sentence
    if maths:
        return _math_body(maths[-1]).rsplit("=", 1)[-1]
    numbers = [w for w in sentence.split() if re.search(r"[0-9]", w)]
    return numbers[-1] if numbers else sentence
