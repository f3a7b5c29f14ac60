"""Canary analysis: is the canary worse than the champion, and what was decided about it.

:class:`CanaryAnalysis` keeps every champion and canary answer of the last ``slo.window_s``
(ok or error, latency) and, when ``slo.min_agreement`` is set, how many rows of sampled canary
answers the champion answered the same way (the runtime re-scores them on the champion off the
request path). :meth:`CanaryAnalysis.judge` compares the two routes once ``slo.min_requests``
canary answers are in the window; its :class:`Verdict` names the rule that broke, the values
measured and the thresholds, so "why was it rolled back" has one answer everywhere (log line,
``/status``, audit event, alert).

The rules, in the order a verdict reports them:

``error_rate``
    the canary's error rate is above ``max_error_rate`` *and* above ``max_error_rate_ratio`` x
    the champion's (both conditions: a canary may fail as often as a struggling champion).
``p99_latency``
    the p99 latency of the canary's successful answers is above ``max_p99_ratio`` x the
    champion's and above ``p99_floor_ms``; judged once the champion has ``min_requests``
    successful answers in the window too.
``agreement``
    with ``min_agreement``: the share of compared rows where both predicted the same is below
    it; judged once ``ceil(min_requests x agreement_sample)`` rows were compared.

:class:`Decision` is what happened to one canary version (``rolled_back`` or ``promoted``), and
:class:`StateFile` keeps it at ``<log uri>/_state/<deployment>.json`` so every worker of a server,
and the next start, applies it: the first writer of a decision for a version wins, atomically,
and only the winner records the audit event. A decision names its canary version: when the
canary's alias moves to another version the decision no longer applies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from loopwright.serving.deployment import CanarySLO

__all__ = [
    "CANARY",
    "PROMOTED",
    "ROLLED_BACK",
    "RULES",
    "SERVING",
    "CanaryAnalysis",
    "Decision",
    "StateFile",
    "Verdict",
    "agreeing_rows",
    "new_alert",
    "wall_clock_ms",
]

#: Deployment states: no canary; a canary taking traffic; its version rolled back / promoted.
SERVING, CANARY, ROLLED_BACK, PROMOTED = "serving", "canary", "rolled_back", "promoted"
RULES = ("error_rate", "p99_latency", "agreement")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """One judgement of the canary against the champion over the window."""

    breached: bool
    rule: str | None  # the first rule broken (see RULES), None when healthy
    reason: str
    breaches: tuple[str, ...]
    measured: dict[str, float | int | None]
    thresholds: dict[str, float | int | None]
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["breaches"] = list(self.breaches)
        return data


class _Window:
    """One route's answers within the window, oldest first, with running counts."""

    __slots__ = ("answers", "errors")

    def __init__(self) -> None:
        self.answers: deque[tuple[int, bool, float]] = deque()
        self.errors = 0

    def add(self, at_ms: int, ok: bool, latency_ms: float) -> None:
        self.answers.append((at_ms, ok, latency_ms))
        self.errors += not ok

    def prune(self, cutoff_ms: int) -> None:
        answers = self.answers
        while answers and answers[0][0] < cutoff_ms:
            self.errors -= not answers.popleft()[1]

    @property
    def count(self) -> int:
        return len(self.answers)

    @property
    def error_rate(self) -> float:
        return self.errors / len(self.answers) if self.answers else 0.0

    def ok_latencies(self) -> list[float]:
        return [latency for _, ok, latency in self.answers if ok]


