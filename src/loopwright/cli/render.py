"""Turning command results into rich tables and text for a terminal.

Pure functions from data to renderables (and small formatting helpers), so the look of the CLI can
change without touching what the commands do, and ``--json`` skips this module entirely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from loopwright.cli.commands import (
    CompareRow,
    Comparison,
    RunDetail,
    RunListing,
    SchemaState,
    split_tags,
)
from loopwright.tracking.entities import Experiment, Metric, Run, RunStatus

MISSING = "—"
SPARK = "▁▂▃▄▅▆▇█"
STATUS_STYLE = {
    RunStatus.RUNNING: "cyan",
    RunStatus.FINISHED: "green",
    RunStatus.FAILED: "red",
    RunStatus.KILLED: "magenta",
}


# -- values ------------------------------------------------------------------------------------


def timestamp(ms: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Milliseconds since the epoch as local time (to the second unless ``fmt`` says otherwise)."""
    if ms is None:
        return MISSING
    return datetime.fromtimestamp(ms / 1000).strftime(fmt)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def run_duration(run: Run, now_ms: int) -> str:
    """Finished runs: their length; running ones: how long they have been going."""
    if run.duration_s is not None:
        return duration(run.duration_s)
    if run.status is RunStatus.RUNNING:
        return duration((now_ms - run.start_time) / 1000) + "…"
    return MISSING


