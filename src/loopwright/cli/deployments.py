"""``loopwright deployments status|promote|rollback URL``: steer a running model server.

These talk to the serving app itself (``loopwright serve`` / ``deploy``), not to the tracking
server: the deployment's state (which version answers, the canary's weight, whether it was
rolled back and why) lives in the serving process. Errors come back as the serving app's
``{"error": {code, message, ...}}`` and are re-raised as the same loopwright exception, so the
CLI prints them and exits like any other command (a gate refusing a promotion exits 2).
Requests carry ``X-Loopwright-User`` (``--user`` or the OS user), which the server records as
the actor of a rollback or promotion, and the steering token (``--token`` or
``LOOPWRIGHT_SERVING_TOKEN``) when the server was started with one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from loopwright.errors import InvalidInput, StoreUnavailable, from_wire
from loopwright.governance.audit import current_actor

__all__ = ["app", "call", "install", "render_status"]

app = typer.Typer(
    help="Inspect a running deployment; promote or roll back its canary.", no_args_is_help=True
)

Url = Annotated[str, typer.Argument(help="The model server's base URL, e.g. http://127.0.0.1:8080")]
Json = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the server.")]
Token = Annotated[
    str | None,
    typer.Option(
        envvar="LOOPWRIGHT_SERVING_TOKEN",
        show_envvar=True,
        help="The server's steering token (needed by promote and rollback when it has one).",
    ),
]

_STATE_STYLE = {"canary": "cyan", "serving": "green", "rolled_back": "bold red",
                "promoted": "bold green"}  # fmt: skip


def install(root: typer.Typer) -> None:
    """Mount ``deployments`` on the root app."""
    root.add_typer(app, name="deployments")


def call(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    timeout: float = 30.0,
    token: str | None = None,
) -> dict[str, Any]:
    """One JSON request to a serving app; its errors come back as loopwright exceptions."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"the URL must start with http:// or https://, got {url!r}", field="url")
    headers = {"X-Loopwright-User": user or current_actor()}
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    target = url.rstrip("/") + path
    try:
        answer = httpx.request(method, target, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise StoreUnavailable(f"cannot reach the model server at {url}: {exc}") from exc
    try:
        data = answer.json()
    except ValueError:
        data = None
    if answer.is_success and isinstance(data, dict):
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raise from_wire(error, answer.status_code)
    text = answer.text.strip()[:200] or answer.reason_phrase
    raise StoreUnavailable(f"{method} {target} answered HTTP {answer.status_code}: {text}")


def _state(ctx: typer.Context) -> Any:
    return ctx.find_root().obj


def _user(ctx: typer.Context) -> str | None:
    return _state(ctx).settings.user  # type: ignore[no-any-return]


@app.command("status")
def status(ctx: typer.Context, url: Url, json_: Json = False, timeout: Timeout = 10.0) -> None:
    """Routes, versions, weights, the canary's state and, after a rollback, why."""
    data = call(url, "GET", "/status", user=_user(ctx), timeout=timeout)
    out = _state(ctx).out
    if json_:
        out.print_json(json.dumps(data, default=str))
        return
    render_status(out, data)


@app.command("promote")
def promote(
    ctx: typer.Context,
    url: Url,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit trail).")] = None,
    override: Annotated[
        bool,
        typer.Option("--override", help="Admin: move despite failed gates (needs --reason)."),
    ] = False,
    timeout: Timeout = 120.0,
    token: Token = None,
) -> None:
    """Move the champion alias to the canary's version (the registry's gates and approvals)."""
    body = {"reason": reason, "override": override}
    data = call(url, "POST", "/canary/promote", body, user=_user(ctx), timeout=timeout,
                token=token)  # fmt: skip
    _state(ctx).out.print(
        f"promoted: {data['model']}@{data['alias']} -> version {data['version']} "
        f"(the champion route serves version {data['champion_version']})"
    )


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    url: Url,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")],
    timeout: Timeout = 30.0,
    token: Token = None,
) -> None:
    """Stop routing traffic to the canary now (every worker within one watch interval)."""
    data = call(url, "POST", "/canary/rollback", {"reason": reason}, user=_user(ctx),
                timeout=timeout, token=token)  # fmt: skip
    decision = data.get("decision") or {}
    verb = "rolled back" if data.get("changed") else "was already rolled back"
    _state(ctx).out.print(
        f"canary {decision.get('canary_ref')} (version {decision.get('canary_version')}) "
        f"{verb}: {decision.get('reason')}"
    )