def p99(values: list[float]) -> float | None:
    """The nearest-rank 99th percentile (of 20 values: the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def agreeing_rows(canary: Sequence[Any], champion: Sequence[Any], tolerance: float = 0.0) -> int:
    """How many rows got the same prediction; numbers agree within ``tolerance``."""
    agreed = 0
    for a, b in zip(canary, champion, strict=True):
        if _numeric(a) and _numeric(b):
            agreed += abs(float(a) - float(b)) <= tolerance
        else:
            agreed += a == b
    return agreed


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class CanaryAnalysis:
    """The sliding-window SLO tracker of one deployment (see the module docstring).

    Not thread-safe: the runtime feeds and judges it from its event loop. ``clock`` gives
    milliseconds (the wall clock unless a replay passes its own).
    """

    def __init__(
        self,
        slo: CanarySLO,
        clock: Callable[[], int] = wall_clock_ms,
        *,
        seed: int | None = None,
    ) -> None:
        self.slo = slo
        self.clock = clock
        self.windows = {"champion": _Window(), "canary": _Window()}
        self.compared: deque[tuple[int, int, int]] = deque()  # (at_ms, agreed, rows)
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        counts = {name: w.count for name, w in self.windows.items()}
        return f"CanaryAnalysis({counts})"

    @property
    def size(self) -> int:
        """Answers held (both routes), including some older than the window until judged."""
        return sum(w.count for w in self.windows.values())

    @property
    def measures_agreement(self) -> bool:
        return self.slo.min_agreement is not None

    def observe(self, route: str, ok: bool, latency_ms: float) -> None:
        """One answer of ``route`` (``champion`` or ``canary``); other routes are ignored."""
        window = self.windows.get(route)
        if window is not None:
            window.add(self.clock(), ok, latency_ms)

    def wants_comparison(self) -> bool:
        """Whether to re-score this canary answer on the champion (``agreement_sample``)."""
        if not self.measures_agreement:
            return False
        return self.slo.agreement_sample >= 1.0 or self._random.random() < self.slo.agreement_sample

    def observe_agreement(self, agreed: int, rows: int) -> None:
        if rows > 0:
            self.compared.append((self.clock(), agreed, rows))

    def reset(self, route: str | None = None) -> None:
        """Forget one route's answers (its version changed), or everything."""
        for name in self.windows:
            if route in (None, name):
                self.windows[name] = _Window()
        if route in (None, "canary"):
            self.compared.clear()

    def _prune(self, now_ms: int) -> None:
        cutoff = now_ms - int(self.slo.window_s * 1000)
        for window in self.windows.values():
            window.prune(cutoff)
        while self.compared and self.compared[0][0] < cutoff:
            self.compared.popleft()

    def snapshot(self) -> dict[str, float | int | None]:
        """What the window holds now (for ``/status``)."""
        now = self.clock()
        self._prune(now)
        canary, champion = self.windows["canary"], self.windows["champion"]
        agreed = sum(a for _, a, _ in self.compared)
        rows = sum(r for _, _, r in self.compared)
        return {
            "canary_requests": canary.count,
            "champion_requests": champion.count,
            "canary_error_rate": canary.error_rate,
            "champion_error_rate": champion.error_rate,
            "canary_p99_ms": p99(canary.ok_latencies()),
            "champion_p99_ms": p99(champion.ok_latencies()),
            "compared_rows": rows,
            "agreement": agreed / rows if rows else None,
        }

    def judge(self) -> Verdict | None:
        """The verdict over the window; None while fewer than ``min_requests`` canary answers."""
        slo = self.slo
        measured = self.snapshot()
        canary_n = int(measured["canary_requests"] or 0)
        if canary_n < slo.min_requests:
            return None
        champion_ok = self.windows["champion"].count - self.windows["champion"].errors
        canary_rate = float(measured["canary_error_rate"] or 0.0)
        champion_rate = float(measured["champion_error_rate"] or 0.0)
        error_limit = max(slo.max_error_rate, slo.max_error_rate_ratio * champion_rate)
        canary_p99, champion_p99 = measured["canary_p99_ms"], measured["champion_p99_ms"]
        p99_limit = None
        if champion_p99 is not None and champion_ok >= slo.min_requests:
            p99_limit = max(slo.max_p99_ratio * float(champion_p99), slo.p99_floor_ms)
        min_compared = max(1, math.ceil(slo.min_requests * slo.agreement_sample))
        agreement = measured["agreement"]
        thresholds: dict[str, float | int | None] = {
            "window_s": slo.window_s,
            "min_requests": slo.min_requests,
            "max_error_rate": slo.max_error_rate,
            "max_error_rate_ratio": slo.max_error_rate_ratio,
            "error_rate_limit": error_limit,
            "max_p99_ratio": slo.max_p99_ratio,
            "p99_floor_ms": slo.p99_floor_ms,
            "p99_limit_ms": p99_limit,
            "min_agreement": slo.min_agreement,
            "min_compared_rows": min_compared if self.measures_agreement else None,
        }
        reasons: dict[str, str] = {}
        window = f"over the last {slo.window_s:g}s"
        if canary_rate > error_limit:
            errors = self.windows["canary"].errors
            reasons["error_rate"] = (
                f"canary error rate {canary_rate:.1%} ({errors} of {canary_n} answers) {window} "
                f"is above {slo.max_error_rate:.1%} and above {slo.max_error_rate_ratio:g} x the "
                f"champion's {champion_rate:.1%}"
            )
        if p99_limit is not None and canary_p99 is not None and canary_p99 > p99_limit:
            reasons["p99_latency"] = (
                f"canary p99 latency {canary_p99:.1f} ms {window} is above "
                f"{slo.max_p99_ratio:g} x the champion's p99 {champion_p99:.1f} ms "
                f"(limit {p99_limit:.1f} ms)"
            )
        rows = int(measured["compared_rows"] or 0)
        if (
            slo.min_agreement is not None
            and agreement is not None
            and rows >= min_compared
            and agreement < slo.min_agreement
        ):
            reasons["agreement"] = (
                f"canary agreed with the champion on {agreement:.1%} of {rows} compared rows "
                f"{window}, below the minimum {slo.min_agreement:.1%}"
            )
        breaches = tuple(rule for rule in RULES if rule in reasons)
        rule = breaches[0] if breaches else None
        reason = "; ".join(reasons[r] for r in breaches) if breaches else "within the SLO"
        return Verdict(bool(breaches), rule, reason, breaches, measured, thresholds, self.clock())


