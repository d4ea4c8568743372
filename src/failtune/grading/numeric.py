"""Read the final numeric answer of a GSM8K-style solution and grade it against the gold.

The reader works the way a careful human marker would:

1. Normalise the text (unicode minus signs, LaTeX ``1{,}000`` / ``1\\,000``, ``\\frac{3}{4}``).
2. Cut it at a hallucinated follow-up turn (a later line starting ``Question:``, ``Q:``,
   ``Problem:``, ``Human:``, ``User:``, ``### Instruction``, ``[INST]`` or a chat special token),
   because whatever the model "answers" there belongs to a question nobody asked.
3. Look for explicit final-answer markers (``The answer is``, ``Final Answer:``, ``Answer:``,
   ``####``, ``\\boxed{}``, ``\\fbox{}``, ``答案是``, ``La respuesta es``...). The last marker that
   yields a number wins, so a self-correction ("The answer is 5. Wait... The answer is 7.") is
   honoured. The number is read from the text right after the marker up to the end of that
   line: within the first sentence that holds a number, after the last ``=`` if there is one,
   the first number (spelled-out numbers such as "twenty-five" are read here too). A bare
   "Answer:" followed by words and then more numbers ("Answer: Janet sells 16 - 3 - 4 = 9
   eggs...") labels a whole worked solution, so it is not taken as a final-answer marker,
   unless an "Explanation:" follows it. An explicit correction after the marker ("Wait, I made a
   mistake... so she makes $18.") with no later marker replaces the marked answer.
4. Without any marker, drop trailing ``Note:`` asides and sign-offs ("I hope this helps! Ask if
   you have 2 more questions") and read the last sentence that holds a number: its last number,
   skipping numbers that only restate the question ("... $36 in 4 weeks", "... 45 miles at the
   end of those 4 hours", "(40 - 4)", "160 minutes, or 2 hours and 40 minutes").
5. Two different answers offered as alternatives are a hedge, never an answer ("either 12 or
   13", "18 (or possibly 20)", "between 40 and 50", two boxes: failtune.grading.hedging).

Numbers are compared exactly as :class:`fractions.Fraction` values (``2.5 == 5/2 == 2.50``), with
a 1e-6 relative tolerance as a backstop when a side is not an integer. "1.45 million" and
"10 degrees below zero" are read as the numbers they name. Every regular expression here is
linear on its input and every scan after a marker is bounded, so 100 KB of garbage is graded
quickly and nothing raises.

Reading a number (digits, fractions, words) lives in failtune.grading.numbers, and telling a
result from a restated quantity in failtune.grading.restatement.
"""

import math
import re
from fractions import Fraction

from failtune.grading import Grade, cut_followup, truncated
from failtune.grading.hedging import offered_beside
from failtune.grading.numbers import (
    DASHES,
    NUM_RE,
    WORDS_RE,
    first_word_number,
    format_number,
    iter_numbers,
    iter_word_numbers,
    normalise,
    same_number,
)
from failtune.grading.restatement import restatement_levels

__all__ = ["extract_number", "grade_numeric"]

# How far after a marker we look for its number; a final answer sits right after its marker.
_SEGMENT_CHARS = 400
# Blank or markup-only lines skipped after a marker that ends its line ("Final Answer:\n\n18").
_NEXT_LINES = 3
# A spelled-out answer sits right after its marker ("The answer is: she makes eighteen").
_WORDS_CHARS = 120
# Markers tried, from the last one back; real solutions have a handful, garbage can have 10^4.
_MAX_MARKERS = 256
# How far past a bare "Answer:" segment we look for the rest of a worked solution.
_LABEL_LOOKAHEAD_CHARS = 2000
# How much of the text's end the no-marker reader scans for spelled-out numbers.
_WORDS_TAIL_CHARS = 2000


# Working shown: a number, an operator or "=", a number ("16 - 3 = 13", "9 * $2", "x = 4").
_CALC_RE = re.compile(r"[0-9]\s{0,3}(?:[-+*/×÷=]|\\times|\\cdot)\s{0,3}\$?[0-9(]|=\s{0,3}\$?[0-9]")


