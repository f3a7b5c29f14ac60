"""Serving metrics in the Prometheus text exposition format (0.0.4), with no dependency.

Families (every one labelled ``route`` and ``version`` except the batch, rejected-request and
worker families):

======================================  =========  ==========================================
``loopwright_requests_total``           counter    requests answered or failed by a model
``loopwright_request_errors_total``     counter    of those, the ones that failed
``loopwright_request_latency_seconds``  histogram  time in the runtime (batch wait + model)
``loopwright_batch_size``               histogram  rows per model call (micro-batching)
``loopwright_queue_depth``              gauge      requests waiting for a batch
``loopwright_predictions_total``        counter    classifiers: predictions per ``class``
``loopwright_prediction_value``         histogram  regressors: predicted values
``loopwright_requests_rejected_total``  counter    refused before a model, by ``code``
``loopwright_serving_workers``          gauge      live worker processes this scrape merged
======================================  =========  ==========================================

**Several workers.** ``loopwright serve --workers N`` runs N processes behind one port, and a
scrape reaches whichever one accepts it. So that every scrape sees the whole server, the CLI
gives the workers one directory (:data:`METRICS_DIR_ENV`), and each worker's
:class:`ServingMetrics`:

- keeps its own values in memory (the request path touches no file);
- writes a snapshot of them, atomically (temporary file + ``os.replace``), into that directory
  every ``flush_interval_s`` from a background thread, on every scrape, and at exit;
- on a scrape, merges its in-memory values with every other snapshot in the directory.

Merging: counters and histogram buckets **sum** over every snapshot, those of workers that have
since died included, so a counter never goes backwards when a worker exits or is replaced (a
replacement writes a new file and starts from 0). The gauge ``loopwright_queue_depth`` sums
over **live** workers only: a snapshot older than ``stale_after_s`` (its writer stopped
flushing: dead or frozen) no longer counts. A worker samples its queue depth when it is
scraped (or when :attr:`ServingMetrics.gauge_sampler` is set, before each flush), so another
worker's share can be up to one scrape old.

Monotonic across scrapes: a worker writes its snapshot *before* answering a scrape, so whatever
it reported is on disk before the next scrape (through any worker) reads it; snapshots are
taken and written under one lock, so an older snapshot never replaces a newer one.

Without the directory (one worker, or in-process use) nothing is written and a scrape shows
this process's values. Updates happen on the event loop thread; a lock (uncontended, well
under a microsecond) guards them against the flusher thread's snapshot.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["METRICS_DIR_ENV", "Histogram", "ServingMetrics"]

log = logging.getLogger("loopwright.serving")

#: The per-server directory of worker snapshots (set by ``loopwright serve`` / ``deploy``).
METRICS_DIR_ENV = "LOOPWRIGHT_METRICS_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0)
MAX_CLASSES = 100  # beyond this many distinct labels, the rest count as class="other"
SNAPSHOT_SUFFIX = ".metrics.json"

Labels = tuple[tuple[str, str], ...]
Series = list[Any]  # [counts per bucket, sum, count]

#: (family, attribute, help) -- the rendering order.
_COUNTERS = (
    ("loopwright_requests_total", "requests", "Requests answered or failed by a model."),
    ("loopwright_request_errors_total", "errors", "Requests a model failed."),
    ("loopwright_requests_rejected_total", "rejected",
     "Requests refused before reaching a model, by error code."),
    ("loopwright_predictions_total", "classes", "Classifier predictions per class."),
)  # fmt: skip
_HISTOGRAMS = (
    ("loopwright_request_latency_seconds", "latency",
     "Time from routing to answer (batch wait and model)."),
    ("loopwright_batch_size", "batch_size", "Rows per model call."),
    ("loopwright_prediction_value", "values", "Regressor predictions."),
)  # fmt: skip
_GAUGES = (("loopwright_queue_depth", "queue_depth", "Requests waiting for a micro-batch."),)
_WORKERS = "loopwright_serving_workers"


class Histogram:
    """Cumulative buckets, a sum and a count per label set."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[Labels, Series] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [[0] * len(self.buckets), 0.0, 0]
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            series[0][index] += 1
        series[1] += value
        series[2] += 1

    def copy_series(self) -> dict[Labels, Series]:
        return {k: [list(counts), total, n] for k, (counts, total, n) in self._series.items()}

    def lines(self, name: str) -> Iterable[str]:
        return _histogram_lines(name, self.buckets, self._series)


