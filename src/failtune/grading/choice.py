"""Read which lettered choice a free-text completion picks, the way a careful human marker would.

1. Cut a hallucinated follow-up turn ("Question: ...", chat special tokens), drop markdown
   emphasis (``**B**``) and LaTeX wrappers (``\\boxed{\\text{B}}``).
2. Explicit answer markers ("The answer is", "Answer:", "correct option is", "I would choose",
   "\\boxed{", "答案是", ...) followed by a letter in any dress: ``(B)``, ``B.``, ``B)``,
   ``[B]``, ``option B``, ``B: Paris``; or by the text of a choice instead of its letter.
   Sentences that name a letter as the verdict ("(B) is correct", "B is the right answer") count
   as markers too. The last marker wins when a correction cue ("wait", "actually", "on second
   thought") precedes it; otherwise two markers naming different letters are ambiguous.
3. Without a marker: a reply that is only a letter ("B", "(B)", "B) Paris") or only a choice's
   text, or whose first line starts with a lettered choice ("C. 42 because ...").
4. A refusal, no letter, two letters offered together ("A or B", "A and C") or a letter whose
   following text is another choice's text is wrong, with reason no_answer or ambiguous.
   A letter outside the choices ("E" of four) is read and graded wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from failtune.grading import Grade, cut_followup, truncated

__all__ = ["grade_choice", "letters_for", "read_choice"]

_SEGMENT_CHARS = 160  # how far after a marker its letter or choice text may sit

_EMPHASIS_RE = re.compile(r"\*\*|__|`|(?<![A-Za-z])\*(?=[A-Za-z(])|(?<=[A-Za-z).])\*(?![A-Za-z])")
_LATEX_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit)\s*\{([^{}]*)\}")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")

_MARKER_RE = re.compile(
    r"(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+|most\s+(?:likely|appropriate)\s+)?"
    r"(?:answer|option|choice|response)(?:\s+choice)?\s*"
    r"(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:|：|-)\s*[:：]?\s*"
    r"(?:therefore\s+|thus\s+)?"
    r"|\banswer\s*(?:is\s*)?:?\s*(?=[(\[]?[A-Za-z][)\].:]|\s*$)"
    r"|\b(?:i(?:\s+would|\s+will|'d|’d)\s+(?:choose|pick|select|go\s+with|say)"
    r"|i\s+(?:choose|pick|select)"
    r"|my\s+(?:final\s+)?(?:answer|choice|pick)\s*(?:is|:)|(?:so|therefore|thus|hence),?\s+"
    r"(?:it(?:'s|\s+is)|we\s+(?:choose|pick|select|get)))\s*:?\s*"
    r"|(?:^|(?<=[.!?])\s+)it(?:'s|’s|\s+is)\s+"
    r"|\bi\s+(?:think|believe|guess)\s+(?:that\s+)?it(?:'s|’s|\s+is)\s+"
    r"|\b(?:therefore|thus|hence)\s*[,:]?\s*(?=[(\[]?[A-Z][)\]]?(?:[.!]|\s*$))"
    r"|\\boxed\s*\{|####\s*|答案(?:是|为)?\s*[:：]?\s*|(?:respuesta|réponse|antwort)\s*(?:es|est|ist)?\s*[:：]?\s*",
    re.IGNORECASE,
)
# "(B) is correct", "B is the right answer", "Option C is the best choice".
_VERDICT_RE = re.compile(
    r"(?:\b(?:option|choice|answer)\s+)?(?:\(([A-Za-z])\)|\b([A-Z])\b)\)?\s*(?:is|would\s+be)\s+"
    r"(?:the\s+)?(?:(?:correct|right|best|true|most\s+(?:likely|appropriate|accurate))\b"
    r"|(?:final\s+)?answer\b)"
    r"(?!\s+(?:statement|about|for\s+(?:a|an|the)\b))",
    re.IGNORECASE,
)
# "(A) and (C) are correct", "Both B and D are right": two answers at once.
_PLURAL_VERDICT_RE = re.compile(
    r"\(?\b([A-Z])\b\)?\s*(?:,|and|&)\s*\(?\b([A-Z])\b\)?\s*(?:are|could\s+be|might\s+be)\s+"
    r"(?:both\s+|all\s+)?(?:correct|right|true|valid)\b"
)
_NEGATED_RE = re.compile(r"\bnot\s+$|\bn't\s+$", re.IGNORECASE)
_CORRECTION_RE = re.compile(
    r"\b(?:wait|actually|correction|on\s+second\s+thought|i\s+made\s+a\s+mistake|"
    r"let\s+me\s+(?:reconsider|re-?check|re-?evaluate|correct)|upon\s+(?:further\s+)?"
    r"(?:reflection|review|reconsideration)|re-?evaluat\w*|i\s+was\s+wrong|mistake|hmm+|oops"
    r"|sorry|scratch\s+that|no(?=[,.!]))\b",
    re.IGNORECASE,
)
# A letter in any dress right at the start of a segment: "(B)", "[B]", "B)", "B.", "option B".
_LETTER_RE = re.compile(
    r"\s*(?:(?:option|choice|letter|answer)\s+)?"
    r"(?:\(([A-Za-z])\)|\[([A-Za-z])\]|\{([A-Za-z])\}|([A-Za-z])(?=[).:,;}\]]|\s*$|\s)"
    r"|([A-Za-z])$)",
    re.IGNORECASE,
)
_ALTERNATIVE_RE = re.compile(
    r"\s*(?:\)|\.)?\s*[(\[]?\s*(?:or|and|/|,|&|\+)\s*(?:(?:possibly|maybe|perhaps|also|even)\s+)?"
    r"(?:option\s+|choice\s+)?\(?([A-Z])\b(?![a-z'])"
)
# A reply that opens with its letter: "B", "(B)", "[B]", "B) Paris", "C. 42", "Option (C)".
_FIRST_LINE_LETTER_RE = re.compile(
    r"^(?:(?i:option|choice)\s*)?"
    r"(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Z])(?:[).:]|\s*$)|([a-z])[).](?:\s|$))"
)
# A reply whose last line is only a letter: "...explanation.\n\nA".
_LAST_LINE_LETTER_RE = re.compile(r"^(?:(?i:option|choice)\s*)?[(\[]?([A-Z])[)\].]?$")
_NEGATION_RE = re.compile(r" (?:not|never|no|isn t|aren t|cannot|neither|nor) ")
_MIN_NAMED_CHARS = 8  # shorter choice texts ("4", "True") occur in reasoning by chance
_REFUSAL_RE = re.compile(
    r"\b(?:i\s+(?:can(?:no|')t|am\s+(?:not\s+able|unable)|'m\s+(?:not\s+able|unable|not\s+sure))"
    r"|cannot\s+(?:be\s+)?determin|none\s+of\s+the\s+(?:above|options|choices)"
    r"|all\s+of\s+the\s+above|not\s+enough\s+information)",
    re.IGNORECASE,
)


def letters_for(n: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


def grade_choice(
    completion: str, choices: Sequence[str], answer: int, finish_reason: str | None = None
) -> Grade:
    """Grade a completion against the gold choice index.

    Reasons: correct, wrong_answer (a letter or choice was read and it is not the gold),
    no_answer (refusal or nothing readable), ambiguous (two different letters offered) and
    truncated (the length limit hit before an answer marker or verdict sentence named one; see
    failtune.grading.truncated).
    """
    letter, reason, explicit = _read(completion, choices)
    cut = truncated(finish_reason, explicit)
    if cut is not None:
        return cut
    if letter is None:
        return Grade(False, None, reason)
    if letter == letters_for(len(choices))[answer]:
        return Grade(True, letter, "correct")
    return Grade(False, letter, "wrong_answer")


def read_choice(completion: str, choices: Sequence[str]) -> tuple[str | None, str]:
    """(upper-case letter or None, reason when None: "no_answer" or "ambiguous")."""
    letter, reason, _ = _read(completion, choices)
    return letter, reason


def _read(completion: str, choices: Sequence[str]) -> tuple[str | None, str, bool]:
    """read_choice's answer, and whether an answer marker or a verdict sentence gave it."""
    text = _clean(cut_followup(str(completion)))
    valid = letters_for(len(choices))
    markers, verdicts = _marked_picks(text, choices, valid)
    for picks in (markers, verdicts):  # an explicit "The answer is" outranks "B is correct"
        if picks:
            return (*_last_pick(text, picks), True)
    letter = _unmarked(text, choices, valid)
    if letter == "?":
        return None, "ambiguous", False
    return letter, "" if letter else "no_answer", False


