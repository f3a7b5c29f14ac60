"""Model cards: one document an auditor can read about one model version.

What the version is (intended use, flavor, digest, size, who registered it and when), what it was
trained on (datasets by digest, schema, rows), how it scored (metrics, every evaluation and the
checks of the latest, fairness included), who let it through (approval requests and decisions),
which aliases point at it, and the code and environment that produced it.

The content is gathered once into a small document model (:class:`Card`: sections of facts and
tables of plain strings) and written out by a Markdown or an HTML renderer, so both formats say the
same thing and escaping happens in exactly one place per format. Everything comes from the
:class:`~loopwright.Client`'s public calls, so a card can be made against a server too.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from loopwright.errors import InvalidInput
from loopwright.lineage.graph import Graph, Node, NodeKind, Relation, version_lineage

if TYPE_CHECKING:
    from loopwright.client import Client
    from loopwright.registry.entities import ApprovalRequest, Evaluation, RegisteredModel

__all__ = ["Card", "Section", "Table", "build_card", "model_card", "render_html", "render_markdown"]

Format = Literal["md", "html"]
MISSING = "—"
_SYSTEM_PREFIX = "system."


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Card:
    title: str
    generated_at: str
    sections: list[Section]


def model_card(client: Client, uri: str, format: Format | str = "md") -> str:
    """The card of ``uri`` (``churn/3``, ``churn@champion``): Markdown or a self-contained page."""
    if format not in ("md", "html"):
        raise InvalidInput(f"format {format!r} must be 'md' or 'html'", field="format")
    card = build_card(client, uri)
    return render_markdown(card) if format == "md" else render_html(card)


# -- gathering ---------------------------------------------------------------------------------


def build_card(client: Client, uri: str) -> Card:
    graph = version_lineage(client, uri)
    assert graph.root is not None
    mv = graph.nodes[graph.root].attributes
    model = client.registry.get_model(mv["model"])
    evaluations = client.registry.list_evaluations(mv["model"], mv["version"])
    requests = [r for r in client.registry.list_requests(mv["model"]) if r.version == mv["version"]]
    sections = [
        _overview(model, mv),
        _training_data(graph),
        _metrics(mv["metrics"]),
        _evaluations(evaluations),
        _approvals(model, requests),
        _lineage(graph),
    ]
    return Card(f"Model card: {mv['model']}/{mv['version']}", _when(_now_ms()), sections)


def _now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _overview(model: RegisteredModel, mv: dict[str, Any]) -> Section:
    aliases = ", ".join(f"@{a}" for a in mv["aliases"]) or "none"
    facts = [
        ("Model", model.name),
        ("Version", str(mv["version"])),
        ("Intended use (model)", model.description or MISSING),
        ("Intended use (version)", mv["description"] or MISSING),
        ("Flavor", mv["flavor"]),
        ("Digest (SHA-256 of the model file)", mv["digest"]),
        ("Size", _size(mv["size"])),
        ("Artifact", f"{mv['artifact_path']} of run {mv['run_id'] or MISSING}"),
        ("Registered by", mv["created_by"] or MISSING),
        ("Registered at", _when(mv["created_at"])),
        ("Aliases pointing here", aliases),
    ]
    facts += [(f"Tag {k}", v) for k, v in sorted(mv["tags"].items())]
    return Section("Overview", facts)


def _training_data(graph: Graph) -> Section:
    rows, schemas = [], []
    for run in graph.of_kind(NodeKind.RUN):
        for edge in graph.edges_into(run.key, Relation.USED_BY):
            ds = graph.nodes[edge.source].attributes
            rows.append(
                (
                    ds["name"],
                    str(edge.attributes.get("context") or MISSING),
                    ds["digest"],
                    _fmt(ds.get("num_rows")),
                    run.id,
                )
            )
            schemas.append((ds["name"], ds["digest"], _schema(ds.get("schema"))))
    if not rows:
        return Section("Training data", notes=["No dataset was logged by the producing run(s)."])
    return Section(
        "Training data",
        tables=[
            Table(("dataset", "context", "digest", "rows", "run"), rows),
            Table(("dataset", "digest", "schema (column: type)"), schemas, "Schemas"),
        ],
    )


def _metrics(metrics: dict[str, float]) -> Section:
    model = [(k, _fmt(v)) for k, v in sorted(metrics.items()) if not k.startswith(_SYSTEM_PREFIX)]
    system = [(k, _fmt(v)) for k, v in sorted(metrics.items()) if k.startswith(_SYSTEM_PREFIX)]
    tables = [Table(("metric", "value"), model)] if model else []
    if system:
        tables.append(Table(("measure", "value"), system, "Training resources"))
    notes = [] if tables else ["The producing run logged no metrics."]
    return Section("Metrics (as logged by the training run)", tables=tables, notes=notes)


def _evaluations(evaluations: list[Evaluation]) -> Section:
    title = "Evaluation and fairness"
    if not evaluations:
        return Section(title, notes=["This version has not been evaluated against a gate policy."])
    summary = [
        (
            ev.id,
            _when(ev.created_at),
            ev.created_by or MISSING,
            ev.dataset_name,
            ev.dataset_digest or MISSING,
            _fmt(ev.champion_version),
            _verdict(ev.passed),
        )
        for ev in evaluations
    ]
    latest = evaluations[-1]
    tables = [
        Table(
            ("evaluation", "when", "by", "dataset", "dataset digest", "champion version", "result"),
            summary,
            "All evaluations",
        )
    ]
    checks = [c for c in latest.report.get("checks", []) if isinstance(c, dict)]
    if checks:
        tables.append(
            Table(
                ("check", "measured", "bound", "result", "detail"),
                [_check_row(c) for c in checks],
                f"Checks of the latest evaluation ({latest.id})",
            )
        )
    comparison, fairness = _comparison(latest.report), _fairness(latest.report)
    tables += [t for t in (comparison, fairness) if t is not None and t.rows]
    return Section(title, [("Latest result", _verdict(latest.passed))], tables)


def _check_row(check: dict[str, Any]) -> tuple[str, ...]:
    passed = check.get("passed")
    result = MISSING if passed is None else _verdict(bool(passed))
    return (
        str(check.get("name", MISSING)),
        _fmt(check.get("measured")),
        _fmt(check.get("bound")),
        result,
        _fmt(check.get("detail")),
    )


def _comparison(report: dict[str, Any]) -> Table:
    """Candidate and champion side by side (``{"metrics": {...}, "latency_p95_ms", ...}``)."""
    candidate, champion = _dict(report.get("candidate")), _dict(report.get("champion"))
    ours, theirs = _dict(candidate.get("metrics")), _dict(champion.get("metrics"))
    rows = [(k, _fmt(ours.get(k)), _fmt(theirs.get(k))) for k in sorted(set(ours) | set(theirs))]
    rows += [
        (k, _fmt(candidate[k]), MISSING)
        for k in ("latency_p95_ms", "size_mb")
        if candidate.get(k) is not None
    ]
    return Table(("measure", "candidate", "champion"), rows, "Candidate against champion")


def _fairness(report: dict[str, Any]) -> Table | None:
    """Per-group numbers behind the fairness checks: one row per group, one column per measure."""
    section = _dict(_dict(report.get("candidate")).get("fairness"))
    sizes = _dict(section.get("sizes"))
    if not sizes:
        return None
    measures = sorted(k for k, v in section.items() if isinstance(v, dict) and k != "sizes")
    rows = [
        (str(g), _fmt(n), *(_fmt(_dict(section[m]).get(g)) for m in measures))
        for g, n in sizes.items()
    ]
    excluded = ", ".join(map(str, section.get("excluded") or [])) or "none"
    caption = (
        f"Fairness by {section.get('attribute', '?')} (groups under "
        f"{section.get('min_group_size', '?')} rows not counted: {excluded})"
    )
    return Table(("group", "rows", *measures), rows, caption)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _approvals(model: RegisteredModel, requests: list[ApprovalRequest]) -> Section:
    facts = [(f"Policy {k}", _fmt(v)) for k, v in sorted((model.policy or {}).items())]
    if not facts:
        facts = [("Gate policy", "none set on this model")]
    if not requests:
        return Section(
            "Gates and approvals", facts, notes=["No approval was requested for this version."]
        )
    asked = [
        (
            r.id,
            f"@{r.alias}",
            str(r.status),
            r.requested_by,
            _when(r.requested_at),
            f"{r.approvals} of {r.required}",
            r.comment or MISSING,
        )
        for r in requests
    ]
    decided = [
        (r.id, d.approver, str(d.decision), _when(d.decided_at), d.comment or MISSING)
        for r in requests
        for d in r.decisions
    ]
    return Section(
        "Gates and approvals",
        facts,
        [
            Table(
                (
                    "request",
                    "alias",
                    "status",
                    "requested by",
                    "requested at",
                    "approvals",
                    "comment",
                ),
                asked,
                "Requests",
            ),
            Table(("request", "approver", "decision", "when", "comment"), decided, "Decisions"),
        ],
    )


def _lineage(graph: Graph) -> Section:
    runs = [_run_row(graph, n) for n in graph.of_kind(NodeKind.RUN)]
    code = [_code_row(n) for n in graph.of_kind(NodeKind.CODE)]
    envs = [
        (
            n.id,
            _fmt(n.attributes["python"]),
            _fmt(n.attributes["platform"]),
            _fmt(n.attributes["packages_digest"]),
        )
        for n in graph.of_kind(NodeKind.ENVIRONMENT)
    ]
    tables = [
        Table(
            ("run", "name", "experiment", "status", "user", "started", "ended", "parent"),
            runs,
            "Runs",
        )
    ]
    notes = []
    if code:
        tables.append(
            Table(("commit", "branch", "uncommitted changes", "entry point"), code, "Code")
        )
    else:
        notes.append("No git revision was recorded (the run did not start inside a git work tree).")
    if envs:
        tables.append(
            Table(
                ("environment digest", "python", "platform", "packages digest"), envs, "Environment"
            )
        )
    return Section("Lineage", tables=tables, notes=notes)


def _run_row(graph: Graph, run: Node) -> tuple[str, ...]:
    a = run.attributes
    return (
        run.id,
        a["name"],
        _fmt(a["experiment"]),
        a["status"],
        _fmt(a["user"]),
        _when(a["start_time"]),
        _when(a["end_time"]),
        _fmt(a["parent_run_id"]),
    )


def _code_row(code: Node) -> tuple[str, ...]:
    a = code.attributes
    dirty = f"yes, diff digest {a['diff_digest']}" if a["dirty"] else "none"
    return (a["commit"], _fmt(a["branch"]), dirty, _fmt(a["entry_point"]))


# -- values ------------------------------------------------------------------------------------


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _when(ms: int | None) -> str:
    if ms is None:
        return MISSING
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit} ({size} bytes)"


def _fmt(value: Any) -> str:
    """One cell's text: numbers to 6 significant digits, structures as compact JSON."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _schema(schema: list[dict[str, str]] | None) -> str:
    if not schema:
        return MISSING
    return ", ".join(f"{f.get('name')}: {f.get('type')}" for f in schema)


