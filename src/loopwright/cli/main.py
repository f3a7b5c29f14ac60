"""The ``loopwright`` command line: a thin parser over :mod:`loopwright.cli.commands`.

Each command parses its arguments, calls one function from ``commands`` and renders the result
(``render`` for tables, JSON lines with ``--json``). ``Settings`` are built once, in the root
callback, and reach the commands through the typer context.

Errors: a :class:`~loopwright.errors.LoopwrightError` is the user's (or the system's) problem and
is printed as one red ``error: ...`` line, exiting with :func:`loopwright.errors.exit_code` (2 for
bad input). Anything else is a bug: one line without ``--debug``, the full traceback with it.
Usage errors from the parser itself exit 2 as usual.

Global options (``--tracking-uri``, ``--artifacts-uri``, ``--user``, ``--debug``) may be given
before or after the command (``loopwright runs list --tracking-uri ./store``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from loopwright import errors
from loopwright.cli import access, commands, deployments, models, monitor, render
from loopwright.cli import lineage as lineage_cli
from loopwright.cli import loop as loop_cli
from loopwright.cli import serve as serve_cli
from loopwright.client import Client
from loopwright.config import Settings

#: Root options that may appear anywhere on the command line; True if the option takes a value.
GLOBAL_OPTIONS = {"--tracking-uri": True, "--artifacts-uri": True, "--user": True, "--debug": False}


@dataclass(frozen=True, slots=True)
class State:
    """What the root callback hands every command."""

    settings: Settings
    debug: bool
    out: Console
    err: Console


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move global options to the front so they may also follow the command name."""
    front: list[str] = []
    rest: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            rest += [token, *tokens]
            break
        name = token.split("=", 1)[0]
        if name not in GLOBAL_OPTIONS:
            rest.append(token)
        elif GLOBAL_OPTIONS[name] and "=" not in token:
            value = next(tokens, None)
            front += [token] if value is None else [token, value]
        else:
            front.append(token)
    return front + rest


class LoopwrightGroup(TyperGroup):
    """The root group: hoists global options and turns loopwright's errors into exit codes."""

    # typer.Context is the parser's context class; typer only annotates its vendored base.
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except errors.LoopwrightError as exc:
            _error_console().print(f"[red]error:[/red] {error_line(exc)}", markup=True)
            raise typer.Exit(errors.exit_code(exc)) from exc
        except Exception as exc:
            if hasattr(exc, "exit_code") or ctx.params.get("debug"):
                raise  # the parser's own exits and usage errors, or a bug asked to be shown
            _error_console().print(
                f"[red]error:[/red] unexpected {type(exc).__name__}: {exc} "
                "(a bug in loopwright; re-run with --debug for the traceback)"
            )
            raise typer.Exit(1) from exc


def error_line(exc: errors.LoopwrightError) -> str:
    """The message's first line, naming the offending field when the message does not already."""
    message = exc.message.strip().splitlines()[0] if exc.message.strip() else exc.code
    if exc.field and exc.field not in message:
        return f"{exc.field}: {message}"
    return message