def _last_pick(text: str, picks: list[tuple[int, str]]) -> tuple[str | None, str]:
    """The last pick, unless an earlier one names another letter with no correction between."""
    final_pos, final = picks[-1]
    for pos, letter in reversed(picks[:-1]):
        if letter in ("?", final):
            continue
        if not _CORRECTION_RE.search(text, pos, final_pos):
            return None, "ambiguous"
        break
    return (None, "ambiguous") if final == "?" else (final, "")


def _clean(text: str) -> str:
    text = _LATEX_RE.sub(r"\1", text)
    text = text.replace("$", "")
    return _EMPHASIS_RE.sub("", text).strip()


def _norm(text: str) -> str:
    return re.sub(r"[\s.,;:!?\"'“”‘’()\[\]]+", " ", text).strip().lower()


def _marked_picks(
    text: str, choices: Sequence[str], valid: str
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(position, letter) named by answer markers, and by verdict sentences ("B is correct");
    "?" where two letters are named at once."""
    markers: list[tuple[int, str]] = []
    for m in _MARKER_RE.finditer(text):
        letter = _letter_at(text, m.end(), choices, valid)
        if letter:
            markers.append((m.start(), letter))
    verdicts: list[tuple[int, str]] = []
    for m in _VERDICT_RE.finditer(text):
        letter = (m.group(1) or m.group(2)).upper()
        before = text[max(0, m.start() - 12) : m.start()]
        if (m.group(2) and m.group(2) == "I") or _NEGATED_RE.search(before):
            continue
        if m.group(1) or letter in valid:
            verdicts.append((m.start(), letter))
    verdicts.extend((m.start(), "?") for m in _PLURAL_VERDICT_RE.finditer(text))
    return sorted(markers), sorted(verdicts)


def _letter_at(text: str, start: int, choices: Sequence[str], valid: str) -> str | None:
    """The letter (or choice text) a marker ending at `start` names; "?" if it names two."""
    segment = text[start : start + _SEGMENT_CHARS]
    m = _LETTER_RE.match(segment)
    if m:
        raw = next(g for g in m.groups() if g)
        bare = m.group(4) or m.group(5)
        letter = raw.upper()
        if bare and raw.islower() and not re.match(r"[a-z]\s*[).:]", segment.lstrip()):
            letter = ""  # "the answer is a bit unclear": an article, not choice (a)
        elif bare and raw == "A" and re.match(r"\s*A\s+(?!(?:or|and)\b)[a-z]", segment):
            letter = "" if not _starts_with_choice(segment.lstrip()[1:], choices[0]) else "A"
        elif bare and raw == "I" and "I" not in valid:
            letter = ""
        if letter:
            return _check_letter(letter, segment[m.end() :], choices, valid)
    index = _choice_at(segment, choices)
    return None if index is None else valid[index]


def _check_letter(letter: str, rest: str, choices: Sequence[str], valid: str) -> str:
    """ "?" when the text after a letter offers a second letter ("A or B") or names another
    choice's text ("(B) Paris" where Paris is choice C); else the letter."""
    alt = _ALTERNATIVE_RE.match(rest)
    if alt and alt.group(1) != letter and alt.group(1) in valid:
        return "?"
    if letter in valid and not re.match(r"\s*[.!?]\s", rest):
        other = _choice_at(rest, choices, exclude=valid.index(letter))
        if other is not None and len(_norm(choices[other])) >= 3:
            return "?"
    return letter


def _starts_with_choice(text: str, choice: str) -> bool:
    want = _norm(choice)
    return bool(want) and _norm(text).startswith(want)


def _choice_at(segment: str, choices: Sequence[str], exclude: int = -1) -> int | None:
    """The choice whose full text starts the segment (longest wins, so "12" beats "1")."""
    head = _norm(segment.split("\n", 1)[0])
    best, best_len = None, 0
    for i, choice in enumerate(choices):
        want = _norm(choice)
        if not want or i == exclude:
            continue
        if (head == want or head.startswith(want + " ")) and len(want) > best_len:
            best, best_len = i, len(want)
    if exclude >= 0 and best is not None and _starts_with_choice(segment, choices[exclude]):
        return None  # the letter's own text is a prefix-match too ("1" vs "12")
    return best


def _unmarked(text: str, choices: Sequence[str], valid: str) -> str | None:
    """A bare letter, a reply that is just a choice's text, or a first line "C. 42 ..."."""
    if not text or (_REFUSAL_RE.search(text) and len(text) > 3):
        return None
    first = text.split("\n", 1)[0].strip()
    m = _FIRST_LINE_LETTER_RE.match(first)
    if m:
        letter = next(g for g in m.groups() if g).upper()
        return _check_letter(letter, first[m.end() :], choices, valid)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = _LAST_LINE_LETTER_RE.match(lines[-1])
    if last:
        return last.group(1)
    whole = _norm(text)
    for candidate in (whole, _norm(first)):
        hits = [i for i, c in enumerate(choices) if _norm(c) and _norm(c) == candidate]
        if len(hits) == 1:
            return valid[hits[0]]
    return _named_in_last_sentence(text, choices, valid)


def _named_in_last_sentence(text: str, choices: Sequence[str], valid: str) -> str | None:
    """A concluding sentence that states exactly one (long enough) choice's text, unnegated:
    "These are scarce economic resources." for choice D "scarce economic resources."."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    last = " " + _norm(sentences[-1]) + " "
    if _NEGATION_RE.search(last):
        return None
    hits = [
        i
        for i, c in enumerate(choices)
        if len(_norm(c)) >= _MIN_NAMED_CHARS and f" {_norm(c)} " in last
    ]
    return valid[hits[0]] if len(hits) == 1 else None