# -- rendering ---------------------------------------------------------------------------------


def render_status(out: Any, data: dict[str, Any]) -> None:
    """The status answer as tables: routes, then the canary's state, verdict and alerts."""
    state = str(data.get("state", "?"))
    style = _STATE_STYLE.get(state, "white")
    out.print(
        f"deployment [bold]{data.get('deployment')}[/bold] (model {data.get('model')}): "
        f"[{style}]{state}[/{style}]" + ("" if data.get("ready") else " [yellow](not ready)[/]")
    )
    out.print(_routes_table(data))
    canary = data.get("canary")
    if canary:
        _render_canary(out, canary)
    alerts = data.get("alerts") or []
    if alerts:
        table = Table("fired", "rule", "severity", "message", title="alerts")
        for alert in alerts:
            table.add_row(_time(alert.get("fired_at_ms")), str(alert.get("rule")),
                          str(alert.get("severity")), str(alert.get("message")))  # fmt: skip
        out.print(table)
    for error in (data.get("errors") or [])[-5:]:
        out.print(f"[yellow]error[/yellow] {error.get('route')} {error.get('ref')}: "
                  f"{error.get('error')}")  # fmt: skip


def _routes_table(data: dict[str, Any]) -> Table:
    table = Table("route", "ref", "version", "weight", "in flight")
    routes = data.get("routes") or {}
    canary_weight = (routes.get("canary") or {}).get("weight", 0.0)
    for name, route in routes.items():
        weight = route.get("weight", 1.0 - canary_weight if name == "champion" else None)
        table.add_row(name, str(route.get("ref")), str(route.get("version")), _share(weight),
                      str(route.get("in_flight", "")))  # fmt: skip
    for shadow in data.get("shadows") or []:
        table.add_row("shadow", str(shadow.get("ref")), str(shadow.get("version")),
                      "copy", str(shadow.get("in_flight", "")))  # fmt: skip
    return table


def _render_canary(out: Any, canary: dict[str, Any]) -> None:
    weight, configured = canary.get("weight"), canary.get("configured_weight")
    out.print(f"canary: {canary.get('state')}, weight {_share(weight)} "
              f"(configured {_share(configured)})")  # fmt: skip
    decision = canary.get("decision")
    if decision:
        out.print(
            f"[bold]{decision.get('state')}[/bold] by {decision.get('by')} at "
            f"{_time(decision.get('at_ms'))}: {decision.get('reason')}"
        )
        verdict = decision.get("verdict")
        if verdict:
            out.print(_verdict_table(verdict))
    elif canary.get("slo") is None:
        out.print("[dim]no SLO: the canary is not judged automatically[/dim]")
    window = canary.get("window")
    if window and not decision:
        out.print(_window_line(window))


def _verdict_table(verdict: dict[str, Any]) -> Table:
    table = Table("rule", "measured", "limit", "broken", title="verdict")
    measured, limits = verdict.get("measured") or {}, verdict.get("thresholds") or {}
    broken = set(verdict.get("breaches") or [])
    rows = [
        ("error_rate", measured.get("canary_error_rate"), limits.get("error_rate_limit"), "%"),
        ("p99_latency", measured.get("canary_p99_ms"), limits.get("p99_limit_ms"), "ms"),
        ("agreement", measured.get("agreement"), limits.get("min_agreement"), "%"),
    ]
    for rule, value, limit, unit in rows:
        mark = "[red]yes[/red]" if rule in broken else "no"
        table.add_row(rule, _fmt(value, unit), _fmt(limit, unit), mark)
    return table


def _window_line(window: dict[str, Any]) -> str:
    return (
        f"window: canary {window.get('canary_requests')} answers, "
        f"errors {_fmt(window.get('canary_error_rate'), '%')}, "
        f"p99 {_fmt(window.get('canary_p99_ms'), 'ms')}; champion "
        f"{window.get('champion_requests')} answers, errors "
        f"{_fmt(window.get('champion_error_rate'), '%')}, p99 "
        f"{_fmt(window.get('champion_p99_ms'), 'ms')}"
    )


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    return f"{float(value):.1%}" if unit == "%" else f"{float(value):.1f} ms"


def _share(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def _time(ms: Any) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
