"""Monitoring a deployment window by window: drift, performance, series, alerts, notifications.

:meth:`MonitorService.run` is what ``loopwright monitor run`` and ``server --scheduler`` call.

Windows
    A window spec (``1h``, ``1d``) cuts time into intervals aligned to UTC: a window starts at a
    multiple of its length since the epoch (``1d`` windows start at midnight UTC). A window is
    *complete* once ``now >= end + settle`` (``settle`` covers the prediction log's flush delay).
    ``run`` computes every complete window from the one holding the first logged prediction up to
    now that is not stored yet, oldest first; empty windows are stored too (zero requests), so a
    second run has nothing to do.

Crash safety and concurrency
    Each window is stored with its series points and the alert changes it caused in one
    transaction; a killed run leaves whole windows and the next run carries on. Two runners on the
    same deployment compute the same window at worst twice; the second write is refused by the
    window's key and dropped (the result says so).

Late labels
    Labels arrive after predictions. The newest ``recompute_labels`` stored windows (default 3)
    are re-joined with the labels on every run; when more of their predictions are labelled now,
    the window is recomputed and replaced (same drift, fresh performance series). Rules on
    label-dependent series (``perf.*``, ``labels.*``, ``fairness.*``, ``version.*``) are judged
    again on the recomputed values, so an AUC drop fires once the labels are back; the other
    rules are judged when a window is first computed.

Alerts and notifications
    Rules (:class:`~loopwright.monitoring.alerts.AlertRule`) are evaluated after each new window
    over the stored series plus the new points, with the alerts open for this deployment and
    window spec. A notification is sent after its window is committed; the results land in the
    alert's ``deliveries``. An alert whose notification never went out (a crash right after the
    commit) is notified by the next run, so every transition is notified at least once.

Reference profiles
    Input drift compares a window with the ``features`` profile of the version that answered most
    of its requests (stored at registration). Prediction drift compares the version's outputs with
    its ``predictions`` profile: the version's own outputs in the first window where it answered
    at least ``min_rows`` requests (that window is the baseline and reports no prediction drift).

Series names: ``serving.requests``, ``serving.error_rate``, ``drift.share``, ``drift.n_drifted``,
``drift.psi.<feature>``, ``drift.psi.prediction``, ``drift.prediction`` (1 when drifted),
``perf.<metric>``, ``perf.<metric>.delta`` (vs the version's validation metrics),
``labels.coverage``, ``labels.count``, ``fairness.<measure>``, and per served version (shadows
included, for champion/challenger comparisons) ``version.<n>.requests`` and
``version.<n>.perf.<metric>``.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from loopwright.errors import InvalidInput, LoopwrightError, NotFound
from loopwright.monitoring.store import (
    AlertChange,
    AlertRecord,
    MonitorStore,
    SeriesPoint,
    WindowRecord,
)

if TYPE_CHECKING:
    from loopwright.client import Client
    from loopwright.monitoring.config import MonitorConfig
    from loopwright.registry.service import RegistryService

__all__ = ["MonitorScheduler", "MonitorService", "WindowResult", "default_log_uri"]

log = logging.getLogger("loopwright.monitoring")

Progress = Callable[[int, int, "WindowResult"], None]
HOUR_MS = 3_600_000
#: Series whose values change when late labels arrive (their rules are re-judged on recompute).
LABEL_SERIES = ("perf.", "labels.", "fairness.", "version.")
CHUNK_MS = 86_400_000  # windows shorter than this are cut from one read of a day of the log


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def window_ms(spec: str, field: str = "window") -> int:
    """A window spec's length in ms (the config module, and its rule and drift types, load only
    when a window is computed or checked: the server imports this module at start-up)."""
    from loopwright.monitoring.config import window_ms as parse

    return parse(spec, field)


def duration_ms(spec: str, field: str) -> int:
    from loopwright.monitoring.config import duration_ms as parse

    return parse(spec, field)


def default_log_uri(tracking_uri: str) -> str:
    """Serving's default prediction log: ``<tracking dir>/predictions``."""
    if "://" in tracking_uri and not tracking_uri.startswith("file://"):
        raise InvalidInput(
            f"the tracking store {tracking_uri!r} is not a local directory: set log_uri in the "
            "monitor config (where the deployment logs its predictions)",
            field="log_uri",
        )
    return str(Path(tracking_uri.removeprefix("file://")).expanduser() / "predictions")