class _State:
    """Every family's values, detached from the live objects: what is merged and rendered."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {name: {} for name, _, _ in _COUNTERS}
        self.gauges: dict[str, dict[Labels, float]] = {name: {} for name, _, _ in _GAUGES}
        self.histograms: dict[str, tuple[tuple[float, ...], dict[Labels, Series]]] = {}

    def to_json(self, written_at: float) -> bytes:
        def pairs(values: dict[Labels, Any]) -> list[Any]:
            return [[[list(kv) for kv in labels], value] for labels, value in values.items()]

        doc = {
            "pid": os.getpid(),
            "written_at": written_at,
            "counters": {name: pairs(v) for name, v in self.counters.items()},
            "gauges": {name: pairs(v) for name, v in self.gauges.items()},
            "histograms": {name: {"buckets": list(b), "series": pairs(s)}
                           for name, (b, s) in self.histograms.items()},
        }  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()

    def add(self, doc: dict[str, Any], *, live: bool) -> None:
        """Sum a snapshot's counters and histograms in; its gauges only if its writer lives."""
        for name, pairs in doc.get("counters", {}).items():
            _sum_into(self.counters.setdefault(name, {}), pairs)
        if live:
            for name, pairs in doc.get("gauges", {}).items():
                _sum_into(self.gauges.setdefault(name, {}), pairs)
        for name, hist in doc.get("histograms", {}).items():
            buckets = tuple(float(b) for b in hist["buckets"])
            mine = self.histograms.setdefault(name, (buckets, {}))
            if mine[0] != buckets:  # another loopwright version's buckets: cannot be summed
                log.warning("metrics: %s buckets differ between workers; one skipped", name)
                continue
            for labels_json, (counts, total, n) in hist["series"]:
                labels = _labels(labels_json)
                into = mine[1].setdefault(labels, [[0] * len(buckets), 0.0, 0])
                into[0] = [a + b for a, b in zip(into[0], counts, strict=True)]
                into[1] += total
                into[2] += n

    def render(self, workers: int | None) -> str:
        out: list[str] = []
        for name, _, help_ in _COUNTERS:
            _family(out, name, "counter", help_)
            out.extend(f"{name}{_fmt(k)} {_int(v)}" for k, v in self.counters[name].items())
        for name, _, help_ in _HISTOGRAMS:
            _family(out, name, "histogram", help_)
            buckets, series = self.histograms[name]
            out.extend(_histogram_lines(name, buckets, series))
        for name, _, help_ in _GAUGES:
            _family(out, name, "gauge", help_)
            out.extend(f"{name}{_fmt(k)} {_int(v)}" for k, v in self.gauges[name].items())
        if workers is not None:
            _family(out, _WORKERS, "gauge", "Live worker processes whose metrics were merged.")
            out.append(f"{_WORKERS} {workers}")
        return "\n".join(out) + "\n"


