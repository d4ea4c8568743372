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
5. Two different answers offered as alternatives ("either 12 or 13", "between 40 and 50") are
   ambiguous: no answer.

Numbers are compared exactly as :class:`fractions.Fraction` values (``2.5 == 5/2 == 2.50``), with
a 1e-6 relative tolerance as a backstop when a side is not an integer. "1.45 million" and
"10 degrees below zero" are read as the numbers they name. Every regular expression here is
linear on its input and every scan after a marker is bounded, so 100 KB of garbage is graded
quickly and nothing raises.
"""

import math
import re
from collections.abc import Iterator
from fractions import Fraction

from failtune.grading import Grade

__all__ = ["extract_number", "grade_numeric"]

# A numeric token longer than this is not an answer (and would overflow int/str conversions).
_MAX_TOKEN_CHARS = 60
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
# How far back from a number the words that make it a restatement ("in those 4 hours") sit.
_CUE_CHARS = 80
# How much of the text's end the no-marker reader scans for spelled-out numbers.
_WORDS_TAIL_CHARS = 2000
_REL_TOL = 1e-6
_TRUNCATED_FINISH_REASON = "length"

_DASHES = str.maketrans(
    {"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-", "\uff0b": "+"}
)
# LaTeX / typographic thousands separators between digits: 1\,000, 1 000 (nbsp, thin space).
_THIN_THOUSANDS_RE = re.compile(r"(?<=[0-9])(?:\\,|\\ |[\u00a0\u202f\u2009])(?=[0-9]{3}(?![0-9]))")
_FRAC_RE = re.compile(
    r"\\[dt]?frac\s*(?:\{\s*([-+]?[0-9]+)\s*\}\s*\{\s*([0-9]+)\s*\}|([0-9])([0-9])(?![0-9]))"
)

# Numbers: a plain fraction, a thousands-grouped or plain decimal, or a leading-dot decimal.
# A thousands comma is followed by exactly three digits (so "18, 20" and "1,2345" are not
# grouped), and a period counts only when a digit follows it ("is 18." reads 18).
_NUM_RE = re.compile(
    r"(?P<frac>[0-9]+/[0-9]+)"
    r"|[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?"
    r"|(?P<int>[0-9]+)(?P<dec>\.[0-9]+)?"
    r"|(?<![0-9.])\.[0-9]+"
)
# Working shown: a number, an operator or "=", a number ("16 - 3 = 13", "9 * $2", "x = 4").
_CALC_RE = re.compile(r"[0-9]\s{0,3}(?:[-+*/×÷=]|\\times|\\cdot)\s{0,3}\$?[0-9(]|=\s{0,3}\$?[0-9]")
# "2 1/2" after an integer: a mixed number.
_MIXED_TAIL_RE = re.compile(r" ([0-9]{1,4})/([0-9]{1,4})(?![0-9/]|\.[0-9])")
# "1.45 million", "70 thousand": the scale word is part of the number.
_SCALE_TAIL_RE = re.compile(r"[ \t]+(thousand|million|billion)\b", re.IGNORECASE)
# "10 degrees below zero", "3 °C below zero": a negative temperature.
_BELOW_ZERO_RE = re.compile(
    r"[ \t]*(?:°[ \t]*[CF]?|degrees?(?:[ \t]+(?:celsius|fahrenheit|[CF]))?)[ \t]+below[ \t]+zero",
    re.IGNORECASE,
)

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_WORD = (
    "(?:" + "|".join(sorted([*_UNITS, *_TENS, "hundred", *_SCALES], key=len, reverse=True)) + r")\b"
)
_WORDS_RE = re.compile(
    rf"\b(?:(?P<neg>minus|negative)\s+)?(?P<words>{_NUMBER_WORD}"
    rf"(?:(?:\s+and\s+|[ \t-]+){_NUMBER_WORD})*)",
    re.IGNORECASE,
)
_WORD_SPLIT_RE = re.compile(r"[^a-z]+")
# A spelled number that names a group rather than a count ("the two of them", "all three").
_WORD_GROUP_BEFORE_RE = re.compile(r"\b(?:the|these|those|all|both|its|their)\s+\Z", re.IGNORECASE)
_WORD_GROUP_AFTER_RE = re.compile(r"\s+of\b", re.IGNORECASE)

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
_FOLLOWUP_RE = re.compile(
    r"^[ \t]*(?:[*_#>]+[ \t]*)?(?:question|problem|human|user|q)(?:[ \t]+[0-9]+)?"
    r"[ \t]*(?:[*_]+[ \t]*)?[:：]"
    r"|^[ \t]*###[ \t]*instruction"
    r"|<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>|</s>|<\|eot_id\|>|<\|end\|>"
    r"|<start_of_turn>|<end_of_turn>|\[INST\]|<\|(?:user|assistant|system)\|>",
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
# A second, different number offered instead of the first ("12 or 13", "$18 or $26 a day").
_ALTERNATIVE_RE = re.compile(
    r"[ \t]*%?[ \t]*(?:[^\W\d_]+[ \t]+){0,2}or[ \t]+(?:(?:maybe|possibly|perhaps)[ \t]+)?"
    r"(?:\\?\$|[€£])?[ \t]*(?=[0-9.]|[a-z])",
    re.IGNORECASE,
)
_EITHER_RE = re.compile(r"\beither\b", re.IGNORECASE)
_BETWEEN_RE = re.compile(r"\bbetween[ \t]+(?:\\?\$|[€£])?[ \t]*\Z", re.IGNORECASE)
# Restatements: numbers of the final sentence that repeat the question or the working.
# Before a number: "in 4 weeks", "over 30 days", "at the end of those 4 hours", "by selling her
# 9 eggs", "after he sold 10", "because 50 < 52", "15% of $300", "4 packs of 10".
_GAP = (
    r"(?:(?:the|those|these|her|his|its|their|each|every|all|a|an|first|last|next|remaining"
    r"|original|other|another|only|just|about|more|it|them|away|back|up|down|out|off|[a-z]+ing)"
    r"[ \t]+)"
)
_CUE_RE = re.compile(
    r"\b(?P<cue>in|after|before|over|within|without|during|for|from|by|of|on|at|per|than"
    r"|beyond|with|including|excluding|besides|among|because|since|out[ \t]+of)[ \t]+"
    rf"(?P<gap>{_GAP}{{0,3}})(?P<money>\\?\$|[€£])?[ \t]*\Z",
    re.IGNORECASE,
)
# A subordinate clause: "after he sold 10", "if he does 3 triples", "since each cup needs 3".
_CLAUSE_RE = re.compile(
    r"\b(?:after|before|because|since|if|when|until|once)[ \t]+(?:[a-z]+[ \t]+){1,3}"
    r"(?:\\?\$|[€£])?[ \t]*\Z",
    re.IGNORECASE,
)
# A purpose clause after a computed result: "... = 5 hours to read 120 pages".
_PURPOSE_RE = re.compile(
    rf"\bto[ \t]+[a-z]+[ \t]+{_GAP}{{0,3}}(?:\\?\$|[€£])?[ \t]*\Z", re.IGNORECASE
)
# Just before "of": a percentage or a counted thing ("15% of $300", "4 packs of 10").
_OF_BASE_RE = re.compile(r"(?:%|\bpercent|[0-9][^\s]*[ \t]+[a-z]+)[ \t]+\Z", re.IGNORECASE)
# Just before "with": a result ("left with 9", "ends up with 58").
_WITH_RESULT_RE = re.compile(r"\b(?:left|up|remains?|remaining|stuck)[ \t]+\Z", re.IGNORECASE)
_MONEY_AFTER_RE = re.compile(r"[ \t]*(?:dollars?|cents?|euros?|bucks)\b", re.IGNORECASE)
# After a number: "2 years ago", "3 years from now".
_WEAK_AFTER_RE = re.compile(
    r"[ \t]+(?:years?|months?|weeks?|days?|hours?|minutes?)[ \t]+(?:ago|from[ \t]+now|later)\b",
    re.IGNORECASE,
)
# A count handed to each ("68 kids get 2 macarons each"); "$96 each" is a price, a result.
_EACH_AFTER_RE = re.compile(r"[ \t]+(?:[a-z]+[ \t]+)?(?:each|apiece)\b(?![ \t]+of\b)", re.I)
# Right before a number: another number ("2 $5 bills") or a comparison ("because 404 > 400").
_WEAK_BEFORE_RE = re.compile(r"(?:[0-9][ \t]+|[<>≤≥][ \t]*)(?:\\?\$|[€£])?\Z")
_RESTATE_RE = re.compile(r",[ \t]*or\b|;[ \t]*or\b|\bi\.e\.|\bthat[ \t]+is,")
# A clock time ("1:00 PM"), a compound ("the 400-meter hurdles"), or part of a word ("mp3").
_STRONG_BEFORE_RE = re.compile(r"[0-9]:\Z|[A-Za-z]\Z")
_STRONG_AFTER_RE = re.compile(r":[0-9]{2}|-[A-Za-z]")
# A list of restated numbers: "from 12 marigolds, 9 petunias and 17 begonias".
_LIST_RE = re.compile(
    r"[ \t]*(?:[a-z]+(?:[ \t]+[a-z]+)?)?[ \t]*(?:,[ \t]*(?:and[ \t]+)?|[ \t]and[ \t]+)"
    r"(?:\\?\$|[€£])?\Z",
    re.IGNORECASE,
)
# An operand of a sum left unevaluated ("22 times in all: 4 + 12 + 6").
_OPERAND_BEFORE_RE = re.compile(r"[0-9][ \t]*(?:[-+*/×÷]|[ \t]x)[ \t]*(?:\\?\$|[€£])?\Z")
_OPERAND_AFTER_RE = re.compile(r"[ \t]*(?:[-+*/×÷]|x[ \t])[ \t]*(?:\\?\$|[€£])?[0-9]")
# A justification after the answer: "$18 every day, since she sells 9 eggs at $2 each",
# "45 miles from home, having driven 135 miles"; not a result ("9 eggs, making $18").
_JUSTIFY_RE = re.compile(
    r",[ \t]*(?:since|because|as|given|assuming|considering|based[ \t]+on"
    r"|(?!(?:making|giving|leaving|earning|totall?ing|bringing|resulting|yielding|amounting"
    r"|adding|coming|reaching|netting|costing|paying|spending|saving|getting|ending|meaning"
    r"|confirming)\b)"
    r"[a-z]+ing)\b",
    re.IGNORECASE,
)
# A number named as the answer after it: "... confirming that 80 is the answer".
_NAMED_ANSWER_AFTER_RE = re.compile(
    r"[ \t]+is[ \t]+(?:the|our|my)[ \t]+(?:(?:final|correct|right)[ \t]+)?answer\b", re.I
)
# A computed or summed result: "= 18", "a total of $64", "altogether 48".
_RESULT_BEFORE_RE = re.compile(
    r"(?:=|\btotal(?:[ \t]+of)?|\baltogether)[ \t]*(?:\\?\$|[€£])?[ \t]*\Z", re.IGNORECASE
)
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

# (start, end, value) of a number in a text.
_Token = tuple[int, int, Fraction]


class _Scaled(Fraction):
    """A number written with a scale word ("$1.45 million"): its full value, which also
    matches a gold counted in that unit (GSM8K writes "$4 million" for the gold 4)."""

    __slots__ = ("unscaled",)

    def __new__(cls, unscaled: Fraction, scale: int) -> "_Scaled":
        self = super().__new__(cls, unscaled * scale)
        self.unscaled = unscaled
        return self


def extract_number(text: str) -> tuple[str | None, bool]:
    """Return (normalised number string or None, found_via_explicit_marker)."""
    value, via_marker = _extract(text)
    return (None if value is None else _format(value)), via_marker


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
    extracted = None if value is None else _format(value)
    if finish_reason == _TRUNCATED_FINISH_REASON and not via_marker:
        return Grade(correct=False, extracted=extracted, reason="truncated")
    if value is None:
        return Grade(correct=False, extracted=None, reason="no_answer")
    if _same_number(value, gold):
        return Grade(correct=True, extracted=extracted, reason="correct")
    return Grade(correct=False, extracted=extracted, reason="wrong_answer")


# --------------------------------------------------------------------------- extraction


def _extract(text: object) -> tuple[Fraction | None, bool]:
    """Find the answer: the last marker that yields a number (unless a correction follows it),
    else the last sentence's number."""
    text = _normalise(_as_text(text))
    text = _cut_followup(text)
    markers = list(_MARKER_RE.finditer(text))[-_MAX_MARKERS:]
    for marker in reversed(markers):
        segment, segment_end = _marker_segment(text, marker)
        reading = _read_segment(segment)
        if reading is None:
            continue
        value, sentence_end = reading
        if _is_solution_label(text, marker, segment, sentence_end, segment_end):
            continue
        if value is not None:
            corrected = _correction_after(text, segment_end - len(segment) + sentence_end)
            if corrected is not None:
                return corrected, False
        return value, True
    return _read_unmarked(text), False