# -- decisions and where they are kept -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What was decided about one canary version, by ``slo`` analysis or a ``manual`` call."""

    state: str  # ROLLED_BACK or PROMOTED
    canary_version: int
    canary_ref: str
    reason: str
    by: str  # "slo" or "manual" (a rollback), "promote"
    at_ms: int
    actor: str | None = None
    verdict: dict[str, Any] | None = None
    alert: dict[str, Any] | None = None
    worker: int = field(default_factory=os.getpid)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def new_alert(deployment: str, decision_reason: str, verdict: Verdict | None, at_ms: int,
              canary_version: int) -> dict[str, Any]:  # fmt: skip
    """The alert a rollback raises (kept in ``/status``; the monitoring rules add more)."""
    rule = verdict.rule if verdict is not None else "manual"
    value = threshold = None
    if verdict is not None and verdict.rule is not None:
        value, threshold = _value_and_threshold(verdict)
    return {
        "id": uuid.uuid4().hex,
        "rule": f"canary.{rule}",
        "deployment": deployment,
        "state": "firing",
        "severity": "critical" if verdict is not None else "warning",
        "fired_at_ms": at_ms,
        "canary_version": canary_version,
        "value": value,
        "threshold": threshold,
        "message": f"canary version {canary_version} rolled back: {decision_reason}",
    }


def _value_and_threshold(verdict: Verdict) -> tuple[Any, Any]:
    m, t = verdict.measured, verdict.thresholds
    if verdict.rule == "error_rate":
        return m["canary_error_rate"], t["error_rate_limit"]
    if verdict.rule == "p99_latency":
        return m["canary_p99_ms"], t["p99_limit_ms"]
    return m["agreement"], t["min_agreement"]


class StateFile:
    """A deployment's :class:`Decision` as JSON at ``<root>/_state/<deployment>.json``.

    Local directories get an atomic publish (a temp file, fsync, then a hard link for
    :meth:`claim` -- which fails if another worker published first -- or a rename for
    :meth:`write`); other fsspec URLs get a single object put, which object stores publish whole.
    """

    def __init__(self, root: str, deployment: str) -> None:
        self.fs, base = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.directory = f"{base.rstrip('/')}/_state"
        self.path = f"{self.directory}/{deployment}.json"

    def __repr__(self) -> str:
        return f"StateFile({self.path!r})"

    def read(self) -> Decision | None:
        """The stored decision; None when there is none (or it cannot be read: logged by caller)."""
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return Decision.from_dict(json.loads(raw))

    def claim(self, decision: Decision) -> Decision | None:
        """Publish ``decision`` unless one with the same version and state is there already.

        Returns None when this call published it, else the decision another worker published.
        """
        existing = self.read()
        if _same(existing, decision):
            return existing
        if not self.is_local:
            self.fs.pipe_file(self.path, _encode(decision))
            return None
        tmp = self._stage(decision)
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                existing = self.read()
                if _same(existing, decision):
                    return existing
                os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return None

    def write(self, decision: Decision) -> None:
        """Publish ``decision``, replacing what is there."""
        if not self.is_local:
            self.fs.pipe_file(self.path, _encode(decision))
            return
        tmp = self._stage(decision)
        try:
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _stage(self, decision: Decision) -> str:
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.directory)
        with os.fdopen(fd, "wb") as out:
            out.write(_encode(decision))
            out.flush()
            os.fsync(out.fileno())
        return tmp


def _same(a: Decision | None, b: Decision) -> bool:
    return a is not None and (a.canary_version, a.state) == (b.canary_version, b.state)


def _encode(decision: Decision) -> bytes:
    return json.dumps(decision.to_dict(), default=str, indent=1).encode("utf-8")


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
