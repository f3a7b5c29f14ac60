"""The prediction log and late labels: partitioned Parquet on a local directory or fsspec URL.

Layout under ``uri`` (hive-partitioned, so pyarrow and DuckDB read it as one table)::

    <uri>/predictions/deployment=<name>/date=YYYY-MM-DD/hour=HH/part-<ms>-<uuid>.parquet
    <uri>/labels/date=YYYY-MM-DD/part-<ms>-<uuid>.parquet

The request path only appends to memory (:meth:`PredictionLog.append_answer`, one
:class:`Answer` per request, or :meth:`PredictionLog.append` with plain records); a daemon
thread flushes
the buffer every ``flush_interval_s`` as one file per (UTC) hour partition. A file appears whole
or not at all, as in :mod:`loopwright.backends.fs.artifacts`: a local root stages into a hidden
temp file beside the final name and renames it (``os.replace``); a remote root stages on local
disk and uploads to the final key in one ``put``. Readers skip names starting with ``.`` or
``_``, so a temp file left by a killed process is never read. A failed flush keeps its records
and retries on the next one; past ``max_buffer`` the oldest records are dropped and counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import fsspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from loopwright.errors import InvalidInput

__all__ = [
    "Answer",
    "LabelStore",
    "PredictionLog",
    "join_labels",
    "read_labels",
    "read_predictions",
]

log = logging.getLogger(__name__)

_TS = pa.timestamp("ms", tz="UTC")

#: Columns of every prediction file; ``in_<feature>`` columns follow, one per input feature.
PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", _TS),
        ("deployment", pa.string()),
        ("route", pa.string()),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
        ("shadow", pa.bool_()),
        ("prediction", pa.string()),
        ("prediction_value", pa.float64()),
        ("probabilities", pa.list_(pa.float64())),
        ("inputs_json", pa.string()),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("label", pa.string()),
        ("label_value", pa.float64()),
        ("ts", _TS),
    ]
)

_IGNORE_PREFIXES = [".", "_"]

#: Labels are partitioned by their own ``ts``, normally the time they were posted, after the
#: prediction they label. Readers of the predictions from ``start`` on read the labels from a day
#: before it (``read_labels(uri, since_ms=start - LABEL_SLACK_MS)``): a label stamped earlier than
#: that is taken for one of older predictions.
LABEL_SLACK_MS = 24 * 3_600_000


@dataclass(slots=True, eq=False)
class Answer:
    """One answered (or failed) request, kept as the server had it until the next flush.

    Why not one record per row: the request path then only stores references (no per-row
    dicts, no conversions), and a flush turns a whole buffer of answers over numeric inputs
    into columns with NumPy. ``inputs`` is a DataFrame, or anything with ``columns`` and a
    float64 ``to_numpy()`` matrix (serving's ``Rows``); it must not change once appended.
    ``predictions`` and ``probabilities`` hold one entry per input row (None for an error).
    """

    request_id: str
    ts: int
    route: str
    model: str
    version: int
    latency_ms: float
    error: str | None
    shadow: bool
    inputs: Any
    predictions: list[Any] | None
    probabilities: list[Any] | None

    @property
    def rows(self) -> int:
        return len(self.inputs)

    @property
    def numeric(self) -> bool:
        """Inputs held as one float64 matrix (not a frame): the columnar flush applies."""
        return not isinstance(self.inputs, pd.DataFrame)

    def records(self) -> list[dict[str, Any]]:
        """The answer as one plain record per row (what :meth:`PredictionLog.append` takes)."""
        frame = self.inputs
        names = [str(c) for c in frame.columns]
        rows = [dict(zip(names, values, strict=True)) for values in frame.to_numpy().tolist()]
        n = len(rows)
        preds, probs = self.predictions, self.probabilities
        return [
            {
                "ts": self.ts,
                "route": self.route,
                "model": self.model,
                "version": self.version,
                "latency_ms": self.latency_ms,
                "error": self.error,
                "shadow": self.shadow,
                "request_id": self.request_id if n == 1 else f"{self.request_id}/{i}",
                "inputs": row,
                "prediction": None if preds is None else preds[i],
                "probabilities": None if probs is None else probs[i],
            }
            for i, row in enumerate(rows)
        ]


#: A buffered entry: a plain record (one row) or an :class:`Answer` (its rows).
_Entry = dict[str, Any] | Answer


def _rows_of(entry: _Entry) -> int:
    return entry.rows if isinstance(entry, Answer) else 1


# -- values ---------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value; anything else unchanged."""
    if type(value) is float or type(value) is int or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes) and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def _as_float(value: Any) -> float | None:
    if type(value) is float:
        return value
    value = _plain(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _as_text(value: Any) -> str | None:
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _as_probabilities(value: Any) -> list[float | None] | None:
    if value is None:
        return None
    try:
        return [_as_float(p) for p in value]
    except TypeError:
        return None


def _feature_array(values: list[Any]) -> pa.Array:
    """float64 when every present value is a number (or none is present), else string."""
    if all(type(v) is float for v in values):
        return pa.array(values, type=pa.float64())
    plain = [_plain(v) for v in values]
    if all(v is None or isinstance(v, numbers.Real) for v in plain):
        return pa.array([_as_float(v) for v in plain], type=pa.float64())
    return pa.array([_as_text(v) for v in plain], type=pa.string())


def _partition(ts_ms: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")


# -- tables ---------------------------------------------------------------------------------


def _predictions_table(records: Sequence[dict[str, Any]], deployment: str) -> pa.Table:
    """Records -> one Arrow table; tolerant of odd values so a bad record never blocks the log."""
    g = [r.get for r in records]
    preds = [get("prediction") for get in g]
    inputs = [get("inputs") or {} for get in g]
    versions = [_as_float(get("version")) for get in g]
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([_as_text(get("request_id")) for get in g], pa.string()),
        "ts": pa.array([int(get("ts") or 0) for get in g], _TS),
        "deployment": pa.array([deployment] * len(records), pa.string()),
        "route": pa.array([_as_text(get("route")) for get in g], pa.string()),
        "model": pa.array([_as_text(get("model")) for get in g], pa.string()),
        "version": pa.array([None if v is None else int(v) for v in versions], pa.int64()),
        "latency_ms": pa.array([_as_float(get("latency_ms")) for get in g], pa.float64()),
        "error": pa.array([_as_text(get("error")) for get in g], pa.string()),
        "shadow": pa.array([bool(get("shadow", False)) for get in g], pa.bool_()),
        "prediction": pa.array([_as_text(p) for p in preds], pa.string()),
        "prediction_value": pa.array([_as_float(p) for p in preds], pa.float64()),
        "probabilities": pa.array(
            [_as_probabilities(get("probabilities")) for get in g], pa.list_(pa.float64())
        ),
        "inputs_json": pa.array([_inputs_json(row) for row in inputs], pa.string()),
    }
    features = sorted({str(k) for row in inputs for k in row})
    for name in features:
        columns[f"in_{name}"] = _feature_array([row.get(name) for row in inputs])
    return pa.table(columns)


def _inputs_json(row: dict[str, Any]) -> str | None:
    """The inputs as JSON when one of them is not a number; numbers are in ``in_`` columns
    already (and JSON-formatting floats costs more than the rest of a row's logging)."""
    for v in row.values():
        t = type(v)
        if not (t is float or t is int or v is None):
            return orjson.dumps(row, default=str).decode()
    return None


def _answers_table(answers: Sequence[Answer], deployment: str) -> pa.Table:
    """Answers over numeric inputs with one columns object -> one table, column by column."""
    counts = [a.rows for a in answers]
    single = all(n == 1 for n in counts)

    def each(values: list[Any]) -> list[Any]:
        return values if single else [v for v, n in zip(values, counts, strict=True)
                                      for _ in range(n)]  # fmt: skip

    if single:
        ids = [a.request_id for a in answers]
    else:
        ids = [a.request_id if n == 1 else f"{a.request_id}/{i}"
               for a, n in zip(answers, counts, strict=True) for i in range(n)]  # fmt: skip
    preds: list[Any] = []
    probs: list[Any] = []
    for a, n in zip(answers, counts, strict=True):
        preds.extend([None] * n if a.predictions is None else a.predictions)
        probs.extend([None] * n if a.probabilities is None else a.probabilities)
    total = len(ids)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(ids, pa.string()),
        "ts": pa.array(each([a.ts for a in answers]), _TS),
        "deployment": pa.array([deployment] * total, pa.string()),
        "route": pa.array(each([a.route for a in answers]), pa.string()),
        "model": pa.array(each([a.model for a in answers]), pa.string()),
        "version": pa.array(each([a.version for a in answers]), pa.int64()),
        "latency_ms": pa.array(each([a.latency_ms for a in answers]), pa.float64()),
        "error": pa.array(each([a.error for a in answers]), pa.string()),
        "shadow": pa.array(each([a.shadow for a in answers]), pa.bool_()),
        "prediction": pa.array(
            [p if p is None or type(p) is str else _as_text(p) for p in preds], pa.string()
        ),
        "prediction_value": pa.array(
            [p if type(p) is float else _as_float(p) for p in preds], pa.float64()
        ),
        "probabilities": pa.array(probs, pa.list_(pa.float64())),
        "inputs_json": pa.nulls(total, pa.string()),
    }
    matrix = np.vstack([a.inputs.to_numpy() for a in answers])
    names = [str(c) for c in answers[0].inputs.columns]
    for j in sorted(range(len(names)), key=names.__getitem__):
        columns[f"in_{names[j]}"] = pa.array(matrix[:, j], pa.float64())
    return pa.table(columns)


