"""``loopwright models``, ``datasets`` and ``audit``: the registry and its governance on a terminal.

Three layers, as for the rest of the CLI: plain typed operations over a registry (embedded
:class:`~loopwright.registry.service.RegistryService` or remote
:class:`~loopwright.backends.rest.registry.RestRegistry` — the same calls), pure functions that
render their results, and a thin Typer layer. Loopwright's errors reach the root group, which
prints one line and exits 2; ``audit verify`` alone exits 1, because a broken chain is a finding
about the system, not a mistake in the command.

The acting user is the global ``--user`` (or ``LOOPWRIGHT_USER``), so one terminal can request
a change as ``alice`` and approve it as ``bob``; against a server with auth on the token decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from loopwright.backends.rest.wire import parse_anchor
from loopwright.cli.render import MISSING, number, short, timestamp
from loopwright.client import Client
from loopwright.errors import InvalidInput
from loopwright.governance.audit import AuditEvent, VerifyResult, acting_as
from loopwright.registry.entities import (
    ApprovalRequest,
    Evaluation,
    ModelRef,
    ModelVersion,
    RegisteredModel,
)

#: Audit events fetched per request when a command walks the whole log.
AUDIT_PAGE = 1000
#: Version metrics shown in ``models show`` (the rest are in ``--json`` / the API).
SHOWN_METRICS = 4
_TABULAR = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}

# -- operations --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelDetail:
    """What ``models show`` reports: the model and every version, oldest first."""

    model: RegisteredModel
    versions: list[ModelVersion]


def key_value(text: str, field: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(key, value)``; the value may itself contain ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInput(f"{field} must look like KEY=VALUE, got {text!r}", field=field)
    return key, value


def list_models(registry: Any, tag: str | None = None, alias: str | None = None) -> list[Any]:
    return registry.search_models(tag=key_value(tag, "tag") if tag else None, alias=alias)


def show_model(registry: Any, name: str) -> ModelDetail:
    return ModelDetail(registry.get_model(name), registry.search_versions(name))


def read_table(path: Path) -> Any:
    """A local ``.parquet`` or ``.csv`` file as a DataFrame."""
    import pandas as pd

    kind = _TABULAR.get(path.suffix.lower())
    if kind is None:
        raise InvalidInput(f"{path} is not a .parquet or .csv file", field="data")
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist", field="data")
    return pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path)


def register_dataset(registry: Any, name: str, path: Path) -> str:
    """Keep a local file's content as a named dataset; returns its digest."""
    return str(registry.register_dataset(read_table(path), name, source=str(path.resolve())))


def evaluate(registry: Any, uri: str, data: str | None) -> Evaluation:
    """``data`` is a registered dataset's name or digest, or a local file (registered first,
    named after the file) so the evaluation names data that can be found again."""
    ModelRef.parse(uri)  # a malformed URI fails before any upload
    if data and Path(data).suffix.lower() in _TABULAR:
        path = Path(data)
        register_dataset(registry, path.stem, path)
        data = path.stem
    return registry.evaluate(uri, data)  # type: ignore[no-any-return]


def set_policy(registry: Any, name: str, path: Path, reason: str | None = None) -> Any:
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist", field="file")
    return registry.set_policy(name, path.read_text(encoding="utf-8"), reason)


def policy_yaml(registry: Any, name: str) -> str | None:
    policy = registry.policy(name)
    return None if policy is None else str(policy.to_yaml())


def audit_log(registry: Any) -> Any:
    """Where the audit log is read: the REST registry serves it, the embedded one's store has it."""
    return registry if hasattr(registry, "verify_audit") else registry.store


def audit_events(
    registry: Any, target_type: str | None = None, target_id: str | None = None
) -> Iterator[AuditEvent]:
    """Every (matching) event in sequence order, fetched page by page."""
    log, after = audit_log(registry), 0
    while True:
        page = log.audit_events(after, AUDIT_PAGE, target_type, target_id)
        yield from page
        if len(page) < AUDIT_PAGE:
            return
        after = page[-1].seq


def verify_audit(registry: Any, anchor: str | None = None) -> VerifyResult:
    parsed = parse_anchor(anchor) if anchor else None
    return audit_log(registry).verify_audit(parsed)  # type: ignore[no-any-return]


