"""``loopwright loop``: run a retraining policy, trigger it by hand, and tell its story.

``loop run policy.yaml --once`` is one controller tick and exits 0 whether or not anything
happened, so a cron line is enough; without ``--once`` it ticks every ``--interval`` seconds until
interrupted. ``loop status <model>`` reads the audit trail only and prints each cycle as a
numbered story. Bad input (a policy YAML mistake names the field) exits 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from loopwright.automation.controller import DEFAULT_LEASE_TTL_S, LoopController, iso
from loopwright.automation.history import Cycle, LoopEvent, LoopHistory, describe
from loopwright.automation.policy import RetrainPolicy
from loopwright.cli.monitor import parse_time
from loopwright.client import Client
from loopwright.governance.audit import acting_as

__all__ = ["install", "loop_app", "render_history"]

loop_app = typer.Typer(
    help="Automated retraining: run a policy, trigger it, read its story.", no_args_is_help=True
)

PolicyArg = Annotated[Path, typer.Argument(help="The retraining policy (YAML).")]
NowOpt = Annotated[
    str | None, typer.Option("--now", help="Pretend it is this time (ISO 8601, UTC, or ms).")
]
Json = Annotated[bool, typer.Option("--json", help="One JSON line per event instead.")]

_STYLE = {
    "promoted": "green",
    "not_promoted": "yellow",
    "failed": "red",
    "awaiting_approval": "cyan",
    "triggered": "bold",
    "busy": "yellow",
    "orphaned": "red",
}


def install(app: typer.Typer) -> None:
    """Mount ``loop`` on the root app."""
    app.add_typer(loop_app, name="loop")


def _client(ctx: typer.Context) -> Client:
    settings = ctx.find_root().obj.settings
    client = Client(settings=settings)
    ctx.call_on_close(client.close)
    ctx.with_resource(acting_as(settings.user))
    return client


LeaseTtl = Annotated[
    float,
    typer.Option(
        "--lease-ttl",
        min=0.1,
        max=86_400,
        help="Seconds this controller's lease on the model lasts without renewal.",
    ),
]


def _controller(ctx: typer.Context, lease_ttl: float = DEFAULT_LEASE_TTL_S) -> LoopController:
    controller = LoopController(_client(ctx), lease_ttl_s=lease_ttl)
    ctx.call_on_close(controller.close)
    return controller


def _out(ctx: typer.Context) -> Console:
    return ctx.find_root().obj.out  # type: ignore[no-any-return]


def _print_events(ctx: typer.Context, events: list[LoopEvent], as_json: bool) -> None:
    out = _out(ctx)
    for event in events:
        if as_json:
            out.out(json.dumps(event.to_dict(), sort_keys=True, default=str), highlight=False)
        else:
            style = _STYLE.get(event.kind, "")
            out.print(Text.assemble((f"{event.kind:>17} ", style), describe(event)))


def _phase_line(history: LoopHistory) -> str:
    current = history.current
    if current is None:
        return f"{history.model}: idle (no cycle in progress)"
    return f"{history.model}: cycle {current.id} {waiting_for(current)}"


def waiting_for(cycle: Cycle) -> str:
    """What an unfinished cycle waits for, from its recorded steps alone."""
    if cycle.phase == "challenger":
        d = cycle.steps[-1].detail
        return (
            f"waits for {d.get('min_requests')} {d.get('mode')} requests and "
            f"{d.get('min_labels')} labels on v{d.get('version')}, at the latest until "
            f"{iso(d.get('deadline_ms'))}"
        )
    if cycle.phase == "awaiting_approval":
        d = cycle.steps[-1].detail
        return f"waits for approval of request {d.get('request_id')}"
    return f"is at {cycle.phase} (the next tick continues it)"


@loop_app.command("run")
def loop_run(
    ctx: typer.Context,
    policy: PolicyArg,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit.")] = False,
    now: NowOpt = None,
    interval: Annotated[
        float, typer.Option("--interval", min=1.0, help="Seconds between ticks.")
    ] = 60.0,
    as_json: Json = False,
    lease_ttl: LeaseTtl = DEFAULT_LEASE_TTL_S,
) -> None:
    """Tick the controller: start a cycle when a trigger fired, advance the one in progress.

    Runs until interrupted, ticking every --interval seconds; --once (or --now) ticks once.
    Another controller already ticking the model makes a tick print ``busy`` and do nothing.
    """
    spec = RetrainPolicy.from_file(policy)
    now_ms = parse_time(now) if now is not None else None
    controller = _controller(ctx, lease_ttl)
    while True:
        events = controller.tick(spec, now_ms=now_ms)
        _print_events(ctx, events, as_json)
        if not as_json:
            _out(ctx).print(_phase_line(controller.history(spec.model)))
        if once or now_ms is not None:  # a pretended time is one moment: one tick
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


@loop_app.command("trigger")
def loop_trigger(
    ctx: typer.Context,
    policy: PolicyArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")],
    now: NowOpt = None,
    as_json: Json = False,
    lease_ttl: LeaseTtl = DEFAULT_LEASE_TTL_S,
) -> None:
    """Start a retraining cycle now and advance it as far as it goes."""
    spec = RetrainPolicy.from_file(policy)
    now_ms = parse_time(now) if now is not None else None
    controller = _controller(ctx, lease_ttl)
    events = controller.trigger(spec, reason, now_ms=now_ms)
    _print_events(ctx, events, as_json)
    if not as_json:
        _out(ctx).print(_phase_line(controller.history(spec.model)))


@loop_app.command("status")
def loop_status(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model's name.")],
    cycles: Annotated[int, typer.Option("--cycles", min=1, help="Show the newest N cycles.")] = 5,
    as_json: Json = False,
) -> None:
    """The story of the model's retraining loop, from the audit trail."""
    controller = LoopController(_client(ctx))
    history = controller.history(model)
    if as_json:
        for event in history.events:
            _out(ctx).out(json.dumps(event.to_dict(), sort_keys=True, default=str))
        return
    _out(ctx).print(render_history(history, cycles))
    lease = controller.lease(model)
    if lease is not None and lease.expires_at_ms > time.time() * 1000:
        _out(ctx).print(
            f"controller {lease.holder} holds the loop (lease until {iso(lease.expires_at_ms)})"
        )


def render_history(history: LoopHistory, newest: int = 5) -> Any:
    """Each cycle as a panel of numbered steps; the state now on top."""
    if not history.events:
        return Text(
            f"{history.model}: no retraining loop has run (no loop events in the audit trail)"
        )
    parts: list[Any] = [Text(_phase_line(history), style="bold")]
    policy = history.policy_event
    if policy is not None:
        parts.append(Text(f"{describe(policy)} since {iso(policy.at_ms)}", style="dim"))
    shown = history.cycles[-newest:]
    skipped = len(history.cycles) - len(shown)
    if skipped:
        parts.append(
            Text(
                f"({skipped} older cycle(s) not shown; --cycles {len(history.cycles)})", style="dim"
            )
        )
    for number, cycle in enumerate(shown, start=skipped + 1):
        parts.append(_cycle_panel(number, cycle))
    return Group(*parts)


def _cycle_panel(number: int, cycle: Cycle) -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for step, event in enumerate(cycle.steps, start=1):
        style = _STYLE.get(event.kind, "")
        table.add_row(f"{step}.", iso(event.at_ms), Text(describe(event), style=style))
    outcome = cycle.phase if cycle.done else f"in progress: {waiting_for(cycle)}"
    return Panel(table, title=f"cycle {number} · {cycle.id} · {outcome}", title_align="left")
