"""The SDK facade: ``Client(uri)`` wires tracking to the SQL/fs backends or to a server over REST.

The URI decides, and nothing else changes for the caller:

==============================  ============================================================
``None``                        ``./.loopwright`` (SQLite + a local artifact directory)
a directory (or ``file://``)    ``<dir>/loopwright.db`` and ``<dir>/artifacts``
``sqlite:///path.db``           that file; artifacts beside it unless ``artifacts_uri`` is set
``postgresql+psycopg://...``    PostgreSQL; artifacts at ``artifacts_uri`` (default local dir)
``http(s)://host:port``         a loopwright server (metadata and artifacts through it)
==============================  ============================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopwright.config import Settings, default_home
from loopwright.errors import InvalidInput, NotFound
from loopwright.tracking import validation as v
from loopwright.tracking.entities import ArtifactRef, Experiment, Metric, Page, Run, RunStatus
from loopwright.tracking.store import ArtifactStore, TrackingStore

if TYPE_CHECKING:
    import httpx

    from loopwright.monitoring.service import MonitorService
    from loopwright.registry.service import RegistryService
    from loopwright.tracking.run import ActiveRun

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "default"
_SQL_SCHEMES = ("sqlite:", "postgresql", "postgres:")


def resolve_uris(tracking_uri: str | None, artifacts_uri: str | None) -> tuple[str, str | None]:
    """Turn what a user typed into (metadata URL, artifacts URI); REST needs no artifacts URI."""
    uri = tracking_uri or str(default_home())
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), None
    if uri.startswith(_SQL_SCHEMES):
        if artifacts_uri:
            return uri, artifacts_uri
        if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
            return uri, str(Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts")
        return uri, str(default_home() / "artifacts")
    if "://" in uri and not uri.startswith("file://"):
        raise InvalidInput(
            f"tracking URI {uri!r} is not a directory, sqlite:///, postgresql+psycopg:// or "
            "http(s):// URI",
            field="tracking_uri",
        )
    home = Path(uri.removeprefix("file://")).expanduser().resolve()
    return f"sqlite:///{home / 'loopwright.db'}", artifacts_uri or str(home / "artifacts")


def open_stores(
    settings: Settings, *, http_client: httpx.Client | None = None
) -> tuple[TrackingStore, ArtifactStore]:
    """Open (and for SQL, initialise or schema-check) the stores ``settings`` points at."""
    db_uri, art_uri = resolve_uris(settings.tracking_uri, settings.artifacts_uri)
    if art_uri is None:
        from loopwright.backends.rest.store import (
            RestArtifactStore,
            RestTrackingStore,
            auth_headers,
        )

        headers, timeout = auth_headers(settings), settings.http_timeout_s
        return (
            RestTrackingStore(db_uri, client=http_client, timeout=timeout, headers=headers),
            RestArtifactStore(db_uri, client=http_client, timeout=timeout, headers=headers),
        )
    from loopwright.backends.fs.artifacts import FsArtifactStore
    from loopwright.backends.sql.store import SqlTrackingStore

    return SqlTrackingStore(db_uri).initialize(), FsArtifactStore(art_uri)


class Client:
    """Everything tracking can do, against whichever store the URI names.

    Stores open lazily on first use, so building a ``Client`` never touches the network or disk.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        artifacts_uri: str | None = None,
        settings: Settings | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        base = settings or Settings.from_env()
        self.settings = base.with_overrides(tracking_uri=uri, artifacts_uri=artifacts_uri)
        self._http_client = http_client
        self._stores: tuple[TrackingStore, ArtifactStore] | None = None
        self._registry: Any = None
        self._experiment_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Client({self.tracking_uri!r})"

    @property
    def tracking_uri(self) -> str:
        """The URI as the user gave it (or the embedded default it stands for)."""
        return self.settings.tracking_uri or str(default_home())

    @property
    def tracking(self) -> TrackingStore:
        """The tracking store; embedded, its changes are attributed to ``settings.user``."""
        store = self._open()[0]
        if self.settings.user and self._registry_is_local():
            return _ActingAs(store, self.settings.user)  # type: ignore[return-value]
        return store

    def _registry_is_local(self) -> bool:
        return not (self.settings.tracking_uri or "").startswith(("http://", "https://"))

    @property
    def artifacts(self) -> ArtifactStore:
        return self._open()[1]

    def _open(self) -> tuple[TrackingStore, ArtifactStore]:
        if self._stores is None:
            self._stores = open_stores(self.settings, http_client=self._http_client)
        return self._stores

    @property
    def registry(self) -> RegistryService:
        """The model registry: versions, aliases, gates, approvals (embedded or remote alike)."""
        if self._registry is None:
            tracking, artifacts = self._open()
            if self.settings.tracking_uri and self.settings.tracking_uri.startswith("http"):
                from loopwright.backends.rest.registry import RestRegistry

                user = self.settings.user
                self._registry = RestRegistry(tracking, artifacts, user=user)  # type: ignore[arg-type]
            else:
                from loopwright.backends.sql.monitoring import SqlMonitorStore
                from loopwright.backends.sql.registry import SqlRegistryStore
                from loopwright.registry.service import RegistryService

                store = SqlRegistryStore(tracking)  # type: ignore[arg-type]
                profiles = SqlMonitorStore(tracking)  # type: ignore[arg-type]
                service = RegistryService(store, tracking, artifacts, profiles=profiles)
                self._registry = _ActingAs(service, self.settings.user)
        return self._registry  # type: ignore[no-any-return]

    @property
    def monitor(self) -> MonitorService:
        """Monitoring of deployments (windows, drift, performance, alerts); embedded stores only."""
        if not self._registry_is_local():
            raise InvalidInput(
                "monitoring runs against the metadata store directly: use a directory, sqlite:/// "
                "or postgresql+psycopg:// URI (the server exposes the results read-only under "
                "/api/v1/monitoring)",
                field="tracking_uri",
            )
        from loopwright.monitoring.service import MonitorService

        return MonitorService(self)

    def close(self) -> None:
        if self._stores is not None:
            self._stores[0].close()
            self._stores = None
            self._registry = None

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> Experiment:
        return self.tracking.create_experiment(name, tags)

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self.tracking.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment:
        return self.tracking.get_experiment_by_name(name)

    def list_experiments(self) -> list[Experiment]:
        return self.tracking.list_experiments()

    def get_or_create_experiment(self, name: str) -> Experiment:
        from loopwright.errors import AlreadyExists

        try:
            return self.tracking.get_experiment_by_name(name)
        except NotFound:
            pass
        try:
            return self.tracking.create_experiment(name)
        except AlreadyExists:  # another process created it between our two calls
            return self.tracking.get_experiment_by_name(name)

    # -- runs --------------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str | None = None,
        *,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        capture_environment: bool | None = None,
        monitor_resources: bool = True,
    ) -> ActiveRun:
        """Create (or with ``run_id``, resume) a run and return its handle; use it as a ``with``."""
        from loopwright.tracking.run import ActiveRun

        return ActiveRun.start(
            self,
            experiment=experiment,
            run_name=run_name,
            tags=tags,
            parent_run_id=parent_run_id,
            run_id=run_id,
            capture_environment=(
                self.settings.capture_environment
                if capture_environment is None
                else capture_environment
            ),
            monitor_resources=monitor_resources,
        )

    def get_run(self, run_id: str) -> Run:
        return self.tracking.get_run(run_id)

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix (4+ characters), as ``git`` does for commits."""
        v.identifier("run_id", prefix)
        if len(prefix) == 32:
            return prefix
        if len(prefix) < 4:
            raise InvalidInput("run_id prefix must have at least 4 characters", field="run_id")
        page = self.tracking.search_runs(None, f"id LIKE '{prefix}%'", None, 3)
        ids = [r.id for r in page.items]
        if not ids:
            raise NotFound(f"no run id starts with {prefix!r}", field="run_id")
        if len(ids) > 1:
            raise InvalidInput(
                f"run id prefix {prefix!r} is ambiguous: {', '.join(ids)}", field="run_id"
            )
        return ids[0]

    def end_run(self, run_id: str, status: RunStatus | str = RunStatus.FINISHED) -> Run:
        return self.tracking.end_run(run_id, v.run_status("status", status))

    def resume_run(self, run_id: str) -> Run:
        return self.tracking.resume_run(run_id)

    def search_runs(
        self,
        experiments: Sequence[str] | str | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page:
        """Search runs; ``experiments`` are names or ids, ``filter`` e.g. ``metrics.auc > 0.8``."""
        ids = [self._experiment_id(e) for e in _as_list(experiments)]
        return self.tracking.search_runs(
            ids or None, filter, _as_list(order_by) or None, max_results, page_token
        )

    def _experiment_id(self, name_or_id: str) -> str:
        """Names are unique and ids immutable: a resolved pair is cached for the client's life."""
        if name_or_id in self._experiment_ids:
            return self._experiment_ids[name_or_id]
        try:
            found = self.tracking.get_experiment_by_name(name_or_id).id
        except (NotFound, InvalidInput):
            found = self.tracking.get_experiment(name_or_id).id
        self._experiment_ids[name_or_id] = found
        return found

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        return self.tracking.get_metric_history(run_id, key)

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), **kw: Any) -> None:
        self.tracking.log_batch(run_id, metrics, **kw)

    # -- artifacts ---------------------------------------------------------------------------

    def list_artifacts(self, run_id: str, prefix: str = "") -> list[ArtifactRef]:
        return self.tracking.list_artifacts(run_id, prefix)

    def _artifact(self, run_id: str, path: str) -> ArtifactRef:
        for ref in self.tracking.list_artifacts(run_id, path):
            if ref.path == path:
                return ref
        raise NotFound(f"run {run_id} has no artifact {path!r}", field="path")

    def download_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact, verified against its digest."""
        return self.artifacts.get_bytes(self._artifact(run_id, path).digest)

    def download_artifacts(
        self, run_id: str, dest: str | os.PathLike[str], prefix: str = ""
    ) -> Path:
        """Copy a run's artifacts (or those under ``prefix``) into ``dest``, keeping their paths."""
        root = Path(dest)
        for ref in self.tracking.list_artifacts(run_id, prefix):
            target = root / ref.path
            target.parent.mkdir(parents=True, exist_ok=True)
            self.artifacts.download(ref.digest, str(target))
        return root


class _ActingAs:
    """Runs every call of the wrapped service as ``user`` (embedded: the declared user)."""

    def __init__(self, target: Any, user: str | None) -> None:
        self._target = target
        self._user = user

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or not self._user:
            return attr
        from loopwright.governance.audit import acting_as

        def call(*args: Any, **kwargs: Any) -> Any:
            with acting_as(self._user):
                return attr(*args, **kwargs)

        return call


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
