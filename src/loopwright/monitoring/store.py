"""What monitoring persists, and the interface of the store that keeps it.

Entities are frozen dataclasses; :class:`MonitorStore` is the protocol the
:class:`~loopwright.monitoring.service.MonitorService` calls and ``backends/sql/monitoring.py``
implements. The one rule that matters for crash safety: :meth:`MonitorStore.record_window` writes a
window, its series points and the alert changes it caused in ONE transaction, so a killed run
leaves whole windows or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "AlertChange",
    "AlertRecord",
    "MonitorStore",
    "ReferenceProfileStore",
    "SeriesPoint",
    "WindowRecord",
]

ProfileKind = Literal["features", "predictions"]


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """One computed window of one deployment: counts and the full report (JSON-safe)."""

    deployment: str
    window: str  # the spec: "1h", "1d"
    start_ms: int
    end_ms: int
    computed_at_ms: int
    n_predictions: int
    n_labelled: int
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, with_report: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not with_report:
            out.pop("report")
        return out


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One value of a named series at the end of a window; NaN = undefined in that window."""

    name: str
    end_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A stored alert: one per (deployment, rule, window spec) episode, fired once, resolved once.

    The fields mirror :class:`loopwright.monitoring.alerts.Alert` (``value`` and
    ``window_end_ms`` are those of the window it fired on) plus what storage adds: the window
    spec, the reason of a resolution by hand, and ``deliveries``: the transition (``"fire"``,
    ``"resolve"``) -> the notifier's results. A transition missing from ``deliveries`` has not
    been notified yet (the next run retries it).
    """

    id: str
    deployment: str
    rule: str
    series: str
    window: str
    op: str
    state: str  # firing | resolved
    severity: str
    threshold: float
    value: float | None
    window_end_ms: int
    fired_at_ms: int
    message: str
    resolved_at_ms: int | None = None
    resolved_value: float | None = None
    resolution: str | None = None  # the reason, when resolved by hand
    deliveries: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert state change stored with a window: ``fire`` (insert) or ``resolve``."""

    action: Literal["fire", "resolve"]
    alert: AlertRecord


class ReferenceProfileStore(Protocol):
    """The part of the monitor store the registry needs at registration."""

    def put_reference_profile(
        self,
        model: str,
        version: int,
        profile: dict[str, Any],
        *,
        kind: ProfileKind = "features",
        source: str | None = None,
        replace: bool = True,
    ) -> bool:
        """Store a profile; with ``replace=False`` an existing one wins. True if written."""
        ...

    def get_reference_profile(
        self, model: str, version: int, kind: ProfileKind = "features"
    ) -> tuple[dict[str, Any], str | None] | None:
        """(profile, source) or None."""
        ...


class MonitorStore(ReferenceProfileStore, Protocol):
    """Windows, series, alerts and reference profiles of deployments."""

    def computed_starts(self, deployment: str, window: str) -> set[int]: ...

    def record_window(
        self,
        record: WindowRecord,
        points: list[SeriesPoint],
        changes: Sequence[AlertChange] = (),
        *,
        replace: bool = False,
    ) -> bool:
        """Store a window with its points and alert changes in one transaction.

        Returns False (and writes nothing) when the window exists and ``replace`` is False: another
        runner got there first. ``replace`` swaps a stored window and its points for new ones.
        """
        ...

    def get_window(self, deployment: str, window: str, start_ms: int) -> WindowRecord: ...

    def list_windows(
        self,
        deployment: str,
        window: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        with_report: bool = False,
    ) -> list[WindowRecord]:
        """Windows in time order; ``limit`` keeps the newest."""
        ...

    def series(
        self,
        deployment: str,
        name: str,
        window: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, float]]:
        """(window end, value) in time order; ``limit`` keeps the newest points."""
        ...

    def series_names(self, deployment: str, window: str | None = None) -> list[str]: ...

    def list_alerts(
        self,
        deployment: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        """Newest first."""
        ...

    def get_alert(self, alert_id: str) -> AlertRecord: ...

    def resolve_alert(self, alert_id: str, *, resolved_at_ms: int, reason: str) -> AlertRecord:
        """Resolve by hand (audited with the reason); resolving a resolved alert is a Conflict."""
        ...

    def set_deliveries(self, alert_id: str, transition: str, results: list[Any]) -> None: ...

    def close(self) -> None: ...