def _as_text(text: object) -> str:
    """Coerce whatever we were handed into a str, so odd callers cannot make us raise."""
    if isinstance(text, str):
        return text
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


def _normalise(text: str) -> str:
    """Rewrite notations that would otherwise split or hide a number."""
    text = text.translate(_DASHES)
    if "{,}" in text:
        text = text.replace("{,}", ",")
    text = _THIN_THOUSANDS_RE.sub(",", text)
    if "frac" in text:
        text = _FRAC_RE.sub(_frac_to_slash, text)
    return text


def _frac_to_slash(match: re.Match[str]) -> str:
    r"""\frac{3}{4} -> 3/4; a space keeps "2\frac{1}{2}" readable as the mixed number 2 1/2."""
    numerator = match.group(1) if match.group(1) is not None else match.group(3)
    denominator = match.group(2) if match.group(2) is not None else match.group(4)
    start = match.start()
    pad = " " if start > 0 and match.string[start - 1].isdigit() else ""
    return f"{pad}{numerator}/{denominator}"


def _cut_followup(text: str) -> str:
    """Drop a hallucinated next turn; a leading "Question:" restating the prompt is kept."""
    first_content = len(text) - len(text.lstrip())
    for match in _FOLLOWUP_RE.finditer(text):
        if match.start() > first_content:
            return text[: match.start()]
    return text


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
    if not lead[:1].isalpha() or _WORDS_RE.match(lead):
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
    digits = next(_iter_numbers(part), None)
    words_end = _WORDS_CHARS if digits is None else min(_WORDS_CHARS, digits[0])
    words = _first_word_number(part[:words_end])
    if words is None or (digits is not None and words[3]):
        return None if digits is None else (digits[2], digits[0], digits[1])
    return words[2], words[0], words[1]


