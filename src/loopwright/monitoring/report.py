"""A window's monitoring report as one self-contained HTML page, and as a compact terminal table.

:func:`render_html` draws everything itself -- inline CSS and inline SVG, no script, nothing
fetched -- so the page can be written to a file, mailed, or served as is. Every name and value that
comes from data (feature names, categories, alert messages) is HTML-escaped. The page shows the
drift table sorted by severity, reference-vs-current distributions for the drifted features (from
``FeatureDrift.histogram``), performance metrics, line plots of the series over time, and alerts.
:func:`print_summary` prints the drift verdicts as a rich table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from loopwright.monitoring.drift import DriftReport, FeatureDrift

__all__ = ["print_summary", "render_html"]

MAX_BARS = 40  # categories drawn per plot; the rest are summed into one bar
MAX_SERIES = 24
REF_COLOR, CUR_COLOR, LINE_COLOR = "#9aa5b1", "#d9480f", "#1c7ed6"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e4e7eb}
.meta{color:#616e7c} table{border-collapse:collapse;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #eef0f2;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.yes{color:#c92a2a;font-weight:600} .no{color:#2b8a3e} .reason{color:#52606d;max-width:520px}
.plots{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0} figcaption{font-weight:600}
.crit{color:#c92a2a} .warn{color:#e67700} .info{color:#1c7ed6} .legend span{margin-right:12px}
svg text{font:11px system-ui,sans-serif;fill:#52606d}
"""


# -- the page ------------------------------------------------------------------------------------


