"""A report as a list of blocks, rendered once as Markdown and once as self-contained HTML.

Kept apart from what goes into a report (failtune.reporting.report) so both formats always carry the
same content: a section is written once, as blocks, and each renderer only lays them out.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any


@dataclass
class Document:
    """A report as blocks, rendered once as Markdown and once as HTML (the same content)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, name: str, alt: str, png: bytes) -> None:
        self.blocks.append(("img", (name, alt, png)))


def fmt(value: Any) -> str:
    """A value in a table cell: floats to four significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md_text(text: str) -> str:
    """GitHub reads `$…$` as math: escape dollar signs (prices) so they print as written."""
    return text.replace("$", "\\$")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for kind, body in doc.blocks:
        if kind == "h2":
            lines += [f"## {body}", ""]
        elif kind == "p":
            lines += [_md_text(body), ""]
        elif kind == "table":
            header, rows = body
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            name, alt, _ = body
            lines += [f"![{alt}]({name})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}th{background:#f3f3f3}
img{max-width:100%;display:block;margin:.5em 0 1.5em}h2{border-bottom:1px solid #ddd}"""


def render_html(doc: Document) -> str:
    """One file: CSS inline and every plot a base64 PNG, so it can be mailed or archived."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(doc.title)}</h1>",
    ]
    for kind, body in doc.blocks:
        if kind == "h2":
            parts.append(f"<h2>{escape(body)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(body)}</p>")
        elif kind == "table":
            header, rows = body
            parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
            parts += [
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                for row in rows
            ]
            parts.append("</table>")
        elif kind == "img":
            _, alt, png = body
            data = base64.b64encode(png).decode()
            parts.append(f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline_html(text: str) -> str:
    """Escape, then keep the two Markdown marks the report uses: **bold** and `code`."""
    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