def _read_unmarked(text: str) -> Fraction | None:
    """The answer of a text without a marker: the last number of its last sentence that has
    one (after dropping trailing asides), preferring a number that does not restate the
    question; None when that sentence offers two answers ("either $18 or $26")."""
    text = _cut_notes(text)
    last = None
    for last in _iter_numbers(text):  # noqa: B007 - we want the last one
        pass
    tail_start = max(0 if last is None else last[1], len(text) - _WORDS_TAIL_CHARS)
    for word in _iter_word_numbers(text, tail_start, len(text)):
        last = word
    if last is None:
        return None
    sentence_start = _sentence_start(text, last[0])
    digits = list(_iter_numbers(text, sentence_start, last[1]))
    words = list(_iter_word_numbers(text, sentence_start, last[1]))
    if digits and 0 in _restatement_levels(text, sentence_start, digits):
        # Next to a digit result, a spelled number mostly restates the question ("... 8 years
        # old three years from now"), unless it is stated as a value ("which is seven dozen").
        words = [w for w in words if _COPULA_BEFORE_RE.search(text, max(0, w[0] - 30), w[0])]
    tokens = sorted([*digits, *words])
    levels = _restatement_levels(text, sentence_start, tokens)
    chosen = max(range(len(tokens)), key=lambda index: (-levels[index], index))
    if chosen > 0 and _EITHER_RE.search(text, sentence_start, tokens[chosen - 1][0]):
        previous = tokens[chosen - 1]
        if _has_alternative(text[: tokens[chosen][1]], previous[1], previous[2]):
            return None
    return tokens[chosen][2]