@dataclass(frozen=True, slots=True)
class WindowResult:
    """What one run did for one window (``stored`` False: another runner stored it first)."""

    deployment: str
    window: str
    start_ms: int
    end_ms: int
    n_predictions: int
    n_labelled: int
    series: dict[str, float]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recomputed: bool = False
    stored: bool = True
    drift_share: float | None = None  # None: drift not computed (no profile, too few rows)
    drifted: list[str] = field(default_factory=list)  # drifted features, most severe first
    metrics: dict[str, float | None] = field(default_factory=dict)  # the answering version's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Run:
    """Everything one ``run`` call reads once and shares between its windows."""

    config: MonitorConfig
    window: str
    size: int
    uri: str
    labels: pd.DataFrame | None = None
    labels_since: int | None = None  # the oldest label date partition worth reading
    versions: dict[tuple[str, int], Any] = field(default_factory=dict)
    hours: list[int] = field(default_factory=list)  # hour partitions of the log (see _read)
    chunk: tuple[int, int, pd.DataFrame] | None = None  # the log read once for short windows
    profiles: dict[tuple[str, int, str], Any] = field(default_factory=dict)

    def may_hold(self, start: int) -> bool:
        """Whether any hour partition overlaps ``[start, start + size)``."""
        i = bisect.bisect_right(self.hours, start - HOUR_MS)
        return i < len(self.hours) and self.hours[i] < start + self.size