# -- rendering ---------------------------------------------------------------------------------


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items())) or MISSING


def models_table(models: list[RegisteredModel]) -> Table:
    table = Table("name", "latest", "aliases", "tags", "policy", "updated", title="models")
    for m in models:
        table.add_row(
            m.name,
            str(m.latest_version) if m.latest_version else MISSING,
            _pairs(m.aliases),
            _pairs(m.tags),
            "yes" if m.policy else "no",
            timestamp(m.updated_at, "%Y-%m-%d %H:%M"),
        )
    return table


def model_detail(detail: ModelDetail) -> RenderableType:
    m = detail.model
    head = Table(title=f"model {m.name}", title_justify="left", show_header=False, box=None)
    head.add_column(style="bold")
    head.add_column()
    rows = {
        "description": m.description or MISSING,
        "tags": _pairs(m.tags),
        "aliases": _pairs(m.aliases),
        "policy": "yes" if m.policy else "no",
        "created": f"{timestamp(m.created_at)} by {m.created_by or MISSING}",
    }
    for key, value in rows.items():
        head.add_row(key, value)
    return Group(head, versions_table(detail.versions))


def versions_table(versions: list[ModelVersion]) -> RenderableType:
    if not versions:
        return Text("versions: none", style="dim")
    table = Table("version", "aliases", "flavor", "run", "metrics", "created", "by")
    table.title, table.title_justify = "versions", "left"
    for v in versions:
        metrics = dict(sorted(v.metrics.items())[:SHOWN_METRICS])
        table.add_row(
            str(v.version),
            Text(", ".join(v.aliases) or MISSING, style="bold green" if v.aliases else ""),
            v.flavor,
            short(v.run_id, 8),
            ", ".join(f"{k}={number(x)}" for k, x in metrics.items()) or MISSING,
            timestamp(v.created_at, "%Y-%m-%d %H:%M"),
            v.created_by or MISSING,
        )
    return table


def evaluation_view(ev: Evaluation) -> RenderableType:
    """Each check with what was measured, the bound it had to meet, and the verdict."""
    table = Table("check", "measured", "bound", "result", "detail", title=f"evaluation {ev.id}")
    table.title_justify = "left"
    for check in ev.report.get("checks") or []:
        ok = bool(check.get("passed"))
        table.add_row(
            str(check.get("name", MISSING)),
            _cell(check.get("measured")),
            _cell(check.get("bound")),
            Text("pass" if ok else "FAIL", style="green" if ok else "bold red"),
            str(check.get("detail") or ""),
        )
    champion = f" against champion v{ev.champion_version}" if ev.champion_version else ""
    where = f"{ev.model}/{ev.version} on {ev.dataset_name}{champion}"
    verdict = (Text(f"PASSED: {where}", style="bold green") if ev.passed
               else Text(f"FAILED: {where}", style="bold red"))  # fmt: skip
    return Group(table, verdict)


def _cell(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float | int) and not isinstance(value, bool):
        return number(float(value))
    return str(value)


def requests_table(requests: list[ApprovalRequest]) -> Table:
    table = Table("id", "model", "alias", "version", "status", "approvals", "requested by",
                  "requested", "comment", title="approval requests")  # fmt: skip
    for r in requests:
        table.add_row(r.id, r.model, r.alias, str(r.version), r.status.value,
                      f"{r.approvals}/{r.required}", r.requested_by,
                      timestamp(r.requested_at, "%Y-%m-%d %H:%M"), r.comment)  # fmt: skip
    return table


def request_line(r: ApprovalRequest) -> str:
    return (f"request {r.id}: {r.model}@{r.alias} -> version {r.version} is {r.status.value} "
            f"({r.approvals}/{r.required} approvals)")  # fmt: skip


def audit_table(events: list[AuditEvent]) -> Table:
    table = Table("seq", "time", "actor", "action", "target", "reason", title="audit log")
    for e in events:
        table.add_row(str(e.seq), timestamp(e.ts), e.actor, e.action,
                      f"{e.target_type}:{e.target_id}", e.reason or "")  # fmt: skip
    return table


# -- the parser --------------------------------------------------------------------------------

