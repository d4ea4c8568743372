"""Numbers as a GSM8K solution writes them, read exactly (the numeric grader's number layer).

Digits with thousands separators (``1,000``, LaTeX ``1{,}000`` / ``1\\,000``), decimals,
fractions (``3/4``, ``\\frac{3}{4}``), mixed numbers (``2 1/2``), scale words ("1.45 million"),
temperatures below zero, a sign that is not a binary minus, and spelled-out numbers
("twenty-five"). Values are :class:`fractions.Fraction`, compared exactly, with a 1e-6 relative
tolerance as a backstop when a side is not an integer. Every expression is linear on its input.
"""

import math
import re
from collections.abc import Iterator
from fractions import Fraction

# A numeric token longer than this is not an answer (and would overflow int/str conversions).
_MAX_TOKEN_CHARS = 60
_REL_TOL = 1e-6
DASHES = str.maketrans(
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
NUM_RE = re.compile(
    r"(?P<frac>[0-9]+/[0-9]+)"
    r"|[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?"
    r"|(?P<int>[0-9]+)(?P<dec>\.[0-9]+)?"
    r"|(?<![0-9.])\.[0-9]+"
)

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
WORDS_RE = re.compile(
    rf"\b(?:(?P<neg>minus|negative)\s+)?(?P<words>{_NUMBER_WORD}"
    rf"(?:(?:\s+and\s+|[ \t-]+){_NUMBER_WORD})*)",
    re.IGNORECASE,
)
_WORD_SPLIT_RE = re.compile(r"[^a-z]+")

# A spelled number that names a group rather than a count ("the two of them", "all three").
_WORD_GROUP_BEFORE_RE = re.compile(r"\b(?:the|these|those|all|both|its|their)\s+\Z", re.IGNORECASE)
_WORD_GROUP_AFTER_RE = re.compile(r"\s+of\b", re.IGNORECASE)

# (start, end, value) of a number in a text.
Token = tuple[int, int, Fraction]


class _Scaled(Fraction):
    """A number written with a scale word ("$1.45 million"): its full value, which also
    matches a gold counted in that unit (GSM8K writes "$4 million" for the gold 4)."""

    __slots__ = ("unscaled",)

    def __new__(cls, unscaled: Fraction, scale: int) -> "_Scaled":
        self = super().__new__(cls, unscaled * scale)
        self.unscaled = unscaled
        return self


# "18 \text{ or } 20": LaTeX words between numbers, read as the words.
_TEXT_WORD_RE = re.compile(r"\\(?:text|mbox|textrm)\s*\{\s*(or|and)\s*\}")


def normalise(text: str) -> str:
    """Rewrite notations that would otherwise split or hide a number."""
    text = text.translate(DASHES)
    if "\\text" in text or "\\mbox" in text:
        text = _TEXT_WORD_RE.sub(r" \1 ", text)
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


def iter_numbers(text: str, start: int = 0, stop: int | None = None) -> Iterator[Token]:
    """Yield (start, end, value) for each number of text[start:stop] in reading order."""
    position = start
    length = len(text) if stop is None else stop
    while True:
        match = NUM_RE.search(text, position, length)
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


def iter_word_numbers(text: str, start: int, stop: int) -> Iterator[Token]:
    """Spelled-out numbers of text[start:stop] that can be an answer: not a lone "one" ("each
    one costs") and not a group ("the two of them")."""
    for match in WORDS_RE.finditer(text, start, stop):
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
    """Exact value of a token matched by NUM_RE ("1,000.50", "3/4", ".5")."""
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


def first_word_number(text: str) -> tuple[int, int, Fraction, bool] | None:
    """(start, end, value, is_lone_one) of the first spelled-out number ("twenty-five")."""
    for match in WORDS_RE.finditer(text):
        reading = _word_match_value(match)
        if reading is not None:
            return match.start(), match.end(), reading[0], reading[1]
    return None


def _word_match_value(match: re.Match[str]) -> tuple[Fraction, bool] | None:
    """(value, is_lone_one) of a WORDS_RE match, or None if its words make no number."""
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


def same_number(value: Fraction, gold: Fraction) -> bool:
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


def format_number(value: Fraction) -> str:
    """Integers without ".0"; other values as a short decimal ("0.75", "2.5")."""
    if value.denominator == 1:
        return str(value.numerator)
    try:
        return repr(float(value))
    except OverflowError:
        return f"{value.numerator}/{value.denominator}"