# -- Markdown ----------------------------------------------------------------------------------

#: Characters that would format a cell, and a ``<`` that would open raw HTML (``<b``, ``</``,
#: ``<!``, ``<?``); a ``<`` in ``auc<=0.9`` stays as written, so the Markdown reads plainly.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|]|<(?=[A-Za-z/!?]))")


def _md(text: str) -> str:
    """Literal text in a Markdown line or table cell."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")


def render_markdown(card: Card) -> str:
    lines = [f"# {_md(card.title)}", "", f"_Generated {_md(card.generated_at)} by loopwright._", ""]
    for section in card.sections:
        lines += [f"## {_md(section.title)}", ""]
        if section.facts:
            lines += _md_table(Table(("", ""), list(section.facts)))
        for table in section.tables:
            if table.caption:
                lines += [f"### {_md(table.caption)}", ""]
            lines += _md_table(table) if table.rows else ["_none_", ""]
        lines += [f"_{_md(note)}_\n" for note in section.notes]
    return "\n".join(lines).rstrip() + "\n"


def _md_table(table: Table) -> list[str]:
    head = "| " + " | ".join(_md(h) for h in table.headers) + " |"
    rule = "|" + "|".join("---" for _ in table.headers) + "|"
    body = ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
    return [head, rule, *body, ""]


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;
color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;
word-break:break-all}th{background:#f5f5f7}.facts th{width:16rem;word-break:normal}
.PASS{color:#0a7d32;font-weight:600}.FAIL{color:#b3261e;font-weight:600}
.meta,.note{color:#666}
""".strip()


def _h(value: str) -> str:
    return html.escape(value, quote=True)


def render_html(card: Card) -> str:
    """A self-contained page: inline CSS, no scripts, no external assets, every value escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(card.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(card.title)}</h1>",
        f'<p class="meta">Generated {_h(card.generated_at)} by loopwright.</p>',
    ]
    for section in card.sections:
        parts.append(f"<section><h2>{_h(section.title)}</h2>")
        if section.facts:
            rows = "".join(
                f"<tr><th>{_h(k)}</th><td>{_cell(v)}</td></tr>" for k, v in section.facts
            )
            parts.append(f'<table class="facts">{rows}</table>')
        parts += [_html_table(t) for t in section.tables]
        parts += [f'<p class="note">{_h(n)}</p>' for n in section.notes]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cell(value: str) -> str:
    if value in ("PASS", "FAIL"):
        return f'<span class="{value}">{value}</span>'
    return _h(value)


def _html_table(table: Table) -> str:
    caption = f"<h3>{_h(table.caption)}</h3>" if table.caption else ""
    if not table.rows:
        return f'{caption}<p class="note">none</p>'
    head = "".join(f"<th>{_h(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
