"""A single self-contained HTML file for any :class:`~harness.report.RunReport`.

Layout: a verdict banner, the counts and the run's ``summary`` as a key/value table, the
``figures`` embedded as base64 ``data:`` URIs (no file beside the HTML is needed), the per-layer
table with failing rows highlighted and their full report in a ``<pre>``, then any table-shaped
summary entries (e.g. check's per-tensor rows) in collapsible sections.

A small inline script (no network, no libraries) filters the table to failing rows and, once
the page has loaded, records on ``<body data-images-loaded="N/M">`` how many images decoded:
the browser test reads it back from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.compare import ERROR, FAIL, PASS, VACUOUS
from harness.report import LayerReport, RunReport
from harness.reports import (
    SCHEMA_VERSION,
    _is_table,
    _now,
    component_of,
    fmt_num,
    note_lines,
    row_unmeasured,
    run_label,
    tool_version,
    unmeasured_label,
    verdict_line,
    worst_cells,
)

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}

CSS = """
:root { --pass:#1a7f37; --fail:#cf222e; --vac:#9a6700; --err:#8250df; --bg:#f6f8fa;
        --line:#d0d7de; --text:#1f2328; --muted:#59636e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--text);
       margin: 0; padding: 0 2rem 3rem; background: #fff; }
header { margin: 0 -2rem 1.5rem; padding: 1.2rem 2rem; color: #fff; background: var(--pass); }
header.fail { background: var(--fail); }
header h1 { margin: 0 0 .3rem; font-size: 1.6rem; }
header p { margin: .1rem 0; opacity: .95; }
header code { background: rgba(255,255,255,.18); padding: .1rem .35rem; border-radius: 4px; }
h2 { font-size: 1.2rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; margin-top: 2rem; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1.2rem; min-width: 8rem;
        background: var(--bg); }
.card b { display: block; font-size: 1.6rem; }
.card.PASS b { color: var(--pass); } .card.FAIL b { color: var(--fail); }
.card.VACUOUS b { color: var(--vac); } .card.ERROR b { color: var(--err); }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: .25rem .55rem; vertical-align: top; text-align: left; }
th { background: var(--bg); position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
table.kv th { position: static; width: 12rem; }
tr.FAIL > td, tr.ERROR > td { background: #ffebe9; }
tr.VACUOUS > td { background: #fff8c5; }
tr.detail > td { background: #fff; padding: 0; }
.pill { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-weight: 600;
        font-size: 12px; color: #fff; background: var(--muted); }
.pill.PASS { background: var(--pass); } .pill.FAIL { background: var(--fail); }
.pill.VACUOUS { background: var(--vac); } .pill.ERROR { background: var(--err); }
pre { margin: 0; padding: .6rem .8rem; background: #fff5f5; border-left: 4px solid var(--fail);
      font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; }
td pre { border-left: 0; background: transparent; padding: 0; }
td pre.report { border-left: 4px solid var(--fail); background: #fff5f5; padding: .6rem .8rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: .5rem; background: #fff; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 12px; text-align: center; margin-top: .3rem; }
.missing { color: var(--fail); }
.controls { margin: .5rem 0; color: var(--muted); }
.jump a { color: var(--fail); }
body.only-failing tr.PASS { display: none; }
details > summary { cursor: pointer; font-weight: 600; margin: .5rem 0; }
footer { margin-top: 3rem; color: var(--muted); font-size: 12px; }
"""

SCRIPT = """
(function () {
  function recordImages() {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = 0;
    imgs.forEach(function (img) {
      var good = img.complete && img.naturalWidth > 0;
      img.setAttribute("data-loaded", good ? "yes" : "no");
      if (good) { ok += 1; }
    });
    document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
    document.body.setAttribute("data-images-ok", ok === imgs.length ? "yes" : "no");
  }
  window.addEventListener("load", recordImages);
  var box = document.getElementById("only-failing");
  if (box) {
    box.addEventListener("change", function () {
      document.body.classList.toggle("only-failing", box.checked);
    });
  }
})();
"""


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def pill(status: str) -> str:
    return f'<span class="pill {esc(status)}">{esc(status)}</span>'


def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _cell(v: Any) -> str:
    if isinstance(v, str) and "\n" in v:
        return f"<td><pre>{esc(v)}</pre></td>"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{esc(fmt_num(v, 6))}</td>'
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) and any(
            len(x) > 40 for x in v):  # sentences (notes), one a line
        return "<td><ul>" + "".join(f"<li>{esc(x)}</li>" for x in v) + "</ul></td>"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list, tuple)) for x in v):
        return f"<td>{esc(', '.join(fmt_num(x, 6) for x in v))}</td>"
    if isinstance(v, dict):
        return f"<td>{_kv_table(v)}</td>"
    if v is None:
        return "<td></td>"
    return f"<td>{esc(fmt_num(v, 6))}</td>"


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th>{_cell(v)}</tr>" for k, v in d.items())
    return f'<table class="kv">{rows}</table>'


def _records_table(records: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in records:
        cols.extend(k for k in r if k not in cols)
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in records:
        status = str(r.get("status", ""))
        cls = f' class="{esc(status)}"' if status in (PASS, FAIL, VACUOUS, ERROR) else ""
        # a 0 that is no measured difference (shape/dtype mismatch, error) reads as such
        label = unmeasured_label(row_unmeasured(r))

        def cell(c: str, r: dict[str, Any] = r, label: str | None = label) -> str:
            if c == "status" and r.get(c) in (PASS, FAIL, VACUOUS, ERROR):
                return f"<td>{pill(r[c])}</td>"
            if label is not None and c in ("max_abs", "max_rel"):
                return f'<td class="num">{esc(label)}</td>'
            return _cell(r.get(c))

        cells = "".join(cell(c) for c in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figures(paths: Iterable[Any]) -> str:
    items = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            items.append(f'<p class="missing">figure not found: {esc(path)}</p>')
            continue
        if path.suffix.lower() not in IMAGE_TYPES:  # a PDF or PostScript figure: no <img> shows
            items.append(f'<figure><p>{esc(path.suffix.lstrip(".").upper() or "this")} figure, not '
                         f'shown in a page: <a href="{data_uri(path)}" download="{esc(path.name)}">'
                         f'{esc(path.name)}</a> (embedded)</p><figcaption>{esc(path.name)}'
                         f'</figcaption></figure>')
            continue
        items.append(f'<figure><img src="{data_uri(path)}" alt="{esc(path.stem)}" '
                     f'title="{esc(path.name)}"><figcaption>{esc(path.name)}</figcaption></figure>')
    return f'<div class="figures">{"".join(items)}</div>'


def _layer_rows(layers: list[LayerReport]) -> str:
    rows = []
    ncol = 9
    for i, lr in enumerate(layers):
        first = lr.first_divergence
        a, r = worst_cells(lr)
        n_bad = len(lr.failures)
        rows.append(
            f'<tr class="{esc(lr.status)}" id="layer-{i}" data-status="{esc(lr.status)}">'
            f'<td class="num">{i}</td><td>{esc(component_of(lr))}</td><td>{esc(lr.dtype)}</td>'
            f"<td>{esc(run_label(lr))}</td><td>{pill(lr.status)}</td>"
            f"<td>{esc(first.name) if first else ''}</td>"
            f'<td class="num">{esc(a)}</td><td class="num">{esc(r)}</td>'
            f'<td class="num">{len(lr.results) - n_bad}/{len(lr.results)}</td></tr>')
        if not lr.ok:
            rows.append(f'<tr class="detail {esc(lr.status)}" data-status="{esc(lr.status)}">'
                        f'<td colspan="{ncol}"><pre class="report">{esc(str(lr))}</pre></td></tr>')
    head = "".join(f"<th>{h}</th>" for h in (
        "#", "component", "dtype", "run", "status", "first divergence", "max abs diff",
        "max rel diff", "tensors passed"))
    return (f'<table class="layers"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def render_html(report: RunReport, title: str | None = None) -> str:
    word = "PASS" if report.ok else "FAIL"
    title = title or f"nn-parity {report.command}: {word}"
    c = report.counts()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="nn-parity (report schema {SCHEMA_VERSION})">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head>",
        f'<body data-status="{word}" data-images-loaded="pending">',
        f'<header class="{word.lower()}"><h1>nn-parity {esc(report.command)}: {word}</h1>',
        f"<p><code>{esc(verdict_line(report))}</code></p>",
        f"<p>generated {esc(_now())} by nn-parity {esc(tool_version() or '')}</p></header>",
        '<section id="summary"><h2>Summary</h2>',
    ]
    if report.layers:
        cards = [(len(report.layers), "", "checks")] + [
            (c.get(s, 0), s, label) for s, label in (
                (PASS, "tensors passed"), (FAIL, "tensors failed"), (VACUOUS, "vacuous"),
                (ERROR, "errors"))]
        parts.append('<div class="cards">' + "".join(
            f'<div class="card {s}"><b>{n}</b>{label}</div>' for n, s, label in cards) + "</div>")
    bad = [(i, lr) for i, lr in enumerate(report.layers) if not lr.ok]
    if bad:
        links = ", ".join(f'<a href="#layer-{i}">{esc(component_of(lr))} {esc(lr.dtype)} '
                          f"({esc(run_label(lr))})</a>" for i, lr in bad[:25])
        more = f" and {len(bad) - 25} more" if len(bad) > 25 else ""
        parts.append(f'<p class="jump">Not passing: {links}{more}.</p>')
    scalars = {k: v for k, v in report.summary.items() if not _is_table(v)}
    if isinstance(scalars.get("notes"), dict):  # {component: [note, ...]}: "component: note"
        scalars["notes"] = note_lines(scalars["notes"])
    if scalars:
        parts.append(_kv_table(scalars))
    parts.append("</section>")
    if report.figures:
        parts.append(f'<section id="figures"><h2>Plots</h2>{_figures(report.figures)}</section>')
    if report.layers:
        n_bad = sum(not lr.ok for lr in report.layers)
        parts.append(
            f'<section id="layers"><h2>Layers ({len(report.layers)}, {n_bad} not passing)</h2>'
            '<p class="controls"><label><input type="checkbox" id="only-failing"> show only the '
            "rows that do not pass</label></p>" + _layer_rows(report.layers) + "</section>")
    tables = {k: v for k, v in report.summary.items() if _is_table(v)}
    for k, v in tables.items():
        bad = any(isinstance(r, dict) and r.get("status") in (FAIL, ERROR, VACUOUS) for r in v)
        parts.append(f'<section id="summary-{esc(k)}"><details{" open" if bad else ""}><summary>'
                     f"{esc(k)} ({len(v)} rows)</summary>{_records_table(v)}</details></section>")
    parts.append(f"<footer>nn-parity report, schema version {SCHEMA_VERSION}. Exit codes: 0 all pass, "
                 "1 mismatch or vacuous check, 2 usage or data error.</footer>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_html(report: RunReport, path: str | Path) -> Path:
    from harness.reports import atomic_write_text

    return atomic_write_text(path, render_html(report))
