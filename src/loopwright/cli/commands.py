"""What each ``loopwright`` command does, as plain typed functions over explicit configuration.

Nothing here parses arguments or prints: every function takes a :class:`~loopwright.Client` or
:class:`~loopwright.Settings` and returns data, so the same operations can be called from Python,
tested without a terminal, and rendered however the caller likes (``main.py`` renders tables or
JSON). Bad input raises :class:`~loopwright.errors.InvalidInput` naming the field, like the rest of
loopwright, and the parser turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwright.client import Client, resolve_uris
from loopwright.config import Settings
from loopwright.errors import InvalidInput, NotFound, StoreUnavailable
from loopwright.tracking.entities import (
    ArtifactRef,
    Experiment,
    Metric,
    Run,
    RunStatus,
    encode_float,
)

#: A RUNNING run whose last heartbeat is older than this probably belongs to a dead process.
STALE_AFTER_MS = 5 * 60 * 1000
#: How many metric columns ``runs list`` shows.
KEY_METRICS = 4
#: Tags written by loopwright itself (environment capture, model flavour, ...).
SYSTEM_TAG_PREFIX = "lw."
_ENDING = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
_METRIC_REF = re.compile(r"metrics?\.(`[^`]+`|\"[^\"]+\"|[^\s=!<>(),]+)", re.IGNORECASE)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunListing:
    """One page of runs plus what a table needs to show them without more queries."""

    runs: list[Run]
    experiment_names: dict[str, str]
    metric_keys: list[str]
    stale: frozenset[str]
    next_page_token: str | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class RunDetail:
    """Everything ``runs show`` reports about one run."""

    run: Run
    experiment_name: str
    artifacts: list[ArtifactRef]
    stale: bool
    now_ms: int


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One param or metric across the compared runs (``None`` where a run lacks it)."""

    key: str
    values: list[str | float | None]

    @property
    def differs(self) -> bool:
        return len({repr(x) for x in self.values}) > 1


@dataclass(frozen=True, slots=True)
class Comparison:
    runs: list[Run]
    params: list[CompareRow]
    metrics: list[CompareRow]


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a SQL store's schema is (``before`` is only set by an upgrade)."""

    url: str
    current: str | None
    head: str
    before: str | None = None

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def changed(self) -> bool:
        return self.before != self.current


# -- argument values ---------------------------------------------------------------------------


def parse_tags(items: Sequence[str], field: str = "tag") -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a value may itself contain ``=``."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{field} {item!r} must look like KEY=VALUE", field=field)
        tags[key.strip()] = value
    return tags


def parse_end_status(value: str) -> RunStatus:
    """The status a run is ended with: FINISHED, FAILED or KILLED (any case)."""
    try:
        status = RunStatus(value.strip().upper())
    except ValueError:
        status = None
    if status not in _ENDING:
        valid = ", ".join(s.value for s in _ENDING)
        raise InvalidInput(f"status must be one of {valid}, got {value!r}", field="status")
    return status


def now_ms() -> int:
    return int(time.time() * 1000)


def is_stale(run: Run, at_ms: int) -> bool:
    """A run still RUNNING whose process stopped sending heartbeats (it probably crashed)."""
    if run.status is not RunStatus.RUNNING:
        return False
    last = run.heartbeat_at if run.heartbeat_at is not None else run.start_time
    return at_ms - last > STALE_AFTER_MS


# -- experiments -------------------------------------------------------------------------------


def list_experiments(client: Client) -> list[Experiment]:
    return client.list_experiments()


def create_experiment(client: Client, name: str, tags: Sequence[str] = ()) -> Experiment:
    return client.create_experiment(name, parse_tags(tags) or None)


def resolve_experiments(client: Client, names_or_ids: Sequence[str]) -> list[str]:
    """Experiment ids for names or ids, so an unknown one fails with a message about experiments
    (rather than about the shape of a hex id)."""
    if not names_or_ids:
        return []
    known = client.list_experiments()
    by_key = {e.name: e.id for e in known} | {e.id: e.id for e in known}
    missing = [x for x in names_or_ids if x not in by_key]
    if missing:
        raise NotFound(f"experiment {missing[0]!r} not found (by name or id)", field="experiment")
    return [by_key[x] for x in names_or_ids]


# -- runs --------------------------------------------------------------------------------------


def list_runs(
    client: Client,
    experiments: Sequence[str] = (),
    filter: str | None = None,
    order_by: Sequence[str] = (),
    max_results: int = 50,
    page_token: str | None = None,
) -> RunListing:
    """One page of a run search, with experiment names and the metrics worth a column."""
    ids = resolve_experiments(client, experiments)
    page = client.search_runs(ids or None, filter, list(order_by) or None, max_results, page_token)
    names = {e.id: e.name for e in client.list_experiments()}
    at = now_ms()
    hints = [filter or "", *order_by]
    return RunListing(
        runs=list(page.items),
        experiment_names=names,
        metric_keys=key_metrics(page.items, hints),
        stale=frozenset(r.id for r in page.items if is_stale(r, at)),
        next_page_token=page.next_page_token,
        now_ms=at,
    )


def key_metrics(
    runs: Sequence[Run], hints: Sequence[str] = (), limit: int = KEY_METRICS
) -> list[str]:
    """The metrics a user most likely wants to see: those named in the filter or ordering first,
    then the most common non-system ones on the page."""
    named = [m.strip('`"') for hint in hints for m in _METRIC_REF.findall(hint)]
    counts = Counter(k for r in runs for k in r.metrics if not k.startswith("system."))
    common = sorted(counts, key=lambda k: (-counts[k], k))
    keys = list(dict.fromkeys([*named, *common]))
    return keys[:limit]