def render_html(
    drift: DriftReport | None,
    performance: Mapping[str, Any] | None = None,
    alerts: Sequence[Mapping[str, Any]] = (),
    series: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    title: str = "loopwright monitoring report",
) -> str:
    """The whole report as one HTML document (a string; write it with UTF-8)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if drift is not None:
        parts.append(_drift_section(drift))
    if performance:
        parts.append(_performance_section(performance))
    if series:
        parts.append(_series_section(series))
    parts.append(_alerts_section(alerts))
    parts.append("</body></html>")
    return "\n".join(parts)


def _drift_section(report: DriftReport) -> str:
    share = f"{report.drift_share:.0%}"
    out = [
        "<h2>Drift</h2>",
        f'<p class="meta">{len(report.drifted)} of {len(report.features)} features drifted '
        f"({share}); {report.n_current:,} current rows vs a reference of "
        f"{report.n_reference:,}; per-feature alpha {_num(report.alpha)}.</p>",
        "<table><thead><tr><th>feature</th><th>kind</th><th>drifted</th><th>decided by</th>"
        "<th>value</th><th>threshold</th><th>p-value</th><th>PSI</th><th>JS</th>"
        "<th>Wasserstein (norm.)</th><th>missing</th><th>out of range</th><th>reason</th>"
        "</tr></thead><tbody>",
    ]
    for f in report.features:
        q, st = f.quality, f.stats
        missing = f"{_pct(q.get('missing_rate_ref'))} → {_pct(q.get('missing_rate_cur'))}"
        verdict = '<td class="yes">yes</td>' if f.drifted else '<td class="no">no</td>'
        out.append(
            f"<tr><td>{escape(f.name)}</td><td>{escape(f.kind)}</td>{verdict}"
            f"<td>{escape(f.method)}</td><td class=num>{_num(f.value)}</td>"
            f"<td class=num>{_num(f.threshold)}</td><td class=num>{_num(f.p_value)}</td>"
            f"<td class=num>{_num(st.get('psi'))}</td><td class=num>{_num(st.get('js'))}</td>"
            f"<td class=num>{_num(st.get('wasserstein_norm'))}</td><td>{escape(missing)}</td>"
            f"<td class=num>{_pct(q.get('out_of_range_share'))}</td>"
            f'<td class="reason">{escape(f.reason)}{_quality_note(f)}</td></tr>'
        )
    out.append("</tbody></table>")
    drifted = [f for f in report.features if f.drifted and f.histogram]
    if drifted:
        out.append("<h2>Distributions of the drifted features</h2>")
        out.append(
            f'<p class="legend"><span style="color:{REF_COLOR}">■ reference</span>'
            f'<span style="color:{CUR_COLOR}">■ current</span> (share of non-missing values)</p>'
        )
        out.append('<div class="plots">')
        out.extend(_distribution(f) for f in drifted)
        out.append("</div>")
    return "\n".join(out)


def _quality_note(f: FeatureDrift) -> str:
    q = f.quality
    notes = []
    if q.get("new_categories"):
        notes.append("new: " + ", ".join(map(str, q["new_categories"])))
    if q.get("vanished_categories"):
        notes.append("vanished: " + ", ".join(map(str, q["vanished_categories"])))
    if q.get("type_errors"):
        notes.append(f"{q['type_errors']} type errors")
    return "".join(f"<br><small>{escape(n)}</small>" for n in notes)


def _performance_section(perf: Mapping[str, Any]) -> str:
    found = perf.get("metrics")
    metrics: Mapping[str, Any] = found if isinstance(found, Mapping) else perf
    deltas = perf.get("vs_baseline") or {}
    out = ["<h2>Performance</h2>"]
    if "n" in perf:
        out.append(
            f'<p class="meta">{perf.get("n_labelled", "?")} labelled of {perf["n"]} requests '
            f"(coverage {_pct(perf.get('label_coverage'))}).</p>"
        )
    out.append("<table><thead><tr><th>metric</th><th>value</th><th>vs baseline</th></tr></thead>")
    out.append("<tbody>")
    for name, value in metrics.items():
        if isinstance(value, int | float | type(None)) and not isinstance(value, bool):
            delta = deltas.get(name) if isinstance(deltas, Mapping) else None
            out.append(
                f"<tr><td>{escape(str(name))}</td><td class=num>{_num(value)}</td>"
                f"<td class=num>{_signed(delta)}</td></tr>"
            )
    out.append("</tbody></table>")
    return "\n".join(out)


def _series_section(series: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    out = ["<h2>Over time</h2>", '<div class="plots">']
    for name in list(series)[:MAX_SERIES]:
        out.append(_line(name, series[name]))
    out.append("</div>")
    return "\n".join(out)


def _alerts_section(alerts: Sequence[Mapping[str, Any]]) -> str:
    if not alerts:
        return '<h2>Alerts</h2><p class="meta">No alerts.</p>'
    out = [
        "<h2>Alerts</h2><table><thead><tr><th>state</th><th>severity</th><th>rule</th>"
        "<th>series</th><th>value</th><th>threshold</th><th>fired</th><th>resolved</th>"
        "<th>message</th></tr></thead><tbody>"
    ]
    for a in alerts:
        sev = str(a.get("severity", ""))
        css = {"critical": "crit", "warning": "warn"}.get(sev, "info")
        out.append(
            f"<tr><td>{escape(str(a.get('state', '')))}</td>"
            f'<td class="{css}">{escape(sev)}</td><td>{escape(str(a.get("rule", "")))}</td>'
            f"<td>{escape(str(a.get('series', '')))}</td><td class=num>{_num(a.get('value'))}</td>"
            f"<td class=num>{escape(str(a.get('op', '')))} {_num(a.get('threshold'))}</td>"
            f"<td>{_when(a.get('fired_at_ms'))}</td><td>{_when(a.get('resolved_at_ms'))}</td>"
            f"<td>{escape(str(a.get('message', '')))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


# -- SVG -----------------------------------------------------------------------------------------


def _distribution(f: FeatureDrift) -> str:
    """Grouped bars: the reference's and the window's share per bin or category."""
    h = f.histogram
    ref, cur = list(h.get("reference", [])), list(h.get("current", []))
    if "categories" in h:
        labels = [str(c) for c in h["categories"]]
    else:
        labels = _bin_labels(list(h.get("edges", [])))
    if len(labels) > MAX_BARS:  # keep the largest, sum the rest
        order = sorted(range(len(labels)), key=lambda i: -(ref[i] + cur[i]))
        keep = sorted(order[: MAX_BARS - 1])
        rest = [i for i in range(len(labels)) if i not in set(keep)]
        labels = [labels[i] for i in keep] + [f"{len(rest)} more"]
        ref = [ref[i] for i in keep] + [sum(ref[i] for i in rest)]
        cur = [cur[i] for i in keep] + [sum(cur[i] for i in rest)]
    rp, cp = _shares(ref), _shares(cur)
    width, height, left, bottom, top = 520, 230, 44, 46, 10
    plot_w, plot_h = width - left - 8, height - top - bottom
    top_share = max([*rp, *cp, 1e-9])
    slot = plot_w / max(len(labels), 1)
    bar = max(slot * 0.4, 0.5)
    svg = [
        f'<figure><figcaption>{escape(f.name)} <small class="meta">({escape(f.method)} '
        f"{_num(f.value)})</small></figcaption>",
        f'<svg class="dist" data-feature="{escape(f.name)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(f.name)}: reference vs current</title>",
        _axes(left, top, plot_w, plot_h, f"{top_share:.0%}"),
    ]
    for i, label in enumerate(labels):
        x = left + i * slot + slot * 0.1
        for j, (share, color) in enumerate(((rp[i], REF_COLOR), (cp[i], CUR_COLOR))):
            bh = plot_h * share / top_share
            y = top + plot_h - bh
            who = "reference" if j == 0 else "current"
            svg.append(
                f'<rect x="{x + j * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{bh:.1f}" '
                f'fill="{color}"><title>{escape(label)} {who}: {share:.2%}</title></rect>'
            )
    step = max(1, math.ceil(len(labels) / 8))
    for i in range(0, len(labels), step):
        x = left + (i + 0.5) * slot
        y = top + plot_h + 14
        svg.append(
            f'<text x="{x:.1f}" y="{y}" text-anchor="end" '
            f'transform="rotate(-30 {x:.1f} {y})">{escape(_short(labels[i]))}</text>'
        )
    svg.append("</svg></figure>")
    return "\n".join(svg)


def _line(name: str, points: Sequence[tuple[int, float]]) -> str:
    pts = [(int(t), float(v)) for t, v in points if v is not None and math.isfinite(float(v))]
    width, height, left, bottom, top = 360, 170, 44, 30, 10
    plot_w, plot_h = width - left - 10, height - top - bottom
    svg = [
        f"<figure><figcaption>{escape(name)}</figcaption>",
        f'<svg class="series" data-series="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(name)} over time</title>",
    ]
    if not pts:
        svg.append(f'<text x="{left}" y="{top + 20}">no points</text></svg></figure>')
        return "\n".join(svg)
    ts, vs = [t for t, _ in pts], [v for _, v in pts]
    t0, t1 = min(ts), max(ts)
    lo, hi = min(vs), max(vs)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    svg.append(_axes(left, top, plot_w, plot_h, _num(hi), _num(lo)))

    def xy(t: int, v: float) -> tuple[float, float]:
        x = left + (plot_w * (t - t0) / (t1 - t0) if t1 > t0 else plot_w / 2)
        return x, top + plot_h * (1 - (v - lo) / (hi - lo))

    coords = [xy(t, v) for t, v in pts]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    svg.append(f'<polyline points="{path}" fill="none" stroke="{LINE_COLOR}" stroke-width="1.5"/>')
    for (x, y), (t, v) in zip(coords, pts, strict=True):
        svg.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{LINE_COLOR}">'
            f"<title>{_when(t)}: {_num(v)}</title></circle>"
        )
    base = top + plot_h + 16
    svg.append(f'<text x="{left}" y="{base}">{_when(t0)}</text>')
    if t1 > t0:
        svg.append(f'<text x="{left + plot_w}" y="{base}" text-anchor="end">{_when(t1)}</text>')
    svg.append("</svg></figure>")
    return "\n".join(svg)


def _axes(left: int, top: int, w: int, h: int, hi_label: str, lo_label: str = "0") -> str:
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#cbd2d9"/>'
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#cbd2d9"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{escape(hi_label)}</text>'
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{escape(lo_label)}</text>'
    )


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"< {_num(edges[0])}"]
    labels += [f"[{_num(a)}, {_num(b)})" for a, b in itertools.pairwise(edges)]
    return [*labels, f">= {_num(edges[-1])}"]


def _shares(counts: list[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total else 0.0 for c in counts]


# -- terminal ------------------------------------------------------------------------------------


def print_summary(report: DriftReport, console: Console | None = None, *, limit: int = 30) -> None:
    """The drift verdicts as one compact table (drifted first), plus a one-line total."""
    console = console or Console()
    table = Table(box=None, pad_edge=False, header_style="bold")
    shown = report.features[:limit]
    name_w = min(max([7, *(len(f.name) for f in shown)]), 32)
    table.add_column("feature", min_width=name_w, no_wrap=True, overflow="ellipsis")
    table.add_column("drift", min_width=5, no_wrap=True)
    table.add_column("by", min_width=12, no_wrap=True)
    for col in ("value", "threshold", "p"):
        table.add_column(col, justify="right", min_width=9, no_wrap=True)
    table.add_column("reason", ratio=1, no_wrap=True, overflow="ellipsis")  # the rest of the line
    for f in shown:
        table.add_row(  # Text, not markup: names and reasons may contain "[...]"
            Text(f.name),
            Text("yes", style="red") if f.drifted else Text("no", style="green"),
            Text(f.method),
            _num(f.value),
            _num(f.threshold),
            _num(f.p_value),
            Text(f.reason),
        )
    console.print(table, highlight=False)
    more = len(report.features) - limit
    tail = f" ({more} more not shown)" if more > 0 else ""
    console.print(
        f"{len(report.drifted)}/{len(report.features)} features drifted "
        f"({report.drift_share:.0%}), {report.n_current:,} rows vs {report.n_reference:,}{tail}",
        markup=False,
        highlight=False,
    )


# -- formatting ------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return escape(str(x))
    if not math.isfinite(v):
        return "—"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.2e}"
    return f"{v:.4g}"


def _signed(x: Any) -> str:
    return "—" if x is None else ("+" if float(x) > 0 else "") + _num(x)


def _pct(x: Any) -> str:
    return "—" if x is None else f"{float(x):.1%}"


def _when(ms: Any) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _short(label: str, n: int = 18) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"
