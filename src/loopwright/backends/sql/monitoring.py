"""The SQL implementation of :class:`~loopwright.monitoring.store.MonitorStore`.

It shares the engine and the connection helpers of :class:`SqlTrackingStore`, like the registry
store. A window, its series points and the alert changes it caused are written in one transaction
(:meth:`SqlMonitorStore.record_window`); the window's primary key makes a second writer of the same
window a no-op rather than a duplicate. Alert state changes and reference profiles append audit
events inside their transaction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from loopwright.backends.sql import schema_monitoring as m
from loopwright.backends.sql.audit import jsonable
from loopwright.backends.sql.store import SqlTrackingStore, now_ms
from loopwright.errors import Conflict, InvalidInput, NotFound
from loopwright.monitoring.store import (
    AlertChange,
    AlertRecord,
    ProfileKind,
    SeriesPoint,
    WindowRecord,
)

__all__ = ["SqlMonitorStore"]

_KINDS = ("features", "predictions")


class SqlMonitorStore:
    """Reference profiles, monitor windows, series points and alerts in the metadata database."""

    def __init__(self, base: SqlTrackingStore) -> None:
        self.base = base
        self._read = base._read
        self._write = base._write
        self._audit = base.audit

    def __repr__(self) -> str:
        return f"SqlMonitorStore({self.base!r})"

    def close(self) -> None:
        self.base.close()

    # -- reference profiles -----------------------------------------------------------------

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
        if kind not in _KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(_KINDS)}", field="kind")
        t = m.reference_profiles
        row = {
            "model": model,
            "version": int(version),
            "kind": kind,
            "profile": jsonable(profile),
            "source": source,
            "created_at": now_ms(),
        }
        keys = [t.c.model, t.c.version, t.c.kind]
        stmt: Any = self.base.dialect.insert(t).values(**row)  # the dialect's upsert-able insert
        if replace:
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={"profile": stmt.excluded.profile, "source": stmt.excluded.source,
                      "created_at": stmt.excluded.created_at},
            )  # fmt: skip
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        with self._write() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for an upsert's rowcount
            written = conn.execute(stmt.returning(t.c.model)).first() is not None
            if written:
                self._audit(
                    conn,
                    "version.reference_profile",
                    "model_version",
                    f"{model}/{version}",
                    after={"kind": kind, "source": source},
                )
        return written

    def get_reference_profile(
        self, model: str, version: int, kind: ProfileKind = "features"
    ) -> tuple[dict[str, Any], str | None] | None:
        t = m.reference_profiles
        stmt = select(t.c.profile, t.c.source).where(
            t.c.model == model, t.c.version == int(version), t.c.kind == kind
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (row.profile, row.source)

    # -- windows and series -----------------------------------------------------------------

    def computed_starts(self, deployment: str, window: str) -> set[int]:
        w = m.monitor_windows
        stmt = select(w.c.start_ms).where(w.c.deployment == deployment, w.c.window == window)
        with self._read() as conn:
            return {int(s) for s in conn.scalars(stmt)}

    def record_window(
        self,
        record: WindowRecord,
        points: list[SeriesPoint],
        changes: Sequence[AlertChange] = (),
        *,
        replace: bool = False,
    ) -> bool:
        w, s = m.monitor_windows, m.monitor_series
        key = (
            w.c.deployment == record.deployment,
            w.c.window == record.window,
            w.c.start_ms == record.start_ms,
        )
        try:
            with self._write() as conn:
                exists = conn.scalar(select(w.c.start_ms).where(*key)) is not None
                if exists and not replace:
                    return False
                if exists:
                    conn.execute(delete(w).where(*key))
                    conn.execute(
                        delete(s).where(
                            s.c.deployment == record.deployment,
                            s.c.window == record.window,
                            s.c.end_ms == record.end_ms,
                        )
                    )
                conn.execute(w.insert().values(**_window_row(record)))
                if points:
                    conn.execute(s.insert(), [_point_row(record, p) for p in points])
                for change in changes:
                    self._apply(conn, change)
        except SAIntegrityError:  # another runner stored this window between our check and insert
            return False
        return True

    def _apply(self, conn: Connection, change: AlertChange) -> None:
        a, alert = m.alerts, change.alert
        if change.action == "fire":
            conn.execute(a.insert().values(**_alert_row(alert)))
            self._audit(conn, "alert.fire", "alert", alert.id, after=_audit_view(alert))
            return
        conn.execute(
            update(a)
            .where(a.c.id == alert.id, a.c.state == "firing")
            .values(
                state="resolved",
                resolved_at=alert.resolved_at_ms,
                resolved_value=_float_or_none(alert.resolved_value),
                message=alert.message,
            )
        )
        self._audit(
            conn,
            "alert.resolve",
            "alert",
            alert.id,
            before={"state": "firing"},
            after=_audit_view(alert),
            reason=alert.message,
        )

    def get_window(self, deployment: str, window: str, start_ms: int) -> WindowRecord:
        w = m.monitor_windows
        stmt = select(w).where(
            w.c.deployment == deployment, w.c.window == window, w.c.start_ms == int(start_ms)
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(
                f"deployment {deployment!r} has no computed {window} window starting at {start_ms}",
                field="start_ms",
            )
        return _window(row, with_report=True)

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
        w = m.monitor_windows
        columns = list(w.c) if with_report else [c for c in w.c if c.name != "report"]
        stmt = select(*columns).where(w.c.deployment == deployment)
        if window is not None:
            stmt = stmt.where(w.c.window == window)
        if start_ms is not None:
            stmt = stmt.where(w.c.start_ms >= start_ms)
        if end_ms is not None:
            stmt = stmt.where(w.c.end_ms <= end_ms)
        stmt = stmt.order_by(w.c.start_ms.desc(), w.c.window)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [_window(r, with_report=with_report) for r in reversed(rows)]

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
        s = m.monitor_series
        stmt = select(s.c.end_ms, s.c.value).where(
            s.c.deployment == deployment, s.c.name == name, s.c.window == window
        )
        if start_ms is not None:
            stmt = stmt.where(s.c.end_ms > start_ms)
        if end_ms is not None:
            stmt = stmt.where(s.c.end_ms <= end_ms)
        stmt = stmt.order_by(s.c.end_ms.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [(int(r.end_ms), _nan(r.value)) for r in reversed(rows)]

    def series_names(self, deployment: str, window: str | None = None) -> list[str]:
        s = m.monitor_series
        stmt = select(s.c.name).where(s.c.deployment == deployment).distinct()
        if window is not None:
            stmt = stmt.where(s.c.window == window)
        with self._read() as conn:
            return sorted(conn.scalars(stmt))

    # -- alerts -----------------------------------------------------------------------------

    def list_alerts(
        self,
        deployment: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        a = m.alerts
        stmt = select(a)
        if deployment is not None:
            stmt = stmt.where(a.c.deployment == deployment)
        if state is not None:
            stmt = stmt.where(a.c.state == state)
        stmt = stmt.order_by(a.c.fired_at.desc(), a.c.window_end.desc(), a.c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            return [_alert(r) for r in conn.execute(stmt)]

    def get_alert(self, alert_id: str) -> AlertRecord:
        a = m.alerts
        with self._read() as conn:
            row = conn.execute(select(a).where(a.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"alert {alert_id!r} not found", field="alert_id")
        return _alert(row)

    def resolve_alert(self, alert_id: str, *, resolved_at_ms: int, reason: str) -> AlertRecord:
        a = m.alerts
        with self._write() as conn:
            row = conn.execute(select(a).where(a.c.id == alert_id)).first()
            if row is None:
                raise NotFound(f"alert {alert_id!r} not found", field="alert_id")
            if row.state != "firing":
                raise Conflict(f"alert {alert_id} is already {row.state}", field="alert_id")
            conn.execute(
                update(a)
                .where(a.c.id == alert_id)
                .values(state="resolved", resolved_at=resolved_at_ms, resolution=reason)
            )
            self._audit(
                conn,
                "alert.resolve",
                "alert",
                alert_id,
                before={"state": "firing"},
                after={"state": "resolved", "by": "hand"},
                reason=reason,
            )
        return self.get_alert(alert_id)

    def set_deliveries(self, alert_id: str, transition: str, results: list[Any]) -> None:
        a = m.alerts
        with self._write() as conn:
            current = conn.scalar(select(a.c.deliveries).where(a.c.id == alert_id))
            if current is None:
                raise NotFound(f"alert {alert_id!r} not found", field="alert_id")
            merged = {**current, transition: jsonable(results)}
            conn.execute(update(a).where(a.c.id == alert_id).values(deliveries=merged))


# -- rows <-> entities ------------------------------------------------------------------------


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _float_or_none(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _window_row(r: WindowRecord) -> dict[str, Any]:
    return {
        "deployment": r.deployment,
        "window": r.window,
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
        "computed_at": r.computed_at_ms,
        "n_predictions": r.n_predictions,
        "n_labelled": r.n_labelled,
        "report": jsonable(r.report),
    }


def _window(row: Any, *, with_report: bool) -> WindowRecord:
    return WindowRecord(
        deployment=row.deployment,
        window=row.window,
        start_ms=int(row.start_ms),
        end_ms=int(row.end_ms),
        computed_at_ms=int(row.computed_at),
        n_predictions=int(row.n_predictions),
        n_labelled=int(row.n_labelled),
        report=row.report if with_report else {},
    )


def _point_row(r: WindowRecord, p: SeriesPoint) -> dict[str, Any]:
    return {
        "deployment": r.deployment,
        "name": p.name,
        "window": r.window,
        "end_ms": p.end_ms,
        "value": _float_or_none(p.value),
    }


def _alert_row(a: AlertRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "deployment": a.deployment,
        "rule": a.rule,
        "series": a.series,
        "window": a.window,
        "op": a.op,
        "state": a.state,
        "severity": a.severity,
        "fired_at": a.fired_at_ms,
        "resolved_at": a.resolved_at_ms,
        "value": _float_or_none(a.value),
        "resolved_value": _float_or_none(a.resolved_value),
        "threshold": a.threshold,
        "window_end": a.window_end_ms,
        "message": a.message,
        "resolution": a.resolution,
        "deliveries": jsonable(a.deliveries),
    }


def _alert(row: Any) -> AlertRecord:
    return AlertRecord(
        id=row.id,
        deployment=row.deployment,
        rule=row.rule,
        series=row.series,
        window=row.window,
        op=row.op,
        state=row.state,
        severity=row.severity,
        threshold=float(row.threshold),
        value=None if row.value is None else float(row.value),
        window_end_ms=int(row.window_end),
        fired_at_ms=int(row.fired_at),
        message=row.message,
        resolved_at_ms=None if row.resolved_at is None else int(row.resolved_at),
        resolved_value=None if row.resolved_value is None else float(row.resolved_value),
        resolution=row.resolution,
        deliveries=dict(row.deliveries or {}),
    )


def _audit_view(a: AlertRecord) -> dict[str, Any]:
    return {
        "deployment": a.deployment,
        "rule": a.rule,
        "series": a.series,
        "window": a.window,
        "state": a.state,
        "severity": a.severity,
        "op": a.op,
        "value": a.value,
        "threshold": a.threshold,
        "window_end": a.window_end_ms,
        "resolved_value": a.resolved_value,
    }
