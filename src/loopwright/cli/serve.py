"""``loopwright serve MODEL_REF`` and ``loopwright deploy deployment.yaml``: the model server.

Both build a :class:`~loopwright.serving.deployment.DeploymentSpec`, check in the parent that
its refs resolve (one clear error instead of a crash loop of workers), and run uvicorn with the
factory :func:`loopwright.serving.app.app_from_env`. Workers are separate processes, so the
settings travel as ``LOOPWRIGHT_*`` variables and the spec as YAML in
``LOOPWRIGHT_DEPLOYMENT_YAML``. Every accepted connection gets TCP_NODELAY (see
:data:`loopwright.serving.app.HTTP_PROTOCOL`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from loopwright.config import Settings
from loopwright.errors import InvalidInput

__all__ = ["deploy", "install", "run_deployment", "serve"]

APP_FACTORY = "loopwright.serving.app:app_from_env"

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(min=1, max=65535)]
Workers = Annotated[int, typer.Option(min=1, help="Worker processes.")]
Trusted = Annotated[
    bool, typer.Option("--trusted", help="Allow loading pickled models (bytes you trust).")
]


def install(app: typer.Typer) -> None:
    """Mount ``serve`` and ``deploy`` on the root app."""
    app.command("serve")(serve)
    app.command("deploy")(deploy)


def serve(
    ctx: typer.Context,
    model_ref: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or NAME/latest.")],
    host: Host = "127.0.0.1",
    port: Port = 8080,
    workers: Workers = 1,
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Rows per model call.")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(min=0, help="How long a request waits for others.")
    ] = None,
    log_uri: Annotated[
        str | None, typer.Option(help="Prediction log directory or fsspec URL.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Deployment name (default: the model).")] = None,
    trusted: Trusted = False,
) -> None:
    """Serve one model version (Open Inference Protocol, /predict, /metrics)."""
    from loopwright.serving.deployment import DeploymentSpec

    data: dict[str, Any] = DeploymentSpec.from_uri(model_ref, name).model_dump(mode="json")
    if max_batch_size is not None:
        data["batching"]["max_batch_size"] = max_batch_size
    if max_wait_ms is not None:
        data["batching"]["max_wait_ms"] = max_wait_ms
    if log_uri is not None:
        data["log"]["uri"] = log_uri
    spec = DeploymentSpec.from_dict(data)
    run_deployment(_settings(ctx), spec, host, port, workers, trusted)


def deploy(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The deployment spec (YAML).")],
    host: Host = "127.0.0.1",
    port: Port = 8080,
    workers: Workers = 1,
    trusted: Trusted = False,
) -> None:
    """Serve a deployment: champion, optional canary and shadows, as the YAML declares."""
    from loopwright.serving.deployment import DeploymentSpec

    spec = DeploymentSpec.from_file(file)
    run_deployment(_settings(ctx), spec, host, port, workers, trusted)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj.settings  # type: ignore[no-any-return]


def run_deployment(
    settings: Settings,
    spec: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    trusted: bool = False,
) -> None:
    """Check the spec's refs resolve, then run uvicorn until it stops (SIGINT / SIGTERM)."""
    import uvicorn

    from loopwright.serving.app import DEPLOYMENT_ENV, HTTP_PROTOCOL, TRUSTED_ENV

    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}", field="workers")
    _check_refs(settings, spec)
    from loopwright.server.main import settings_to_env

    os.environ.update(settings_to_env(settings))
    os.environ[DEPLOYMENT_ENV] = spec.to_yaml()
    os.environ[TRUSTED_ENV] = "1" if trusted else "0"
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HTTP_PROTOCOL,
        log_level="info",
    )


def _check_refs(settings: Settings, spec: Any) -> None:
    """Every route resolves to a version (NotFound names the one that does not)."""
    from loopwright.client import Client

    client = Client(settings=settings)
    try:
        refs = [spec.champion_ref, *([spec.canary_ref] if spec.canary_ref else [])]
        for ref in [*refs, *spec.shadow_refs]:
            client.registry.resolve(ref)
    finally:
        client.close()
