"""Rendering: number formats for tables, and one block document written to both Markdown and HTML so the two
never disagree."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def decimals(x: float, digits: int = 3) -> int:
    """Fixed-point decimals for ``x``: ``digits``, or enough for 3 significant digits of a tiny value (<= 10)."""
    if x == 0 or not math.isfinite(x) or abs(x) >= 10 ** (-digits + 1):
        return digits
    return min(10, max(digits, 2 - math.floor(math.log10(abs(x)))))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table: fixed-point (tiny values get 3 significant digits), ∞ and – for inf / missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{decimals(x, digits)}f}"


def fmt_pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """mean ± spread in one fixed-point format for both (the mean's decimals), never mixing notations; the
    mean alone when there is no spread to show (a single value)."""
    if mean is None or (isinstance(mean, float) and (math.isnan(mean) or math.isinf(mean))):
        return fmt(mean, digits)
    d = decimals(mean, digits)
    if std is None or math.isnan(std):
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f} ± {std:.{d}f}"


def fmt_p(p: float | None) -> str:
    """A p-value; "n/a" when there is no test (fewer than 3 splits, or no spread: never "significant")."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.3g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells are already strings; pipes escaped)."""
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then the inline Markdown this report uses: **bold**, _italic_, `code`."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w\\])_(.+?)_(?!\w)", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


# --------------------------------------------------------------------------------------------- document


@dataclass
class Doc:
    """Report blocks rendered to both Markdown and HTML, so the two never disagree."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def banner(self, text: str) -> None:
        self.blocks.append(("banner", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], note: str = "") -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows], note)))

    def img(self, file: str, caption: str) -> None:
        self.blocks.append(("img", (file, caption)))

    def details(self, summary: str) -> None:
        """Start a collapsed section (closed by :meth:`end_details`): details a reader opens on purpose."""
        self.blocks.append(("details", summary))

    def end_details(self) -> None:
        self.blocks.append(("/details", None))

    def to_md(self) -> str:
        out = []
        for kind, val in self.blocks:
            if kind == "h":
                out.append("#" * val[0] + " " + val[1])
            elif kind == "p":
                out.append(val)
            elif kind == "banner":
                out.append("> " + val.replace("\n", "\n> "))
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in val))
            elif kind == "table":
                header, rows, note = val
                out.append(md_table(header, rows) + (f"\n\n_{note}_" if note else ""))
            elif kind == "img":
                out.append(f"![{val[1]}]({val[0]})\n\n_{val[1]}_")
            elif kind == "details":
                out.append(f"<details><summary>{html.escape(val)}</summary>")
            elif kind == "/details":
                out.append("</details>")
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        body = []
        for kind, val in self.blocks:
            if kind == "h":
                body.append(f"<h{val[0]}>{_inline_html(val[1])}</h{val[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(val)}</p>")
            elif kind == "banner":
                body.append(f'<div class="banner">{_inline_html(val)}</div>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in val) + "</ul>")
            elif kind == "table":
                header, rows, note = val
                t = ["<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in header) + "</tr></thead><tbody>"]
                t += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows]
                t.append("</tbody></table>")
                if note:
                    t.append(f'<p class="note">{_inline_html(note)}</p>')
                body.append("".join(t))
            elif kind == "img":
                body.append(f'<figure><img src="{html.escape(val[0])}" alt="{html.escape(val[1])}">'
                            f"<figcaption>{_inline_html(val[1])}</figcaption></figure>")
            elif kind == "details":
                body.append(f"<details><summary>{_inline_html(val)}</summary>")
            elif kind == "/details":
                body.append("</details>")
        css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;"
               "padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
               "th{background:#f3f3f3}.banner{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;"
               "font-weight:600;margin:1em 0}.note{font-size:.85em;color:#8a6d00}img{max-width:100%}"
               "figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .2em}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title><style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
