"""LaTeX answers as a MATH grader writes them down: boxes found, notation normalised, values split.

A final answer such as ``\\left( \\tfrac{3}{2},\\,-5 \\right)``, ``z = a + b\\,i``, ``40,\\!000``,
``30^\\circ``, ``12\\text{ square units}`` or ``2, 3, \\text{ and } 4`` carries typesetting that
says nothing about its value. `clean` removes it (sizing and spacing commands, unicode spaces,
``\\dfrac``, degree signs, percent signs, units, thousands separators, ``$`` delimiters);
`split_values` cuts an answer of several values ("2, 3", "x = 2 or x = 3", "\\{1, 2\\}") into
them, leaving tuples and intervals ("(1, 2)", "[1, 3)") whole; `strip_name` drops the ``x =`` of
an answer written as an assignment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How far a box's body may run; a real final answer is far shorter, garbage cannot stall us.
_MAX_BOX_CHARS = 1000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_RE = re.compile(r"\\.|[{}]")  # a brace, or an escaped character (\{ is text)
_UNICODE = str.maketrans(
    {
        **dict.fromkeys("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f", " "),
        "\u3000": " ",
        "\u200b": "",
        "\u2212": "-",
        "\u2013": "-",
        "×": "\\times ",
        "·": "\\cdot ",
        "√": "\\sqrt",
        "π": "\\pi ",
        "°": "^\\circ",
        "≤": "\\le ",
        "≥": "\\ge ",
        "∞": "\\infty ",
    }
)
# Typesetting that does not change a value: delimiters of math mode, sizing, spacing.
_MATH_MODE_RE = re.compile(r"\\\$|\$|\\[()\[\]]|\\(?:displaystyle|textstyle|scriptstyle)\b")
_SIZING_RE = re.compile(r"\\(?:left|right|[bB]igg?[lrm]?)(?![A-Za-z])\s*\.?")
_SPACING_RE = re.compile(
    r"(?<!\\)\\[,;:! ]|~|\\(?:q?quad|enspace|thinspace|medspace|thickspace|negthinspace)"
    r"(?![A-Za-z])|\\[hv]space\*?\s*\{[^{}]*\}|\\phantom\s*\{[^{}]*\}"
)
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_BINOM_RE = re.compile(r"\\[dt]binom(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\degree(?![A-Za-z])|\\circ\s*$")
_PERCENT_RE = re.compile(r"\\?%|\\percent(?![A-Za-z])")
# "\text{ and }", "\text{, and }", "\text{or}": a connective between values.
_TEXT_CONNECTIVE_RE = re.compile(r"\\(?:text|mbox|textrm)\s*\{\s*(,?)\s*(and|or)\s*\}")
# Trailing units: "12\text{ square units}", "0.4\mbox{ miles}", "5 inches", "32\text{ cm}^2".
_TEXT_UNIT_RE = re.compile(
    r"\s*\\(?:text|mbox|textrm|mathrm|textit)\s*\{\s*[A-Za-z][A-Za-z .]*\}"
    r"(?:\s*\^\s*\{?[23]\}?)?\s*$"
)
_WORD_UNIT_RE = re.compile(r"(?<=[0-9}!)\]])\s+(?:[A-Za-z]{2,}\.?\s*){1,3}(?:\^\s*\{?[23]\}?)?\s*$")
_TEXT_WRAP_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|textnormal)\s*\{([^{}]*)\}"
)
# "40,\!000", "14{,}916": a thousands separator written with LaTeX spacing or braces.
_LATEX_THOUSANDS_RE = re.compile(r"(?<=[0-9]),\s*\\!\s*(?=[0-9]{3})|(?<=[0-9])\{,\}(?=[0-9]{3})")
_COLUMN_RE = re.compile(r"\\begin\{[pb]matrix\}([^&]*?)\\end\{[pb]matrix\}")
_LEADING_DOT_RE = re.compile(r"(?<![0-9.])\.(?=[0-9])")  # ".0000672" -> "0.0000672"
_THOUSANDS_RE = re.compile(r"(?<![0-9.])([0-9]{1,3}(?:,[0-9]{3})+)(?![0-9])(?!,[0-9])")
# "either 18 or 20": "either" only announces the alternatives.
_EITHER_RE = re.compile(r"^\s*either\b\s*", re.IGNORECASE)
_WORD_SEPARATOR_RE = re.compile(r"\s+(?:(?:,\s*)?(?:and|or)\s+)|\s*;\s*", re.IGNORECASE)
_OR_RE = re.compile(r"(?:^|\s)or\s", re.IGNORECASE)
# The name an answer is assigned to: "x =", "k=", "a_1 =", "f(3) =", "(a, b) =", "\theta =",
# "AB =", "m\angle ABC =", "x \in".
_NAME_RE = re.compile(
    r"^\s*(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?'?|\\[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?"
    r"|[A-Z]{2,3}|(?:m\s*)?\\angle\s*[A-Z]{1,3}|[A-Za-z]\s*\([^()=]{1,20}\)"
    r"|\((?:\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*,)+\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*\))"
    r"\s*(?:=|\\in(?![A-Za-z]))\s*"
)
_OPEN, _CLOSE = "([{", ")]}"
# Products latex2sympy reads as sums: "2\binom{4}{2}" (as if a mixed number), "(2)(3)".
_BEFORE_BINOM_RE = re.compile(r"(?<=[0-9})])\s*(?=\\binom(?![A-Za-z]))")
_BINOM_RE_START = re.compile(r"\\binom\s*(?=\{)")
_PAREN_PRODUCT_RE = re.compile(r"\)\s*\(")


@dataclass(frozen=True)
class Box:
    """One \\boxed{} (or \\fbox{}) of a text: where it starts and ends, and its body."""

    start: int
    end: int
    body: str


def boxes(text: str) -> list[Box]:
    """Every closed box of `text`, in order; an unclosed one (cut off mid-way) is skipped.
    ``\\boxed 2`` (no braces, as two MATH solutions write it) boxes its next token."""
    found = []
    for match in _BOX_RE.finditer(text):
        start, position = match.start(), match.end()
        if position < len(text) and text[position] != "{":
            token = re.match(r"[^\s$.,]+", text[position:])
            if token:
                found.append(Box(start, position + token.end(), token.group()))
            continue
        body_end = braced_end(text, position)
        if body_end is not None:
            found.append(Box(start, body_end + 1, text[position + 1 : body_end]))
    return found


def braced_end(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at `open_at` (escaped braces count as text)."""
    depth = 0
    for brace in _BRACE_RE.finditer(text, open_at, min(len(text), open_at + _MAX_BOX_CHARS)):
        token = brace.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return brace.start()
    return None


