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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopwright.errors import InvalidInput, LoopwrightError
from loopwright.serving.metrics import ServingMetrics
from loopwright.serving.predictor import ModelSlot
from loopwright.serving.predlog import LabelStore, PredictionLog
from loopwright.serving.routing import Router

if TYPE_CHECKING:
    import pandas as pd

    from loopwright.client import Client
    from loopwright.serving.deployment import DeploymentSpec

__all__ = ["DeploymentRuntime", "ModelError"]

log = logging.getLogger("loopwright.serving")

DRAIN_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 20


class ModelError(LoopwrightError):
    """The model raised on these inputs (the request was valid for the signature)."""

    code = "MODEL_ERROR"


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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeploymentRuntime:
    """A :class:`DeploymentSpec` served: see the module docstring. Constructing only stores."""

    def __init__(self, client: Client, spec: DeploymentSpec, *, trusted: bool = False) -> None:
        self.client = client
        self.spec = spec
        self.trusted = trusted
        self.metrics = ServingMetrics()
        self.router = Router(spec.canary.weight if spec.canary else 0.0)
        self.routes: dict[str, _Route] = {}
        self.shadows: list[_Route] = []
        self.predlog: PredictionLog | None = None
        self.labels: LabelStore | None = None
        self.ready = False
        self.last_swap: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._refresh_lock = asyncio.Lock()

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
        self.shadows = [await self._load_route("shadow", ref) for ref in spec.shadow_refs]
        self.labels = LabelStore(self.log_uri)
        if spec.log.enabled:
            self.predlog = PredictionLog(self.log_uri, spec.name, spec.log.flush_interval_s)
            self.predlog.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
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

    async def _load_route(self, name: str, ref: str) -> _Route:
        return _Route(name, ref, await self._load(name, ref))

    async def _load(self, name: str, ref: str, version: Any = None) -> _Lease:
        registry = self.client.registry
        mv: Any = version  # a frozen ModelVersion (read-only fields) fits VersionLike at runtime
        if mv is None:
            mv = await asyncio.to_thread(registry.resolve, ref)
        model = await asyncio.to_thread(registry.load, mv, trusted=self.trusted)
        slot = ModelSlot(ref, mv, model, self.spec.batching)
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
        return swapped

    async def _refresh_route(self, route: _Route) -> bool:
        old = route.lease
        try:
            mv = await asyncio.to_thread(self.client.registry.resolve, route.ref)
            if int(mv.version) == old.slot.version:
                return False
            new = await self._load(route.name, route.ref, mv)
        except Exception as exc:
            self._record_error(route, exc)
            return False
        route.lease = new  # atomic for every request that starts from now on
        self.last_swap = {
            "route": route.name,
            "ref": route.ref,
            "from_version": old.slot.version,
            "to_version": new.slot.version,
            "at": _now_ms(),
        }
        log.info("deployment %s: %s now serves %s", self.spec.name, route.ref, new.slot.uri)
        self._spawn(self._retire(old))
        return True

    def _record_error(self, route: _Route, exc: Exception) -> None:
        message = (
            exc.message if isinstance(exc, LoopwrightError) else f"{type(exc).__name__}: {exc}"
        )
        log.warning("deployment %s: cannot load %s: %s", self.spec.name, route.ref, message)
        self.errors.append(
            {"route": route.name, "ref": route.ref, "error": message, "at": _now_ms()}
        )
        del self.errors[:-MAX_ERRORS_KEPT]

    async def _retire(self, lease: _Lease) -> None:
        """Close a slot once the requests inside it are answered (or after a timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lease.idle.wait(), DRAIN_TIMEOUT_S)
        await lease.slot.close()

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
        frame: pd.DataFrame,
        key: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> dict[str, Any]:
        """Route ``frame`` (already validated), answer it, mirror it to shadows, log it.

        ``route`` pins a route (a V2 request naming a version); else the router picks one,
        sticky for ``key``.
        """
        rid = request_id or uuid.uuid4().hex
        if route is None:
            route = self.router.choose(key) if "canary" in self.routes else "champion"
        return await self._answer(self.routes[route], frame, rid)

    async def _answer(self, route: _Route, frame: pd.DataFrame, rid: str) -> dict[str, Any]:
        started = time.perf_counter()
        lease = route.lease
        try:
            result = await self._call(lease, frame)
        except Exception as exc:
            error = _as_loopwright_error(exc)
            self._observe(route.name, lease.slot, rid, frame, None, started, error, False)
            raise error from exc
        self._observe(route.name, lease.slot, rid, frame, result, started, None, False)
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

    async def _call(self, lease: _Lease, frame: pd.DataFrame) -> dict[str, Any]:
        lease.inflight += 1
        lease.idle.clear()
        try:
            return await lease.slot.predict(frame)
        finally:
            lease.inflight -= 1
            if lease.inflight == 0:
                lease.idle.set()

    async def _shadow(self, route: _Route, frame: pd.DataFrame, rid: str) -> None:
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
        frame: pd.DataFrame,
        result: dict[str, Any] | None,
        started: float,
        error: LoopwrightError | None,
        shadow: bool,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        predictions = result["predictions"] if result else None
        self.metrics.observe_request(route, slot.version, latency_ms / 1000.0, error is not None)
        if predictions is not None:
            self.metrics.observe_predictions(route, slot.version, predictions, slot.classes)
        if self.predlog is None:
            return
        rows = frame.to_dict("records")
        probabilities = result["probabilities"] if result else None
        base = {
            "ts": _now_ms(),
            "route": route,
            "model": slot.model_name,
            "version": slot.version,
            "latency_ms": latency_ms,
            "error": None if error is None else f"{error.code}: {error.message}",
            "shadow": shadow,
        }
        self.predlog.append(
            [
                {
                    **base,
                    "request_id": rid if len(rows) == 1 else f"{rid}/{i}",
                    "inputs": row,
                    "prediction": None if predictions is None else predictions[i],
                    "probabilities": None if probabilities is None else probabilities[i],
                }
                for i, row in enumerate(rows)
            ]
        )

    async def add_labels(self, labels: list[dict[str, Any]]) -> int:
        """Store late ground truth for logged request ids (written durably before returning)."""
        if self.labels is None:
            self.labels = LabelStore(self.log_uri)
        return await asyncio.to_thread(self.labels.add, labels)

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
            "routes": routes,
            "shadows": [_route_status(r) for r in self.shadows],
            "last_swap": self.last_swap,
            "errors": list(self.errors),
            "log": log_state,
        }

    def render_metrics(self) -> str:
        """Prometheus text, with the queue depth of every live slot sampled now."""
        for route in [*self.routes.values(), *self.shadows]:
            slot = route.lease.slot
            self.metrics.set_queue_depth(route.name, slot.version, slot.batcher.queue_depth)
        return self.metrics.render()


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