def _sentence_start(text: str, position: int) -> int:
    """Start of the sentence holding `position`, looking back at most _SEGMENT_CHARS."""
    start = max(0, position - _SEGMENT_CHARS)
    for boundary in _SENTENCE_BOUNDARY_RE.finditer(text, start, position):
        start = boundary.end()
    return start


def _restatement_levels(text: str, sentence_start: int, tokens: list[_Token]) -> list[int]:
    """How surely each number of the final sentence restates the question or the working
    rather than giving the result: 2 inside parentheses, after ", or" / "i.e." (the result
    again in other units) or a justifying ", since..." / ", having...", in a clock time, a
    compound ("the 400-meter hurdles") or a word ("mp3"); 1 after "in/over/for/at the end of
    those..." ("$36 in 4 weeks"), which can also be the answer ("finishes in 36 seconds"), or
    in an unevaluated sum; 0 otherwise, and always right after "=" or "a total of"; -1 when
    named as the answer ("80 is the answer")."""
    levels: list[int] = []
    first_end = tokens[0][1]
    for index, (start, end, _) in enumerate(tokens):
        window = max(sentence_start, start - _CUE_CHARS)
        if _NAMED_ANSWER_AFTER_RE.match(text, end):
            level = -1
        elif _RESULT_BEFORE_RE.search(text, max(sentence_start, start - 16), start):
            level = 0
        elif (
            _STRONG_BEFORE_RE.search(text, max(sentence_start, start - 2), start)
            or _STRONG_AFTER_RE.match(text, end)
            or text.count("(", sentence_start, start) > text.count(")", sentence_start, start)
            or (first_end < start and _RESTATE_RE.search(text, first_end, start))
            or (first_end < start and _JUSTIFY_RE.search(text, first_end, start))
        ):
            level = 2
        elif (
            _is_cued(text, window, start, end)
            or _CLAUSE_RE.search(text, window, start)
            or _is_purpose(text, sentence_start, window, start)
            or _WEAK_AFTER_RE.match(text, end)
            or (_EACH_AFTER_RE.match(text, end) and not _is_money(text, start, end))
            or _WEAK_BEFORE_RE.search(text, max(sentence_start, start - 3), start)
            or _OPERAND_BEFORE_RE.search(text, max(sentence_start, start - 6), start)
            or _OPERAND_AFTER_RE.match(text, end)
        ):
            level = 1
        elif index > 0 and _LIST_RE.search(text, tokens[index - 1][1], start):
            level = min(levels[-1], 1)
        else:
            level = 0
        levels.append(level)
    return levels