def _table(entries: Sequence[_Entry], deployment: str) -> pa.Table:
    """One table of buffered entries: columnar when every one is a numeric :class:`Answer`
    over the same columns object (the common case), else record by record."""
    first = entries[0]
    if isinstance(first, Answer) and first.numeric:
        columns = first.inputs.columns
        if all(isinstance(e, Answer) and e.numeric and e.inputs.columns is columns
               for e in entries):  # fmt: skip
            return _answers_table(entries, deployment)  # type: ignore[arg-type]
    records: list[dict[str, Any]] = []
    for entry in entries:
        if isinstance(entry, Answer):
            records.extend(entry.records())
        else:
            records.append(entry)
    return _predictions_table(records, deployment)


def _labels_table(labels: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "request_id": pa.array([lab["request_id"] for lab in labels], pa.string()),
            "label": pa.array([_as_text(lab["label"]) for lab in labels], pa.string()),
            "label_value": pa.array([_as_float(lab["label"]) for lab in labels], pa.float64()),
            "ts": pa.array([lab["ts"] for lab in labels], _TS),
        },
        schema=LABEL_SCHEMA,
    )


# -- storage --------------------------------------------------------------------------------


class _Dir:
    """A root on fsspec, and the one way loopwright publishes a Parquet file under it."""

    def __init__(self, uri: str) -> None:
        if not uri:
            raise InvalidInput("the prediction log uri must not be empty", field="uri")
        self.fs: AbstractFileSystem
        self.fs, base = fsspec.core.url_to_fs(uri)
        self.base = base.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def write_table(self, table: pa.Table, final: str) -> None:
        """Publish ``table`` at ``final`` whole: stage, fsync, then rename (local) or put."""
        directory = final.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(directory, exist_ok=True)
            staging = directory
        else:
            staging = tempfile.gettempdir()
        tmp = os.path.join(staging, f".{os.path.basename(final)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as out:
                pq.write_table(table, out)
                out.flush()
                os.fsync(out.fileno())
            if self.is_local:
                os.replace(tmp, final)
                _fsync_dir(directory)
            else:
                self.fs.put_file(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    """Make a rename durable on POSIX; a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _part_name() -> str:
    return f"part-{_now_ms()}-{uuid.uuid4().hex}.parquet"


# -- the prediction log ---------------------------------------------------------------------


class PredictionLog:
    """Buffers prediction records in memory and flushes them to Parquet from a daemon thread.

    The constructor only stores; :meth:`start` launches the flusher, :meth:`close` stops it and
    flushes what is left. :meth:`append` is safe from any thread and never does I/O.
    Counters: ``written`` (records durably stored), ``dropped`` (lost to ``max_buffer``),
    ``pending`` (waiting in memory); ``last_error`` is the latest flush failure, if any.
    """

    def __init__(
        self,
        uri: str,
        deployment: str,
        flush_interval_s: float = 1.0,
        max_buffer: int = 50_000,
    ) -> None:
        if not deployment:
            raise InvalidInput("a deployment name must not be empty", field="deployment")
        if max_buffer < 1:
            raise InvalidInput("max_buffer must be at least 1", field="max_buffer")
        self.uri = uri
        self.deployment = deployment
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._dir = _Dir(uri)
        self._buffer: list[_Entry] = []
        self._buffered_rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"PredictionLog({self.uri!r}, {self.deployment!r})"

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows waiting in memory."""
        return self._buffered_rows

    # -- request path ---------------------------------------------------------------------

    def append(self, records: list[dict[str, Any]]) -> None:
        """Queue ``records`` (one row each); past ``max_buffer`` rows the oldest are dropped
        (and counted)."""
        self._queue(records, len(records))

    def append_answer(self, answer: Answer) -> None:
        """Queue one request's :class:`Answer` (the request path's call: no copy, no I/O)."""
        self._queue([answer], answer.rows)

    def _queue(self, entries: list[_Entry], rows: int) -> None:
        with self._lock:
            self._buffer.extend(entries)
            self._buffered_rows += rows
            self._trim()
            crowded = self._buffered_rows >= self.max_buffer // 2
        if crowded:
            self._wake.set()

    def _trim(self) -> None:
        """Drop the oldest entries beyond ``max_buffer`` rows; the caller holds ``_lock``."""
        excess = self._buffered_rows - self.max_buffer
        if excess <= 0:
            return
        cut = dropped = 0
        while dropped < excess and cut < len(self._buffer) - 1:
            dropped += _rows_of(self._buffer[cut])
            cut += 1
        del self._buffer[:cut]
        self._buffered_rows -= dropped
        self.dropped += dropped

    # -- flushing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered, one file per hour partition; returns how many were written.

        A partition that fails to write goes back to the front of the buffer for the next flush
        (the error is logged and kept in ``last_error``); nothing is raised.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._buffered_rows = 0
            if not batch:
                return 0
            count = 0
            failed: list[_Entry] = []
            for (date, hour), entries in _by_hour(batch).items():
                if failed:
                    failed.extend(entries)
                    continue
                try:
                    self._write(date, hour, entries)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("prediction log flush failed, will retry: %s", self.last_error)
                    failed.extend(entries)
                else:
                    count += sum(_rows_of(e) for e in entries)
            with self._lock:
                self.written += count
                if failed:
                    self._buffer[:0] = failed
                    self._buffered_rows += sum(_rows_of(e) for e in failed)
                    self._trim()
            return count

    def _write(self, date: str, hour: str, entries: list[_Entry]) -> None:
        table = _table(entries, self.deployment)
        final = self._dir.path(
            "predictions",
            f"deployment={quote(self.deployment, safe='')}",
            f"date={date}",
            f"hour={hour}",
            _part_name(),
        )
        self._dir.write_table(table, final)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the daemon flusher thread (a no-op if it is running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"predlog-{self.deployment}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
            except Exception:  # a bug in flush must not kill the flusher silently
                log.exception("prediction log flusher failed")

    def close(self) -> None:
        """Stop the flusher and flush what is left (graceful shutdown); safe to call twice."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()


def _by_hour(entries: Iterable[_Entry]) -> dict[tuple[str, str], list[_Entry]]:
    groups: dict[tuple[str, str], list[_Entry]] = {}
    names: dict[int, tuple[str, str]] = {}  # hour number -> (date, hour): one strftime an hour
    for entry in entries:
        if isinstance(entry, Answer):
            ts = entry.ts
        else:
            if entry.get("ts") is None:
                entry = {**entry, "ts": _now_ms()}
            ts = int(entry["ts"])
        hour = ts // 3_600_000
        key = names.get(hour)
        if key is None:
            key = names[hour] = _partition(ts)
        groups.setdefault(key, []).append(entry)
    return groups


# -- labels ---------------------------------------------------------------------------------


class LabelStore:
    """Late ground truth for logged requests, written durably as soon as it arrives."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._dir = _Dir(uri)

    def __repr__(self) -> str:
        return f"LabelStore({self.uri!r})"

    def add(self, labels: list[dict[str, Any]]) -> int:
        """Validate and store ``labels`` (one file per UTC date); returns how many were stored."""
        checked = [_check_label(i, label) for i, label in enumerate(labels)]
        groups: dict[str, list[dict[str, Any]]] = {}
        for label in checked:
            groups.setdefault(_partition(label["ts"])[0], []).append(label)
        for date, group in groups.items():
            final = self._dir.path("labels", f"date={date}", _part_name())
            self._dir.write_table(_labels_table(group), final)
        return len(checked)


def _check_label(i: int, label: Any) -> dict[str, Any]:
    if not isinstance(label, dict):
        raise InvalidInput(f"labels[{i}] must be an object", field=f"labels[{i}]")
    request_id = label.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInput(
            f"labels[{i}].request_id must be a non-empty string", field=f"labels[{i}].request_id"
        )
    value = _plain(label.get("label"))
    if value is None or isinstance(value, list | dict | tuple):
        raise InvalidInput(f"labels[{i}].label must be a scalar", field=f"labels[{i}].label")
    ts = _plain(label.get("ts"))
    if ts is None:
        ts = _now_ms()
    elif isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidInput(
            f"labels[{i}].ts must be an integer (ms since the epoch)", field=f"labels[{i}].ts"
        )
    return {"request_id": request_id, "label": value, "ts": ts}


# -- reading --------------------------------------------------------------------------------


def read_predictions(
    uri: str,
    deployment: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> pd.DataFrame:
    """Logged predictions, optionally of one deployment and within ``[start_ms, end_ms)``.

    Only the partitions that can hold such rows are opened (deployment, then UTC dates), so a
    day's read costs a day's files however long the log grows.
    """
    hive = pa.schema([("deployment", pa.string()), ("date", pa.string()), ("hour", pa.string())])
    partition = None
    if deployment is not None:
        partition = _and(partition, ds.field("deployment") == deployment)
    partition = _dates(partition, start_ms, end_ms)
    condition = partition
    if start_ms is not None:
        condition = _and(condition, ds.field("ts") >= pa.scalar(start_ms, _TS))
    if end_ms is not None:
        condition = _and(condition, ds.field("ts") < pa.scalar(end_ms, _TS))
    table = _read(uri, "predictions", hive, PREDICTION_SCHEMA, condition, partition)
    return table.drop_columns(["date", "hour"]).to_pandas()


def read_labels(uri: str, since_ms: int | None = None) -> pd.DataFrame:
    """Stored labels (all versions; :func:`join_labels` keeps the latest per request).

    ``since_ms``: only the date partitions from that UTC day on (labels are partitioned by their
    own ``ts``), for readers that know how old the predictions they label can be.
    """
    hive = pa.schema([("date", pa.string())])
    partition = _dates(None, since_ms, None)
    table = _read(uri, "labels", hive, LABEL_SCHEMA, partition, partition)
    return table.drop_columns(["date"]).to_pandas()


def _dates(
    condition: ds.Expression | None, start_ms: int | None, end_ms: int | None
) -> ds.Expression | None:
    """``condition`` and the ``date`` partitions (``YYYY-MM-DD``, ordered as strings) that
    overlap ``[start_ms, end_ms)``."""
    if start_ms is not None:
        condition = _and(condition, ds.field("date") >= _partition(start_ms)[0])
    if end_ms is not None:
        condition = _and(condition, ds.field("date") <= _partition(max(end_ms - 1, 0))[0])
    return condition


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` plus ``label``, ``label_value``, ``label_ts``: the latest label per request.

    A left join on ``request_id``: predictions without a label keep nulls there.
    """
    latest = (
        labels.sort_values("ts", kind="stable")
        .drop_duplicates("request_id", keep="last")
        .loc[:, ["request_id", "label", "label_value", "ts"]]
        .rename(columns={"ts": "label_ts"})
    )
    return predictions.merge(latest, on="request_id", how="left")


def _and(left: ds.Expression | None, right: ds.Expression) -> ds.Expression:
    return right if left is None else left & right


def _read(
    uri: str,
    kind: str,
    hive: pa.Schema,
    base: pa.Schema,
    condition: ds.Expression | None,
    partition: ds.Expression | None = None,
) -> pa.Table:
    """The rows of ``kind`` matching ``condition``; only files in partitions matching
    ``partition`` are opened (their footers give the unified schema)."""
    root = _Dir(uri)
    path = root.path(kind)
    empty = pa.Table.from_batches([], schema=_with(base, hive))
    if not root.fs.exists(path):
        return empty
    partitioning = ds.partitioning(hive, flavor="hive")
    options: dict[str, Any] = {
        "format": "parquet",
        "filesystem": root.fs,
        "partitioning": partitioning,
    }
    # (a schema given up front: discovery lists the files but opens none of them)
    found = ds.dataset(path, schema=empty.schema, ignore_prefixes=_IGNORE_PREFIXES, **options)
    fragments = list(found.get_fragments(filter=partition))
    if not fragments:
        return empty
    schema = _with(_unify(base, (f.physical_schema for f in fragments)), hive)
    chosen = ds.dataset([f.path for f in fragments], schema=schema, partition_base_dir=path,
                        **options)  # fmt: skip
    return chosen.to_table(filter=condition)


def _with(schema: pa.Schema, hive: pa.Schema) -> pa.Schema:
    for field in hive:
        if field.name not in schema.names:
            schema = schema.append(field)
    return schema


def _unify(base: pa.Schema, schemas: Iterable[pa.Schema]) -> pa.Schema:
    """The base columns, then every extra column: its one type, float64 or, if mixed, string."""
    extra: dict[str, set[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            if field.name not in base.names:
                extra.setdefault(field.name, set()).add(field.type)
    fields = list(base)
    for name in sorted(extra):
        types = {t for t in extra[name] if t != pa.null()}
        if len(types) == 1:
            fields.append(pa.field(name, types.pop()))
        elif types and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            fields.append(pa.field(name, pa.float64()))
        else:
            fields.append(pa.field(name, pa.string() if types else pa.float64()))
    return pa.schema(fields)