def _error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out_console() -> Console:
    """Tables keep full run ids when piped: rich would otherwise squeeze them into 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


app = typer.Typer(
    cls=LoopwrightGroup,
    name="loopwright",
    help="Track experiments and runs, and operate the loopwright store and server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold database passwords
)
experiments_app = typer.Typer(help="Create and list experiments.", no_args_is_help=True)
runs_app = typer.Typer(help="Search, inspect, compare and close runs.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the SQL metadata store's schema.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
models.install(app)  # models, datasets, audit
access.install(app)  # users, tokens, roles
app.command("lineage")(lineage_cli.lineage)
serve_cli.install(app)  # serve, deploy
deployments.install(app)  # deployments status|promote|rollback
monitor.install(app)  # monitor, alerts
loop_cli.install(app)  # loop run|trigger|status


@app.callback()
def root(
    ctx: typer.Context,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="Directory, sqlite:///, postgresql+psycopg:// or http(s):// URI "
            "(env LOOPWRIGHT_TRACKING_URI; default ./.loopwright).",
            show_default=False,
        ),
    ] = None,
    artifacts_uri: Annotated[
        str | None,
        typer.Option(help="Where SQL stores keep artifacts (env LOOPWRIGHT_ARTIFACTS_URI)."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(help="Act as this user: the audit trail's name (env LOOPWRIGHT_USER)."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
) -> None:
    """Build the settings once; every command reads them from the context."""
    settings = Settings.from_env().with_overrides(
        tracking_uri=tracking_uri, artifacts_uri=artifacts_uri, user=user
    )
    ctx.obj = State(settings, debug, _out_console(), _error_console())


def _state(ctx: typer.Context) -> State:
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state


def _client(ctx: typer.Context) -> Client:
    """A client on the configured store, closed when the command finishes."""
    client = Client(settings=_state(ctx).settings)
    ctx.call_on_close(client.close)
    return client


def _print_json(ctx: typer.Context, record: dict[str, Any]) -> None:
    _state(ctx).out.out(json.dumps(record, sort_keys=True, default=str), highlight=False)


# -- experiments -------------------------------------------------------------------------------


@experiments_app.command("list")
def experiments_list(ctx: typer.Context) -> None:
    """List experiments, oldest first."""
    _state(ctx).out.print(render.experiments_table(commands.list_experiments(_client(ctx))))


@experiments_app.command("create")
def experiments_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A unique experiment name.")],
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
) -> None:
    """Create an experiment."""
    exp = commands.create_experiment(_client(ctx), name, tag or [])
    _state(ctx).out.print(f"created experiment {exp.name!r} ({exp.id})")


# -- runs --------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="Name or id (repeatable).")
    ] = None,
    filter: Annotated[
        str | None, typer.Option(help="e.g. \"metrics.auc > 0.8 AND params.model = 'gbm'\".")
    ] = None,
    order_by: Annotated[
        list[str] | None, typer.Option(help="e.g. 'metrics.auc DESC' (repeatable).")
    ] = None,
    max: Annotated[int, typer.Option("--max", min=1, help="Runs per page.")] = 50,
    page_token: Annotated[str | None, typer.Option(help="From the previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Search runs; newest first unless --order-by says otherwise."""
    state = _state(ctx)
    listing = commands.list_runs(
        _client(ctx), experiment or [], filter, order_by or [], max, page_token
    )
    if as_json:
        for run in listing.runs:
            name = listing.experiment_names.get(run.experiment_id)
            _print_json(ctx, commands.run_record(run, name, run.id in listing.stale))
        if listing.next_page_token:  # stderr, so stdout stays one run per line
            state.err.print(f"next page: --page-token {listing.next_page_token}")
        return
    state.out.print(render.runs_table(listing))
    if listing.next_page_token:
        state.out.print(f"next page: --page-token {listing.next_page_token}")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The full run id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Everything about one run: status, params, tags, metrics, inputs, artifacts."""
    detail = commands.show_run(_client(ctx), run_id)
    if as_json:
        _print_json(ctx, commands.detail_record(detail))
    else:
        _state(ctx).out.print(render.run_detail(detail))


@runs_app.command("compare")
def runs_compare(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Two or more full run ids.")],
) -> None:
    """Params and final metrics side by side; values that differ are highlighted."""
    comparison = commands.compare_runs(_client(ctx), run_ids)
    _state(ctx).out.print(render.comparison_table(comparison))


@runs_app.command("end")
def runs_end(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The full run id.")],
    status: Annotated[str, typer.Option(help="FINISHED, FAILED or KILLED.")] = "FINISHED",
) -> None:
    """Close a run whose process died without ending it."""
    run = commands.end_run(_client(ctx), run_id, status)
    _state(ctx).out.print(f"run {run.id} is now {run.status.value}")


@runs_app.command("resume")
def runs_resume(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="The full run id.")]
) -> None:
    """Mark a run RUNNING again (to log more to it)."""
    run = commands.resume_run(_client(ctx), run_id)
    _state(ctx).out.print(f"run {run.id} is now {run.status.value}")


@runs_app.command("history")
def runs_history(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The full run id.")],
    key: Annotated[str, typer.Argument(help="The metric key, e.g. val_loss.")],
) -> None:
    """A metric's series (step, value, time) with a sparkline."""
    points = commands.metric_history(_client(ctx), run_id, key)
    _state(ctx).out.print(render.history_view(key, points))


# -- database ----------------------------------------------------------------------------------

StoreUri = Annotated[
    str | None,
    typer.Option(help="Database URL or directory (default: the tracking URI).", show_default=False),
]


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    store_uri: StoreUri = None,
    revision: Annotated[str, typer.Option(help="Target schema revision.")] = "head",
) -> None:
    """Migrate the metadata store's schema (back the database up first); idempotent."""
    state = commands.db_upgrade(_state(ctx).settings, store_uri, revision)
    _state(ctx).out.print(render.schema_message(state, upgraded=True))


@db_app.command("current")
def db_current(ctx: typer.Context, store_uri: StoreUri = None) -> None:
    """Print the store's schema revision and whether it is the newest."""
    state = commands.db_current(_state(ctx).settings, store_uri)
    _state(ctx).out.print(render.schema_message(state, upgraded=False))


# -- processes ---------------------------------------------------------------------------------


@app.command("server")
def server(
    ctx: typer.Context,
    store_uri: StoreUri = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    auth: Annotated[
        bool, typer.Option("--auth", help="Require tokens and enforce roles (env LOOPWRIGHT_AUTH).")
    ] = False,
    scheduler: Annotated[
        Path | None,
        typer.Option(help="Run `monitor run` for every monitor config (*.yaml) in this directory."),
    ] = None,
    scheduler_interval: Annotated[
        float, typer.Option(min=0.05, help="Minutes between scheduler rounds.")
    ] = 15.0,
) -> None:
    """Serve the tracking API (artifacts go where the global --artifacts-uri says)."""
    settings = _state(ctx).settings.with_overrides(tracking_uri=store_uri, auth=auth or None)
    with monitor.scheduled(settings, scheduler, scheduler_interval):
        commands.serve(settings, host, port, workers)


@app.command("quickstart")
def quickstart(
    ctx: typer.Context,
    experiment: Annotated[str, typer.Option(help="Experiment to track into.")] = "quickstart",
) -> None:
    """Train two small models on simulated data, tracked, and show how to look at them."""
    commands.quickstart(_state(ctx).settings, experiment)


@app.command("demo")
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its store (recreated each run).")
    ] = Path("loopwright-demo"),
    days: Annotated[int, typer.Option(min=2, max=60, help="Days of traffic to replay.")] = 12,
    per_day: Annotated[int, typer.Option(min=100, help="Requests (applicants) per day.")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 7,
) -> None:
    """The whole loop on a simulated credit-risk book: train, gate, approve, serve, drift,
    alert, retrain, shadow, promote. Embedded (SQLite + local files), a couple of minutes."""
    from loopwright.demo.loop import run_demo

    run_demo(directory, days=days, per_day=per_day, seed=seed)


def main() -> None:
    """Console-script entry point."""
    app()
