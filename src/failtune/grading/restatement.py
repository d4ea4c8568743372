"""Which number of a final sentence gives the result, and which only restate the question.

"She makes $18 every day by selling 9 eggs" gives 18; "in 4 weeks", "(40 - 4)", "at the end of
those 4 hours", "160 minutes, or 2 hours and 40 minutes" and "since she sells 9 eggs" restate.
The numeric grader reads a reply without a final-answer marker from its last sentence, taking
the number least likely to be a restatement (the last one among equals).
"""

import re

from failtune.grading.numbers import Token

# How far back from a number the words that make it a restatement ("in those 4 hours") sit.
_CUE_CHARS = 80

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


def restatement_levels(text: str, sentence_start: int, tokens: list[Token]) -> list[int]:
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