def clean(answer: str) -> str:
    """The answer with its typesetting removed, spaces collapsed (see the module docstring)."""
    text = _LATEX_THOUSANDS_RE.sub(",", _LEADING_DOT_RE.sub("0.", answer.translate(_UNICODE)))
    text = _column_vectors(text)
    text = _MATH_MODE_RE.sub(" ", text)
    text = _SIZING_RE.sub("", text)
    text = _SPACING_RE.sub(lambda m: "" if m.group() == "\\!" else " ", text)
    text = _FRAC_RE.sub(r"\\frac", text)
    text = _explicit_products(_BINOM_RE.sub(r"\\binom", text))
    text = _TEXT_CONNECTIVE_RE.sub(lambda m: f"{m.group(1)} {m.group(2)} ", text)
    text = _DEGREE_RE.sub("", text)
    text = _PERCENT_RE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip().strip(".,;:").strip()
    text = _drop_units(text)
    text = _TEXT_WRAP_RE.sub(lambda m: m.group(1), text)
    text = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _EITHER_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip().strip(".,;:").strip()


def _column_vectors(text: str) -> str:
    """A column vector "\\begin{pmatrix} a \\\\ b \\end{pmatrix}" is the tuple "(a, b)", so it
    equals the same vector written as a tuple; a matrix (with "&") stays as written."""
    if "pmatrix" not in text:
        return text
    return _COLUMN_RE.sub(lambda m: "(" + ", ".join(re.split(r"\\\\", m.group(1))) + ")", text)


