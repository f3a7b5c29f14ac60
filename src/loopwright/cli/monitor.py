"""``loopwright monitor`` and ``loopwright alerts``: computing and reading monitoring windows.

``monitor run`` is cron-friendly: it computes the complete windows not stored yet and exits 0
(also when there was nothing to do), so ``*/15 * * * * loopwright monitor run credit --window 1h``
is all a schedule needs. Bad input exits 2 and names the option. ``--json`` prints one JSON line
per window / point / alert instead of a table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from loopwright.cli.render import MISSING, number, sparkline
from loopwright.client import Client
from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.governance.audit import acting_as
from loopwright.monitoring.store import AlertRecord, WindowRecord

__all__ = ["install", "parse_time", "scheduled"]

monitor_app = typer.Typer(help="Compute and inspect monitoring windows.", no_args_is_help=True)
alerts_app = typer.Typer(help="List and resolve monitoring alerts.", no_args_is_help=True)

#: Series shown in the run summary, when present.
SUMMARY_SERIES = ("serving.requests", "drift.share", "labels.coverage")

Deployment = Annotated[str, typer.Argument(help="The deployment's name.")]
WindowOpt = Annotated[str | None, typer.Option("--window", help="Window spec: 15m, 1h, 1d, ...")]
Json = Annotated[bool, typer.Option("--json", help="One JSON line per row instead of a table.")]


def install(app: typer.Typer) -> None:
    """Mount ``monitor`` and ``alerts`` on the root app."""
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(alerts_app, name="alerts")


def parse_time(text: str, field: str = "now") -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or ms since the epoch -> ms."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field} must be an ISO time such as 2025-01-31T00:00:00Z or ms since the epoch, "
            f"got {text!r}",
            field=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str:
    if ms is None:
        return MISSING
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


@contextmanager
def scheduled(settings: Settings, directory: Path | None, interval_min: float) -> Iterator[Any]:
    """``server --scheduler DIR``: a :class:`MonitorScheduler` thread in the server process for
    as long as the block runs (nothing when ``directory`` is None)."""
    if directory is None:
        yield None
        return
    from loopwright.monitoring.service import MonitorScheduler

    if interval_min <= 0:
        raise InvalidInput("--scheduler-interval must be positive", field="scheduler_interval")
    scheduler = MonitorScheduler(lambda: Client(settings=settings), directory, interval_min * 60)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


# -- plumbing ---------------------------------------------------------------------------------


def _client(ctx: typer.Context) -> Client:
    settings = ctx.find_root().obj.settings
    client = Client(settings=settings)
    ctx.call_on_close(client.close)
    ctx.with_resource(acting_as(settings.user))
    return client


def _out(ctx: typer.Context) -> Console:
    return ctx.find_root().obj.out  # type: ignore[no-any-return]


def _json_line(ctx: typer.Context, record: dict[str, Any]) -> None:
    _out(ctx).out(json.dumps(record, sort_keys=True, default=str), highlight=False)


def _config(path: Path | None, deployment: str) -> Any:
    from loopwright.monitoring.config import MonitorConfig

    if path is None:
        return None
    config = MonitorConfig.from_file(path)
    if config.deployment != deployment:
        raise InvalidInput(
            f"{path} is the monitor config of {config.deployment!r}, not {deployment!r}",
            field="config",
        )
    return config


# -- monitor ----------------------------------------------------------------------------------


@monitor_app.command("run")
def monitor_run(
    ctx: typer.Context,
    deployment: Deployment,
    window: WindowOpt = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Monitor config YAML (rules, task, ...).")
    ] = None,
    now: Annotated[
        str | None, typer.Option("--now", help="Pretend it is this time (ISO 8601, UTC).")
    ] = None,
    recompute_labels: Annotated[
        int | None,
        typer.Option(
            "--recompute-labels", min=0, help="Recompute the newest N windows if labels grew."
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Compute every complete window not computed yet (idempotent; safe to run from cron)."""
    cfg = _config(config, deployment)
    now_ms = parse_time(now) if now is not None else None
    service = _client(ctx).monitor
    out = _out(ctx)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=as_json or not out.is_terminal,
    ) as bar:
        task = bar.add_task(f"monitor {deployment}", total=None)

        def progress(done: int, total: int, _result: Any) -> None:
            bar.update(task, completed=done, total=total)

        results = service.run(
            deployment,
            window,
            now_ms=now_ms,
            config=cfg,
            recompute_labels=recompute_labels,
            progress=progress,
        )
    if as_json:
        for r in results:
            _json_line(ctx, r.to_dict())
        return
    if not results:
        out.print(f"{deployment}: up to date (no new complete window)")
        return
    out.print(run_summary(results))


def run_summary(results: list[Any]) -> Table:
    """One row per computed window: counts, the headline series and alert changes."""
    names = [n for n in SUMMARY_SERIES if any(n in r.series for r in results)]
    table = Table(title=f"{results[0].deployment}: {len(results)} window(s)", title_justify="left")
    for header in ("window", "start (UTC)", "requests", "labelled", *names[1:], "alerts"):
        table.add_column(header, justify="left" if header in ("window", "start (UTC)") else "right")
    for r in results:
        changes = ", ".join(f"{a['action']} {a['rule']}" for a in r.alerts) or ""
        start = iso(r.start_ms) + (" (labels)" if r.recomputed else "")
        cells = [number(r.series.get(n)) for n in names[1:]]
        table.add_row(r.window, start, str(r.n_predictions), str(r.n_labelled), *cells, changes)
    return table


