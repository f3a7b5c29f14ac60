"""``loopwright serve MODEL_REF`` and ``loopwright deploy deployment.yaml``: the model server.

Both build a :class:`~loopwright.serving.deployment.DeploymentSpec`, check in the parent that
its refs resolve (one clear error instead of a crash loop of workers), and run uvicorn with the
factory :func:`loopwright.serving.app.app_from_env`. Workers are separate processes, so the
settings travel as ``LOOPWRIGHT_*`` variables and the spec as YAML in
``LOOPWRIGHT_DEPLOYMENT_YAML``. Every accepted connection gets TCP_NODELAY (see
:data:`loopwright.serving.app.HTTP_PROTOCOL`). With ``--workers N`` (N > 1) the workers share a
temporary directory (``LOOPWRIGHT_METRICS_DIR``) where each leaves snapshots of its metrics, so
``/metrics`` answers for the whole server whichever worker is scraped
(:mod:`loopwright.serving.metrics`); the directory is removed when the server stops.

``deploy FILE --emit docker|kserve`` serves nothing: it writes a Dockerfile or a KServe
``InferenceService`` (:mod:`loopwright.serving.emit`) that run this same command in a container.
FILE may come from ``LOOPWRIGHT_DEPLOYMENT_FILE``, which is how the emitted image names its spec.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.serving.emit import DEPLOYMENT_FILE_ENV
from loopwright.serving.metrics import METRICS_DIR_ENV

__all__ = [
    "EmitTarget",
    "deploy",
    "emit_files",
    "install",
    "run_deployment",
    "serve",
    "shared_metrics_dir",
]

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


class EmitTarget(StrEnum):
    """What ``deploy --emit`` writes."""

    docker = "docker"
    kserve = "kserve"


def deploy(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="The deployment spec (YAML).", envvar=DEPLOYMENT_FILE_ENV, show_envvar=True
        ),
    ],
    host: Host = "127.0.0.1",
    port: Port = 8080,
    workers: Workers = 1,
    trusted: Trusted = False,
    emit: Annotated[
        list[EmitTarget] | None,
        typer.Option(
            "--emit",
            help="Write files instead of serving (repeatable): docker "
            "(Dockerfile), kserve (InferenceService + ConfigMap).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for --emit (default ./<name>-deploy).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="--emit into a non-empty directory.")
    ] = False,
    image: Annotated[
        str | None, typer.Option(help="Image the files name (default loopwright-<name>:<ver>).")
    ] = None,
    pip: Annotated[
        list[str] | None,
        typer.Option("--pip", help="Another pip requirement for the image (repeatable)."),
    ] = None,
    steering_token: Annotated[
        bool,
        typer.Option(
            "--steering-token",
            help="--emit: the server requires LOOPWRIGHT_SERVING_TOKEN on /canary/* "
            "(KServe: from the deployment's Secret).",
        ),
    ] = False,
) -> None:
    """Serve a deployment: champion, optional canary and shadows, as the YAML declares."""
    from loopwright.serving.deployment import DeploymentSpec

    spec = DeploymentSpec.from_file(file)
    if emit:
        targets = list(dict.fromkeys(t.value for t in emit))
        emit_files(ctx, spec, targets, out=out, force=force, image=image, workers=workers,
                   trusted=trusted, pip=pip or [], steering_token=steering_token)  # fmt: skip
        return
    flags = (("--out", out), ("--force", force), ("--image", image), ("--pip", pip),
             ("--steering-token", steering_token))  # fmt: skip
    for flag, value in flags:
        if value:
            raise InvalidInput(f"{flag} only applies with --emit", field=flag)
    run_deployment(_settings(ctx), spec, host, port, workers, trusted)


def emit_files(
    ctx: typer.Context,
    spec: Any,
    targets: list[str],
    *,
    out: Path | None,
    force: bool,
    image: str | None,
    workers: int,
    trusted: bool,
    pip: list[str],
    steering_token: bool = False,
) -> list[Path]:
    """Resolve every route (the files name their flavors and versions), then write the files."""
    from loopwright.client import Client
    from loopwright.serving import emit as emitter

    settings = _settings(ctx)
    client = Client(settings=settings)
    try:
        routes = emitter.resolve_routes(client.registry, spec)
        tracking_uri = client.tracking_uri
    finally:
        client.close()
    options = emitter.EmitOptions(
        image=image,
        tracking_uri=_absolute(tracking_uri),
        artifacts_uri=_absolute(settings.artifacts_uri),
        workers=workers,
        trusted=trusted,
        packages=tuple(pip),
        token=settings.token is not None,
        steering_token=steering_token,
    )
    files = emitter.emit(targets, spec, routes, options)
    directory = out or Path(f"{emitter.kubernetes_name(spec.name)}-deploy")
    written = emitter.write_files(files, directory, force=force)
    state = ctx.find_root().obj
    for path in written:
        state.out.print(f"wrote {path}")
    for note in emitter.emit_notes(spec, routes, options):
        state.err.print(f"[yellow]note:[/yellow] {note}")
    return written


def _absolute(uri: str | None) -> str | None:
    """A local store path as the container must see it (mounted at the same place)."""
    if not uri or "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj.settings  # type: ignore[no-any-return]


#: Thread pools of native libraries (OpenMP, OpenBLAS, MKL). A server sets each to one thread
#: per worker unless it is set already: with micro-batching the batches are small, a pool per
#: worker only fights the event loops for the cores, and ``--workers`` is the way to use more.
NATIVE_THREAD_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
    for name in NATIVE_THREAD_ENVS:  # one native thread per worker, unless the user chose
        os.environ.setdefault(name, "1")
    os.environ[DEPLOYMENT_ENV] = spec.to_yaml()
    os.environ[TRUSTED_ENV] = "1" if trusted else "0"
    with shared_metrics_dir(workers):
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=HTTP_PROTOCOL,
            log_level="info",
            access_log=False,
        )


@contextlib.contextmanager
def shared_metrics_dir(workers: int) -> Iterator[str | None]:
    """A fresh directory for the workers' metric snapshots while the server runs.

    One worker needs none (its memory is the whole server). A directory already named by
    ``LOOPWRIGHT_METRICS_DIR`` is used as is and left in place (one directory per server).
    """
    given = os.environ.get(METRICS_DIR_ENV)
    if given or workers <= 1:
        yield given or None
        return
    with tempfile.TemporaryDirectory(prefix="loopwright-metrics-",
                                     ignore_cleanup_errors=True) as directory:  # fmt: skip
        os.environ[METRICS_DIR_ENV] = directory
        try:
            yield directory
        finally:
            os.environ.pop(METRICS_DIR_ENV, None)


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