def _explicit_products(text: str) -> str:
    """Write the product signs of "2\\binom{4}{2}", "\\binom{8}{3}\\binom{5}{2}" and "(2)(3)"."""
    if "\\binom" in text:
        text = _BEFORE_BINOM_RE.sub(r" \\cdot ", text)
        for match in reversed(list(_BINOM_RE_START.finditer(text))):
            first = braced_end(text, match.end())
            second = None if first is None else braced_end(text, first + 1)
            if second is not None and re.match(r"\s*(?:[0-9(]|\\frac|\\sqrt)", text[second + 1 :]):
                text = f"{text[: second + 1]} \\cdot {text[second + 1 :]}"
    return _PAREN_PRODUCT_RE.sub(r")\\cdot(", text)


def _drop_units(text: str) -> str:
    """Trailing unit words after a value ("12 square units" -> "12"); a text answer stays."""
    for pattern in (_TEXT_UNIT_RE, _WORD_UNIT_RE):
        match = pattern.search(text)
        if match and re.search(r"[0-9]", text[: match.start()]):
            text = text[: match.start()].rstrip()
    return text


def split_values(answer: str) -> tuple[list[str], bool]:
    """The values of a cleaned answer, and whether they were offered as alternatives ("or").

    Commas and semicolons split only outside brackets, so a tuple, an interval or a vector is
    one value; a set written ``\\{1, 2\\}`` is its elements; "and", "or" split like commas.
    """
    text = answer.strip()
    unwrapped = _unwrap_set(text)
    if unwrapped is not None:
        text = unwrapped
    values: list[str] = []
    alternatives = False
    for part in _top_level_split(text):
        pieces = _WORD_SEPARATOR_RE.split(f" {part} ")
        alternatives = alternatives or bool(_OR_RE.search(f" {part} "))
        values.extend(v for p in pieces if p.strip() for v in _plus_minus(p.strip()))
    return [_EITHER_RE.sub("", v) for v in values if v], alternatives


def _plus_minus(value: str) -> list[str]:
    """ "1 \\pm \\sqrt{19}" is the two values "1 + \\sqrt{19}" and "1 - \\sqrt{19}"."""
    if value.count("\\pm") != 1 or "\\pmod" in value:
        return [value]
    before, after = value.split("\\pm")
    return [f"{before}+{after}".strip(), f"{before}-{after}".strip()]


def _unwrap_set(text: str) -> str | None:
    """The inside of ``\\{ ... \\}`` when those braces enclose the whole answer."""
    if not (text.startswith("\\{") and text.endswith("\\}")):
        return None
    inner = text[2:-2]
    depth = 0
    for index in range(len(inner)):
        if inner.startswith("\\{", index):
            depth += 1
        elif inner.startswith("\\}", index):
            depth -= 1
            if depth < 0:
                return None  # "\{1\} \cup \{2\}": two sets, not one
    return inner


def _top_level_split(text: str) -> list[str]:
    """Split at commas and semicolons outside any bracket; ``\\{`` counts as one."""
    parts, depth, start = [], 0, 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "{}":
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char in ",;" and depth == 0:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def strip_name(value: str) -> str:
    """``x = 5`` -> ``5``; ``a = b = 5`` -> ``5``; an equation that is the answer itself
    (``y^2 - 4x + 9 = 0``) stays whole. Numbers equal to numbers (``0.56 = 56``) keep the last."""
    text = value
    for _ in range(4):  # a chain "AB = BC = 5" names at most a few things
        match = _NAME_RE.match(text)
        if match is None or not text[match.end() :].strip():
            break
        text = text[match.end() :]
    sides = _top_level_equals(text)
    if len(sides) > 1 and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", text)):
        text = sides[-1]
    return text.strip()


def _top_level_equals(text: str) -> list[str]:
    """The sides of "a = b = c" outside brackets (relations like "<=" are not split)."""
    sides, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char == "=" and depth == 0 and text[index - 1 : index] not in ("<", ">", "!"):
            sides.append(text[start:index])
            start = index + 1
    sides.append(text[start:])
    return sides


def compact(value: str) -> str:
    """A value's spelling with every space removed, for an exact comparison first."""
    return value.replace(" ", "")


def as_choice_letter(value: str) -> str | None:
    """ "(C)", "C", "\\text{(C)}" (already unwrapped) -> "C"; None for anything else."""
    match = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?", value.strip())
    return match.group(1).upper() if match else None
