"""HTML building blocks of the report: the page shell with its inline CSS, sections, tables, figures, notes
and collapsed ``<details>`` blocks. Everything returned is escaped HTML; nothing here reads files.

The CSS is inline and the page has no script and no external request, so it opens anywhere offline. It is
sized for a laptop screen (content at most 1100 px wide) and prints: the navigation is hidden, figures and
tables are not split across pages, and collapsed details stay collapsed (the main flow is what prints).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:20px auto;
max-width:1100px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.55em;margin-bottom:0}h2{border-bottom:2px solid #0072B2;padding-bottom:4px;margin-top:1.6em}
h3{margin-bottom:4px}.meta,.note{color:#666;font-size:.9em}.note{font-style:italic}
table.tbl{border-collapse:collapse;font-size:.85em;margin:8px 0}
table.tbl th,table.tbl td{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.tbl th{background:#f0f4f8}table.tbl td:first-child,table.tbl th:first-child{text-align:left}
table.headline{font-size:.9em}.wide{overflow-x:auto;max-width:100%}table.headline td{white-space:nowrap}table.headline tr.overall td{font-weight:600;background:#f7f7f7}
.scroll{max-height:420px;overflow:auto;display:inline-block;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.grid figure{margin:0}
figure figcaption{font-size:.85em;color:#444;text-align:center}
img{max-width:100%;height:auto}nav{margin:8px 0}nav a{margin-right:12px}
.run{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:.92em;margin:6px 0}
.run dt{color:#555}.run dd{margin:0}
details{margin:6px 0;border:1px solid #ddd;border-radius:4px;padding:4px 10px}
details>summary{cursor:pointer;font-weight:600;padding:2px 0}
.viewer{font-size:.85em;display:block;text-align:center}figure.km{width:520px}
@media print{nav,.viewer{display:none}body{max-width:none;margin:0;padding:0;font-size:11px}h2{break-after:avoid}
figure,table{break-inside:avoid}details{border:none;padding:0}.wide{overflow:visible}
table.headline{font-size:.8em}table.headline td{white-space:normal}table.tbl th,table.tbl td{padding:2px 4px}
#studies figure{width:31%}#studies figure img{width:100%}figure.km{width:48%}figure.km img{width:100%}}
"""


@dataclass
class Section:
    """One part of the report: an anchor id, a heading and its HTML body (already escaped)."""

    key: str
    title: str
    body: str


def page(title: str, sections: list[Section], intro: str = "") -> str:
    """The whole HTML document: title, generation stamp, navigation, ``intro`` (HTML) and the sections."""
    from unipet.version import __version__

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title.split(':')[0])}</a>" for s in sections)
    body = "".join(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='meta'>generated {stamp} by unipet {html.escape(str(__version__))}</p><nav>{nav}</nav>"
            f"{intro}{body}</body></html>\n")


def figure(png: bytes, caption: str, alt: str, extra: str = "") -> str:
    """A ``<figure>`` with the PNG embedded as base64, its caption and optional extra HTML under it."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(alt, quote=True)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption>{extra}</figure>")


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsed (unless ``open_``) ``<details>`` block; ``summary`` is plain text, ``body`` HTML."""
    return f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>{body}</details>"


def df_table(df: pd.DataFrame, scroll: bool = False, max_rows: int | None = None, classes: str = "tbl") -> str:
    """A DataFrame as an HTML table (NaN shown as "–", floats with 4 significant digits), optionally cut to
    ``max_rows`` rows with a note and put in a scrolling box."""
    cut = ""
    if max_rows is not None and len(df) > max_rows:
        cut = note(f"First {max_rows} of {len(df)} rows; the full table is in the CSV file.")
        df = df.head(max_rows)
    table = df.to_html(index=False, escape=True, classes=classes, border=0, na_rep="–",
                       float_format=lambda v: f"{v:.4g}")
    return cut + (f"<div class='scroll'>{table}</div>" if scroll else table)


def kv_table(rows: list[tuple[str, Any]]) -> str:
    """Two-column key/value table."""
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in rows)
    return f"<table class='tbl'><tr><th>key</th><th>value</th></tr>{cells}</table>"


def definition_list(rows: list[tuple[str, str]]) -> str:
    """Compact ``<dl>`` of plain-text label/value pairs (the "what was run" block)."""
    return "<dl class='run'>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows) + "</dl>"


def fmt(value: Any) -> str:
    """A value as short text: floats with 4 significant digits, long lists cut at 200 characters."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict → ``[("a.b.c", value), ...]`` (lists kept as values)."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows
