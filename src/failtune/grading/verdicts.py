"""Read a judge model's verdict (A, B or T) the way a person reads it.

Judges reply with a bare letter, but also with ``**B**``, ``Answer: A``, ``Verdict: T``,
``[[A]]``, ``{"verdict": "B"}``, "The better answer is A.", "Answer B is better", "A. It is
correct and ..." or "Both answers are equally good". The explicit forms decide in this order:
a JSON verdict, a labelled one ("Verdict:", "The answer is", ``[[X]]``), a sentence naming the
better answer, a last line that is a letter, a tie stated in words, an opening letter. Within
the form that decides, two different letters make the reply unreadable (None), as does a reply
with none.
Reading by the first letter alone got "The better answer is A" wrong: it starts with "T".
"""

from __future__ import annotations

import json
import re

LETTERS = ("A", "B", "T")

_JSON_RE = re.compile(r"\{[^{}]*\}")
_JSON_KEYS = ("verdict", "answer", "better", "winner", "choice", "decision", "result")
_MARKUP_RE = re.compile(r"[*_`#]+")
_TIE_WORD_RE = re.compile(r"^\W*(?:tie|t|equal|same|draw)\W*$", re.IGNORECASE)
_LETTER_WORD_RE = re.compile(r"^\W*(?:answer|response|option)?\s*\(?([ABT])\)?\W*$", re.IGNORECASE)
# "Verdict: T", "Final verdict: [[B]]", "Answer: A", "The answer is B", "[[A]]".
_LABELLED_RE = re.compile(
    r"\b(?:(?:final|my|overall)\s+)?(?:verdict|answer|choice|decision|judg(?:e)?ment|winner"
    r"|result|rating|selection)\s*(?:is\s*[:=\-–]?|[:=\-–])\s*\[*\(?\s*([ABT]|tie)\b\s*\)?\]*"
    r"|\[\[\s*([ABT])\s*\]\]",
    re.IGNORECASE,
)
# "The better answer is A", "Answer B is better", "A is more correct", "I prefer B".
_NAMED_RE = re.compile(
    r"\b(?:better|best|stronger|superior|preferred|correct)\s+(?:answer|response|one)\s+is\s+"
    r"(?:answer\s+|response\s+)?\(?([AB])\b"
    r"|\b(?:answer\s+|response\s+)?\(?\b([AB])\)?\s+is\s+(?:clearly\s+|slightly\s+|much\s+)?"
    r"(?:the\s+)?(?:better|best|stronger|superior|preferable|more\s+(?:correct|accurate|sound))\b"
    r"|\bi\s+(?:prefer|choose|pick|select)\s+(?:answer\s+|response\s+)?\(?([AB])\b",
    re.IGNORECASE,
)
_TIE_RE = re.compile(
    r"\b(?:it'?s\s+a\s+tie|a\s+tie|tie\b|equally\s+(?:good|bad|correct|incorrect|wrong|valid|strong"
    r"|weak)|both\s+(?:answers\s+|responses\s+)?(?:are\s+)?(?:equally|equivalent|identical"
    r"|correct|incorrect|wrong)|neither\s+(?:answer\s+|one\s+)?is\s+better|no\s+(?:clear\s+)?"
    r"(?:difference|winner))",
    re.IGNORECASE,
)
# A reply whose last line is its letter: "...explanation.\n\nB".
_LAST_LINE_RE = re.compile(r"\n\W{0,3}\(?([ABT])\)?\W{0,3}$")
# A reply that opens with its letter: "A", "B.", "(A)", "A) ...", "A. It is correct", "T -".
_OPENING_RE = re.compile(r"^\W{0,3}\(?([ABT])\)?(?:[.:)\]]|\s*$|[ \t]*\n|\s+[-–—])")


def read_verdict(reply: str) -> str | None:
    """ "A", "B" or "T", or None when the reply names no verdict or contradicts itself."""
    text = str(reply or "").strip()
    from_json = _json_verdict(text)
    if from_json is not None:
        return from_json
    plain = _MARKUP_RE.sub("", text).strip()
    if _TIE_WORD_RE.match(plain):
        return "T"
    bare = _LETTER_WORD_RE.match(plain)
    if bare:
        return bare.group(1).upper()
    for pattern in (_LABELLED_RE, _NAMED_RE):
        found = {_letter(m) for m in pattern.finditer(plain)}
        if found:
            return found.pop() if len(found) == 1 else None
    last = _LAST_LINE_RE.search(plain)
    if last:
        return last.group(1)
    if _TIE_RE.search(plain):
        return "T"
    opening = _OPENING_RE.match(plain)
    return opening.group(1) if opening else None


def _letter(match: re.Match[str]) -> str:
    value = next(g for g in match.groups() if g)
    return "T" if value.lower() == "tie" else value.upper()


def _json_verdict(text: str) -> str | None:
    """The verdict of a JSON object in the reply ({"verdict": "B"}), if there is one."""
    for chunk in _JSON_RE.findall(text):
        try:
            data = json.loads(chunk)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        for key in _JSON_KEYS:
            value = data.get(key)
            if isinstance(value, str):
                letter = read_verdict(value) if value.strip() else None
                if letter is not None:
                    return letter
    return None
