"""The SQL implementation of :class:`~loopwright.tracking.store.TrackingStore`.

One class for SQLite and PostgreSQL; what differs lives in :mod:`.dialects`. The metric path is
written for throughput: metrics go to the driver's ``executemany`` as plain tuples, and only the
highest step per key in a batch touches ``latest_metrics``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError

from loopwright.backends.sql import migrate
from loopwright.backends.sql import schema as t
from loopwright.backends.sql.dialects import WRITE, dialect_for, mask_url
from loopwright.backends.sql.hydrate import RUN_COLUMNS, hydrate
from loopwright.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from loopwright.tracking import validation as v
from loopwright.tracking.entities import (
    ArtifactRef,
    DatasetInput,
    Experiment,
    Metric,
    Page,
    Run,
    RunStatus,
)

MAX_RESULTS = 50_000
#: Batch idempotency keys are kept this long (a retry comes within seconds; a week is plenty).
KEY_TTL_MS = 7 * 86_400_000
_BATCH_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")


def now_ms() -> int:
    return int(time.time() * 1000)


class SqlTrackingStore:
    """Experiments and runs in SQLite (embedded) or PostgreSQL (team).

    The constructor only stores the URL; :meth:`initialize` creates a new database or checks an
    existing one's schema, :meth:`upgrade` migrates it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_for(url)
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"SqlTrackingStore({mask_url(self.url)!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.dialect.create_engine()
        return self._engine

    def initialize(self) -> SqlTrackingStore:
        with self._translate():
            migrate.ensure_schema(self.engine, self.dialect)
        return self

    def upgrade(self, revision: str = "head") -> tuple[str | None, str]:
        with self._translate():
            return migrate.upgrade(self.engine, self.dialect, revision)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(
                f"metadata store {mask_url(self.url)} failed: {exc.orig}"
            ) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._translate(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._translate(), self.engine.execution_options(**{WRITE: True}).begin() as conn:
            yield conn

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> Experiment:
        v.name("name", name)
        tags = v.string_map("tags", tags)
        exp = Experiment(id=uuid.uuid4().hex, name=name, created_at=now_ms(), tags=tags)
        try:
            with self._write() as conn:
                conn.execute(
                    t.experiments.insert().values(
                        id=exp.id, name=name, created_at=exp.created_at, tags=tags
                    )
                )
                self.audit(
                    conn,
                    "experiment.create",
                    "experiment",
                    exp.id,
                    after={"name": name, "tags": tags},
                )
        except SAIntegrityError:
            raise AlreadyExists(f"experiment {name!r} already exists", field="name") from None
        return exp

    def get_experiment(self, experiment_id: str) -> Experiment:
        v.identifier("experiment_id", experiment_id)
        return self._one_experiment(t.experiments.c.id == experiment_id, experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment:
        v.name("name", name)
        return self._one_experiment(t.experiments.c.name == name, name)

    def list_experiments(self) -> list[Experiment]:
        with self._read() as conn:
            rows = conn.execute(select(t.experiments).order_by(t.experiments.c.created_at))
            return [_experiment(r) for r in rows]

    def _one_experiment(self, where: Any, label: str) -> Experiment:
        with self._read() as conn:
            row = conn.execute(select(t.experiments).where(where)).first()
        if row is None:
            raise NotFound(f"experiment {label!r} not found", field="experiment")
        return _experiment(row)

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run:
        v.identifier("experiment_id", experiment_id)
        run_id = uuid.uuid4().hex
        name = name if name is not None else f"run-{run_id[:8]}"
        v.name("name", name)
        tags = v.string_map("tags", tags)
        start = v.timestamp("start_time", start_time) if start_time is not None else now_ms()
        with self._write() as conn:
            if not conn.scalar(
                select(t.experiments.c.id).where(t.experiments.c.id == experiment_id)
            ):
                raise NotFound(f"experiment {experiment_id!r} not found", field="experiment_id")
            if parent_run_id is not None:
                v.identifier("parent_run_id", parent_run_id)
                self._require_run(conn, parent_run_id, field="parent_run_id")
            conn.execute(
                t.runs.insert().values(
                    id=run_id,
                    experiment_id=experiment_id,
                    name=name,
                    status=RunStatus.RUNNING.value,
                    start_time=start,
                    user=user,
                    parent_run_id=parent_run_id,
                    heartbeat_at=start,
                )
            )
            if tags:
                conn.execute(
                    t.tags.insert(),
                    [{"run_id": run_id, "key": k, "value": x} for k, x in tags.items()],
                )
            self.audit(
                conn,
                "run.create",
                "run",
                run_id,
                after={
                    "experiment_id": experiment_id,
                    "name": name,
                    "parent_run_id": parent_run_id,
                },
            )
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        v.identifier("run_id", run_id)
        with self._read() as conn:
            row = conn.execute(select(*RUN_COLUMNS).where(t.runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"run {run_id!r} not found", field="run_id")
            return self._hydrate(conn, [row])[0]

    def end_run(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        end_time: int | None = None,
        error: str | None = None,
    ) -> Run:
        v.identifier("run_id", run_id)
        status = v.run_status("status", status)
        if not status.is_terminal:
            raise InvalidInput(
                "status must be FINISHED, FAILED or KILLED to end a run", field="status"
            )
        end = v.timestamp("end_time", end_time) if end_time is not None else now_ms()
        with self._write() as conn:
            before = self._status(conn, run_id)
            conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(status=status.value, end_time=end, error=error, heartbeat_at=end)
            )
            self.audit(
                conn,
                "run.end",
                "run",
                run_id,
                before={"status": before},
                after={"status": status.value},
            )
        return self.get_run(run_id)

    def resume_run(self, run_id: str) -> Run:
        v.identifier("run_id", run_id)
        with self._write() as conn:
            before = self._status(conn, run_id)
            conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(status=RunStatus.RUNNING.value, end_time=None, heartbeat_at=now_ms())
            )
            self.audit(
                conn,
                "run.resume",
                "run",
                run_id,
                before={"status": before},
                after={"status": RunStatus.RUNNING.value},
            )
        return self.get_run(run_id)

    def _status(self, conn: Connection, run_id: str) -> str:
        status = conn.scalar(select(t.runs.c.status).where(t.runs.c.id == run_id))
        if status is None:
            raise NotFound(f"run {run_id!r} not found", field="run_id")
        return str(status)

    def audit(
        self, conn: Connection, action: str, target_type: str, target_id: str, **kw: Any
    ) -> None:
        """Record a state change in the hash-chained audit log, in the same transaction."""
        from loopwright.backends.sql.audit import append_event

        append_event(conn, self.dialect, action, target_type, target_id, **kw)

    def _require_run(self, conn: Connection, run_id: str, field: str = "run_id") -> None:
        if conn.scalar(select(t.runs.c.id).where(t.runs.c.id == run_id)) is None:
            raise NotFound(f"run {run_id!r} not found", field=field)

    # -- params, tags, metrics ---------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        v.identifier("run_id", run_id)
        params = v.string_map("params", params)
        tags = v.string_map("tags", tags)
        rows = v.metric_rows(run_id, metrics)
        if idempotency_key is not None and not _BATCH_KEY.fullmatch(str(idempotency_key)):
            raise InvalidInput(
                "an idempotency key must be 8-64 letters, digits, '-' or '_'",
                field="idempotency_key",
            )
        with self._write() as conn:
            self._require_run(conn, run_id)
            if idempotency_key is not None and not self._claim_key(conn, idempotency_key, run_id):
                return  # applied before, in the transaction that recorded the key
            if params:
                self._insert_params(conn, run_id, params)
            if tags:
                self._upsert(
                    conn,
                    t.tags,
                    ["run_id", "key"],
                    [{"run_id": run_id, "key": k, "value": x} for k, x in tags.items()],
                )
            if rows:
                sql = self.dialect.bulk_insert_sql(
                    "metrics", ["run_id", "key", "step", "timestamp", "value"]
                )
                conn.exec_driver_sql(sql, rows)
                self._update_latest(conn, rows)
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(heartbeat_at=now_ms()))

    def _claim_key(self, conn: Connection, key: str, run_id: str) -> bool:
        """Record ``key`` with this batch; False when a batch already did (nothing to apply)."""
        now = now_ms()
        stmt: Any = self.dialect.insert(t.batch_keys).values(key=key, run_id=run_id, created_at=now)
        stmt = stmt.on_conflict_do_nothing(index_elements=[t.batch_keys.c.key])
        claimed = conn.execute(stmt.returning(t.batch_keys.c.key)).first() is not None
        if claimed and random.random() < 0.01:  # now and then, forget keys no retry can send
            conn.execute(delete(t.batch_keys).where(t.batch_keys.c.created_at < now - KEY_TTL_MS))
        return claimed

    def _insert_params(self, conn: Connection, run_id: str, params: dict[str, str]) -> None:
        existing = dict(
            conn.execute(
                select(t.params.c.key, t.params.c.value).where(
                    t.params.c.run_id == run_id, t.params.c.key.in_(list(params))
                )
            ).all()
        )
        for key, value in params.items():
            if key in existing and existing[key] != value:
                raise Conflict(
                    f"param {key!r} of run {run_id} is already {existing[key]!r}; params are "
                    f"write-once (got {value!r}) — log a metric or tag for values that change",
                    field=f"params.{key}",
                )
        new = [
            {"run_id": run_id, "key": k, "value": x} for k, x in params.items() if k not in existing
        ]
        if new:
            conn.execute(t.params.insert(), new)

    def _update_latest(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        best: dict[str, tuple[Any, ...]] = {}
        for row in rows:  # (run_id, key, step, timestamp, value)
            cur = best.get(row[1])
            if cur is None or (row[2], row[3]) >= (cur[2], cur[3]):
                best[row[1]] = row
        values = [
            {"run_id": r[0], "key": r[1], "step": r[2], "timestamp": r[3], "value": r[4]}
            for r in best.values()
        ]
        stmt = self.dialect.insert(t.latest_metrics)
        lm = t.latest_metrics
        newer = (stmt.excluded.step > lm.c.step) | (
            (stmt.excluded.step == lm.c.step) & (stmt.excluded.timestamp >= lm.c.timestamp)
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[lm.c.run_id, lm.c.key],
                set_={
                    "step": stmt.excluded.step,
                    "timestamp": stmt.excluded.timestamp,
                    "value": stmt.excluded.value,
                },
                where=newer,
            ),
            values,
        )

    def _upsert(self, conn: Connection, table: Any, keys: list[str], values: list[dict]) -> None:
        stmt = self.dialect.insert(table)
        others = {c.name: stmt.excluded[c.name] for c in table.c if c.name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=others), values)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        v.identifier("run_id", run_id)
        v.key("key", key)
        m = t.metrics
        with self._read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(
                select(m.c.value, m.c.step, m.c.timestamp)
                .where(m.c.run_id == run_id, m.c.key == key)
                .order_by(m.c.step, m.c.timestamp)
            ).all()
        nan = math.nan
        return [Metric(key, nan if r[0] is None else r[0], r[1], r[2]) for r in rows]

    # -- search ------------------------------------------------------------------------------

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page:
        from loopwright.backends.sql.search import apply_search
        from loopwright.tracking.search import parse_filter, parse_order_by

        if not isinstance(max_results, int) or not 1 <= max_results <= MAX_RESULTS:
            raise InvalidInput(f"max_results must be 1..{MAX_RESULTS}", field="max_results")
        ids = [v.identifier("experiment_ids", e) for e in experiment_ids or []]
        expr, keys = parse_filter(filter), parse_order_by(order_by)
        query_hash = _query_hash(ids, filter, order_by)
        offset = _decode_token(page_token, query_hash)
        stmt = apply_search(select(*RUN_COLUMNS), expr, keys, self.dialect.name, ids)
        stmt = stmt.offset(offset).limit(max_results + 1)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            more = len(rows) > max_results
            runs = self._hydrate(conn, rows[:max_results])
        token = _encode_token(offset + max_results, query_hash) if more else None
        return Page(items=runs, next_page_token=token)

    def _hydrate(self, conn: Connection, rows: Sequence[Any]) -> list[Run]:
        """Runs for rows of :data:`~.hydrate.RUN_COLUMNS`, with params, tags, metrics, inputs."""
        return hydrate(conn, rows, self.dialect.name)

    # -- inputs and artifacts ----------------------------------------------------------------

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        v.identifier("run_id", run_id)
        items = [v.dataset_input(f"datasets[{i}]", d) for i, d in enumerate(datasets)]
        if not items:
            return
        created = now_ms()
        with self._write() as conn:
            self._require_run(conn, run_id)
            ins = self.dialect.insert(t.datasets).on_conflict_do_nothing(index_elements=["digest"])
            conn.execute(
                ins,
                [
                    {
                        "digest": d.digest,
                        "name": d.name,
                        "schema": d.schema,
                        "num_rows": d.num_rows,
                        "source": d.source,
                        "created_at": created,
                    }
                    for d in items
                ],
            )
            ins = self.dialect.insert(t.run_inputs).on_conflict_do_nothing()
            conn.execute(
                ins,
                [
                    {"run_id": run_id, "digest": d.digest, "context": d.context, "name": d.name}
                    for d in items
                ],
            )

    def log_artifacts(self, run_id: str, refs: Sequence[ArtifactRef]) -> None:
        v.identifier("run_id", run_id)
        items = [v.artifact_ref(f"artifacts[{i}]", r) for i, r in enumerate(refs)]
        if not items:
            return
        with self._write() as conn:
            self._require_run(conn, run_id)
            self._upsert(
                conn,
                t.artifacts,
                ["run_id", "path"],
                [
                    {"run_id": run_id, "path": r.path, "digest": r.digest, "size": r.size}
                    for r in items
                ],
            )

    def list_artifacts(self, run_id: str, prefix: str = "") -> list[ArtifactRef]:
        v.identifier("run_id", run_id)
        a = t.artifacts
        stmt = select(a.c.path, a.c.digest, a.c.size).where(a.c.run_id == run_id)
        if prefix:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(a.c.path.like(escaped + "%", escape="\\"))
        with self._read() as conn:
            self._require_run(conn, run_id)
            return [
                ArtifactRef(r.path, r.digest, r.size) for r in conn.execute(stmt.order_by(a.c.path))
            ]

    # -- maintenance -------------------------------------------------------------------------

    def delete_run(self, run_id: str) -> None:
        """Remove a run and everything it logged (blobs stay: they may be shared)."""
        v.identifier("run_id", run_id)
        with self._write() as conn:
            self._require_run(conn, run_id)
            for table in (t.metrics, t.latest_metrics, t.params, t.tags, t.run_inputs, t.artifacts):
                conn.execute(delete(table).where(table.c.run_id == run_id))
            conn.execute(delete(t.runs).where(t.runs.c.id == run_id))
            self.audit(conn, "run.delete", "run", run_id)

    def count_metrics(self, run_id: str, key: str | None = None) -> int:
        m = t.metrics
        stmt = select(func.count()).select_from(m).where(m.c.run_id == run_id)
        if key is not None:
            stmt = stmt.where(m.c.key == key)
        with self._read() as conn:
            return int(conn.scalar(stmt) or 0)


def _experiment(row: Any) -> Experiment:
    return Experiment(
        id=row.id, name=row.name, created_at=row.created_at, tags=dict(row.tags or {})
    )


def _query_hash(ids: list[str], filter: str | None, order_by: Sequence[str] | None) -> str:
    raw = orjson.dumps([sorted(ids), filter or "", list(order_by or [])])
    return hashlib.sha256(raw).hexdigest()[:16]


def _encode_token(offset: int, query_hash: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset, "q": query_hash})).decode()


def _decode_token(token: str | None, query_hash: str) -> int:
    if not token:
        return 0
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        offset, q = int(data["o"]), str(data["q"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(
            "page_token is not a token this server issued", field="page_token"
        ) from None
    if q != query_hash or offset < 0:
        raise InvalidInput(
            "page_token belongs to a different search (filter, order or experiments changed)",
            field="page_token",
        )
    return offset