def _is_purpose(text: str, sentence_start: int, window: int, start: int) -> bool:
    """True for "to read 120 pages" right after a computed result ("= 5 hours to read 120
    pages"); elsewhere "needs to read 6 pages" gives the result."""
    if not _PURPOSE_RE.search(text, window, start):
        return False
    equals = text.rfind("=", sentence_start, start)
    return equals != -1 and not any(mark in text[equals:start] for mark in ",;")


def _is_money(text: str, start: int, end: int) -> bool:
    """True for "$96", "\\$96" or "96 dollars"."""
    return (start > 0 and text[start - 1] in "$€£") or _MONEY_AFTER_RE.match(text, end) is not None


def _is_cued(text: str, window: int, start: int, end: int) -> bool:
    """True when a preposition before the number makes it a restated quantity ("in 4 weeks");
    "a total of $64", "sold for $18", "walk at 6 mph" and "left with 9" are results."""
    cue = _CUE_RE.search(text, window, start)
    if cue is None:
        return False
    word = cue.group("cue").lower()
    money = cue.group("money") is not None or _MONEY_AFTER_RE.match(text, end) is not None
    if word == "of":
        return bool(cue.group("gap")) or _OF_BASE_RE.search(text, window, cue.start()) is not None
    if word == "for":
        return not money
    if word == "at":
        return money
    if word == "with":
        return _WITH_RESULT_RE.search(text, window, cue.start()) is None
    return True