models_app = typer.Typer(help="Register, promote and govern model versions.", no_args_is_help=True)
alias_app = typer.Typer(help="Move and remove aliases such as champion.", no_args_is_help=True)
policy_app = typer.Typer(help="A model's gate policy (YAML).", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets kept with their content.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
models_app.add_typer(alias_app, name="alias")
models_app.add_typer(policy_app, name="policy")


def install(app: typer.Typer) -> None:
    """Mount ``models``, ``datasets`` and ``audit`` on the root app."""
    from loopwright.cli import lineage as lineage_cli

    models_app.command("card")(lineage_cli.card)
    app.add_typer(models_app, name="models")
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(audit_app, name="audit")


def _client(ctx: typer.Context) -> Client:
    """A client on the configured store, acting as ``--user`` until the command ends."""
    settings = ctx.find_root().obj.settings
    client = Client(settings=settings)
    ctx.call_on_close(client.close)
    ctx.with_resource(acting_as(settings.user))
    return client


def _registry(ctx: typer.Context) -> Any:
    return _client(ctx).registry


def _print(ctx: typer.Context, renderable: RenderableType) -> None:
    ctx.find_root().obj.out.print(renderable)


Name = Annotated[str, typer.Argument(help="The registered model's name.")]
Version = Annotated[int, typer.Argument(help="The version number.", min=1)]
Reason = Annotated[str | None, typer.Option(help="Why (kept in the audit log).")]


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option(help="Only models with this KEY=VALUE tag.")] = None,
    alias: Annotated[str | None, typer.Option(help="Only models that have this alias.")] = None,
) -> None:
    """Registered models, by name."""
    _print(ctx, models_table(list_models(_registry(ctx), tag, alias)))


@models_app.command("create")
def models_create(
    ctx: typer.Context,
    name: Name,
    description: Annotated[str, typer.Option(help="What the model is for.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
) -> None:
    """Register a model name (versions are added with `models register`)."""
    tags = dict(key_value(t, "tag") for t in tag or [])
    model = _registry(ctx).create_model(name, description, tags or None)
    _print(ctx, f"created model {model.name!r}")


@models_app.command("show")
def models_show(ctx: typer.Context, name: Name) -> None:
    """A model and its versions, with aliases, metrics, flavor and run."""
    _print(ctx, model_detail(show_model(_registry(ctx), name)))


@models_app.command("register")
def models_register(
    ctx: typer.Context,
    name: Name,
    run: Annotated[str, typer.Option("--run", help="The run that logged the model (or a prefix).")],
    path: Annotated[str, typer.Option(help="Where the run logged it.")] = "model",
    description: Annotated[str, typer.Option(help="Notes on this version.")] = "",
) -> None:
    """Add a version from a model a run logged (creates the model if new)."""
    client = _client(ctx)
    mv = client.registry.register(name, client.resolve_run_id(run), path, description=description)
    _print(ctx, f"registered {mv.uri} ({mv.flavor}, from run {mv.run_id})")


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    name: Name,
    alias: Annotated[str, typer.Argument(help="e.g. champion, challenger.")],
    version: Version,
    reason: Reason = None,
    override: Annotated[
        str | None, typer.Option(help="Admins: move past failed gates; the justification.")
    ] = None,
) -> None:
    """Point an alias at a version (protected aliases need passed gates and approvals)."""
    mv = _registry(ctx).set_alias(name, alias, version, reason=reason, override=override)
    _print(ctx, f"{name}@{alias} -> version {mv.version}")


@alias_app.command("delete")
def alias_delete(
    ctx: typer.Context,
    name: Name,
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
) -> None:
    """Remove an alias."""
    _registry(ctx).delete_alias(name, alias, reason)
    _print(ctx, f"removed {name}@{alias}")


@models_app.command("evaluate")
def models_evaluate(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="NAME/VERSION, NAME/latest or NAME@ALIAS.")],
    data: Annotated[
        str | None,
        typer.Option(help="A registered dataset, or a .parquet/.csv file (default: the policy's)."),
    ] = None,
) -> None:
    """Run the gate policy's checks; prints each and PASSED/FAILED (exit 0 either way)."""
    _print(ctx, evaluation_view(evaluate(_registry(ctx), uri, data)))


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    name: Name,
    file: Annotated[Path, typer.Argument(help="The policy as YAML.")],
    reason: Reason = None,
) -> None:
    """Attach a gate policy (admins)."""
    set_policy(_registry(ctx), name, file, reason)
    _print(ctx, f"policy of {name!r} set from {file}")


