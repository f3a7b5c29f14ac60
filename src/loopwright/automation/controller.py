"""The champion/challenger controller: one :meth:`LoopController.tick` moves a model's retraining
loop as far as it can go now, and records every step in the audit trail.

A cycle runs::

    idle --trigger--> triggered --train--> trained --register--> registered --gates--> gates
      --set challenger alias--> challenger --enough live evidence (or max_wait)--> compared
      --set_alias(promote)--> promoted | awaiting_approval --approved--> promoted
    and at any decision point: not_promoted (why), or failed (training produced no model)

The state is read back from the audit trail on every tick (:mod:`.history`), never kept in
memory, so a tick is idempotent (nothing due: nothing recorded) and a crashed controller resumes
where its last recorded step left it. The steps that create things look for what a crash may
have left before creating it again: a finished run tagged with the cycle id, a version of that
run, an evaluation under the current gate policy, an open promotion request.

**One controller per model at a time.** Every tick first takes the lease ``loop:<model>`` in the
metadata database (:mod:`loopwright.backends.sql.leases`) and renews it from a heartbeat thread
while it works, so two controllers (processes or machines on one store) never train the same
model at once: the second one's tick returns a ``busy`` event (not recorded) naming the holder.
A controller that dies stops renewing; after ``lease_ttl_s`` the next tick takes over, and a
training run the dead one left RUNNING is marked FAILED (``orphaned``, recorded as a
``loop.orphaned`` step) before the cycle trains again.

What the controller changes goes through the registry's own rules: the challenger alias and the
promotion are ``registry.set_alias`` calls, so protected aliases need passed gates and granted
approvals exactly as for a person. A deployment that lists the challenger alias among its
``shadows`` (or as its ``canary.ref``) picks the new version up through its alias watcher.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopwright.automation.compare import compare, gather
from loopwright.automation.data import TrainingData, assemble, split
from loopwright.automation.executors import Executor, get_executor
from loopwright.automation.history import (
    TARGET_TYPE,
    Cycle,
    LoopEvent,
    LoopHistory,
    read_history,
)
from loopwright.errors import (
    ApprovalRequired,
    Conflict,
    GateFailed,
    InvalidInput,
    LoopwrightError,
    NotFound,
)
from loopwright.registry.entities import RequestStatus

if TYPE_CHECKING:
    from loopwright.automation.policy import RetrainPolicy
    from loopwright.client import Client
    from loopwright.registry.entities import ApprovalRequest
    from loopwright.registry.service import RegistryService
    from loopwright.tracking.run import ActiveRun

__all__ = ["DEFAULT_LEASE_TTL_S", "LoopController"]

log = logging.getLogger("loopwright.automation")

#: How long a controller's lease on a model lasts without renewal (renewed every third of it).
DEFAULT_LEASE_TTL_S = 60.0

DAY_MS = 86_400_000
#: The prediction log is read from this long before the challenger went live: the version filter
#: decides which rows count; the bound only spares reading older partitions (and tolerates a
#: serving clock a little behind the controller's).
LOOKBACK_MS = DAY_MS
_MAX_STEPS = 16


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class _Tick:
    """What one tick works with: the policy, the history read at its start, its clock."""

    policy: RetrainPolicy
    history: LoopHistory
    now: int
    events: list[LoopEvent] = field(default_factory=list)


class LoopController:
    """Runs retraining policies against a client's registry, tracking and prediction log.

    ``executor`` overrides the policy's ``train.executor`` (a name or an :class:`Executor`).
    Constructing only stores; :meth:`tick` and :meth:`trigger` act.
    """

    def __init__(
        self,
        client: Client,
        *,
        executor: str | Executor | None = None,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        if isinstance(lease_ttl_s, bool) or not isinstance(lease_ttl_s, int | float):
            raise InvalidInput("lease_ttl_s must be a number of seconds", field="lease_ttl_s")
        if not 0.1 <= lease_ttl_s <= 86_400:
            raise InvalidInput(
                f"lease_ttl_s must be between 0.1 and 86400 seconds, got {lease_ttl_s}",
                field="lease_ttl_s",
            )
        self.client = client
        self._override = executor
        self._executors: dict[str, Executor] = {}
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        #: Who this controller is in a lease: host, process and a random token.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leases: Any = None

    def __repr__(self) -> str:
        return f"LoopController({self.client!r})"

    @property
    def registry(self) -> RegistryService:
        return self.client.registry

    # -- public -----------------------------------------------------------------------------

    def history(self, model: str) -> LoopHistory:
        """The model's loop events and cycles, read from the audit trail."""
        return read_history(self.registry, model)

    def tick(self, policy: RetrainPolicy, now_ms: int | None = None) -> list[LoopEvent]:
        """Advance the loop as far as it can go at ``now_ms``; returns the steps recorded.

        Starts a cycle when a trigger fired (and none is in progress); a cycle that waits for
        live evidence or for approvers records nothing until that changes.
        """
        with self._leased(policy.model) as busy:
            if busy is not None:
                return [busy]
            t = self._begin(policy, now_ms)
            cycle = t.history.current
            if cycle is None:
                fired = self._due(t)
                if fired is None:
                    return t.events
                cycle = self._start(t, *fired)
            self._advance(t, cycle)
            return t.events

    def trigger(
        self, policy: RetrainPolicy, reason: str, now_ms: int | None = None
    ) -> list[LoopEvent]:
        """Start a cycle now (a person's decision, recorded with ``reason``) and advance it."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a manual trigger needs a reason", field="reason")
        with self._leased(policy.model) as busy:
            if busy is not None:
                raise Conflict(f"{busy.reason}; trigger again when it is done", field="model")
            t = self._begin(policy, now_ms)
            current = t.history.current
            if current is not None:
                raise Conflict(
                    f"cycle {current.id} of {policy.model!r} is in progress ({current.phase}); "
                    "it must end (promoted, not promoted or failed) before another starts",
                    field="model",
                )
            cycle = self._start(t, {"trigger": "manual"}, reason.strip())
            self._advance(t, cycle)
            return t.events

    def lease(self, model: str) -> Any:
        """The current lease on ``model``'s loop (holder, expiry), or None when nobody holds it."""
        return self._lease_store().get(_lease_name(model))

    def close(self) -> None:
        """Stop executors this controller started (a local Ray instance)."""
        for executor in self._executors.values():
            shutdown = getattr(executor, "shutdown", None)
            if callable(shutdown):
                shutdown()
        self._executors.clear()

    # -- the lease --------------------------------------------------------------------------

    def _lease_store(self) -> Any:
        if self._leases is None:
            from loopwright.backends.sql.leases import SqlLeases
            from loopwright.backends.sql.store import SqlTrackingStore

            tracking = self.client._open()[0]
            if not isinstance(tracking, SqlTrackingStore):
                raise InvalidInput(
                    "the retraining controller runs against the metadata store directly "
                    "(a directory, sqlite:/// or postgresql+psycopg:// URI)",
                    field="tracking_uri",
                )
            self._leases = SqlLeases(tracking)
        return self._leases

    @contextlib.contextmanager
    def _leased(self, model: str) -> Iterator[LoopEvent | None]:
        """Hold ``loop:<model>`` (renewed from a heartbeat thread) for the block; yields None,
        or, when another controller holds it, a ``busy`` event saying who and until when."""
        leases, name = self._lease_store(), _lease_name(model)
        taken = leases.acquire(name, self.holder, self.lease_ttl_ms)
        if not taken.ok:
            held = taken.lease
            yield LoopEvent(
                kind="busy",
                model=model,
                cycle=None,
                at_ms=_now_ms(),
                detail={"holder": held.holder, "expires_at_ms": held.expires_at_ms},
                reason=f"another controller ({held.holder}) holds {model!r}'s loop until "
                f"{iso(held.expires_at_ms)}",
            )
            return
        if taken.previous is not None:
            log.warning("loop %s: took over from %s, whose lease expired at %s", model,
                        taken.previous.holder, iso(taken.previous.expires_at_ms))  # fmt: skip
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.lease_ttl_ms / 3000):
                try:
                    if not leases.renew(name, self.holder, self.lease_ttl_ms):
                        log.warning("loop %s: the lease was lost (this controller stalled "
                                    "past its time to live)", model)  # fmt: skip
                        return
                except Exception:  # a store hiccup: try again on the next beat
                    log.exception("loop %s: renewing the lease failed", model)

        beat = threading.Thread(target=heartbeat, name=f"lease-{model}", daemon=True)
        beat.start()
        try:
            yield None
        finally:
            stop.set()
            beat.join()
            try:
                leases.release(name, self.holder)
            except Exception:  # it expires by itself
                log.exception("loop %s: releasing the lease failed", model)

    def _orphans(self, t: _Tick, cycle: Cycle) -> None:
        """Training runs of this cycle still RUNNING: their controller died (this one holds the
        lease now, so nobody else is training). Mark them FAILED and say so."""
        try:
            experiment = self.client.get_experiment_by_name(t.policy.experiment)
        except NotFound:
            return
        page = self.client.search_runs(
            experiment.id, f"tags.lw.loop.cycle = '{cycle.id}'", max_results=10
        )
        for run in page.items:
            if run.status.value != "RUNNING":
                continue
            why = (
                "orphaned: its controller stopped before the run ended (this controller took "
                f"over the loop's lease at {iso(_now_ms())})"
            )
            self.client.tracking.log_batch(run.id, tags={"lw.loop.orphaned": why})
            self.client.tracking.end_run(run.id, "FAILED", error=why)
            self._record(t, "orphaned", cycle.id, {"run_id": run.id}, why)

    # -- the machine ------------------------------------------------------------------------

    def _begin(self, policy: RetrainPolicy, now_ms: int | None) -> _Tick:
        t = _Tick(policy, self.history(policy.model), _now_ms() if now_ms is None else now_ms)
        seen = t.history.policy_event
        if seen is None or seen.detail.get("digest") != policy.digest:
            self._record(
                t,
                "policy",
                None,
                {
                    "digest": policy.digest,
                    "deployment": policy.deployment,
                    "policy": policy.model_dump(mode="json"),
                },
                "policy first seen" if seen is None else "policy changed",
            )
        return t

    def _start(self, t: _Tick, detail: dict[str, Any], reason: str) -> Cycle:
        cycle_id = uuid.uuid4().hex[:12]
        self._record(t, "triggered", cycle_id, detail, reason)
        return t.history.cycles[-1]

    def _advance(self, t: _Tick, cycle: Cycle) -> None:
        steps = {
            "triggered": self._train,
            "trained": self._register,
            "registered": self._gates,
            "gates": self._deploy,
            "challenger": self._judge,
            "compared": self._promote,
            "awaiting_approval": self._await_approval,
        }
        for _ in range(_MAX_STEPS):
            step = steps.get(cycle.phase)
            if step is None:  # ended
                return
            recorded = len(cycle.steps)
            step(t, cycle)
            if len(cycle.steps) == recorded:  # waiting for evidence or approvers
                return

    def _record(
        self,
        t: _Tick,
        kind: str,
        cycle: str | None,
        detail: dict[str, Any],
        reason: str | None = None,
    ) -> LoopEvent:
        current = t.history.current
        before = {"phase": current.phase if current is not None else "idle"}
        after = {"cycle": cycle, "at_ms": t.now, **_plain(detail)}
        registry: Any = self.registry
        record = getattr(registry, "record_event", None) or registry.store.record
        audit = record(
            f"loop.{kind}", TARGET_TYPE, t.policy.model, before=before, after=after, reason=reason
        )
        event = LoopEvent.from_audit(audit)
        t.history.add(event)
        t.events.append(event)
        return event

    # -- triggers ---------------------------------------------------------------------------

    def _due(self, t: _Tick) -> tuple[dict[str, Any], str] | None:
        triggers = t.policy.triggers
        if triggers.alerts:
            fired = self._alert_trigger(t)
            if fired is not None:
                return fired
        anchors = [a for a in (t.history.last_trigger_ms, t.history.watching_since_ms) if a]
        anchor = max(anchors) if anchors else t.now
        cron = triggers.cron
        if cron is not None:
            due = cron.due(anchor, t.now)
            if due is not None:
                detail = {"trigger": "schedule", "schedule": cron.expression, "due_ms": due}
                return detail, f"schedule {cron.expression!r} was due at {iso(due)}"
        if triggers.new_labels is not None:
            count = self._new_labels(t.policy, anchor, t.now)
            if count >= triggers.new_labels:
                detail = {
                    "trigger": "new_labels",
                    "new_labels": count,
                    "threshold": triggers.new_labels,
                    "since_ms": anchor,
                }
                return detail, (
                    f"{count} newly labelled requests since {iso(anchor)} "
                    f"(threshold {triggers.new_labels})"
                )
        return None

    def _alert_trigger(self, t: _Tick) -> tuple[dict[str, Any], str] | None:
        try:
            monitor = self.client.monitor
        except (AttributeError, LoopwrightError):  # no monitoring here: explicit triggers only
            return None
        consumed = t.history.consumed_alerts()
        firing = [
            a
            for a in monitor.alerts(t.policy.deployment, state="firing", limit=1000)
            if a.rule in t.policy.triggers.alerts and a.id not in consumed
        ]
        if not firing:
            return None
        firing.sort(key=lambda a: (a.fired_at_ms, a.id))
        detail = {
            "trigger": "alert",
            "alerts": [a.id for a in firing],
            "rules": sorted({a.rule for a in firing}),
            "values": {a.rule: a.value for a in firing},
        }
        return detail, "; ".join(a.message or f"{a.rule} fired" for a in firing)

    def _new_labels(self, policy: RetrainPolicy, since_ms: int, now_ms: int) -> int:
        from loopwright.monitoring.config import duration_ms
        from loopwright.serving.predlog import (
            LABEL_SLACK_MS,
            join_labels,
            read_labels,
            read_predictions,
        )

        uri = self._log_uri(policy)
        start = now_ms - duration_ms(policy.data.window, "data.window")
        served = read_predictions(uri, policy.deployment, start, now_ms)
        if served.empty:
            return 0
        served = served[~served["shadow"].fillna(False).astype(bool) & served["error"].isna()]
        labels = read_labels(uri, since_ms=start - LABEL_SLACK_MS)
        joined = join_labels(served.drop_duplicates("request_id"), labels)
        ts = joined["label_ts"]
        lo, hi = _ts(since_ms), _ts(now_ms)
        return int((joined["label"].notna() & (ts > lo) & (ts <= hi)).sum())

    # -- train ------------------------------------------------------------------------------

    def _train(self, t: _Tick, cycle: Cycle) -> None:
        policy = t.policy
        self._orphans(t, cycle)
        resumed = self._finished_run(policy, cycle)
        if resumed is not None:
            self._record(t, "trained", cycle.id, resumed, "resumed: the run had finished")
            return
        try:
            parts = assemble(self.registry, policy, self._log_uri(policy), t.now)
        except (InvalidInput, NotFound) as exc:
            self._record(
                t,
                "failed",
                cycle.id,
                {"stage": "data", "error": exc.message},
                f"no training data: {exc.message}",
            )
            return
        train, validation = split(
            parts.combined, policy.train.validation_fraction, policy.train.seed
        )
        name = f"{policy.model}-retrain"
        source = f"loopwright loop {policy.model} cycle {cycle.id}"
        digest = self.registry.register_dataset(train, name, source=source)
        logged_digest = None
        if parts.logged is not None:
            from loopwright.data.datasets import describe_dataset

            logged_digest = describe_dataset(parts.logged, "logged").digest
        data = TrainingData(
            frame=train,
            label_column=policy.data.label_column,
            spec={
                "train": policy.train.model_dump(mode="json"),
                "data": policy.data.model_dump(mode="json"),
            },
            reference_digest=parts.reference_digest,
            logged_digest=logged_digest,
            params=dict(policy.train.params),
            validation=validation,
        )
        executor = self._executor(policy)
        run_id: str | None = None
        trigger = cycle.get("triggered", "trigger", "manual")
        tags = {
            "lw.loop.cycle": cycle.id,
            "lw.loop.model": policy.model,
            "lw.loop.trigger": trigger,
        }
        try:
            with self.client.start_run(
                policy.experiment, run_name=f"retrain-{cycle.id}", tags=tags
            ) as run:
                run_id = run.id
                self._log_inputs(run, policy, parts, train, validation, name, digest)
                fitted = executor.fit(policy.train.entry_point, data)
                figures = self._log_outputs(run, policy, fitted, train, validation, parts)
        except Exception as exc:  # the entry point is user code: any failure ends the cycle
            error = f"{type(exc).__name__}: {exc}"[:2000]
            self._record(
                t,
                "failed",
                cycle.id,
                {"stage": "train", "run_id": run_id, "error": error, "executor": executor.name},
                f"training failed: {error}",
            )
            return
        detail = {
            "run_id": run_id,
            "profile": self._profile_source(policy, parts),
            "experiment": policy.experiment,
            "executor": executor.name,
            "entry_point": policy.train.entry_point,
            "dataset": {"name": name, "digest": digest, "rows": len(train)},
            "reference": {
                "name": policy.data.reference,
                "digest": parts.reference_digest,
                "rows": _rows(parts.reference),
            },
            "logged": {
                "digest": logged_digest,
                "rows": _rows(parts.logged),
                "window": policy.data.window,
            },
            "validation_rows": _rows(validation),
            "metric": policy.challenger.metric,
            "metrics": figures,
        }
        self._record(
            t,
            "trained",
            cycle.id,
            detail,
            f"run {run_id} trained on {len(train)} rows ({executor.name})",
        )

    def _log_inputs(
        self,
        run: ActiveRun,
        policy: RetrainPolicy,
        parts: Any,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        name: str,
        digest: str,
    ) -> None:
        from loopwright.tracking.entities import DatasetInput

        run.log_params(
            {
                "loop.entry_point": policy.train.entry_point,
                "loop.executor": self._executor(policy).name,
                "loop.window": policy.data.window,
                "loop.reference": policy.data.reference or "",
                "loop.label_column": policy.data.label_column,
                **{f"train.{k}": v for k, v in policy.train.params.items()},
            }
        )
        run.log_dataset(train, name, "train", source=f"registered:{digest}")
        inputs = []
        if parts.reference_digest is not None:
            row = self.registry.find_dataset(parts.reference_digest)
            schema = row.get("schema") or []
            if isinstance(schema, str):
                import json

                schema = json.loads(schema)
            inputs.append(
                DatasetInput(
                    str(row["name"]),
                    parts.reference_digest,
                    schema,
                    int(row["num_rows"]),
                    "reference",
                    row.get("source"),
                )
            )
        if inputs:
            self.client.tracking.log_inputs(run.id, inputs)
        if parts.logged is not None:
            run.log_dataset(
                parts.logged,
                f"{policy.deployment}-labelled-traffic",
                "logged",
                source=self._log_uri(policy),
            )
        if validation is not None:
            run.log_dataset(validation, f"{policy.model}-retrain-validation", "validation")

    def _log_outputs(
        self,
        run: ActiveRun,
        policy: RetrainPolicy,
        fitted: Any,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        parts: Any,
    ) -> dict[str, float]:
        columns = self._feature_columns(policy, fitted, train)
        figures = {
            "rows.train": float(len(train)),
            "rows.reference": float(_rows(parts.reference)),
            "rows.logged": float(_rows(parts.logged)),
        }
        if validation is not None:
            figures.update(
                _validation_metrics(
                    fitted, validation[columns], validation[policy.data.label_column], policy
                )
            )
        run.log_metrics(figures)
        run.log_model(fitted, "model", input_example=train[columns].head(20))
        return figures

    def _feature_columns(
        self, policy: RetrainPolicy, fitted: Any, frame: pd.DataFrame
    ) -> list[str]:
        """The model's inputs: what it was fitted on, else the champion's signature, else every
        column but the label."""
        label = policy.data.label_column
        named = getattr(fitted, "feature_names_in_", None)
        if named is not None and all(str(c) in frame.columns for c in named):
            return [str(c) for c in named]
        try:
            champion = self.registry.resolve(f"{policy.model}@{policy.promote.alias}")
        except (NotFound, InvalidInput):
            champion = None
        inputs = [
            c["name"] for c in ((champion.signature or {}).get("inputs", []) if champion else [])
        ]
        if inputs and all(c in frame.columns for c in inputs):
            return inputs
        return [c for c in frame.columns if c != label]

    def _finished_run(self, policy: RetrainPolicy, cycle: Cycle) -> dict[str, Any] | None:
        """A finished run of this cycle with a logged model: what a crash before recording
        ``trained`` leaves behind, so the resumed tick does not train twice."""
        try:
            experiment = self.client.get_experiment_by_name(policy.experiment)
        except NotFound:
            return None
        page = self.client.search_runs(
            experiment.id, f"tags.lw.loop.cycle = '{cycle.id}'", max_results=10
        )
        for run in page.items:
            if run.status.value == "FINISHED" and "lw.model.path" in run.tags:
                train = next((d for d in run.inputs if d.context == "train"), None)
                ref = next((d for d in run.inputs if d.context == "reference"), None)
                logged = next((d for d in run.inputs if d.context == "logged"), None)
                return {
                    "run_id": run.id,
                    "experiment": policy.experiment,
                    "executor": run.params.get("loop.executor", "local"),
                    "entry_point": policy.train.entry_point,
                    "dataset": None
                    if train is None
                    else {"name": train.name, "digest": train.digest, "rows": train.num_rows},
                    "reference": None
                    if ref is None
                    else {"name": ref.name, "digest": ref.digest, "rows": ref.num_rows},
                    "logged": None
                    if logged is None
                    else {
                        "digest": logged.digest,
                        "rows": logged.num_rows,
                        "window": policy.data.window,
                    },
                    "metrics": {
                        k: v for k, v in run.metrics.items() if not k.startswith("system.")
                    },
                    "resumed": True,
                }
        return None

    def _executor(self, policy: RetrainPolicy) -> Executor:
        if self._override is not None and not isinstance(self._override, str):
            return self._override
        name = self._override or policy.train.executor
        if name not in self._executors:
            self._executors[name] = get_executor(name)
        return self._executors[name]

    # -- register and gates -----------------------------------------------------------------

    def _register(self, t: _Tick, cycle: Cycle) -> None:
        model, run_id = t.policy.model, cycle.get("trained", "run_id")
        existing = self.registry.search_versions(model, run_id=run_id)
        profile = cycle.get("trained", "profile") or {"source": "training"}
        if existing:
            mv = existing[0]
        else:
            trigger = cycle.get("triggered", "trigger", "manual")
            digest = profile.get("digest")
            mv = self.registry.register(
                model,
                run_id,
                description=f"retrained by the loop (cycle {cycle.id}, trigger: {trigger})",
                tags={"lw.loop.cycle": cycle.id, "lw.loop.trigger": trigger},
                reference_data=None if digest is None else self.registry.load_dataset(digest),
            )
        reason = f"{mv.uri} from run {run_id}; drift reference: {profile['source']}"
        if profile.get("rows") is not None:
            reason += f" ({profile['rows']} rows)"
        if profile.get("why"):
            reason += f" ({profile['why']})"
        self._record(
            t,
            "registered",
            cycle.id,
            {"version": mv.version, "run_id": run_id, "reference_profile": profile},
            reason,
        )

    def _profile_source(self, policy: RetrainPolicy, parts: Any) -> dict[str, Any]:
        """Where the new version's drift reference comes from (see ``data.reference_profile``);
        the logged rows are kept as a dataset so registration, maybe a tick later, finds them."""
        if policy.data.reference_profile == "training":
            return {"source": "training"}
        rows = _rows(parts.logged)
        if rows < policy.data.min_profile_rows:
            return {"source": "training", "why": f"only {rows} logged rows, fewer than "
                    f"data.min_profile_rows ({policy.data.min_profile_rows})"}  # fmt: skip
        features = parts.logged.drop(columns=[policy.data.label_column], errors="ignore")
        digest = self.registry.register_dataset(
            features,
            f"{policy.model}-retrain-logged-reference",
            source=f"{policy.deployment} labelled traffic, last {policy.data.window}",
        )
        return {"source": "logged", "digest": digest, "rows": rows}

    def _gates(self, t: _Tick, cycle: Cycle) -> None:
        from loopwright.registry.service import policy_digest

        model, version = t.policy.model, int(cycle.get("registered", "version"))
        gate_policy = self.registry.policy(model)
        if gate_policy is None:
            self._record(
                t,
                "gates",
                cycle.id,
                {"version": version, "passed": True, "policy": None},
                "no gate policy attached to the model",
            )
            return
        digest = policy_digest(gate_policy.model_dump(mode="json"))
        done = [
            e
            for e in self.registry.list_evaluations(model, version)
            if e.report.get("policy_digest") == digest
        ]
        try:
            evaluation = done[-1] if done else self.registry.evaluate(f"{model}/{version}")
        except (InvalidInput, NotFound) as exc:
            self._record(
                t,
                "gates",
                cycle.id,
                {"version": version, "passed": False, "error": exc.message},
                exc.message,
            )
            self._retire(t, cycle, f"gate evaluation failed: {exc.message}", "gates")
            return
        checks = [
            {k: c.get(k) for k in ("name", "passed", "measured", "bound", "detail")}
            for c in evaluation.report.get("checks", [])
        ]
        failed = [c["detail"] or c["name"] for c in checks if not c["passed"]]
        detail = {
            "version": version,
            "passed": evaluation.passed,
            "evaluation": evaluation.id,
            "dataset": evaluation.dataset_name,
            "champion_version": evaluation.champion_version,
            "checks": checks,
        }
        verdict = "passed" if evaluation.passed else "failed: " + "; ".join(failed)
        self._record(
            t, "gates", cycle.id, detail, f"gates on {evaluation.dataset_name!r} {verdict}"
        )
        if not evaluation.passed:
            self._retire(t, cycle, "gates failed: " + "; ".join(failed), "gates")

    # -- challenger -------------------------------------------------------------------------

    def _deploy(self, t: _Tick, cycle: Cycle) -> None:
        policy, spec = t.policy, t.policy.challenger
        version = int(cycle.get("registered", "version"))
        champion = self._alias(policy.model, policy.promote.alias)
        if champion is None:
            why = f"{policy.model} has no {policy.promote.alias}: nothing to compare with"
            self._record(
                t,
                "compared",
                cycle.id,
                {
                    "champion_version": None,
                    "challenger_version": version,
                    "better": True,
                    "why": why,
                },
                why,
            )
            return
        try:
            self.registry.set_alias(
                policy.model,
                spec.alias,
                version,
                reason=f"loop cycle {cycle.id}: {spec.mode} evaluation against v{champion}",
            )
        except (GateFailed, ApprovalRequired) as exc:
            self._retire(t, cycle, f"cannot set {spec.alias}: {exc.message}", "challenger")
            return
        from loopwright.monitoring.config import duration_ms

        detail = {
            "version": version,
            "alias": spec.alias,
            "mode": spec.mode,
            "weight": spec.weight,
            "champion_version": champion,
            "since_ms": t.now,
            "deadline_ms": t.now + duration_ms(spec.max_wait, "challenger.max_wait"),
            "min_requests": spec.min_requests,
            "min_labels": spec.min_labels,
            "metric": spec.metric,
            "margin": spec.margin,
        }
        self._record(
            t,
            "challenger",
            cycle.id,
            detail,
            f"{policy.model}@{spec.alias} -> v{version} ({spec.mode}) against champion v{champion}",
        )

    def _judge(self, t: _Tick, cycle: Cycle) -> None:
        policy, spec = t.policy, t.policy.challenger
        live = cycle.last("challenger")
        assert live is not None
        info = live.detail
        version, champion = int(info["version"]), int(info["champion_version"])
        evidence = gather(
            self._log(policy, int(info["since_ms"]), t.now),
            spec.mode,
            policy.model,
            champion,
            version,
        )
        enough = evidence.n_requests >= spec.min_requests and evidence.n_labelled >= spec.min_labels
        if not enough and t.now < int(info["deadline_ms"]):
            return
        result = compare(
            evidence,
            metric=spec.metric,
            margin=spec.margin,
            positive=spec.positive,
            champion_version=champion,
            challenger_version=version,
        )
        detail = {
            **result.to_dict(),
            "enough": enough,
            "min_requests": spec.min_requests,
            "min_labels": spec.min_labels,
        }
        why = result.why
        if not enough:
            why = (
                f"after max_wait {spec.max_wait} the challenger had {evidence.n_requests} of "
                f"{spec.min_requests} requests and {evidence.n_labelled} of {spec.min_labels} "
                f"labels; {why}"
            )
            detail["better"] = False
        detail["why"] = why
        self._record(t, "compared", cycle.id, detail, why)
        if not detail["better"]:
            self._retire(t, cycle, why, "compared")

    def _log(self, policy: RetrainPolicy, since_ms: int, now_ms: int) -> pd.DataFrame:
        """The deployment's log since the challenger went live, with the labels known by now."""
        from loopwright.serving.predlog import (
            LABEL_SLACK_MS,
            join_labels,
            read_labels,
            read_predictions,
        )

        uri = self._log_uri(policy)
        start = since_ms - LOOKBACK_MS
        served = read_predictions(uri, policy.deployment, start, now_ms + 1)
        if served.empty:
            return served
        joined = join_labels(served, read_labels(uri, since_ms=start - LABEL_SLACK_MS))
        late = joined["label_ts"] > _ts(now_ms)
        joined.loc[late, ["label", "label_value"]] = None
        return joined

    # -- promotion --------------------------------------------------------------------------

    def _promote(self, t: _Tick, cycle: Cycle) -> None:
        compared = cycle.last("compared")
        assert compared is not None
        if not compared.detail.get("better"):  # recorded by an older controller before it retired
            self._retire(t, cycle, compared.reason or "not better", "compared")
            return
        self._move(t, cycle, self._reason(t, cycle, compared.detail))

    def _await_approval(self, t: _Tick, cycle: Cycle) -> None:
        request_id = str(cycle.get("awaiting_approval", "request_id"))
        request = self.registry.get_request(request_id)
        if request.status is RequestStatus.PENDING:
            return
        if request.status in (RequestStatus.REJECTED, RequestStatus.CANCELLED):
            comments = "; ".join(
                f"{d.approver}: {d.comment}" for d in request.decisions if d.comment
            )
            why = f"promotion request {request.id} was {request.status.value.lower()}"
            self._retire(t, cycle, why + (f" ({comments})" if comments else ""), "approval")
            return
        compared = cycle.last("compared")
        reason = self._reason(t, cycle, compared.detail if compared else {})
        if request.status is RequestStatus.APPLIED:  # someone moved the alias with it already
            version = int(cycle.get("registered", "version"))
            self._record(
                t,
                "promoted",
                cycle.id,
                {
                    "version": version,
                    "alias": t.policy.promote.alias,
                    "request_id": request.id,
                    "applied_by_hand": True,
                },
                reason,
            )
            return
        self._move(t, cycle, reason)

    def _move(self, t: _Tick, cycle: Cycle, reason: str) -> None:
        policy = t.policy
        version = int(cycle.get("registered", "version"))
        alias = policy.promote.alias
        previous = self._alias(policy.model, alias)
        try:
            self.registry.set_alias(policy.model, alias, version, reason=reason)
        except ApprovalRequired as exc:
            if cycle.phase == "awaiting_approval":
                return
            request = self._request(policy.model, alias, version, reason)
            self._record(
                t,
                "awaiting_approval",
                cycle.id,
                {
                    "version": version,
                    "alias": alias,
                    "request_id": request.id,
                    "required": request.required,
                    "approvals": request.approvals,
                },
                exc.message,
            )
            return
        except GateFailed as exc:
            self._retire(t, cycle, f"promotion refused by the gates: {exc.message}", "promotion")
            return
        detail = {
            "version": version,
            "alias": alias,
            "previous": previous,
            "request_id": cycle.get("awaiting_approval", "request_id"),
        }
        self._record(t, "promoted", cycle.id, detail, reason)

    def _request(self, model: str, alias: str, version: int, comment: str) -> ApprovalRequest:
        """The open request for this move (a resumed tick must not ask twice), else a new one."""
        for request in reversed(self.registry.list_requests(model)):
            same = request.alias == alias and request.version == version
            if same and request.status in (RequestStatus.PENDING, RequestStatus.APPROVED):
                return request
        return self.registry.request_alias(model, alias, version, comment)

    def _reason(self, t: _Tick, cycle: Cycle, figures: dict[str, Any]) -> str:
        values = {
            "model": t.policy.model,
            "version": cycle.get("registered", "version"),
            "champion": figures.get("champion_version"),
            "metric": figures.get("metric", t.policy.challenger.metric),
            "challenger_value": figures.get("challenger_value"),
            "champion_value": figures.get("champion_value"),
            "delta": figures.get("delta"),
            "margin": figures.get("margin", t.policy.challenger.margin),
            "n_requests": figures.get("n_requests"),
            "n_labelled": figures.get("n_labelled"),
            "agreement": figures.get("agreement"),
            "cycle": cycle.id,
            "trigger": cycle.get("triggered", "trigger"),
        }
        try:
            return t.policy.promote.reason.format(**values)
        except (TypeError, ValueError, KeyError):  # a figure is undefined (no champion yet)
            return str(figures.get("why") or f"loop cycle {cycle.id}")

    def _retire(self, t: _Tick, cycle: Cycle, why: str, stage: str) -> None:
        """End the cycle without promotion; take the challenger alias off this version."""
        policy = t.policy
        version = cycle.get("registered", "version")
        cleared = False
        alias = policy.challenger.alias
        if version is not None and self._alias(policy.model, alias) == int(version):
            self.registry.delete_alias(policy.model, alias, reason=f"loop cycle {cycle.id}: {why}")
            cleared = True
        self._record(
            t,
            "not_promoted",
            cycle.id,
            {"version": version, "stage": stage, "challenger_cleared": cleared},
            why,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _alias(self, model: str, alias: str) -> int | None:
        try:
            return int(self.registry.resolve(f"{model}@{alias}").version)
        except NotFound:
            return None

    def _log_uri(self, policy: RetrainPolicy) -> str:
        if policy.data.log_uri:
            return policy.data.log_uri
        from loopwright.monitoring.service import default_log_uri

        return default_log_uri(self.client.tracking_uri)


def _lease_name(model: str) -> str:
    return f"loop:{model}"


def _ts(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _rows(frame: pd.DataFrame | None) -> int:
    return 0 if frame is None else len(frame)


def _validation_metrics(
    fitted: Any, features: pd.DataFrame, labels: pd.Series, policy: RetrainPolicy
) -> dict[str, float]:
    """``val_<metric>`` of the fitted model on the held-out rows (metrics that are defined)."""
    from loopwright.governance.metrics import compute_metric, get_metric, metric_names

    task = get_metric(policy.challenger.metric).task
    predicted = fitted.predict(features)
    proba = classes = None
    if task == "classification" and hasattr(fitted, "predict_proba"):
        proba = fitted.predict_proba(features)
        classes = getattr(fitted, "classes_", None)
    out: dict[str, float] = {}
    for name in metric_names(task, with_proba=proba is not None):
        try:
            value = compute_metric(name, labels.to_numpy(), predicted, proba, classes=classes)
        except (LoopwrightError, ValueError):
            continue
        if math.isfinite(value):
            out[f"val_{name}"] = float(value)
    return out


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars as Python values, NaN as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0 and not isinstance(value, str):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