def _cut_notes(text: str) -> str:
    """Drop trailing "Note:" asides and sign-offs (and only trailing ones) when an earlier
    number remains."""
    first_number = _NUM_RE.search(text)
    if first_number is None:
        return text
    notes = list(_NOTE_RE.finditer(text))
    cut = len(text)
    for note in reversed(notes):
        start = note.start()
        if start <= first_number.start():
            break
        note_end = _note_end(text, note.end(), cut)
        if note_end < cut and _NUM_RE.search(text, note_end, cut):
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


# ------------------------------------------------------------------------------ numbers


def _iter_numbers(text: str, start: int = 0, stop: int | None = None) -> Iterator[_Token]:
    """Yield (start, end, value) for each number of text[start:stop] in reading order."""
    position = start
    length = len(text) if stop is None else stop
    while True:
        match = _NUM_RE.search(text, position, length)
        if match is None:
            return
        begin, end = match.span()
        position = end
        token = match.group()
        if len(token) > _MAX_TOKEN_CHARS:
            continue
        value = _token_value(token, is_fraction=match.group("frac") is not None)
        if match.group("int") is not None and match.group("dec") is None:
            tail = _MIXED_TAIL_RE.match(text, end, length)
            if tail is not None:
                numerator, denominator = int(tail.group(1)), int(tail.group(2))
                if 0 < numerator < denominator:
                    value += Fraction(numerator, denominator)
                    end = position = tail.end()
        below_zero = _BELOW_ZERO_RE.match(text, end, length)
        if below_zero is not None:
            value, end = -value, below_zero.end()
        else:
            value *= _sign(text, begin)
        scale = _SCALE_TAIL_RE.match(text, end, length)
        if scale is not None:
            value = _Scaled(value, _SCALES[scale.group(1).lower()])
            end = scale.end()
        position = max(position, end)
        yield begin, end, value


def _iter_word_numbers(text: str, start: int, stop: int) -> Iterator[_Token]:
    """Spelled-out numbers of text[start:stop] that can be an answer: not a lone "one" ("each
    one costs") and not a group ("the two of them")."""
    for match in _WORDS_RE.finditer(text, start, stop):
        reading = _word_match_value(match)
        if reading is None or reading[1]:
            continue
        begin, end = match.span()
        if _WORD_GROUP_BEFORE_RE.search(text, max(0, begin - 8), begin) or (
            _WORD_GROUP_AFTER_RE.match(text, end, stop)
        ):
            continue
        yield begin, end, reading[0]


def _token_value(token: str, *, is_fraction: bool) -> Fraction:
    """Exact value of a token matched by _NUM_RE ("1,000.50", "3/4", ".5")."""
    if is_fraction:
        numerator, denominator = token.split("/")
        if int(denominator) == 0:
            return Fraction(int(numerator))
        return Fraction(int(numerator), int(denominator))
    return Fraction(token.replace(",", ""))