@policy_app.command("show")
def policy_show(ctx: typer.Context, name: Name) -> None:
    """Print a model's gate policy as YAML."""
    text = policy_yaml(_registry(ctx), name)
    _print(ctx, text if text is not None else Text(f"{name!r} has no gate policy", style="dim"))


@models_app.command("request")
def models_request(
    ctx: typer.Context,
    name: Name,
    alias: Annotated[str, typer.Argument(help="The protected alias, e.g. champion.")],
    version: Version,
    comment: Annotated[str, typer.Option(help="Why this version.")] = "",
) -> None:
    """Ask for approval to move a protected alias."""
    _print(ctx, request_line(_registry(ctx).request_alias(name, alias, version, comment)))


@models_app.command("approve")
def models_approve(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    comment: Annotated[str, typer.Option(help="What you checked.")] = "",
) -> None:
    """Approve someone else's request."""
    _print(ctx, request_line(_registry(ctx).decide(request_id, "APPROVE", comment)))


@models_app.command("reject")
def models_reject(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    comment: Annotated[str, typer.Option(help="Why not.")],
) -> None:
    """Reject someone else's request."""
    _print(ctx, request_line(_registry(ctx).decide(request_id, "REJECT", comment)))


@models_app.command("requests")
def models_requests(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's requests.")] = None,
    status: Annotated[str | None, typer.Option(help="PENDING, APPROVED, REJECTED, ...")] = None,
) -> None:
    """Approval requests, oldest first."""
    found = _registry(ctx).list_requests(model, status.upper() if status else None)
    _print(ctx, requests_table(found))


@datasets_app.command("register")
def datasets_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The dataset's name, e.g. holdout.")],
    file: Annotated[Path, typer.Argument(help="A .parquet or .csv file.")],
) -> None:
    """Keep a dataset's content so evaluations can name it."""
    digest = register_dataset(_registry(ctx), name, file)
    _print(ctx, f"registered dataset {name!r} ({digest})")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None, typer.Option(help="SEQ:HASH from `audit anchor`, kept elsewhere.")
    ] = None,
) -> None:
    """Check the hash chain; exit 1 naming the first bad event if it does not hold."""
    result = verify_audit(_registry(ctx), anchor)
    if not result.ok:
        state = ctx.find_root().obj
        state.err.print(f"[red]audit log broken[/red] at event {result.first_bad_seq}: "
                        f"{result.problem}")  # fmt: skip
        raise typer.Exit(1)
    _print(ctx, f"audit log ok: {result.checked} events, head {result.head_seq}:{result.head_hash}")


@audit_app.command("anchor")
def audit_anchor(ctx: typer.Context) -> None:
    """Print the head as SEQ:HASH, to keep somewhere the store's admins cannot edit."""
    result = verify_audit(_registry(ctx))
    if not result.ok:
        raise InvalidInput(f"the audit log is broken at event {result.first_bad_seq} "
                           f"({result.problem}); no anchor printed", field="audit")  # fmt: skip
    ctx.find_root().obj.out.out(f"{result.head_seq}:{result.head_hash}", highlight=False)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="A .jsonl file (default: stdout).")] = None,
) -> None:
    """Every event as one JSON object per line."""
    lines = (json.dumps(e.to_dict(), sort_keys=True) for e in audit_events(_registry(ctx)))
    if out is None:
        for line in lines:
            ctx.find_root().obj.out.out(line, highlight=False)
        return
    with out.open("w", encoding="utf-8") as f:
        count = sum(f.write(line + "\n") > 0 for line in lines)
    ctx.find_root().obj.err.print(f"wrote {count} events to {out}")


@audit_app.command("log")
def audit_log_command(
    ctx: typer.Context,
    target_type: Annotated[str | None, typer.Option(help="model, model_version, alias...")] = None,
    target_id: Annotated[str | None, typer.Option(help="e.g. churn/3 or churn@champion.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest N events.")] = 50,
) -> None:
    """Recent audit events: who changed what, when and why."""
    events = list(audit_events(_registry(ctx), target_type, target_id))[-limit:]
    _print(ctx, audit_table(events))