# Markers. "bare" ones ("Answer:", a lone "Answer" heading; not "Final answer:" and not
# "The answer is") are also used as a label in front of a whole worked solution.
_MARKER_RE = re.compile(
    r"(?P<boxed>\\(?:boxed|fbox)\s*\{)"
    r"|####(?=[ \t]*[-+$\\0-9.])"
    r"|\banswer\s+is\b"
    r"|(?P<final>\bfinal[ \t]+)?(?P<colon>\banswer\b)[ \t]*(?:[*_]+[ \t]*)?[:=：]"
    r"|^[ \t#*_>]*(?P<final2>final[ \t]+)?(?P<heading>answer)[ \t*_:：]*$"
    r"|答案(?:是|为|應為|应为|[ \t]*[:：])|答え[ \t]*[:：は]"
    r"|Ответ[ \t]*[:：]|उत्तर[ \t]*[:：]"
    r"|\b(?:la[ \t]+respuesta|la[ \t]+réponse|die[ \t]+antwort|a[ \t]+resposta|la[ \t]+risposta)"
    r"(?:[ \t]+final[e]?|[ \t]+endgültige)?[ \t]+(?:es|est|ist|lautet|é|è)\b"
    r"|\b(?:antwort|respuesta|réponse|resposta|risposta)[ \t]*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
# A trailing aside: "Note:" at a line start ("Note:", "**Notes:**", "Note that"), or after a
# sentence end on the same line ("... $18 per day. Note: ..."); "Note that" mid-line is usually
# reasoning. A sign-off ("I hope this helps!", "Let me know...", "Feel free...") is one too.
_NOTE_RE = re.compile(
    r"^[ \t>*_#-]*(?:notes?\b[ \t*_]*:|note[ \t]+that\b)"
    r"|(?<=[.!?])[ \t]+[*_(]*notes?\b[ \t*_]*:"
    r"|(?:^|(?<=[.!?])[ \t]+)[ \t>*_]*(?:i[ \t]+hope[ \t]+(?:this|that|it)[ \t]+(?:helps|clarifies)"
    r"|hope[ \t]+(?:this|that)[ \t]+helps|let[ \t]+me[ \t]+know\b|feel[ \t]+free\b"
    r"|please[ \t]+(?:let[ \t]+me[ \t]+know|feel[ \t]+free)|don't[ \t]+hesitate\b"
    r"|happy[ \t]+to[ \t]+help\b|good[ \t]+luck\b|如果(?:你|您)还有|希望(?:这|以上))",
    re.IGNORECASE | re.MULTILINE,
)
# A correction of an answer already given ("Wait, I made a mistake", "Actually, ...").
_CORRECTION_RE = re.compile(
    r"\bI[ \t]+made[ \t]+(?:a|an)[ \t]+(?:mistake|error)\b"
    r"|\b(?:that|this)(?:'s|[ \t]+is)[ \t]+(?:not[ \t]+(?:right|correct)|wrong|incorrect)\b"
    r"|\bI[ \t]+(?:forgot|miscalculated|misread|overlooked)\b|\bmy[ \t]+(?:mistake|error)\b"
    r"|\bcorrection[ \t]*:|\boops\b|\bwait,?[ \t]+no\b"
    r"|(?:^|(?<=[.!?])[ \t]+)(?:wait,?[ \t]+)?actually,",
    re.IGNORECASE | re.MULTILINE,
)
# Right after an "Answer:" sentence: a header that says the worked solution follows.
_EXPLANATION_RE = re.compile(
    r"\A\s*(?:[*_#>]+[ \t]*)?(?:explanation|reasoning|justification|solution|working|"
    r"here'?s[ \t]+how|how[ \t]+i[ \t]+got)\b",
    re.IGNORECASE,
)
# A second, different number offered instead of the first ("12 or 13", "18 (or possibly 20)");
# after a comma only a conditional one ("18, or 20 if..."; "$18 a day, or $126 a week" restates).
_ALTERNATIVE_RE = re.compile(
    r"[ \t]*%?[ \t]*(?:\(|--?|—|–)?[ \t]*(?:[^\W\d_]+[ \t]+){0,2}(?:or|alternatively)[ \t]+"
    r"(?:(?:maybe|possibly|perhaps|even)[ \t]+)?(?:\\?\$|[€£])?[ \t]*(?=[0-9.]|[a-z])"
    r"|[ \t]*,[ \t]*or[ \t]+(?:\\?\$|[€£])?[ \t]*(?=[0-9.][^\n.]{0,60}?\b(?:if|depending|assuming"
    r"|in[ \t]+case)\b)",
    re.IGNORECASE,
)
_BETWEEN_RE = re.compile(r"\bbetween[ \t]+(?:\\?\$|[€£])?[ \t]*\Z", re.IGNORECASE)
# In a sentence with digits, a spelled number counts only as a stated result ("which is
# seven", "so three bolts in total", "she makes eighteen").
_COPULA_BEFORE_RE = re.compile(
    r"\b(?:is|are|was|were|be|equals|so|thus|therefore|hence|makes|made|gives|total(?:[ \t]+of)?)"
    r"[ \t]+(?:(?:exactly|just|about)[ \t]+)?\Z",
    re.IGNORECASE,
)
# Where a sentence ends: a line break, or ". " / "! " / "? " (not the "." of "1.5" or of
# "Mr. Sylas"), or "。".
_SENTENCE_BOUNDARY_RE = re.compile(
    r"\n|(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bvs)(?<!\be\.g)(?<!\bi\.e)"
    r"[.!?](?=\s)|[。！？]"
)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_ALNUM_RE = re.compile(r"[0-9A-Za-z]")
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
_BRACE_RE = re.compile(r"[{}]")


def extract_number(text: str) -> tuple[str | None, bool]:
    """Return (normalised number string or None, found_via_explicit_marker)."""
    value, via_marker = _extract(text)
    return (None if value is None else format_number(value)), via_marker


def grade_numeric(
    completion: str, expected: str | float | int, finish_reason: str | None = None
) -> Grade:
    """Grade a free-text solution against the gold number.

    Reasons: "correct", "wrong_answer", "no_answer" (no number could be read, or two different
    answers were offered) and "truncated" (the generation hit the length limit before any
    explicit final-answer marker, so the model never gave its answer, even if its last number
    happens to equal the gold). A gold that is not a number is a dataset bug and raises
    ValueError; the completion never makes this raise.
    """
    gold = _parse_gold(expected)
    value, via_marker = _extract(completion)
    cut = truncated(finish_reason, via_marker)
    if cut is not None:
        return cut
    extracted = None if value is None else format_number(value)
    if value is None:
        return Grade(correct=False, extracted=None, reason="no_answer")
    if same_number(value, gold):
        return Grade(correct=True, extracted=extracted, reason="correct")
    return Grade(correct=False, extracted=extracted, reason="wrong_answer")


# --------------------------------------------------------------------------- extraction


def _extract(text: object) -> tuple[Fraction | None, bool]:
    """Find the answer: the last marker that yields a number (unless a correction follows it),
    else the last sentence's number."""
    text = normalise(_as_text(text))
    text = cut_followup(text)
    markers = list(_MARKER_RE.finditer(text))[-_MAX_MARKERS:]
    for index in range(len(markers) - 1, -1, -1):
        marker = markers[index]
        segment, segment_end = _marker_segment(text, marker)
        reading = _read_segment(segment)
        if reading is None:
            continue
        value, sentence_end = reading
        if _is_solution_label(text, marker, segment, sentence_end, segment_end):
            continue
        if value is not None and _hedged_box(text, markers[:index], marker, segment, value):
            return None, True  # two different boxed answers: no answer
        if value is not None:
            corrected = _correction_after(text, segment_end - len(segment) + sentence_end)
            if corrected is not None:
                return corrected, False
        return value, True
    return _read_unmarked(text), False


def _hedged_box(
    text: str, earlier: list[re.Match[str]], marker: re.Match[str], body: str, value: Fraction
) -> bool:
    """True when a box holds several different numbers without working ("\\boxed{18, 20}"), or
    an earlier box offers a different number beside it (failtune.grading.hedging)."""
    if marker.group("boxed") is None:
        return False
    if not _CALC_RE.search(body) and len({v for _, _, v in iter_numbers(body)}) > 1:
        return True
    boxes = [(m.start(), *_marker_segment(text, m)) for m in earlier if m.group("boxed")]
    spans = [(start, end + 1) for start, _, end in boxes]
    for index in offered_beside(text, spans, marker.start()):
        reading = _read_segment(boxes[index][1])
        if reading is not None and reading[0] is not None and not same_number(reading[0], value):
            return True
    return False


def _as_text(text: object) -> str:
    """Coerce whatever we were handed into a str, so odd callers cannot make us raise."""
    if isinstance(text, str):
        return text
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


def _marker_segment(text: str, marker: re.Match[str]) -> tuple[str, int]:
    """The text a marker points at and where it ends in `text`: a \\boxed{} body, else the
    rest of its line (or the next non-blank line when the marker ends its line, as in
    "**Final Answer:**\\n\\n18")."""
    if marker.group("boxed") is not None:
        return _braced_body(text, marker.end())
    segment, line_end = _rest_of_line(text, marker.end())
    if _ALNUM_RE.search(segment):
        return segment, line_end
    first_line_end = line_end
    position = line_end + 1
    for _ in range(_NEXT_LINES):
        if position >= len(text):
            break
        line, line_end = _rest_of_line(text, position)
        if _ALNUM_RE.search(line):
            return line, line_end
        position = line_end + 1
    return segment, first_line_end


def _is_solution_label(
    text: str, marker: re.Match[str], segment: str, sentence_end: int, segment_end: int
) -> bool:
    """True when a bare "Answer:" heads a worked solution rather than giving the result:
    its text starts with words ("Answer: Janet sells 16 - 3 - 4 = 9 eggs...") and more
    calculations follow the sentence we read. "Answer: 18" or "Answer: $18" stays a marker,
    and so do "Answer: Janet makes $18. Ask if you have 2 more questions." (no working) and
    "Answer: Janet makes $18.\\n\\nExplanation: 16 - 3 - 4 = 9..." (the working is announced)."""
    bare = (marker.group("colon") is not None and marker.group("final") is None) or (
        marker.group("heading") is not None and marker.group("final2") is None
    )
    if not bare:
        return False
    lead = segment.lstrip(" \t*_#>:")
    if not lead[:1].isalpha() or WORDS_RE.match(lead):
        return False
    if not _CALC_RE.search(segment, 0, sentence_end):
        rest = segment[sentence_end:] if sentence_end < len(segment) else ""
        if _EXPLANATION_RE.match(rest + text[segment_end : segment_end + _SEGMENT_CHARS]):
            return False
    if _CALC_RE.search(segment, sentence_end):
        return True
    window_end = min(len(text), segment_end + _LABEL_LOOKAHEAD_CHARS)
    return _CALC_RE.search(text, segment_end, window_end) is not None


def _correction_after(text: str, start: int) -> Fraction | None:
    """The corrected answer when the model retracts its marked answer ("The answer is 16.
    Wait, I made a mistake... so she makes $18.") and gives no later marker; else None."""
    correction = _CORRECTION_RE.search(text, start)
    if correction is None or _MARKER_RE.search(text, correction.end()) is not None:
        return None
    return _read_unmarked(text[correction.start() :])


def _rest_of_line(text: str, start: int) -> tuple[str, int]:
    """Text from `start` to the end of its line, bounded to _SEGMENT_CHARS characters."""
    limit = min(len(text), start + _SEGMENT_CHARS)
    end = text.find("\n", start, limit)
    if end == -1:
        end = limit
    return text[start:end], end


def _braced_body(text: str, start: int) -> tuple[str, int]:
    """Body of a brace group opened just before `start`, and its end; a box cut off mid-way
    runs to the end of its line."""
    limit = min(len(text), start + _SEGMENT_CHARS)
    depth = 1
    for brace in _BRACE_RE.finditer(text, start, limit):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[start : brace.start()], brace.start()
    return _rest_of_line(text, start)


def _read_segment(segment: str) -> tuple[Fraction | None, int] | None:
    """First number of the first sentence that has one, taken after that sentence's last "="
    ("The answer is 16 - 3 - 4 = 9 eggs." -> 9), with the offset where that sentence ends.
    The value is None when the sentence offers two different answers ("either 12 or 13")."""
    start = 0
    for boundary in [*_SENTENCE_END_RE.finditer(segment), None]:
        end = len(segment) if boundary is None else boundary.start()
        sentence = segment[start:end]
        if "=" in sentence:
            sentence = sentence.rsplit("=", 1)[1]
        first = _first_value(sentence)
        if first is not None:
            value, value_start, value_end = first
            if _BETWEEN_RE.search(sentence, 0, value_start) or _has_alternative(
                sentence, value_end, value
            ):
                return None, end
            return value, end
        if boundary is not None:
            start = boundary.end()
    return None


def _has_alternative(text: str, end: int, value: Fraction) -> bool:
    """True when "or" and a different number follow the number ending at `end`."""
    match = _ALTERNATIVE_RE.match(text, end, min(len(text), end + _WORDS_CHARS))
    if match is None:
        return False
    other = _first_value(text[match.end() : match.end() + _WORDS_CHARS])
    if other is None or other[1] != 0:
        return False
    return other[0] not in (value, value * 100, value / 100)  # "0.6 or 60%" is one answer


def _first_value(part: str) -> tuple[Fraction, int, int] | None:
    """(value, start, end) of the earlier of the first digit number and the first spelled-out
    number (searched only before the digits); a lone "one" ("each one makes $18") yields to a
    digit number."""
    digits = next(iter_numbers(part), None)
    words_end = _WORDS_CHARS if digits is None else min(_WORDS_CHARS, digits[0])
    words = first_word_number(part[:words_end])
    if words is None or (digits is not None and words[3]):
        return None if digits is None else (digits[2], digits[0], digits[1])
    return words[2], words[0], words[1]


def _read_unmarked(text: str) -> Fraction | None:
    """The answer of a text without a marker: the last number of its last sentence that has
    one (after dropping trailing asides), preferring a number that does not restate the
    question; None when that sentence offers two answers ("either $18 or $26")."""
    text = _cut_notes(text)
    last = None
    for last in iter_numbers(text):  # noqa: B007 - we want the last one
        pass
    tail_start = max(0 if last is None else last[1], len(text) - _WORDS_TAIL_CHARS)
    for word in iter_word_numbers(text, tail_start, len(text)):
        last = word
    if last is None:
        return None
    sentence_start = _sentence_start(text, last[0])
    digits = list(iter_numbers(text, sentence_start, last[1]))
    words = list(iter_word_numbers(text, sentence_start, last[1]))
    if digits and 0 in restatement_levels(text, sentence_start, digits):
        # Next to a digit result, a spelled number mostly restates the question ("... 8 years
        # old three years from now"), unless it is stated as a value ("which is seven dozen").
        words = [w for w in words if _COPULA_BEFORE_RE.search(text, max(0, w[0] - 30), w[0])]
    tokens = sorted([*digits, *words])
    levels = restatement_levels(text, sentence_start, tokens)
    chosen = max(range(len(tokens)), key=lambda index: (-levels[index], index))
    if chosen > 0:
        previous = tokens[chosen - 1]
        if _has_alternative(text[: tokens[chosen][1]], previous[1], previous[2]):
            return None  # "she makes 18 or 20 dollars", "either $18 or $26"
    if _has_alternative(text, tokens[chosen][1], tokens[chosen][2]):
        return None  # "she makes 18 (or possibly 20) dollars"
    return tokens[chosen][2]


def _sentence_start(text: str, position: int) -> int:
    """Start of the sentence holding `position`, looking back at most _SEGMENT_CHARS."""
    start = max(0, position - _SEGMENT_CHARS)
    for boundary in _SENTENCE_BOUNDARY_RE.finditer(text, start, position):
        start = boundary.end()
    return start


def _cut_notes(text: str) -> str:
    """Drop trailing "Note:" asides and sign-offs (and only trailing ones) when an earlier
    number remains."""
    first_number = NUM_RE.search(text)
    if first_number is None:
        return text
    notes = list(_NOTE_RE.finditer(text))
    cut = len(text)
    for note in reversed(notes):
        start = note.start()
        if start <= first_number.start():
            break
        note_end = _note_end(text, note.end(), cut)
        if note_end < cut and NUM_RE.search(text, note_end, cut):
            break  # the solution goes on with numbers after this note: not a trailing aside
        cut = start
    return text[:cut]


def _note_end(text: str, after_marker: int, limit: int) -> int:
    """A note runs to the end of its line; a bare "**Notes:**" heading runs to the end of its
    paragraph (the bullets below it). Never past `limit`, which keeps the note scan linear."""
    line_end = text.find("\n", after_marker, limit)
    if line_end == -1:
        return limit
    if _ALNUM_RE.search(text, after_marker, line_end):
        return line_end
    paragraph_end = _BLANK_LINE_RE.search(text, line_end, limit)
    return limit if paragraph_end is None else paragraph_end.start()


# ----------------------------------------------------------------------------------- gold


def _parse_gold(expected: str | float | int) -> Fraction:
    """The gold as an exact Fraction ("1,080", "-3", "2.5", 70000, 2.5, "#### 18")."""
    if isinstance(expected, bool):
        raise ValueError(f"gold answer must be a number, got {expected!r}")
    if isinstance(expected, int | Fraction):
        return Fraction(expected)
    if isinstance(expected, float):
        if not math.isfinite(expected):
            raise ValueError(f"gold answer is not finite: {expected!r}")
        return Fraction(repr(expected))  # the decimal the dataset wrote, not its binary float
    text = str(expected).translate(DASHES).strip()
    plain = text.replace(",", "").replace("$", "").replace("%", "").strip()
    try:
        return Fraction(plain)
    except (ValueError, ZeroDivisionError):
        pass
    value = _extract(text)[0] if NUM_RE.search(text) else None
    if value is None:
        raise ValueError(f"gold answer is not a number: {expected!r}")
    return Fraction(value)