class MonitorService:
    """Monitoring over a monitor store, the registry and the prediction log.

    ``MonitorService(client)`` wires itself from an embedded client; the server passes its
    ``store`` (and ``registry``) directly. Constructing only stores references.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        store: MonitorStore | None = None,
        registry: RegistryService | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        self.client = client
        self._store = store
        self._registry = registry
        self._tracking_uri = tracking_uri

    def __repr__(self) -> str:
        return f"MonitorService({self.client!r})"

    @property
    def store(self) -> MonitorStore:
        if self._store is None:
            if self.client is None:
                raise InvalidInput("MonitorService needs a client or a store", field="store")
            from loopwright.backends.sql.monitoring import SqlMonitorStore
            from loopwright.backends.sql.store import SqlTrackingStore

            tracking = self.client._open()[0]
            if not isinstance(tracking, SqlTrackingStore):
                raise InvalidInput(
                    "monitoring runs against the metadata store directly (SQLite or PostgreSQL)",
                    field="tracking_uri",
                )
            self._store = SqlMonitorStore(tracking)
        return self._store

    @property
    def registry(self) -> RegistryService:
        if self._registry is None:
            if self.client is None:
                raise InvalidInput("MonitorService needs a client or a registry", field="registry")
            self._registry = self.client.registry
        return self._registry

    def default_log_uri(self) -> str:
        uri = self._tracking_uri or (self.client.tracking_uri if self.client else None)
        if uri is None:
            raise InvalidInput("set log_uri in the monitor config", field="log_uri")
        return default_log_uri(uri)

    # -- computing windows ------------------------------------------------------------------

    def run(
        self,
        deployment: str,
        window: str | None = None,
        *,
        now_ms: int | None = None,
        config: MonitorConfig | None = None,
        recompute_labels: int | None = None,
        progress: Progress | None = None,
    ) -> list[WindowResult]:
        """Compute and store every complete window not stored yet (see the module docstring).

        ``window`` defaults to the config's first window spec (``1d`` without a config).
        Returns what was computed, oldest first; an empty list means everything was up to date.
        """
        from loopwright.monitoring.config import MonitorConfig

        cfg = config if config is not None else MonitorConfig(deployment=deployment)
        if cfg.deployment != deployment:
            raise InvalidInput(
                f"the monitor config is for deployment {cfg.deployment!r}, not {deployment!r}",
                field="deployment",
            )
        spec = (window or cfg.windows[0]).strip()
        size = window_ms(spec)
        now = _now_ms() if now_ms is None else int(now_ms)
        ctx = _Run(cfg, spec, size, cfg.log_uri or self.default_log_uri())
        results: list[WindowResult] = []
        self._deliver_pending(deployment, cfg)
        ctx.hours = prediction_hours(ctx.uri, deployment)
        if not ctx.hours:
            return results
        first = ctx.hours[0]
        last_end = (now - duration_ms(cfg.settle, "settle")) // size * size
        starts = range(first // size * size, last_end, size)
        done = self.store.computed_starts(deployment, spec)
        todo = [s for s in starts if s not in done]
        keep = cfg.recompute_labels if recompute_labels is None else recompute_labels
        if keep < 0:
            raise InvalidInput("recompute_labels must be >= 0", field="recompute_labels")
        recent = sorted(s for s in done if s < last_end)[-keep:] if keep else []
        total = len(todo) + len(recent)
        if todo or recent:  # labels of older predictions cannot change these windows
            from loopwright.serving.predlog import LABEL_SLACK_MS

            ctx.labels_since = min([*todo, *recent]) - LABEL_SLACK_MS
        for start in recent:
            result = self._recompute(ctx, deployment, start)
            if result is not None:
                results.append(result)
                if progress:
                    progress(len(results), total, result)
        for start in todo:
            result = self._compute_new(ctx, deployment, start)
            results.append(result)
            if progress:
                progress(len(results), total, result)
        return results

    def _labels(self, ctx: _Run) -> pd.DataFrame:
        if ctx.labels is None:
            from loopwright.serving.predlog import read_labels

            ctx.labels = read_labels(ctx.uri, since_ms=ctx.labels_since)
        return ctx.labels

    def _recompute(self, ctx: _Run, deployment: str, start: int) -> WindowResult | None:
        """Recompute a stored window when more of its predictions are labelled now."""
        stored = self.store.list_windows(deployment, ctx.window, start_ms=start, limit=None)
        record = next((w for w in stored if w.start_ms == start), None)
        if record is None or record.n_predictions == 0:
            return None
        frame = self._read(ctx, deployment, start)
        live = _answering(frame)
        if _labelled(live) <= record.n_labelled:
            return None
        new, points, report = self._window(ctx, deployment, start, frame)
        # Labels changed only what depends on them: re-judge those rules on the fresh values
        # (an AUC drop is only known once the labels are back).
        rules = [r for r in ctx.config.alerts if r.series.startswith(LABEL_SERIES)]
        changes = self._evaluate(ctx, deployment, new, points, rules) if rules else []
        report["alerts"] = [_change_view(c) for c in changes]
        self.store.record_window(new, points, changes, replace=True)
        self._notify(ctx.config, changes)
        return _result(new, points, report, recomputed=True)

    def _compute_new(self, ctx: _Run, deployment: str, start: int) -> WindowResult:
        frame = self._read(ctx, deployment, start)
        record, points, report = self._window(ctx, deployment, start, frame)
        changes = self._evaluate(ctx, deployment, record, points)
        report["alerts"] = [_change_view(c) for c in changes]
        stored = self.store.record_window(record, points, changes)
        if stored:
            self._notify(ctx.config, changes)
        return _result(record, points, report, stored=stored)

    def _read(self, ctx: _Run, deployment: str, start: int) -> pd.DataFrame:
        from loopwright.serving.predlog import PREDICTION_SCHEMA, join_labels, read_predictions

        end = start + ctx.size
        if not ctx.may_hold(start):  # no partition, no rows: the log's columns, no file opened
            frame = PREDICTION_SCHEMA.empty_table().to_pandas()
        elif ctx.size >= CHUNK_MS:
            frame = read_predictions(ctx.uri, deployment, start, end)
        else:  # short windows: read a day of the log once and slice it
            if ctx.chunk is None or not ctx.chunk[0] <= start < ctx.chunk[1]:
                lo = start // CHUNK_MS * CHUNK_MS
                ctx.chunk = (
                    lo,
                    lo + CHUNK_MS,
                    read_predictions(ctx.uri, deployment, lo, lo + CHUNK_MS),
                )
            chunk = ctx.chunk[2]
            lo_ts, hi_ts = (pd.Timestamp(x, unit="ms", tz="UTC") for x in (start, end))
            frame = chunk[(chunk["ts"] >= lo_ts) & (chunk["ts"] < hi_ts)].reset_index(drop=True)
        return join_labels(frame, self._labels(ctx))

    def _profile(self, ctx: _Run, model: str, version: int, kind: str) -> Any:
        """(ReferenceProfile, source) or None, read once per run."""
        from loopwright.monitoring.profiles import ReferenceProfile

        key = (model, version, kind)
        if key not in ctx.profiles:
            found = self.store.get_reference_profile(model, version, kind)  # type: ignore[arg-type]
            ctx.profiles[key] = (
                None if found is None else (ReferenceProfile.from_dict(found[0]), found[1])
            )
        return ctx.profiles[key]

    def _window(
        self, ctx: _Run, deployment: str, start: int, frame: pd.DataFrame
    ) -> tuple[WindowRecord, list[SeriesPoint], dict[str, Any]]:
        """One window's report and series points (nothing is stored here)."""
        end = start + ctx.size
        cfg = ctx.config
        live = _answering(frame)
        errors = live["error"].notna()
        ok = live[~errors]
        values: dict[str, float] = {
            "serving.requests": float(len(live)),
            "serving.error_rate": float(errors.mean()) if len(live) else math.nan,
        }
        report: dict[str, Any] = {
            "deployment": deployment,
            "window": ctx.window,
            "start_ms": start,
            "end_ms": end,
            "n_predictions": len(live),
            "n_errors": int(errors.sum()),
            "n_shadow": int(len(frame) - len(live)),
            "notes": [],
            "reference": None,
            "drift": None,
            "prediction_drift": None,
            "performance": None,
            "versions": {},
        }
        notes: list[str] = report["notes"]
        primary = _primary_version(ok)
        if primary is None:
            notes.append("no successful predictions in this window")
        elif len(ok) < cfg.min_rows:
            notes.append(
                f"{len(ok)} successful predictions, fewer than min_rows={cfg.min_rows}: "
                "drift and performance skipped"
            )
        else:
            model, version = primary
            served = ok[(ok["model"] == model) & (ok["version"] == version)]
            report["reference"] = {"model": model, "version": version}
            values |= self._drift(ctx, model, version, ok, served, report)
            values |= self._performance(ctx, model, version, served, report)
        values |= self._versions(ctx, frame, report)
        n_labelled = _labelled(live)
        record = WindowRecord(
            deployment=deployment,
            window=ctx.window,
            start_ms=start,
            end_ms=end,
            computed_at_ms=_now_ms(),
            n_predictions=len(live),
            n_labelled=n_labelled,
            report=report,
        )
        points = [SeriesPoint(name, end, float(v)) for name, v in sorted(values.items())]
        return record, points, report

    # -- drift --------------------------------------------------------------------------------

    def _drift(
        self,
        ctx: _Run,
        model: str,
        version: int,
        ok: pd.DataFrame,
        served: pd.DataFrame,
        report: dict[str, Any],
    ) -> dict[str, float]:
        from loopwright.monitoring.drift import compute_drift

        values: dict[str, float] = {}
        notes: list[str] = report["notes"]
        found = self._profile(ctx, model, version, "features")
        if found is None:
            notes.append(f"no reference profile for {model}/{version}: input drift skipped")
        else:
            profile = found[0]
            report["reference"]["source"] = found[1]
            features = inputs_frame(ok)
            columns = [c for c in profile.features if c in features.columns]
            missing = sorted(set(profile.features) - set(features.columns))
            if missing:
                notes.append(f"features in the reference but not logged: {', '.join(missing)}")
            if columns:
                drift = compute_drift(profile, features, cfg_drift(ctx), columns=columns)
                report["drift"] = drift.to_dict()
                values["drift.share"] = float(drift.drift_share)
                values["drift.n_drifted"] = float(len(drift.drifted))
                for f in drift.features:
                    psi = f.stats.get("psi")
                    if psi is not None:
                        values[f"drift.psi.{f.name}"] = float(psi)
        values |= self._prediction_drift(ctx, model, version, served, report)
        return values

    def _prediction_drift(
        self, ctx: _Run, model: str, version: int, served: pd.DataFrame, report: dict[str, Any]
    ) -> dict[str, float]:
        from loopwright.monitoring.drift import compute_drift
        from loopwright.monitoring.profiles import profile_frame

        outputs, categorical = _outputs(served, ctx.config.task)
        if outputs is None:
            return {}
        found = self._profile(ctx, model, version, "predictions")
        if found is None:
            profile = profile_frame(outputs, categorical=categorical)
            source = f"window {ctx.window} starting {report['start_ms']}"
            self.store.put_reference_profile(
                model, version, profile.to_dict(), kind="predictions", source=source,
                replace=False,
            )  # fmt: skip
            ctx.profiles.pop((model, version, "predictions"), None)
            report["notes"].append(f"this window is the prediction baseline of {model}/{version}")
            return {}
        drift = compute_drift(
            found[0], outputs, cfg_drift(ctx).restricted_to(list(found[0].features))
        )
        report["prediction_drift"] = drift.to_dict()
        out: dict[str, float] = {"drift.prediction": float(bool(drift.drifted))}
        psi = drift.features[0].stats.get("psi") if drift.features else None
        if psi is not None:
            out["drift.psi.prediction"] = float(psi)
        return out

    # -- performance --------------------------------------------------------------------------

    def _performance(
        self, ctx: _Run, model: str, version: int, served: pd.DataFrame, report: dict[str, Any]
    ) -> dict[str, float]:
        from loopwright.monitoring.performance import performance_report

        cfg = ctx.config
        baseline = cfg.baseline if cfg.baseline is not None else self._baseline(ctx, model, version)
        perf = performance_report(
            served,
            task=cfg.task,
            segment_by=cfg.segment_by,
            sensitive=cfg.sensitive,
            baseline=baseline,
            positive=cfg.positive,
        )
        report["performance"] = perf.to_dict()
        return perf.series()

    def _baseline(self, ctx: _Run, model: str, version: int) -> dict[str, float]:
        """The version's logged metrics (its run's), which the report compares against."""
        key = (model, version)
        if key not in ctx.versions:
            try:
                ctx.versions[key] = dict(self.registry.get_version(model, version).metrics)
            except NotFound:
                ctx.versions[key] = {}
        return {k: float(v) for k, v in ctx.versions[key].items() if _finite(v)}

    def _versions(self, ctx: _Run, frame: pd.DataFrame, report: dict[str, Any]) -> dict[str, float]:
        """Per served version (shadows too): requests and, with labels, its metrics."""
        from loopwright.monitoring.performance import performance_report

        values: dict[str, float] = {}
        if frame.empty:
            return values
        ok = frame[frame["error"].isna() & frame["version"].notna()]
        for (model, version), rows in ok.groupby(["model", "version"], sort=True):
            entry: dict[str, Any] = {
                "model": model,
                "version": int(version),
                "routes": sorted({str(r) for r in rows["route"].dropna()}),
                "n": len(rows),
                "n_labelled": _labelled(rows),
                "metrics": {},
            }
            prefix = f"version.{int(version)}"
            values[f"{prefix}.requests"] = float(len(rows))
            if entry["n_labelled"]:
                perf = performance_report(rows, task=ctx.config.task, positive=ctx.config.positive)
                entry["metrics"] = perf.to_dict()["metrics"]
                for name, value in perf.metrics.items():
                    if value is not None and math.isfinite(value):
                        values[f"{prefix}.perf.{name}"] = float(value)
            report["versions"][f"{model}/{int(version)}"] = entry
        return values

    # -- alerts -------------------------------------------------------------------------------

    def _evaluate(
        self,
        ctx: _Run,
        deployment: str,
        record: WindowRecord,
        points: list[SeriesPoint],
        rules: list[Any] | None = None,
    ) -> list[AlertChange]:
        rules = ctx.config.alerts if rules is None else rules
        if not rules:
            return []
        from loopwright.monitoring.alerts import evaluate_rules

        current = {p.name: p.value for p in points}
        history = max(r.for_windows for r in rules) + 1
        series: dict[str, list[tuple[int, float]]] = {}
        for name in {r.series for r in rules}:
            stored = self.store.series(
                deployment, name, ctx.window, end_ms=record.start_ms, limit=history
            )
            series[name] = _contiguous(stored, record.end_ms, ctx.size, current.get(name))
        open_alerts = {
            a.rule: a
            for a in self.store.list_alerts(deployment, "firing")
            if a.window == ctx.window
        }
        transitions = evaluate_rules(
            rules, series, [_to_alert(a) for a in open_alerts.values()], deployment
        )
        changes: list[AlertChange] = []
        for t in transitions:
            if t.action == "fire" and t.alert is not None:
                changes.append(AlertChange("fire", _fired(t.alert, ctx.window)))
            elif t.action == "resolve" and t.alert is not None and t.rule.name in open_alerts:
                opened = open_alerts[t.rule.name]
                changes.append(
                    AlertChange(
                        "resolve",
                        replace(
                            opened,
                            state="resolved",
                            resolved_at_ms=t.alert.resolved_at_ms,
                            resolved_value=t.alert.resolved_value,
                            message=t.message,
                        ),
                    )
                )
        return changes

    def _notify(self, config: MonitorConfig, changes: Iterable[AlertChange]) -> None:
        """Send each change to its rule's targets and store the results (never raises)."""
        from loopwright.monitoring.alerts import Notifier

        changes = [c for c in changes if config.rule(c.alert.rule) is not None]
        if not changes:
            return
        with Notifier() as notifier:
            for change in changes:
                targets = config.rule(change.alert.rule).notify
                results: list[Any]
                try:
                    results = notifier.send(_to_alert(change.alert), change.action, targets)
                except Exception as exc:  # a notifier bug must not lose the stored window
                    log.exception("alert notification failed")
                    results = [{"ok": False, "error": f"{type(exc).__name__}: {exc}"}]
                self.store.set_deliveries(change.alert.id, change.action, _plain_results(results))

    def _deliver_pending(self, deployment: str, config: MonitorConfig) -> None:
        """Notify transitions a crash left un-notified (committed, never sent)."""
        if not config.alerts:
            return
        pending: list[AlertChange] = []
        for alert in self.store.list_alerts(deployment, limit=200):
            if "fire" not in alert.deliveries:
                pending.append(AlertChange("fire", alert))
            if (
                alert.state == "resolved"
                and alert.resolution is None
                and "resolve" not in alert.deliveries
            ):
                pending.append(AlertChange("resolve", alert))
        self._notify(config, pending)

    # -- reading ------------------------------------------------------------------------------

    def series(
        self,
        deployment: str,
        name: str,
        window: str = "1d",
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, float]]:
        """(window end ms, value) in time order; NaN where the value was undefined."""
        window_ms(window)
        return self.store.series(
            deployment, name, window, start_ms=start_ms, end_ms=end_ms, limit=limit
        )

    def series_names(self, deployment: str, window: str | None = None) -> list[str]:
        return self.store.series_names(deployment, window)

    def windows(
        self,
        deployment: str,
        window: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[WindowRecord]:
        """Computed windows in time order (without their reports; see :meth:`report`)."""
        if window is not None:
            window_ms(window)
        return self.store.list_windows(
            deployment, window, start_ms=start_ms, end_ms=end_ms, limit=limit
        )

    def report(self, deployment: str, window: str, start_ms: int | None = None) -> WindowRecord:
        """A stored window with its full report; ``start_ms`` None = the newest window."""
        window_ms(window)
        if start_ms is None:
            newest = self.store.list_windows(deployment, window, limit=1)
            if not newest:
                raise NotFound(
                    f"deployment {deployment!r} has no computed {window} window", field="deployment"
                )
            start_ms = newest[0].start_ms
        return self.store.get_window(deployment, window, start_ms)

    def report_html(self, deployment: str, window: str, start_ms: int | None = None) -> str:
        """One window's report as a self-contained HTML page: drift, performance, the headline
        series up to that window (the newest 60 points) and the deployment's alerts."""
        from loopwright.monitoring.drift import DriftReport
        from loopwright.monitoring.report import render_html

        record = self.report(deployment, window, start_ms)
        report = _numbers(record.report)
        drift = DriftReport.from_dict(report["drift"]) if report.get("drift") else None
        names = [n for n in self.store.series_names(deployment, window) if _headline(n)]
        series = {
            name: self.store.series(deployment, name, window, end_ms=record.end_ms, limit=60)
            for name in names
        }
        alerts = [a.to_dict() for a in self.store.list_alerts(deployment, limit=50)]
        start = datetime.fromtimestamp(record.start_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        return render_html(
            drift,
            report.get("performance"),
            alerts,
            series,
            title=f"{deployment}: {window} window from {start} UTC",
        )

    def alerts(
        self, deployment: str | None = None, state: str | None = None, *, limit: int = 100
    ) -> list[AlertRecord]:
        """Alerts, newest first; ``state`` is ``firing`` or ``resolved``."""
        if state is not None and state not in ("firing", "resolved"):
            raise InvalidInput(f"state must be firing or resolved, got {state!r}", field="state")
        return self.store.list_alerts(deployment, state, limit=limit)

    def resolve(self, alert_id: str, reason: str) -> AlertRecord:
        """Resolve a firing alert by hand; the reason goes to the audit trail."""
        if not reason or not reason.strip():
            raise InvalidInput("resolving an alert needs a reason", field="reason")
        return self.store.resolve_alert(alert_id, resolved_at_ms=_now_ms(), reason=reason.strip())


# -- the scheduler ----------------------------------------------------------------------------


class MonitorScheduler:
    """Runs :meth:`MonitorService.run` for every ``*.yaml`` monitor config in ``directory`` (each
    of its windows) every ``interval_s``, in a daemon thread; ``loopwright server --scheduler``.

    A failing config is logged and skipped; the thread never dies of it. Configs are re-read on
    every round, so adding a file needs no restart.
    """

    def __init__(
        self,
        client_factory: Callable[[], Client],
        directory: str | Path,
        interval_s: float = 300.0,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise InvalidInput("the scheduler interval must be positive", field="interval")
        self.client_factory = client_factory
        self.directory = Path(directory)
        self.interval_s = interval_s
        self.clock = clock  # ms since the epoch for the thread's rounds; None = the real time
        self.rounds = 0
        self.last_errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def configs(self) -> list[Path]:
        if not self.directory.is_dir():
            raise InvalidInput(
                f"the scheduler's config directory {self.directory} does not exist",
                field="scheduler",
            )
        return sorted([*self.directory.glob("*.yaml"), *self.directory.glob("*.yml")])

    def run_once(self, now_ms: int | None = None) -> dict[str, list[WindowResult]]:
        """One round over every config; returns results per ``<file>:<window>``."""
        from loopwright.monitoring.config import MonitorConfig

        out: dict[str, list[WindowResult]] = {}
        errors: dict[str, str] = {}
        client = self.client_factory()
        try:
            service = MonitorService(client)
            for path in self.configs():
                try:
                    config = MonitorConfig.from_file(path)
                    for spec in config.windows:
                        key = f"{path.name}:{spec}"
                        out[key] = service.run(
                            config.deployment, spec, config=config, now_ms=now_ms
                        )
                except LoopwrightError as exc:
                    errors[path.name] = exc.message
                    log.error("monitor %s failed: %s", path.name, exc.message)
                except Exception as exc:
                    errors[path.name] = f"{type(exc).__name__}: {exc}"
                    log.exception("monitor %s failed", path.name)
        finally:
            client.close()
        self.rounds += 1
        self.last_errors = errors
        return out

    def start(self) -> MonitorScheduler:
        self.configs()  # a missing directory fails now, not silently in the thread
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="monitor-scheduler", daemon=True
            )
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(self.clock() if self.clock else None)
            except Exception:
                log.exception("monitor scheduler round failed")
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# -- helpers ----------------------------------------------------------------------------------


def prediction_hours(uri: str, deployment: str) -> list[int]:
    """Start (ms) of every UTC hour partition holding predictions of ``deployment``, sorted.

    Listing directories only: no file is opened. Windows without a partition are empty and are
    stored without reading anything.
    """
    import fsspec

    fs, base = fsspec.core.url_to_fs(uri)
    root = "/".join([base.rstrip("/"), "predictions", f"deployment={quote(deployment, safe='')}"])
    if not fs.exists(root):
        return []
    hours: list[int] = []
    for date in _partitions(fs, root, "date="):
        for hour in _partitions(fs, f"{root}/date={date}", "hour="):
            try:
                stamp = pd.Timestamp(f"{date}T{hour}:00:00", tz="UTC")
            except ValueError:
                continue  # not a partition loopwright wrote
            hours.append(int(stamp.value // 1_000_000))
    return sorted(hours)


def first_prediction_ms(uri: str, deployment: str) -> int | None:
    """The start of the first hour partition holding predictions of ``deployment``."""
    hours = prediction_hours(uri, deployment)
    return hours[0] if hours else None


def _partitions(fs: Any, path: str, prefix: str) -> list[str]:
    names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return [n.removeprefix(prefix) for n in names if n.startswith(prefix)]


def inputs_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """The logged model inputs as a frame: the ``in_<feature>`` columns renamed, or, for logs
    without them, ``inputs_json`` parsed."""
    cols = [c for c in predictions.columns if c.startswith("in_")]
    if cols:
        return predictions[cols].rename(columns=lambda c: c[3:]).reset_index(drop=True)
    if "inputs_json" not in predictions.columns or predictions.empty:
        return pd.DataFrame(index=range(len(predictions)))
    import json

    return pd.DataFrame([json.loads(x) if x else {} for x in predictions["inputs_json"]])


def cfg_drift(ctx: _Run) -> Any:
    return ctx.config.drift


def _answering(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that answered requests (shadow rows are kept only for version comparisons)."""
    if frame.empty:
        return frame
    return frame[~frame["shadow"].fillna(False).astype(bool)]


def _labelled(frame: pd.DataFrame) -> int:
    if frame.empty or "label" not in frame.columns:
        return 0
    return int(frame["label"].notna().sum())


def _primary_version(ok: pd.DataFrame) -> tuple[str, int] | None:
    """The (model, version) that answered most requests (ties: the newest version)."""
    rows = ok[ok["version"].notna() & ok["model"].notna()]
    if rows.empty:
        return None
    counts = rows.groupby(["model", "version"]).size().reset_index(name="n")
    best = counts.sort_values(["n", "version"], ascending=False).iloc[0]
    return str(best["model"]), int(best["version"])


def _outputs(served: pd.DataFrame, task: str) -> tuple[pd.DataFrame | None, list[str] | None]:
    """The model's outputs as a one-column frame ``prediction`` (categorical for classifiers)."""
    if served.empty:
        return None, None
    numeric = served["prediction_value"]
    if task == "regression" and numeric.notna().all():
        return pd.DataFrame({"prediction": numeric.to_numpy()}), None
    return pd.DataFrame({"prediction": served["prediction"].astype(str).to_numpy()}), ["prediction"]


def _contiguous(
    stored: list[tuple[int, float]], end: int, size: int, value: float | None
) -> list[tuple[int, float]]:
    """The stored points that are consecutive windows ending right before ``end``, plus the new
    value: a gap (a window without the series) breaks a "for N windows" streak."""
    points: list[tuple[int, float]] = []
    expected = end - size
    for point_end, point_value in reversed(stored):
        if point_end != expected:
            break
        points.append((point_end, point_value))
        expected -= size
    points.reverse()
    if value is not None:
        points.append((end, value))
    return points


def _to_alert(record: AlertRecord) -> Any:
    """A stored alert as the rules module's ``Alert``."""
    from loopwright.monitoring.alerts import Alert

    return Alert(
        id=record.id,
        rule=record.rule,
        deployment=record.deployment,
        state=record.state,  # type: ignore[arg-type]
        severity=record.severity,  # type: ignore[arg-type]
        series=record.series,
        op=record.op,  # type: ignore[arg-type]
        threshold=record.threshold,
        value=math.nan if record.value is None else record.value,
        window_end_ms=record.window_end_ms,
        fired_at_ms=record.fired_at_ms,
        message=record.message,
        resolved_at_ms=record.resolved_at_ms,
        resolved_value=record.resolved_value,
    )


def _fired(alert: Any, window: str) -> AlertRecord:
    """A fired ``Alert`` as a stored record. The id also covers the window spec, so the same
    rule monitored over ``1h`` and ``1d`` windows fires two distinct alerts."""
    from loopwright.monitoring.alerts import alert_id

    return AlertRecord(
        id=alert_id(alert.deployment, f"{alert.rule}@{window}", alert.window_end_ms),
        deployment=alert.deployment,
        rule=alert.rule,
        series=alert.series,
        window=window,
        op=alert.op,
        state="firing",
        severity=alert.severity,
        threshold=float(alert.threshold),
        value=_float(alert.value),
        window_end_ms=int(alert.window_end_ms),
        fired_at_ms=int(alert.fired_at_ms),
        message=alert.message,
    )


def _change_view(change: AlertChange) -> dict[str, Any]:
    a = change.alert
    return {
        "action": change.action,
        "id": a.id,
        "rule": a.rule,
        "series": a.series,
        "severity": a.severity,
        "value": a.resolved_value if change.action == "resolve" else a.value,
        "threshold": a.threshold,
        "message": a.message,
    }


def _plain_results(results: Any) -> list[Any]:
    out = []
    for r in results or []:
        if hasattr(r, "to_dict"):
            out.append(r.to_dict())
        elif hasattr(r, "__dataclass_fields__"):
            out.append(asdict(r))
        elif hasattr(r, "model_dump"):
            out.append(r.model_dump(mode="json"))
        else:
            out.append(r)
    return out


def _result(
    record: WindowRecord,
    points: list[SeriesPoint],
    report: dict[str, Any],
    *,
    recomputed: bool = False,
    stored: bool = True,
) -> WindowResult:
    drift = report.get("drift") or {}
    perf = report.get("performance") or {}
    return WindowResult(
        deployment=record.deployment,
        window=record.window,
        start_ms=record.start_ms,
        end_ms=record.end_ms,
        n_predictions=record.n_predictions,
        n_labelled=record.n_labelled,
        series={p.name: p.value for p in points},
        alerts=list(report.get("alerts", [])),
        notes=list(report.get("notes", [])),
        recomputed=recomputed,
        stored=stored,
        drift_share=drift.get("drift_share"),
        drifted=list(drift.get("drifted") or []),
        metrics=dict(perf.get("metrics") or {}),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_HEADLINE = ("serving.", "drift.share", "drift.n_drifted", "drift.prediction", "labels.")


def _headline(name: str) -> bool:
    """Series drawn in the HTML report: serving, drift share, labels, and metrics (no deltas)."""
    if name.startswith("perf."):
        return not name.endswith(".delta")
    return name.startswith(_HEADLINE)


def _numbers(value: Any) -> Any:
    """A stored report with the JSON stand-ins for NaN and infinities turned back into floats."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value
