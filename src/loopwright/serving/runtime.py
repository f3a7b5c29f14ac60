"""One deployment running: its routes loaded, requests routed, answers logged, aliases watched.

:class:`DeploymentRuntime` is what the HTTP app (:mod:`loopwright.serving.app`) calls; it knows
nothing of HTTP. :meth:`~DeploymentRuntime.start` resolves the spec's refs through the registry
and loads each version in a thread; a background watcher then calls
:meth:`~DeploymentRuntime.refresh` every ``watch_interval_s``. When an alias has moved, the new
version is loaded in a thread and swapped in with one assignment; the old slot is closed once
the requests already inside it have finished (a per-slot in-flight count). A version that fails
to load leaves the old one serving; the failure is kept in :meth:`~DeploymentRuntime.status`.

Errors a model raises on some inputs become :class:`ModelError` for those requests only (the
micro-batcher retries a failed batch request by request); the app answers them with 422.

With a canary and ``spec.slo``, every champion and canary answer feeds a
:class:`~loopwright.serving.canary.CanaryAnalysis`; when the canary breaches its SLO the router
sends it nothing from that request on, and the decision (state ``rolled_back``, the reason, an
alert) is published to the deployment's state file, which every worker reads on each refresh,
and recorded once in the audit trail. :meth:`~DeploymentRuntime.rollback` does the same by hand;
:meth:`~DeploymentRuntime.promote` moves the champion alias to the canary's version through the
registry's gates and approvals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopwright.errors import (
    ApprovalRequired,
    Conflict,
    InvalidInput,
    LoopwrightError,
    ModelError,
    NotFound,
    Overloaded,
)
from loopwright.governance.audit import acting_as
from loopwright.serving.batching import Arrivals
from loopwright.serving.canary import (
    CANARY,
    PROMOTED,
    ROLLED_BACK,
    SERVING,
    CanaryAnalysis,
    Decision,
    StateFile,
    Verdict,
    agreeing_rows,
    new_alert,
    wall_clock_ms,
)
from loopwright.serving.metrics import ServingMetrics
from loopwright.serving.predictor import Inputs, ModelSlot
from loopwright.serving.predlog import Answer, LabelStore, PredictionLog
from loopwright.serving.routing import ROUTES, Router

if TYPE_CHECKING:
    from loopwright.client import Client
    from loopwright.serving.deployment import DeploymentSpec

__all__ = ["DeploymentRuntime", "ModelError", "new_request_id"]

log = logging.getLogger("loopwright.serving")

DRAIN_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 20
MAX_ALERTS_KEPT = 20
#: Judge the canary after every canary answer while the window is small; above this many
#: answers at most every JUDGE_EVERY_S (a p99 sorts the window).
JUDGE_ALWAYS_BELOW = 2000
JUDGE_EVERY_S = 0.2


@dataclass(eq=False, slots=True)
class _Lease:
    """A slot and the requests currently inside it, so a swap can wait for them."""

    slot: ModelSlot
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Route:
    name: str  # champion, canary or shadow
    ref: str  # what the registry is asked for: churn@champion, churn/3
    lease: _Lease
    unresolved: bool = False  # its alias pointed nowhere at the last refresh


class DeploymentRuntime:
    """A :class:`DeploymentSpec` served: see the module docstring. Constructing only stores.

    ``clock`` (milliseconds) stamps the prediction log and drives the SLO window, so a demo can
    replay simulated days; the wall clock by default.
    """

    def __init__(
        self,
        client: Client,
        spec: DeploymentSpec,
        *,
        trusted: bool = False,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.client = client
        self.spec = spec
        self.trusted = trusted
        self.clock = clock or wall_clock_ms
        self.metrics = ServingMetrics()
        #: Requests between their first byte and their batcher (the app counts them): a batch
        #: leaves once none is on its way.
        self.arrivals = Arrivals()
        self.router = Router(spec.canary.weight if spec.canary else 0.0)
        self.analysis: CanaryAnalysis | None = None
        if spec.canary is not None and spec.slo is not None:
            self.analysis = CanaryAnalysis(spec.slo, self.clock)
        self.decision: Decision | None = None  # what was decided about the canary's version
        self.alerts: list[dict[str, Any]] = []
        self.state_file: StateFile | None = None
        self._judged_at = 0.0
        self.routes: dict[str, _Route] = {}
        self.shadows: list[_Route] = []
        self.pending_shadows: list[str] = []  # shadow refs whose alias points nowhere yet
        self.predlog: PredictionLog | None = None
        self.labels: LabelStore | None = None
        self.ready = False
        self.last_swap: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._refresh_lock = asyncio.Lock()
        #: Keep what start() loaded out of the cyclic garbage collector (see :func:`_refreeze`);
        #: set by the server's worker processes, not by in-process use.
        self.freeze_gc = False

    def __repr__(self) -> str:
        return f"DeploymentRuntime({self.spec.name!r}, ready={self.ready})"

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def log_uri(self) -> str:
        """Where predictions and labels go: the spec's, else ``<tracking dir>/predictions``."""
        if self.spec.log.uri:
            return self.spec.log.uri
        uri = self.client.tracking_uri
        if "://" in uri and not uri.startswith("file://"):
            raise InvalidInput(
                f"the tracking store {uri!r} is not a local directory: set log.uri "
                "(--log-uri) for the prediction log",
                field="log.uri",
            )
        return str(Path(uri.removeprefix("file://")).expanduser() / "predictions")

    async def start(self) -> None:
        """Load every route, start the prediction log and the alias watcher."""
        spec = self.spec
        self.routes["champion"] = await self._load_route("champion", spec.champion_ref)
        if spec.canary_ref is not None:
            self.routes["canary"] = await self._load_route("canary", spec.canary_ref)
        for ref in spec.shadow_refs:
            try:
                self.shadows.append(await self._load_route("shadow", ref))
            except NotFound:  # e.g. no challenger yet: the watcher picks it up once it exists
                self.pending_shadows.append(ref)
                log.info("deployment %s: shadow %s waits for its alias", spec.name, ref)
        self.labels = LabelStore(self.log_uri)
        self.state_file = StateFile(self.log_uri, spec.name)
        await self._sync_decision()
        if spec.log.enabled:
            self.predlog = PredictionLog(self.log_uri, spec.name, spec.log.flush_interval_s)
            self.predlog.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self.freeze_gc:
            _refreeze()
        self.ready = True

    async def close(self) -> None:
        """Stop watching, let in-flight requests and shadows finish, flush the log."""
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._background:
            await asyncio.wait(set(self._background), timeout=DRAIN_TIMEOUT_S)
        for route in [*self.routes.values(), *self.shadows]:
            await self._retire(route.lease)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.close)
        self.metrics.close()

    async def _load_route(self, name: str, ref: str) -> _Route:
        return _Route(name, ref, await self._load(name, ref))

    async def _load(self, name: str, ref: str, version: Any = None) -> _Lease:
        registry = self.client.registry
        mv: Any = version  # a frozen ModelVersion (read-only fields) fits VersionLike at runtime
        if mv is None:
            mv = await asyncio.to_thread(registry.resolve, ref)
        model = await asyncio.to_thread(registry.load, mv, trusted=self.trusted)
        slot = ModelSlot(ref, mv, model, self.spec.batching, self.arrivals)
        slot.batcher.on_batch = self.metrics.observe_batch
        self.metrics.declare(name, slot.version)
        lease = _Lease(slot)
        lease.idle.set()
        return lease

    # -- hot swap ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.spec.watch_interval_s)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one failure
                log.exception("deployment %s: refresh failed", self.spec.name)

    async def refresh(self) -> list[str]:
        """Re-resolve every route's ref; swap in versions that changed. Returns what swapped."""
        swapped: list[str] = []
        async with self._refresh_lock:
            for route in [*self.routes.values(), *self.shadows]:
                if await self._refresh_route(route):
                    swapped.append(f"{route.name}:{route.ref}")
            swapped += await self._refresh_shadow_set()
            await self._sync_decision()
        self._judge(force=True)
        return swapped

    async def _refresh_shadow_set(self) -> list[str]:
        """Shadows come and go with their aliases: load the new ones, retire the deleted ones."""
        changed: list[str] = []
        for ref in list(self.pending_shadows):
            try:
                route = await self._load_route("shadow", ref)
            except NotFound:
                continue
            except Exception as exc:
                self._error({"route": "shadow", "ref": ref, "error": str(exc)})
                continue
            self.pending_shadows.remove(ref)
            self.shadows = [*self.shadows, route]
            changed.append(f"shadow:{ref}")
            log.info(
                "deployment %s: shadow %s now serves %s", self.spec.name, ref, route.lease.slot.uri
            )
        for route in [r for r in self.shadows if r.unresolved]:  # found by _refresh_route
            self.shadows = [r for r in self.shadows if r is not route]
            self.pending_shadows.append(route.ref)
            self._spawn(self._retire(route.lease))
            changed.append(f"shadow:{route.ref} removed")
            log.info("deployment %s: shadow %s has no version now", self.spec.name, route.ref)
        return changed

    async def drain(self) -> None:
        """Wait for shadow answers still running and write the prediction log out now."""
        while self._background:
            await asyncio.wait(set(self._background), timeout=DRAIN_TIMEOUT_S)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.flush)

    async def _refresh_route(self, route: _Route) -> bool:
        old = route.lease
        try:
            mv = await asyncio.to_thread(self.client.registry.resolve, route.ref)
            if int(mv.version) == old.slot.version:
                return False
            new = await self._load(route.name, route.ref, mv)
        except Exception as exc:
            if route.name == "shadow" and isinstance(exc, NotFound):
                route.unresolved = True  # its alias was deleted: _refresh_shadow_set retires it
            else:
                self._record_error(route, exc)
            return False
        route.lease = new  # atomic for every request that starts from now on
        self.last_swap = {
            "route": route.name,
            "ref": route.ref,
            "from_version": old.slot.version,
            "to_version": new.slot.version,
            "at": self.clock(),
        }
        self._version_changed(route.name, new.slot.version)
        log.info("deployment %s: %s now serves %s", self.spec.name, route.ref, new.slot.uri)
        self._spawn(self._retire(old))
        return True

    def _record_error(self, route: _Route, exc: Exception) -> None:
        message = (
            exc.message if isinstance(exc, LoopwrightError) else f"{type(exc).__name__}: {exc}"
        )
        log.warning("deployment %s: cannot load %s: %s", self.spec.name, route.ref, message)
        self._error({"route": route.name, "ref": route.ref, "error": message})

    def _error(self, entry: dict[str, Any]) -> None:
        self.errors.append({**entry, "at": self.clock()})
        del self.errors[:-MAX_ERRORS_KEPT]

    async def _retire(self, lease: _Lease) -> None:
        """Close a slot once the requests inside it are answered (or after a timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lease.idle.wait(), DRAIN_TIMEOUT_S)
        await lease.slot.close()
        if self.freeze_gc and self.ready:
            _refreeze()  # the old model's objects were frozen: let the collector have them

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- requests ---------------------------------------------------------------------------

    def slot(self, route: str = "champion") -> ModelSlot:
        """The slot serving ``route`` now (for metadata and validation)."""
        return self.routes[route].lease.slot

    async def predict(
        self,
        frame: Inputs,
        key: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> dict[str, Any]:
        """Route ``frame`` (already validated), answer it, mirror it to shadows, log it.

        ``route`` pins a route (a V2 request naming a version); else the router picks one,
        sticky for ``key``.
        """
        rid = request_id or new_request_id()
        if route is None:
            route = self.router.choose(key) if "canary" in self.routes else "champion"
        return await self._answer(self.routes[route], frame, rid)

    async def _answer(self, route: _Route, frame: Inputs, rid: str) -> dict[str, Any]:
        started = time.perf_counter()
        lease = route.lease
        try:
            result = await self._call(lease, frame)
        except Overloaded:
            raise  # refused before the model: counted as a rejection, not as the route's error
        except Exception as exc:
            error = _as_loopwright_error(exc)
            latency = self._observe(route.name, lease.slot, rid, frame, None, started, error, False)
            self._analyse(route.name, lease.slot.version, False, latency)
            raise error from exc
        latency = self._observe(route.name, lease.slot, rid, frame, result, started, None, False)
        self._analyse(route.name, lease.slot.version, True, latency)
        if route.name == "canary" and self._wants_comparison():
            self._spawn(self._compare(frame, lease.slot.version, result["predictions"]))
        for shadow in self.shadows:
            self._spawn(self._shadow(shadow, frame, rid))
        return {
            "request_id": rid,
            "route": route.name,
            "model": lease.slot.model_name,
            "version": lease.slot.version,
            "predictions": result["predictions"],
            "probabilities": result["probabilities"],
        }

    async def _call(self, lease: _Lease, frame: Inputs) -> dict[str, Any]:
        lease.inflight += 1
        lease.idle.clear()
        try:
            return await lease.slot.predict(frame)
        finally:
            lease.inflight -= 1
            if lease.inflight == 0:
                lease.idle.set()

    async def _shadow(self, route: _Route, frame: Inputs, rid: str) -> None:
        started = time.perf_counter()
        lease = route.lease
        try:
            result = await self._call(lease, frame)
        except Exception as exc:
            error = _as_loopwright_error(exc)
            self._observe("shadow", lease.slot, rid, frame, None, started, error, True)
            return
        self._observe("shadow", lease.slot, rid, frame, result, started, None, True)

    def _observe(
        self,
        route: str,
        slot: ModelSlot,
        rid: str,
        frame: Inputs,
        result: dict[str, Any] | None,
        started: float,
        error: LoopwrightError | None,
        shadow: bool,
    ) -> float:
        """Count, then log one answer; returns its latency in ms."""
        latency_ms = (time.perf_counter() - started) * 1000.0
        predictions = result["predictions"] if result else None
        self.metrics.observe_request(route, slot.version, latency_ms / 1000.0, error is not None)
        if predictions is not None:
            self.metrics.observe_predictions(route, slot.version, predictions, slot.classes)
        if self.predlog is None:
            return latency_ms
        self.predlog.append_answer(
            Answer(
                rid,
                self.clock(),
                route,
                slot.model_name,
                slot.version,
                latency_ms,
                None if error is None else f"{error.code}: {error.message}",
                shadow,
                frame,
                predictions,
                result["probabilities"] if result else None,
            )
        )
        return latency_ms

    async def add_labels(self, labels: list[dict[str, Any]]) -> int:
        """Store late ground truth for logged request ids (written durably before returning)."""
        if self.labels is None:
            self.labels = LabelStore(self.log_uri)
        return await asyncio.to_thread(self.labels.add, labels)

    # -- the canary -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``serving`` (no canary), ``canary``, or the decision: ``rolled_back``, ``promoted``."""
        if self.spec.canary is None:
            return SERVING
        return self.decision.state if self.decision is not None else CANARY

    def _analyse(self, route: str, version: int, ok: bool, latency_ms: float) -> None:
        """Feed one champion/canary answer to the SLO window; judge after a canary answer."""
        if self.analysis is None or route not in ROUTES or self.state != CANARY:
            return
        if self.routes[route].lease.slot.version != version:
            return  # answered by a version swapped out meanwhile
        self.analysis.observe(route, ok, latency_ms)
        if route == "canary":
            self._judge()

    def _wants_comparison(self) -> bool:
        return (
            self.analysis is not None and self.state == CANARY and self.analysis.wants_comparison()
        )

    def judge(self) -> Verdict | None:
        """Judge the canary now (None: no SLO, not live, or too few answers in the window)."""
        return self._judge(force=True)

    def _judge(self, force: bool = False) -> Verdict | None:
        if self.analysis is None or self.state != CANARY:
            return None
        now = time.monotonic()
        busy = self.analysis.size >= JUDGE_ALWAYS_BELOW
        if busy and not force and now - self._judged_at < JUDGE_EVERY_S:
            return None
        self._judged_at = now
        verdict = self.analysis.judge()
        if verdict is not None and verdict.breached:
            decision, weight = self._roll_back(verdict.reason, "slo", verdict)
            self._spawn(self._publish(decision, weight))
        return verdict

    async def _compare(self, frame: Inputs, version: int, predictions: list[Any]) -> None:
        """Score a canary request on the champion too (off the request path) for agreement."""
        try:
            result = await self._call(self.routes["champion"].lease, frame)
        except Exception:
            return  # the champion's failures count where it answers its own requests
        canary = self.routes.get("canary")
        if self.analysis is None or canary is None or canary.lease.slot.version != version:
            return
        tolerance = self.analysis.slo.agreement_tolerance
        agreed = agreeing_rows(predictions, result["predictions"], tolerance)
        self.analysis.observe_agreement(agreed, len(predictions))

    def _version_changed(self, route: str, version: int) -> None:
        """A swap: the window forgets the old version; a new canary version clears a decision."""
        if self.analysis is not None and route in ROUTES:
            self.analysis.reset(route)
        decision = self.decision
        if route != "canary" or decision is None or decision.canary_version == version:
            return
        log.info("deployment %s: the canary now serves version %d; the %s decision about "
                 "version %d no longer applies", self.spec.name, version, decision.state,
                 decision.canary_version)  # fmt: skip
        self.decision = None
        self.router.set_canary_weight(self.spec.canary.weight if self.spec.canary else 0.0)

    def _apply(self, decision: Decision) -> None:
        self.decision = decision
        self.router.set_canary_weight(0.0)
        alert = decision.alert
        if alert is not None and all(a.get("id") != alert.get("id") for a in self.alerts):
            self.alerts.append(alert)
            del self.alerts[:-MAX_ALERTS_KEPT]

    async def _sync_decision(self) -> None:
        """Apply what another worker (or an earlier run) decided about this canary version."""
        canary = self.routes.get("canary")
        if canary is None or self.state_file is None:
            return
        try:
            stored = await asyncio.to_thread(self.state_file.read)
        except Exception as exc:
            self._error({"route": "canary", "ref": canary.ref,
                         "error": f"cannot read {self.state_file.path}: {exc}"})  # fmt: skip
            return
        version = canary.lease.slot.version
        if stored is None or stored.canary_version != version:
            return
        current = self.decision
        if current is not None and (current.canary_version, current.state) == (
            stored.canary_version,
            stored.state,
        ):
            return
        self._apply(stored)
        level = logging.WARNING if stored.state == ROLLED_BACK else logging.INFO
        log.log(level, "deployment %s: canary %s (version %d) is %s (decided by %s at %d): %s",
                self.spec.name, canary.ref, version, stored.state, stored.by, stored.at_ms,
                stored.reason)  # fmt: skip

    def _canary_route(self) -> _Route:
        canary = self.routes.get("canary")
        if canary is None:
            raise NotFound(f"deployment {self.spec.name!r} has no canary", field="canary")
        return canary

    def _roll_back(
        self, reason: str, by: str, verdict: Verdict | None, actor: str | None = None
    ) -> tuple[Decision, float]:
        """Stop routing to the canary now; returns the decision and the weight it had."""
        canary = self._canary_route()
        version = canary.lease.slot.version
        at = self.clock()
        alert = new_alert(self.spec.name, reason, verdict, at, version)
        decision = Decision(ROLLED_BACK, version, canary.ref, reason, by, at, actor=actor,
                            verdict=None if verdict is None else verdict.to_dict(),
                            alert=alert)  # fmt: skip
        weight = self.router.canary_weight
        self._apply(decision)
        log.warning("deployment %s: canary %s (version %d) rolled back (%s): %s",
                    self.spec.name, canary.ref, version, by, reason)  # fmt: skip
        return decision, weight

    async def _publish(self, decision: Decision, weight: float) -> int | None:
        """Publish the decision to the other workers; the first publisher records the audit
        event. Returns the event's sequence number (None: another worker recorded it)."""
        if self.state_file is not None:
            try:
                other = await asyncio.to_thread(self.state_file.claim, decision)
            except Exception as exc:
                other = None
                self._error({"route": "canary", "ref": decision.canary_ref,
                             "error": f"cannot write {self.state_file.path}: {exc}"})  # fmt: skip
            if other is not None:  # another worker was first: show its decision everywhere
                mine = (decision.alert or {}).get("id")
                self.alerts = [a for a in self.alerts if a.get("id") != mine]
                self._apply(other)
                return None
        try:
            event = await asyncio.to_thread(self._audit, decision, weight)
        except Exception as exc:
            message = exc.message if isinstance(exc, LoopwrightError) else repr(exc)
            log.warning("deployment %s: cannot record the rollback in the audit trail: %s",
                        self.spec.name, message)  # fmt: skip
            self._error({"route": "canary", "ref": decision.canary_ref,
                         "error": f"audit event not recorded: {message}"})  # fmt: skip
            return None
        return int(event.seq)

    def _audit(self, decision: Decision, weight: float) -> Any:
        verdict = decision.verdict or {}
        return self.client.registry.record_event(
            "deployment.rollback",
            "deployment",
            self.spec.name,
            before={
                "canary": decision.canary_ref,
                "version": decision.canary_version,
                "weight": weight,
                "state": CANARY,
            },
            after={
                "state": decision.state,
                "weight": 0.0,
                "by": decision.by,
                "rule": verdict.get("rule"),
                "measured": verdict.get("measured"),
                "thresholds": verdict.get("thresholds"),
            },
            reason=decision.reason,
        )

    async def rollback(self, reason: str, *, user: str | None = None) -> dict[str, Any]:
        """Stop routing to the canary by hand (state ``rolled_back``, audit event, alert)."""
        canary = self._canary_route()
        if not reason or not reason.strip():
            raise InvalidInput("a manual rollback needs a reason", field="reason")
        current = self.decision
        if current is not None and current.state == PROMOTED:
            raise Conflict(
                f"canary version {current.canary_version} was promoted to champion; move the "
                "champion alias back instead",
                field="canary",
            )
        if current is not None and current.state == ROLLED_BACK:
            return {"changed": False, "state": ROLLED_BACK, "decision": current.to_dict()}
        decision, weight = self._roll_back(reason.strip(), "manual", None, user)
        with acting_as(user):
            seq = await self._publish(decision, weight)
        log.info("deployment %s: %s rolled back by hand", self.spec.name, canary.ref)
        return {"changed": True, "state": ROLLED_BACK, "decision": decision.to_dict(),
                "audit_seq": seq}  # fmt: skip

    async def promote(
        self, reason: str | None = None, *, override: bool = False, user: str | None = None
    ) -> dict[str, Any]:
        """Move the champion alias to the canary's version, through gates and approvals.

        :class:`~loopwright.errors.GateFailed` and
        :class:`~loopwright.errors.ApprovalRequired` pass through; for the latter a pending
        approval request is opened if there is none, and its id is in ``details``.
        """
        canary = self._canary_route()
        alias = self.spec.champion
        if alias == "latest" or alias.isdigit():
            raise InvalidInput(
                f"the champion route is {alias!r}, not an alias: promote by editing the spec",
                field="champion",
            )
        current = self.decision
        if current is not None and current.state == ROLLED_BACK:
            raise Conflict(
                f"canary version {current.canary_version} was rolled back ({current.reason}); "
                "a new canary version clears that",
                field="canary",
            )
        reason = (reason or "").strip() or None
        if override and reason is None:
            raise InvalidInput("override needs a reason (it is recorded in the audit trail)",
                               field="reason")  # fmt: skip
        version = canary.lease.slot.version
        registry = self.client.registry
        with acting_as(user):
            try:
                await asyncio.to_thread(
                    registry.set_alias,
                    self.spec.model,
                    alias,
                    version,
                    reason=reason,
                    override=reason if override else None,
                )
            except ApprovalRequired as exc:
                raise await self._approval_needed(exc, alias, version, reason) from None
        decision = Decision(PROMOTED, version, canary.ref, reason or f"promoted to {alias}",
                            "promote", self.clock(), actor=user)  # fmt: skip
        self._apply(decision)
        if self.state_file is not None:
            try:
                await asyncio.to_thread(self.state_file.write, decision)
            except Exception as exc:
                self._error({"route": "canary", "ref": canary.ref,
                             "error": f"cannot write {self.state_file.path}: {exc}"})  # fmt: skip
        log.info("deployment %s: canary version %d promoted to %s@%s", self.spec.name, version,
                 self.spec.model, alias)  # fmt: skip
        await self.refresh()
        return {"promoted": True, "model": self.spec.model, "alias": alias, "version": version,
                "champion_version": self.routes["champion"].lease.slot.version}  # fmt: skip

    async def _approval_needed(
        self, exc: ApprovalRequired, alias: str, version: int, reason: str | None
    ) -> ApprovalRequired:
        """The error to answer, naming the pending approval request (opened if none was)."""
        registry = self.client.registry
        model = self.spec.model

        def pending_or_new() -> tuple[Any, bool]:
            for request in reversed(registry.list_requests(model, "PENDING")):
                if request.alias == alias and request.version == version:
                    return request, False
            comment = reason or f"canary promotion of {self.spec.name}"
            return registry.request_alias(model, alias, version, comment), True

        request, opened = await asyncio.to_thread(pending_or_new)
        what = "was opened" if opened else "is pending"
        message = (
            f"moving {model}@{alias} to version {version} needs {request.required} approval(s); "
            f"approval request {request.id} {what} ({request.approvals} of {request.required}): "
            f"`loopwright models approve {request.id}`, then promote again"
        )
        return ApprovalRequired(message, field="alias", **{**exc.details,
                                                           "request_id": request.id})  # fmt: skip

    # -- observing --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Routes and versions now serving, the canary weight, the last swap and load errors."""
        routes = {name: _route_status(r) for name, r in self.routes.items()}
        if "canary" in routes:
            routes["canary"]["weight"] = self.router.canary_weight
        log_state = None
        if self.predlog is not None:
            p = self.predlog
            log_state = {"uri": p.uri, "written": p.written, "pending": p.pending,
                         "dropped": p.dropped, "last_error": p.last_error}  # fmt: skip
        return {
            "deployment": self.spec.name,
            "model": self.spec.model,
            "ready": self.ready,
            "state": self.state,
            "routes": routes,
            "shadows": [_route_status(r) for r in self.shadows],
            "pending_shadows": list(self.pending_shadows),
            "canary": self._canary_status(),
            "alerts": list(self.alerts),
            "last_swap": self.last_swap,
            "errors": list(self.errors),
            "log": log_state,
            "worker": os.getpid(),
            "native_threads": {name: os.environ.get(name) for name in _NATIVE_THREADS},
        }

    def _canary_status(self) -> dict[str, Any] | None:
        """The canary's state, why, and what its SLO window holds now."""
        if self.spec.canary is None:
            return None
        decision = self.decision
        return {
            "state": self.state,
            "weight": self.router.canary_weight,
            "configured_weight": self.spec.canary.weight,
            "reason": None if decision is None else decision.reason,
            "decision": None if decision is None else decision.to_dict(),
            "slo": None if self.spec.slo is None else self.spec.slo.model_dump(mode="json"),
            "window": None if self.analysis is None else self.analysis.snapshot(),
        }

    def render_metrics(self) -> str:
        """Prometheus text, with the queue depth of every live slot sampled now."""
        for route in [*self.routes.values(), *self.shadows]:
            slot = route.lease.slot
            self.metrics.set_queue_depth(route.name, slot.version, slot.batcher.queue_depth)
        return self.metrics.render()