@monitor_app.command("windows")
def monitor_windows(
    ctx: typer.Context,
    deployment: Deployment,
    window: WindowOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest N windows.")] = 30,
    as_json: Json = False,
) -> None:
    """Computed windows, oldest first."""
    rows = _client(ctx).monitor.windows(deployment, window, limit=limit)
    if as_json:
        for w in rows:
            _json_line(ctx, w.to_dict(with_report=False))
        return
    _out(ctx).print(windows_table(deployment, rows))


def windows_table(deployment: str, rows: list[WindowRecord]) -> Table:
    table = Table(title=f"{deployment}: computed windows", title_justify="left")
    for header in ("window", "start (UTC)", "end (UTC)", "requests", "labelled", "computed"):
        table.add_column(header)
    for w in rows:
        table.add_row(
            w.window, iso(w.start_ms), iso(w.end_ms), str(w.n_predictions), str(w.n_labelled),
            iso(w.computed_at_ms),
        )  # fmt: skip
    return table


@monitor_app.command("series")
def monitor_series(
    ctx: typer.Context,
    deployment: Deployment,
    name: Annotated[str | None, typer.Argument(help="Series name; omit to list the names.")] = None,
    window: Annotated[str, typer.Option("--window", help="Window spec.")] = "1d",
    limit: Annotated[int, typer.Option(min=1, help="The newest N points.")] = 60,
    as_json: Json = False,
) -> None:
    """One series in time order (with a sparkline), or the names of the stored series."""
    service = _client(ctx).monitor
    if name is None:
        names = service.series_names(deployment, window)
        if as_json:
            _json_line(ctx, {"deployment": deployment, "window": window, "series": names})
        else:
            _out(ctx).print("\n".join(names) if names else f"{deployment}: no series yet")
        return
    points = service.series(deployment, name, window, limit=limit)
    if as_json:
        for end, value in points:
            _json_line(ctx, {"end_ms": end, "value": None if math.isnan(value) else value})
        return
    if not points:
        raise InvalidInput(
            f"deployment {deployment!r} has no {window} series {name!r} (list the names with "
            f"`loopwright monitor series {deployment} --window {window}`)",
            field="name",
        )
    _out(ctx).print(series_table(name, points))


def series_table(name: str, points: list[tuple[int, float]]) -> Table:
    table = Table(title=f"{name}  {sparkline([v for _, v in points], 40)}", title_justify="left")
    table.add_column("window end (UTC)")
    table.add_column("value", justify="right")
    for end, value in points:
        table.add_row(iso(end), MISSING if math.isnan(value) else number(value))
    return table


@monitor_app.command("report")
def monitor_report(
    ctx: typer.Context,
    deployment: Deployment,
    window: Annotated[str, typer.Option("--window", help="Window spec.")] = "1d",
    start: Annotated[
        str | None, typer.Option("--start", help="The window's start (ISO); default the newest.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML page.")] = Path(
        "monitor-report.html"
    ),
) -> None:
    """Write one window's HTML report (drift, performance, series, alerts) to a file."""
    from loopwright.monitoring.drift import DriftReport
    from loopwright.monitoring.report import print_summary

    start_ms = parse_time(start, "start") if start is not None else None
    service = _client(ctx).monitor
    record = service.report(deployment, window, start_ms)
    html = service.report_html(deployment, window, record.start_ms)
    out.write_text(html, encoding="utf-8")
    console = _out(ctx)
    drift = record.report.get("drift")
    if drift:  # the terminal gets the compact version of the page's drift table
        print_summary(DriftReport.from_dict(drift), console)
    else:
        notes = "; ".join(record.report.get("notes") or []) or "no drift computed"
        console.print(f"{deployment} {window} window from {iso(record.start_ms)}: {notes}")
    console.print(f"wrote {out}")


# -- alerts -----------------------------------------------------------------------------------


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    deployment: Annotated[str | None, typer.Option(help="Only this deployment's.")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Json = False,
) -> None:
    """Alerts, newest first."""
    if state is not None and state not in ("firing", "resolved"):
        raise InvalidInput(f"--state must be firing or resolved, got {state!r}", field="state")
    found = _client(ctx).monitor.alerts(deployment, state, limit=limit)
    if as_json:
        for a in found:
            _json_line(ctx, a.to_dict())
        return
    _out(ctx).print(alerts_table(found))


def alerts_table(found: list[AlertRecord]) -> Table:
    table = Table(title="alerts", title_justify="left")
    for header in ("id", "deployment", "rule", "severity", "state", "window end", "value", "msg"):
        table.add_column(header)
    style = {"firing": "red", "resolved": "green"}
    for a in found:
        table.add_row(
            a.id[:12], a.deployment, a.rule, a.severity,
            f"[{style.get(a.state, '')}]{a.state}[/]", iso(a.window_end_ms), number(a.value),
            a.resolution or a.message,
        )  # fmt: skip
    return table


@alerts_app.command("resolve")
def alerts_resolve(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(help="The alert's id (or a unique prefix).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
) -> None:
    """Resolve a firing alert by hand."""
    service = _client(ctx).monitor
    full = _alert_id(service, alert_id)
    resolved = service.resolve(full, reason)
    _out(ctx).print(f"resolved alert {resolved.id} ({resolved.rule} on {resolved.deployment})")


def _alert_id(service: Any, prefix: str) -> str:
    if len(prefix) >= 32:
        return prefix
    if len(prefix) < 4:
        raise InvalidInput("an alert id prefix needs at least 4 characters", field="alert_id")
    matches = [
        a.id for a in service.alerts(state="firing", limit=10_000) if a.id.startswith(prefix)
    ]
    if len(matches) != 1:
        what = "no firing alert" if not matches else "more than one firing alert"
        raise InvalidInput(f"{what} has an id starting with {prefix!r}", field="alert_id")
    return matches[0]
