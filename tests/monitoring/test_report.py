"""The HTML report is one well-formed, self-contained page that escapes what comes from data."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pandas as pd
from rich.console import Console

from loopwright.monitoring.drift import DriftReport, compute_drift
from loopwright.monitoring.profiles import profile_frame
from loopwright.monitoring.report import print_summary, render_html

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}
SVG_VOID = {"rect", "line", "circle", "polyline", "path"}  # written self-closing
EVIL = "<script>alert('x')</script>&co"


class _Checker(HTMLParser):
    """Tracks open elements; any mismatch is a malformed page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _report() -> DriftReport:
    rng = np.random.default_rng(0)
    n = 4_000
    ref = pd.DataFrame(
        {
            EVIL: rng.normal(size=n),
            "[b]stable[/b]": rng.normal(size=n),
            "city": rng.choice(["a", "b", "<b>c</b>"], n),
            "many": rng.choice([f"k{i}" for i in range(60)], n),
        }
    )
    cur = pd.DataFrame(
        {
            EVIL: rng.normal(1, 1, n),
            "[b]stable[/b]": rng.normal(size=n),
            "city": rng.choice(["a", "b", "<b>c</b>", "new & shiny"], n),
            "many": rng.choice([f"k{i}" for i in range(30)], n),
        }
    )
    return compute_drift(profile_frame(ref, max_categories=80), cur)


def _parse(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    return checker


def test_page_is_well_formed_with_one_plot_per_drifted_feature() -> None:
    report = _report()
    assert set(report.drifted) == {EVIL, "city", "many"}
    perf = {
        "n": 4000, "n_labelled": 3000, "label_coverage": 0.75,
        "metrics": {"roc_auc": 0.81, "accuracy": 0.77, "log_loss": None},
        "vs_baseline": {"roc_auc": -0.04},
    }  # fmt: skip
    series = {
        "perf.roc_auc": [(1_700_000_000_000 + i * 86_400_000, 0.85 - i * 0.01) for i in range(7)],
        "drift.share": [(1_700_000_000_000, 0.0)],
        "empty": [],
    }
    alerts = [{"rule": "auc-drop", "severity": "critical", "state": "firing", "series": "perf.auc",
               "op": "<", "threshold": 0.8, "value": 0.79, "fired_at_ms": 1_700_000_000_000,
               "message": "AUC < 0.8 <for 2 windows>"}]  # fmt: skip
    html = render_html(report, perf, alerts, series, title="churn & co <daily>")
    page = _parse(html)
    dists = [a for t, a in page.tags if t == "svg" and a.get("class") == "dist"]
    assert sorted(a["data-feature"] or "" for a in dists) == sorted(report.drifted)
    lines = [a for t, a in page.tags if t == "svg" and a.get("class") == "series"]
    assert [a["data-series"] for a in lines] == list(series)
    text = "".join(page.text)
    assert "churn & co <daily>" in text and "AUC < 0.8 <for 2 windows>" in text
    assert "new & shiny" in text and "0.81" in text


def test_names_from_data_are_escaped_and_nothing_is_fetched() -> None:
    html = render_html(_report(), None, [], None, title=EVIL)
    page = _parse(html)
    assert "<script" not in html and "<b>c</b>" not in html
    assert "&lt;script&gt;" in html
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe")]
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert EVIL in "".join(page.text)  # the text still reads as the name


def test_plots_cap_many_categories_and_a_page_without_drift() -> None:
    report = _report()
    many = report.feature("many")
    assert len(many.histogram["categories"]) > 40
    html = render_html(report, title="t")
    svg = html.split('data-feature="many"')[1].split("</svg>")[0]
    assert svg.count("<rect") == 2 * 40
    empty = render_html(None, None, [], None, title="nothing yet")
    _parse(empty)
    assert "No alerts" in empty


def test_print_summary_is_a_compact_table() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=140, color_system=None)
    print_summary(_report(), console)
    out = buf.getvalue()
    assert "feature" in out and "yes" in out and "3/4 features drifted" in out
    assert "[b]stable[/b]" in out  # names are printed, not interpreted as rich markup
