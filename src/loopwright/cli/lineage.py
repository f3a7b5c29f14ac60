"""``loopwright lineage`` and the model card command, as plain functions plus a thin parser.

``lineage_command`` and ``card_command`` take explicit :class:`~loopwright.Settings` and return
text or data, so they are callable and testable without a terminal; ``lineage`` and ``card`` are
the typer commands over them (mounted by ``cli/main.py``: ``app.command("lineage")(lineage)``,
and ``card`` under ``loopwright models``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table

from loopwright.client import Client
from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.registry.entities import ModelVersion

__all__ = ["card", "card_command", "lineage", "lineage_command", "versions_table"]


def lineage_command(
    settings: Settings,
    uri: str | None = None,
    *,
    dataset: str | None = None,
    output: str = "tree",
    repo_url: str | None = None,
) -> RenderableType | list[dict[str, Any]]:
    """A version's lineage (``output``: ``tree`` renderable, ``json`` one graph dict,
    ``openlineage`` the run events), or with ``dataset`` the versions trained on that digest."""
    from loopwright.lineage import (
        openlineage_events,
        render_tree,
        version_lineage,
        versions_trained_on,
    )

    if output not in ("tree", "json", "openlineage"):
        raise InvalidInput(f"output {output!r} must be tree, json or openlineage", field="output")
    if (uri is None) == (dataset is None):
        raise InvalidInput("give either a model URI (churn/3) or --dataset DIGEST", field="uri")
    client = Client(settings=settings)
    try:
        if dataset is not None:
            found = versions_trained_on(client, dataset)
            return (
                [_version_record(v) for v in found] if output != "tree" else versions_table(found)
            )
        assert uri is not None
        if output == "openlineage":
            return openlineage_events(client, uri, repo_url=repo_url)
        graph = version_lineage(client, uri)
        return [graph.to_dict()] if output == "json" else render_tree(graph)
    finally:
        client.close()


def card_command(
    settings: Settings, uri: str, format: str = "md", out: str | Path | None = None
) -> str:
    """The model card of ``uri`` as text; with ``out`` it is also written to that file."""
    from loopwright.governance.model_card import model_card

    client = Client(settings=settings)
    try:
        text = model_card(client, uri, format)
    finally:
        client.close()
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text


def _version_record(mv: ModelVersion) -> dict[str, Any]:
    return {
        "model": mv.model,
        "version": mv.version,
        "uri": mv.uri,
        "run_id": mv.run_id,
        "digest": mv.digest,
        "created_at": mv.created_at,
        "aliases": list(mv.aliases),
    }


def versions_table(versions: list[ModelVersion]) -> Table:
    table = Table("version", "run", "model digest", "aliases", title="versions trained on it")
    for mv in versions:
        aliases = ", ".join(f"@{a}" for a in mv.aliases)
        table.add_row(mv.uri, mv.run_id or "—", mv.digest[:12], aliases or "—")
    return table


# -- parser ------------------------------------------------------------------------------------


def _settings_and_out(ctx: typer.Context) -> tuple[Settings, Console]:
    """The root callback's state (settings and stdout console), read without importing main."""
    state = ctx.find_root().obj
    settings = getattr(state, "settings", None) or Settings.from_env()
    return settings, getattr(state, "out", None) or Console(highlight=False)


def lineage(
    ctx: typer.Context,
    uri: Annotated[
        str | None,
        typer.Argument(help="NAME/VERSION, NAME/latest or NAME@ALIAS.", show_default=False),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="List the versions trained on this dataset digest.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    as_openlineage: Annotated[
        bool, typer.Option("--openlineage", help="OpenLineage run events, one JSON per line.")
    ] = False,
    repo_url: Annotated[
        str | None, typer.Option(help="Repository URL for OpenLineage's sourceCodeLocation.")
    ] = None,
) -> None:
    """Which data, code and environment produced a model version (or what a dataset trained)."""
    settings, out = _settings_and_out(ctx)
    output = "openlineage" if as_openlineage else ("json" if as_json else "tree")
    result = lineage_command(settings, uri, dataset=dataset, output=output, repo_url=repo_url)
    if isinstance(result, list):
        for record in result:
            out.out(json.dumps(record, sort_keys=True, default=str), highlight=False)
    else:
        out.print(result)


def card(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="NAME/VERSION, NAME/latest or NAME@ALIAS.")],
    format: Annotated[str, typer.Option("--format", "-f", help="md or html.")] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """An auditor's model card: data, metrics, evaluations, approvals and lineage."""
    settings, console = _settings_and_out(ctx)
    text = card_command(settings, uri, format, out)
    if out is None:
        console.out(text, highlight=False, end="")
    else:
        console.print(f"wrote the {format} model card of {uri} to {out}")