def show_run(client: Client, run_id: str) -> RunDetail:
    run_id = client.resolve_run_id(run_id)
    run = client.get_run(run_id)
    at = now_ms()
    return RunDetail(
        run=run,
        experiment_name=client.get_experiment(run.experiment_id).name,
        artifacts=client.list_artifacts(run_id),
        stale=is_stale(run, at),
        now_ms=at,
    )


def split_tags(tags: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(user tags, system ``lw.*`` tags) — the latter describe the environment, not the run."""
    user = {k: x for k, x in tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)}
    system = {k: x for k, x in tags.items() if k.startswith(SYSTEM_TAG_PREFIX)}
    return user, system


def compare_runs(client: Client, run_ids: Sequence[str]) -> Comparison:
    """Params (union) and final metrics (union) of several runs, side by side."""
    if len(run_ids) < 2:
        raise InvalidInput("compare needs at least two run ids", field="run_ids")
    runs = [client.get_run(client.resolve_run_id(r)) for r in run_ids]
    return Comparison(
        runs=runs,
        params=_rows([r.params for r in runs]),
        metrics=_rows([r.metrics for r in runs]),
    )


def _rows(maps: Sequence[dict[str, Any]]) -> list[CompareRow]:
    keys = sorted({k for m in maps for k in m})
    return [CompareRow(k, [m.get(k) for m in maps]) for k in keys]


def end_run(client: Client, run_id: str, status: str = "FINISHED") -> Run:
    """Close a run whose process died without ending it."""
    return client.end_run(client.resolve_run_id(run_id), parse_end_status(status))


def resume_run(client: Client, run_id: str) -> Run:
    return client.resume_run(client.resolve_run_id(run_id))


def metric_history(client: Client, run_id: str, key: str) -> list[Metric]:
    """A metric's series; an empty one is an error so a typo in the key does not look like data."""
    run_id = client.resolve_run_id(run_id)
    points = client.get_metric_history(run_id, key)
    if points:
        return points
    run = client.get_run(run_id)  # raises NotFound for an unknown run first
    known = ", ".join(sorted(run.metrics)) or "none"
    raise NotFound(f"run {run_id} has no metric {key!r} (it has: {known})", field="key")


def run_record(
    run: Run, experiment_name: str | None = None, stale: bool = False, **extra: Any
) -> dict[str, Any]:
    """A run as JSON-safe data (non-finite floats as strings, like the REST API)."""
    record = dataclasses.asdict(run)
    record["status"] = run.status.value
    record["metrics"] = {k: encode_float(x) for k, x in run.metrics.items()}
    record["duration_s"] = run.duration_s
    record["stale"] = stale
    if experiment_name is not None:
        record["experiment_name"] = experiment_name
    return record | extra


def detail_record(detail: RunDetail) -> dict[str, Any]:
    artifacts = [dataclasses.asdict(a) for a in detail.artifacts]
    return run_record(detail.run, detail.experiment_name, detail.stale, artifacts=artifacts)


# -- database ----------------------------------------------------------------------------------


def store_url(settings: Settings, store_uri: str | None = None) -> str:
    """The SQL URL a tracking URI stands for (resolved exactly as the Client does)."""
    url, artifacts = resolve_uris(store_uri or settings.tracking_uri, settings.artifacts_uri)
    if artifacts is None:
        raise InvalidInput(
            f"{url} is a loopwright server, not a database; run `loopwright db upgrade` on the "
            "server's host with --store-uri pointing at its database",
            field="store_uri",
        )
    return url


def db_upgrade(
    settings: Settings, store_uri: str | None = None, revision: str = "head"
) -> SchemaState:
    """Migrate the SQL store (idempotent); the only command that changes a schema."""
    from loopwright.backends.sql.dialects import mask_url
    from loopwright.backends.sql.migrate import head_revision
    from loopwright.backends.sql.store import SqlTrackingStore

    url = store_url(settings, store_uri)
    store = SqlTrackingStore(url)
    try:
        before, after = store.upgrade(revision)
    finally:
        store.close()
    return SchemaState(mask_url(url), after or None, head_revision(), before=before)


def db_current(settings: Settings, store_uri: str | None = None) -> SchemaState:
    """The store's schema revision, read without creating or migrating anything."""
    from loopwright.backends.sql.dialects import mask_url
    from loopwright.backends.sql.migrate import head_revision

    url = store_url(settings, store_uri)
    return SchemaState(mask_url(url), _read_revision(url), head_revision())


def _read_revision(url: str) -> str | None:
    from sqlalchemy.exc import OperationalError

    from loopwright.backends.sql.dialects import mask_url
    from loopwright.backends.sql.migrate import current_revision
    from loopwright.backends.sql.store import SqlTrackingStore

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # connecting would create an empty file
    store = SqlTrackingStore(url)
    try:
        with store.engine.connect() as conn:
            return current_revision(conn)
    except OperationalError as exc:
        raise StoreUnavailable(f"metadata store {mask_url(url)} failed: {exc.orig}") from exc
    finally:
        store.close()


# -- processes ---------------------------------------------------------------------------------


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Run the tracking server (imported here so the CLI works without the server's deps)."""
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}", field="workers")
    from loopwright.server.main import serve as run_server

    run_server(settings, host, port, workers)


def quickstart(settings: Settings, experiment: str = "quickstart") -> None:
    """Train and track the demo models (scikit-learn is imported only here)."""
    from loopwright.demo.quickstart import run

    run(settings, experiment=experiment)
