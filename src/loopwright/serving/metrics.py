"""Serving metrics in the Prometheus text exposition format (0.0.4), with no dependency.

Families (every one labelled ``route`` and ``version`` except the rejected-request counter):

======================================  =========  ==========================================
``loopwright_requests_total``           counter    requests answered or failed by a model
``loopwright_request_errors_total``     counter    of those, the ones that failed
``loopwright_request_latency_seconds``  histogram  time in the runtime (batch wait + model)
``loopwright_batch_size``               histogram  rows per model call (micro-batching)
``loopwright_queue_depth``              gauge      requests waiting for a batch (on scrape)
``loopwright_predictions_total``        counter    classifiers: predictions per ``class``
``loopwright_prediction_value``         histogram  regressors: predicted values
``loopwright_requests_rejected_total``  counter    refused before a model, by ``code``
======================================  =========  ==========================================

Values are per process: with ``--workers N`` each worker keeps and exposes its own, and a
scrape reaches whichever worker accepts it. That is acceptable for phase 1 (Prometheus sums
counters across scrapes of replicas, not of workers behind one port); a multi-process
aggregate (a shared directory, as ``prometheus_client``'s multiprocess mode does) is phase 2.
All updates happen on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Histogram", "ServingMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0)
MAX_CLASSES = 100  # beyond this many distinct labels, the rest count as class="other"

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets, a sum and a count per label set."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[Labels, list[Any]] = {}  # labels -> [counts per bucket, sum, count]

    def observe(self, labels: Labels, value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [[0] * len(self.buckets), 0.0, 0]
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            series[0][index] += 1
        series[1] += value
        series[2] += 1

    def lines(self, name: str) -> Iterable[str]:
        for labels, (counts, total, count) in self._series.items():
            running = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                running += n
                yield f"{name}_bucket{_fmt((*labels, ('le', _num(bound))))} {running}"
            yield f"{name}_bucket{_fmt((*labels, ('le', '+Inf')))} {count}"
            yield f"{name}_sum{_fmt(labels)} {_num(total)}"
            yield f"{name}_count{_fmt(labels)} {count}"


class ServingMetrics:
    """The families of the module docstring; :meth:`render` writes them all."""

    def __init__(self) -> None:
        self.requests: dict[Labels, int] = {}
        self.errors: dict[Labels, int] = {}
        self.rejected: dict[Labels, int] = {}
        self.classes: dict[Labels, int] = {}
        self.queue_depth: dict[Labels, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.values = Histogram(VALUE_BUCKETS)
        self._class_names: set[str] = set()

    def declare(self, route: str, version: int) -> None:
        """Show a route's counters at 0 from the moment it loads (rates need a first sample)."""
        labels = _route(route, version)
        self.requests.setdefault(labels, 0)
        self.errors.setdefault(labels, 0)

    def observe_request(self, route: str, version: int, seconds: float, failed: bool) -> None:
        labels = _route(route, version)
        self.requests[labels] = self.requests.get(labels, 0) + 1
        if failed:
            self.errors[labels] = self.errors.get(labels, 0) + 1
        self.latency.observe(labels, seconds)

    def observe_batch(self, rows: int) -> None:
        self.batch_size.observe((), float(rows))

    def reject(self, code: str) -> None:
        labels = (("code", code),)
        self.rejected[labels] = self.rejected.get(labels, 0) + 1

    def set_queue_depth(self, route: str, version: int, depth: int) -> None:
        self.queue_depth[_route(route, version)] = depth

    def observe_predictions(
        self, route: str, version: int, predictions: list[Any], classes: list[Any] | None
    ) -> None:
        """Per class for classifiers; a value histogram for numeric answers otherwise."""
        labels = _route(route, version)
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

    def render(self) -> str:
        out: list[str] = []
        _counter(out, "loopwright_requests_total", "Requests answered or failed by a model.",
                 self.requests)  # fmt: skip
        _counter(out, "loopwright_request_errors_total", "Requests a model failed.", self.errors)
        _counter(out, "loopwright_requests_rejected_total",
                 "Requests refused before reaching a model, by error code.",
                 self.rejected)  # fmt: skip
        _counter(out, "loopwright_predictions_total", "Classifier predictions per class.",
                 self.classes)  # fmt: skip
        _histogram(out, "loopwright_request_latency_seconds",
                   "Time from routing to answer (batch wait and model).", self.latency)  # fmt: skip
        _histogram(out, "loopwright_batch_size", "Rows per model call.", self.batch_size)
        _histogram(out, "loopwright_prediction_value", "Regressor predictions.", self.values)
        out.append("# HELP loopwright_queue_depth Requests waiting for a micro-batch.")
        out.append("# TYPE loopwright_queue_depth gauge")
        out.extend(f"loopwright_queue_depth{_fmt(k)} {v}" for k, v in self.queue_depth.items())
        return "\n".join(out) + "\n"


def _counter(out: list[str], name: str, help_: str, values: dict[Labels, int]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} counter")
    out.extend(f"{name}{_fmt(labels)} {value}" for labels, value in values.items())


def _histogram(out: list[str], name: str, help_: str, histogram: Histogram) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} histogram")
    out.extend(histogram.lines(name))


def _route(route: str, version: int) -> Labels:
    return (("route", route), ("version", str(version)))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"