class ServingMetrics:
    """The families of the module docstring; :meth:`render` writes them all.

    ``directory``: where this server's workers share snapshots; ``None`` reads
    :data:`METRICS_DIR_ENV` (unset or empty: this process only). Constructing only stores; the
    flusher thread starts with the first :meth:`declare` or :meth:`render`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        flush_interval_s: float = 1.0,
        stale_after_s: float | None = None,
    ) -> None:
        if directory is None:
            directory = os.environ.get(METRICS_DIR_ENV) or None
        self.directory = Path(directory) if directory is not None else None
        self.flush_interval_s = flush_interval_s
        self.stale_after_s = stale_after_s or max(10.0, 10 * flush_interval_s)
        #: Called (from the flusher thread) before each periodic snapshot, to sample gauges.
        self.gauge_sampler: Callable[[], None] | None = None
        self.requests: dict[Labels, int] = {}
        self.errors: dict[Labels, int] = {}
        self.rejected: dict[Labels, int] = {}
        self.classes: dict[Labels, int] = {}
        self.queue_depth: dict[Labels, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.values = Histogram(VALUE_BUCKETS)
        self._class_names: set[str] = set()
        self._lock = threading.Lock()  # guards the values against the flusher's snapshot
        self._write_lock = threading.Lock()  # one snapshot taken-and-written at a time
        # Unique per instance: a later process reusing this pid never overwrites our counters.
        self._file_name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SNAPSHOT_SUFFIX}"
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._warned = False

    # -- updates (event loop thread; no I/O) --------------------------------------------------

    def declare(self, route: str, version: int) -> None:
        """Show a route's counters at 0 from the moment it loads (rates need a first sample)."""
        labels = _route(route, version)
        with self._lock:
            self.requests.setdefault(labels, 0)
            self.errors.setdefault(labels, 0)
        self._ensure_flusher()

    def observe_request(self, route: str, version: int, seconds: float, failed: bool) -> None:
        labels = _route(route, version)
        with self._lock:
            self.requests[labels] = self.requests.get(labels, 0) + 1
            if failed:
                self.errors[labels] = self.errors.get(labels, 0) + 1
            self.latency.observe(labels, seconds)

    def observe_batch(self, rows: int) -> None:
        with self._lock:
            self.batch_size.observe((), float(rows))

    def reject(self, code: str) -> None:
        labels = (("code", code),)
        with self._lock:
            self.rejected[labels] = self.rejected.get(labels, 0) + 1

    def set_queue_depth(self, route: str, version: int, depth: int) -> None:
        with self._lock:
            self.queue_depth[_route(route, version)] = depth

    def observe_predictions(
        self, route: str, version: int, predictions: list[Any], classes: list[Any] | None
    ) -> None:
        """Per class for classifiers; a value histogram for numeric answers otherwise."""
        labels = _route(route, version)
        with self._lock:
            if classes is None:
                for value in predictions:
                    number = isinstance(value, int | float) and not isinstance(value, bool)
                    if number and math.isfinite(value):
                        self.values.observe(labels, float(value))
                return
            for value in predictions:
                key = (*labels, ("class", self._class_name(value)))
                self.classes[key] = self.classes.get(key, 0) + 1

    def _class_name(self, value: Any) -> str:
        name = str(value)
        if name in self._class_names:
            return name
        if len(self._class_names) >= MAX_CLASSES:
            return "other"
        self._class_names.add(name)
        return name

    # -- snapshots and rendering -------------------------------------------------------------

    def render(self) -> str:
        """This process's values, merged with the other workers' snapshots when shared."""
        if self.directory is None:
            return self._state().render(None)
        self._ensure_flusher()
        with self._write_lock:  # persist what this scrape reports before reporting it
            state = self._state()
            try:
                self._write(state)
            except OSError as exc:
                log.warning("metrics: cannot write snapshot to %s: %s", self.directory, exc)
        workers = 1
        now = time.time()
        for doc in self._others():
            live = now - float(doc.get("written_at", 0.0)) <= self.stale_after_s
            state.add(doc, live=live)
            workers += live
        return state.render(workers)

    def flush(self) -> None:
        """Write this process's snapshot now (no-op without a directory)."""
        if self.directory is None:
            return
        with self._write_lock:
            self._write(self._state())

    def close(self) -> None:
        """Stop the flusher and write a last snapshot (also done at interpreter exit)."""
        self._stop.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.join(timeout=5)
            atexit.unregister(self.close)
        self._safe_flush()

    def _state(self) -> _State:
        state = _State()
        with self._lock:
            for name, attr, _ in _COUNTERS:
                state.counters[name] = dict(getattr(self, attr))
            for name, attr, _ in _GAUGES:
                state.gauges[name] = dict(getattr(self, attr))
            for name, attr, _ in _HISTOGRAMS:
                histogram: Histogram = getattr(self, attr)
                state.histograms[name] = (histogram.buckets, histogram.copy_series())
        return state

    def _write(self, state: _State) -> None:
        assert self.directory is not None
        target = self.directory / self._file_name
        tmp = self.directory / f".{self._file_name}.{threading.get_ident()}.tmp"
        tmp.write_bytes(state.to_json(time.time()))
        os.replace(tmp, target)

    def _others(self) -> Iterable[dict[str, Any]]:
        assert self.directory is not None
        for path in sorted(self.directory.glob("*" + SNAPSHOT_SUFFIX)):
            if path.name == self._file_name:
                continue
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:  # replaced atomically, so this is unexpected
                log.warning("metrics: cannot read worker snapshot %s: %s", path, exc)
                continue
            if isinstance(doc, dict):
                yield doc

    def _ensure_flusher(self) -> None:
        if self.directory is None or self._flusher is not None or self._stop.is_set():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._flusher = threading.Thread(
            target=self._flush_loop, name="loopwright-metrics-flush", daemon=True
        )
        self._flusher.start()
        atexit.register(self.close)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            if self.gauge_sampler is not None:
                with contextlib.suppress(Exception):
                    self.gauge_sampler()
            self._safe_flush()

    def _safe_flush(self) -> None:
        """A metrics write must never take a worker down: a failure is logged once."""
        try:
            self.flush()
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("metrics: cannot write snapshot to %s: %s", self.directory, exc)


# -- text format ----------------------------------------------------------------------------


def _family(out: list[str], name: str, kind: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")


def _histogram_lines(
    name: str, buckets: tuple[float, ...], series: dict[Labels, Series]
) -> Iterable[str]:
    for labels, (counts, total, count) in series.items():
        running = 0
        for bound, n in zip(buckets, counts, strict=True):
            running += n
            yield f"{name}_bucket{_fmt((*labels, ('le', _num(bound))))} {running}"
        yield f"{name}_bucket{_fmt((*labels, ('le', '+Inf')))} {count}"
        yield f"{name}_sum{_fmt(labels)} {_num(total)}"
        yield f"{name}_count{_fmt(labels)} {count}"


def _sum_into(into: dict[Labels, float], pairs: list[Any]) -> None:
    for labels_json, value in pairs:
        labels = _labels(labels_json)
        into[labels] = into.get(labels, 0) + value


def _labels(pairs: list[list[str]]) -> Labels:
    return tuple((str(k), str(v)) for k, v in pairs)


def _route(route: str, version: int) -> Labels:
    return (("route", route), ("version", str(version)))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _int(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"