#: The native thread-pool sizes a worker was started with (``/status`` shows them).
_NATIVE_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _RequestIds:
    """Unique request ids without a system call each: a random per-process prefix (80 bits,
    drawn again in a forked child) and a counter, 32 hex digits like a uuid4's (which reads
    ``os.urandom`` on every call: ~4% of a busy worker's time)."""

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:20]
        self._next = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._next) & 0xFFFFFFFFFFFF:012x}"


#: A new request id (when the caller sent none).
new_request_id = _RequestIds()


def _refreeze() -> None:
    """Collect once, then move every surviving object out of the collector's sight.

    Why: a serving worker holds millions of long-lived objects (pandas, scikit-learn, the
    models), and every full collection walks all of them: ~100 ms with the GIL held, which was
    the whole p99 under load. Frozen objects are skipped; new garbage is still collected. After
    a swap the freeze is redone, so a retired model's cycles are not kept forever (one
    collection per swap).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _route_status(route: _Route) -> dict[str, Any]:
    slot = route.lease.slot
    return {
        "ref": route.ref,
        "uri": slot.uri,
        "version": slot.version,
        "in_flight": route.lease.inflight,
        "loaded_at": slot.loaded_at,
    }


def _as_loopwright_error(exc: Exception) -> LoopwrightError:
    """Loopwright's own errors stay; anything the model raised becomes :class:`ModelError`."""
    if isinstance(exc, LoopwrightError):
        return exc
    message = f"the model failed on this input: {type(exc).__name__}: {exc}"[:500]
    return ModelError(message, field="inputs")