def _sign(text: str, start: int) -> int:
    """-1 when a minus sign (possibly before a currency symbol) precedes the number as a sign,
    not as the binary operator of "16 - 3" or the hyphen of "COVID-19"."""
    index = start - 1
    while index >= 0 and start - index <= 3 and text[index] in "$\\€£¥":
        index -= 1
    if index < 0 or text[index] != "-":
        return 1
    before = index - 1
    if before >= 0 and (text[before].isalnum() or text[before] in ")]}%"):
        return 1
    while before >= 0 and index - before <= 8 and text[before] in " \t":
        before -= 1
    if before >= 0 and (text[before].isdigit() or text[before] in ")]}%"):
        return 1
    return -1


def _first_word_number(text: str) -> tuple[int, int, Fraction, bool] | None:
    """(start, end, value, is_lone_one) of the first spelled-out number ("twenty-five")."""
    for match in _WORDS_RE.finditer(text):
        reading = _word_match_value(match)
        if reading is not None:
            return match.start(), match.end(), reading[0], reading[1]
    return None


def _word_match_value(match: re.Match[str]) -> tuple[Fraction, bool] | None:
    """(value, is_lone_one) of a _WORDS_RE match, or None if its words make no number."""
    words = [word for word in _WORD_SPLIT_RE.split(match.group("words").lower()) if word]
    words = [word for word in words if word != "and"]
    value = _words_value(words)
    if value is None:
        return None
    if match.group("neg") is not None:
        value = -value
    return Fraction(value), words == ["one"]


def _words_value(words: list[str]) -> int | None:
    """Value of the longest sensible prefix of number words, or None if there is none."""
    total = 0
    current = 0
    last_kind = ""
    last_scale = math.inf
    consumed = 0
    for word in words:
        if word in _UNITS:
            unit = _UNITS[word]
            if last_kind in ("unit", "teen") or (last_kind == "tens" and not 0 < unit < 10):
                break
            if last_kind in ("hundred", "scale") and unit == 0:
                break
            current += unit
            last_kind = "teen" if unit >= 10 else "unit"
        elif word in _TENS:
            if last_kind in ("unit", "teen", "tens"):
                break
            current += _TENS[word]
            last_kind = "tens"
        elif word == "hundred":
            if last_kind not in ("unit", "teen") or not 0 < current < 100:
                break
            current *= 100
            last_kind = "hundred"
        else:
            scale = _SCALES[word]
            if current == 0 or scale >= last_scale:
                break
            total += current * scale
            current = 0
            last_scale = scale
            last_kind = "scale"
        consumed += 1
    if consumed == 0:
        return None
    return total + current


# --------------------------------------------------------------------------- comparison


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
    text = str(expected).translate(_DASHES).strip()
    plain = text.replace(",", "").replace("$", "").replace("%", "").strip()
    try:
        return Fraction(plain)
    except (ValueError, ZeroDivisionError):
        pass
    value = _extract(text)[0] if _NUM_RE.search(text) else None
    if value is None:
        raise ValueError(f"gold answer is not a number: {expected!r}")
    return Fraction(value)


def _same_number(value: Fraction, gold: Fraction) -> bool:
    """Exact equality, with a relative-tolerance backstop only for non-integers (so 1000001
    never "equals" 1000000). "4 million" also equals a gold of 4 (counted in millions)."""
    if value == gold or (isinstance(value, _Scaled) and value.unscaled == gold):
        return True
    if value.denominator == 1 and gold.denominator == 1:
        return False
    try:
        return math.isclose(float(value), float(gold), rel_tol=_REL_TOL, abs_tol=0.0)
    except OverflowError:
        return False


def _format(value: Fraction) -> str:
    """Integers without ".0"; other values as a short decimal ("0.75", "2.5")."""
    if value.denominator == 1:
        return str(value.numerator)
    try:
        return repr(float(value))
    except OverflowError:
        return f"{value.numerator}/{value.denominator}"