def number(value: float | str | None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    return f"{value:.6g}"


def short(digest_or_id: str | None, n: int = 12) -> str:
    return MISSING if not digest_or_id else digest_or_id.split(":")[-1][:n]


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def status(run: Run, stale: bool) -> Text:
    if stale:
        return Text("RUNNING (stale)", style="yellow")
    return Text(run.status.value, style=STATUS_STYLE[run.status])


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line plot of a series, averaged down to ``width`` characters (NaN shown as a gap)."""
    points = _resample([x for x in values], width)
    finite = [x for x in points if math.isfinite(x)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    top = len(SPARK) - 1
    return "".join(
        SPARK[round((x - low) / span * top)] if math.isfinite(x) else " " for x in points
    )


def _resample(values: list[float], width: int) -> list[float]:
    if len(values) <= width:
        return values
    out = []
    for i in range(width):
        chunk = values[i * len(values) // width : (i + 1) * len(values) // width]
        finite = [x for x in chunk if math.isfinite(x)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def _none(title: str) -> Text:
    return Text(f"{title}: none", style="dim")


def _kv_table(title: str, mapping: dict[str, str]) -> RenderableType:
    if not mapping:
        return _none(title)
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in sorted(mapping):
        table.add_row(key, mapping[key])
    return table


# -- commands ----------------------------------------------------------------------------------


def experiments_table(experiments: Sequence[Experiment]) -> Table:
    table = Table("id", "name", "created", "tags", title="experiments")
    for e in experiments:
        tags = ", ".join(f"{k}={x}" for k, x in sorted(e.tags.items()))
        table.add_row(e.id, e.name, timestamp(e.created_at), tags)
    return table


def runs_table(listing: RunListing) -> Table:
    table = Table("run", "name", "experiment", "status", title="runs")
    table.add_column("start", no_wrap=True)
    table.add_column("duration", no_wrap=True)
    for key in listing.metric_keys:
        table.add_column(key, justify="right")
    for run in listing.runs:
        table.add_row(
            run.id[:8],
            run.name,
            listing.experiment_names.get(run.experiment_id, run.experiment_id[:8]),
            status(run, run.id in listing.stale),
            timestamp(run.start_time, "%Y-%m-%d %H:%M"),
            run_duration(run, listing.now_ms),
            *(number(run.metrics.get(k)) for k in listing.metric_keys),
        )
    return table


def run_detail(detail: RunDetail) -> RenderableType:
    run = detail.run
    user_tags, env_tags = split_tags(run.tags)
    parts: list[RenderableType] = [_summary(detail)]
    if run.error:
        parts.append(Text.assemble(("error\n", "bold red"), run.error.rstrip()))
    parts += [
        _kv_table("params", run.params),
        _kv_table("tags", user_tags),
        _kv_table("environment", env_tags),
        _kv_table("metrics (latest)", {k: number(x) for k, x in run.metrics.items()}),
        inputs_table(run),
        artifacts_table(detail),
    ]
    return Group(*parts)


def _summary(detail: RunDetail) -> Table:
    run = detail.run
    table = Table(title=f"run {run.name}", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("id", run.id),
        ("experiment", f"{detail.experiment_name} ({run.experiment_id})"),
        ("status", status(run, detail.stale)),
        ("start", timestamp(run.start_time)),
        ("end", timestamp(run.end_time)),
        ("duration", run_duration(run, detail.now_ms)),
        ("heartbeat", timestamp(run.heartbeat_at)),
        ("user", run.user or MISSING),
        ("parent", run.parent_run_id or MISSING),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def inputs_table(run: Run) -> RenderableType:
    if not run.inputs:
        return _none("inputs")
    table = Table("name", "context", "digest", "rows", "columns", title="inputs")
    table.title_justify = "left"
    for ds in run.inputs:
        table.add_row(
            ds.name, ds.context, short(ds.digest), f"{ds.num_rows:,}", str(len(ds.schema))
        )
    return table


def artifacts_table(detail: RunDetail) -> RenderableType:
    if not detail.artifacts:
        return _none("artifacts")
    table = Table("path", "size", "digest", title="artifacts")
    table.title_justify = "left"
    for ref in detail.artifacts:
        table.add_row(ref.path, size(ref.size), short(ref.digest))
    return table


def comparison_table(comparison: Comparison) -> Table:
    table = Table("", title="comparison")
    for run in comparison.runs:
        table.add_column(f"{run.name}\n{run.id[:8]}", justify="right")
    _compare_section(table, "params", comparison.params, len(comparison.runs))
    _compare_section(table, "metrics", comparison.metrics, len(comparison.runs))
    return table


def _compare_section(table: Table, title: str, rows: Sequence[CompareRow], width: int) -> None:
    table.add_row(Text(title, style="bold underline"), *[""] * width)
    for row in rows:
        style = "bold yellow" if row.differs else ""
        cells = [Text(number(x), style=style) for x in row.values]
        table.add_row(Text(row.key, style=style), *cells)
    table.add_section()


def history_view(key: str, points: Sequence[Metric], edge: int = 20) -> RenderableType:
    """The series as a sparkline plus a table (the first and last ``edge`` points if long)."""
    table = Table("step", "value", "time", title=f"{key} ({len(points)} points)")
    table.title_justify = "left"
    shown = list(points)
    if len(shown) > 2 * edge:
        shown = [*shown[:edge], None, *shown[-edge:]]  # type: ignore[list-item]
    for p in shown:
        if p is None:
            table.add_row("…", "…", "…")
        else:
            table.add_row(str(p.step), number(p.value), timestamp(p.timestamp))
    values = [p.value for p in points]
    finite = [x for x in values if math.isfinite(x)]
    stats = f"min {number(min(finite))}  max {number(max(finite))}" if finite else ""
    return Group(Text(sparkline(values), style="cyan"), Text(stats, style="dim"), table)


def schema_message(state: SchemaState, upgraded: bool) -> str:
    """``db upgrade`` / ``db current`` as one sentence."""
    where = f"{state.url}: "
    if upgraded and state.changed:
        return f"{where}upgraded from {state.before or 'an empty database'} to {state.current}"
    if state.current is None:
        return (
            f"{where}no loopwright schema yet (head is {state.head}); run `loopwright db upgrade`"
        )
    suffix = " (head)" if state.at_head else f", head is {state.head}"
    if not upgraded and not state.at_head:
        suffix += "; run `loopwright db upgrade`"
    return f"{where}{'already at' if upgraded else 'at'} {state.current}{suffix}"
