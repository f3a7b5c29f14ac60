"""The handle of a live run: buffered metrics, environment and resource capture, clean endings.

Metrics are appended to an in-memory buffer and sent in batches — when the buffer is full, every
``metric_flush_interval_s`` from a background thread, when the run ends (success or error) and at
interpreter exit — so a tight training loop pays a list append per point, not a round trip. A
failed flush keeps the points in the buffer for the next attempt; nothing acknowledged is dropped.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from loopwright.errors import InvalidInput, LoopwrightError
from loopwright.tracking import validation as v
from loopwright.tracking.entities import ArtifactRef, DatasetInput, Metric, Run, RunStatus

if TYPE_CHECKING:
    from loopwright.client import Client
    from loopwright.tracking.resources import ResourceMonitor

log = logging.getLogger(__name__)

_stack: list[ActiveRun] = []
_stack_lock = threading.RLock()
_live: weakref.WeakSet[ActiveRun] = weakref.WeakSet()


def active_run() -> ActiveRun | None:
    """The innermost run started with ``start_run`` and not yet ended, in this process."""
    with _stack_lock:
        return _stack[-1] if _stack else None


class ActiveRun:
    """A run being written to. Use it as a context manager; the block's outcome sets the status."""

    def __init__(self, client: Client, run: Run) -> None:
        self.client = client
        self.id = run.id
        self.experiment_id = run.experiment_id
        self.name = run.name
        self.params: dict[str, str] = dict(run.params)
        self._buffer: list[Metric] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._steps: dict[str, int] = {}
        self._keys_ok: set[str] = set()
        self._ended = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._monitor: ResourceMonitor | None = None
        self._buffer_size = client.settings.metric_buffer_size

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        client: Client,
        *,
        experiment: str | None,
        run_name: str | None,
        tags: Mapping[str, str] | None,
        parent_run_id: str | None,
        run_id: str | None,
        capture_environment: bool,
        monitor_resources: bool,
    ) -> ActiveRun:
        from loopwright.client import DEFAULT_EXPERIMENT

        all_tags = dict(tags or {})
        env = None
        if capture_environment and run_id is None:
            from loopwright.tracking.environment import capture_environment as capture

            env = capture()
            all_tags = {**env.to_tags(), **all_tags}
        if run_id is not None:
            run = client.tracking.resume_run(run_id)
        else:
            exp = client.get_or_create_experiment(experiment or DEFAULT_EXPERIMENT)
            user = all_tags.get("lw.user")
            run = client.tracking.create_run(
                exp.id, name=run_name, user=user, tags=all_tags, parent_run_id=parent_run_id
            )
        self = cls(client, run)
        if env is not None:
            self.log_text(env.requirements_text(), "environment/requirements.txt")
        self._begin(monitor_resources)
        return self

    def _begin(self, monitor_resources: bool) -> None:
        if monitor_resources:
            from loopwright.tracking.resources import ResourceMonitor

            self._monitor = ResourceMonitor(self.client.settings.resource_sample_interval_s)
            self._monitor.start()
        self._flusher = threading.Thread(
            target=self._flush_loop, name=f"loopwright-flush-{self.id[:8]}", daemon=True
        )
        self._flusher.start()
        _install_exit_hooks()
        with _stack_lock:
            _stack.append(self)
        _live.add(self)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.end(RunStatus.FINISHED)
        elif isinstance(exc, KeyboardInterrupt):
            self.end(RunStatus.KILLED, error="KeyboardInterrupt")
        else:
            summary = "".join(traceback.format_exception(exc_type, exc, tb)[-6:])
            self.end(RunStatus.FAILED, error=summary[-8000:])

    def end(self, status: RunStatus | str = RunStatus.FINISHED, error: str | None = None) -> Run:
        """Flush what is buffered, record resource usage and close the run. Idempotent."""
        status = v.run_status("status", status)
        if self._ended:
            return self.client.get_run(self.id)
        self._ended = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=30)
        if self._monitor is not None:
            self._log_resources(self._monitor.stop())
        with _stack_lock:
            if self in _stack:
                _stack.remove(self)
        self.flush()
        return self.client.tracking.end_run(self.id, status, error=error)

    def _log_resources(self, summary: Any) -> None:
        try:
            self.log_metrics(summary.as_metrics(), step=0)
            for i, (_elapsed, rss, cpu) in enumerate(summary.samples):
                self.log_metric("system.rss_mb", rss, step=i)
                self.log_metric("system.cpu_percent", cpu, step=i)
        except LoopwrightError:  # resource figures must never fail a run
            log.warning("could not record resource usage for run %s", self.id, exc_info=True)

    @property
    def info(self) -> Run:
        """The run as stored now (metrics include what was flushed so far)."""
        return self.client.get_run(self.id)

    # -- metrics -----------------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Buffer one point. ``step`` defaults to the next step of this key (0, 1, 2...)."""
        if key not in self._keys_ok:
            v.key("key", key)
            self._keys_ok.add(key)
        if type(value) is not float:
            value = v.metric_value(key, value)
        if step is None:
            step = self._steps.get(key, -1) + 1
        elif type(step) is not int:
            step = _int("step", step)
        ts = int(time.time() * 1000) if timestamp is None else _int("timestamp", timestamp)
        with self._lock:
            self._steps[key] = step
            self._buffer.append(Metric(key, value, step, ts))
            full = len(self._buffer) >= self._buffer_size
        if full:
            self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        for key, value in metrics.items():
            self.log_metric(key, value, step=step, timestamp=ts)

    def flush(self) -> None:
        """Send buffered points now. On failure they go back to the front of the buffer."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return
            sent = 0
            try:
                while sent < len(batch):
                    chunk = batch[sent : sent + 50_000]
                    self.client.tracking.log_batch(self.id, chunk)
                    sent += len(chunk)
            except BaseException:
                with self._lock:
                    self._buffer[:0] = batch[sent:]
                raise

    def _flush_loop(self) -> None:
        interval = self.client.settings.metric_flush_interval_s
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # kept in the buffer; the next flush retries
                log.warning("background flush of run %s failed; will retry", self.id, exc_info=True)

    # -- params and tags ---------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyper-parameters now (write-once: a different value later is a ``Conflict``)."""
        clean = v.string_map("params", dict(params))
        self.client.tracking.log_batch(self.id, params=clean)
        self.params.update(clean)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.tracking.log_batch(self.id, tags=v.string_map("tags", dict(tags)))

    # -- data and artifacts ------------------------------------------------------------------

    def log_dataset(
        self, data: Any, name: str = "train", context: str = "train", source: str | None = None
    ) -> DatasetInput:
        """Record the exact data this run used: its content digest, schema and row count."""
        from loopwright.data.datasets import describe_dataset

        ds = describe_dataset(data, name=name, context=context, source=source)
        self.client.tracking.log_inputs(self.id, [ds])
        return ds

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactRef]:
        """Store a file or a whole directory; ``artifact_path`` is where it appears in the run."""
        from loopwright.backends.fs.artifacts import walk_dir

        path = Path(local_path)
        if not path.exists():
            raise InvalidInput(f"local_path {str(path)!r} does not exist", field="local_path")
        if path.is_dir():
            prefix = artifact_path if artifact_path is not None else path.name
            files = [
                (f"{prefix}/{rel}" if prefix else rel, full) for rel, full in walk_dir(str(path))
            ]
        else:
            files = [(artifact_path or path.name, str(path))]
        refs = []
        for logical, full in files:
            v.artifact_path("artifact_path", logical)
            digest, size = self.client.artifacts.put_file(full)
            refs.append(ArtifactRef(logical, digest, size))
        self.client.tracking.log_artifacts(self.id, refs)
        return refs

    def log_bytes(self, data: bytes, artifact_path: str) -> ArtifactRef:
        v.artifact_path("artifact_path", artifact_path)
        digest = self.client.artifacts.put_bytes(data)
        ref = ArtifactRef(artifact_path, digest, len(data))
        self.client.tracking.log_artifacts(self.id, [ref])
        return ref

    def log_text(self, text: str, artifact_path: str) -> ArtifactRef:
        return self.log_bytes(text.encode(), artifact_path)

    def log_dict(self, obj: Any, artifact_path: str) -> ArtifactRef:
        return self.log_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2), artifact_path)

    def log_model(
        self,
        model: Any,
        artifact_path: str = "model",
        *,
        flavor: str | None = None,
        input_example: Any = None,
        signature: Any = None,
        register_as: str | None = None,
    ) -> ArtifactRef:
        """Save a model in its flavor's safe format, with its signature; optionally register it.

        The flavor is detected (scikit-learn -> skops, XGBoost/LightGBM -> native, ONNX) unless
        named; ``flavor="pyfunc"`` pickles and then loads only with ``trusted=True``. The
        signature comes from ``signature`` or is inferred from ``input_example``.
        ``register_as`` flushes metrics first, so the version carries this run's figures.
        """
        from loopwright.registry.flavors import save_model
        from loopwright.registry.signature import Signature, infer_signature

        chosen, data = save_model(model, flavor)
        ref = self.log_bytes(data, f"{artifact_path}/{chosen.file_name}")
        if signature is None and input_example is not None:
            signature = infer_signature(input_example)
        if signature is not None:
            sig = signature if isinstance(signature, Signature) else Signature.from_dict(signature)
            self.log_dict(sig.to_dict(), f"{artifact_path}/signature.json")
        self.set_tags({"lw.model.flavor": chosen.name, "lw.model.path": ref.path})
        if register_as is not None:
            self.flush()
            self.client.registry.register(register_as, self.id, artifact_path)
        return ref


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be an integer, got {value!r}", field=field)
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} must be an integer, got {value!r}", field=field) from None
    if as_int != value:
        raise InvalidInput(f"{field} must be an integer, got {value!r}", field=field)
    return as_int


_uncaught: list[str] = []
_previous_hook = sys.excepthook


def _record_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _uncaught.append("".join(traceback.format_exception(exc_type, exc, tb)[-6:]))
    _previous_hook(exc_type, exc, tb)


def _end_all_at_exit() -> None:
    """Flush and close runs the program forgot to end, so an exit never loses buffered points.

    If the program is dying of an uncaught exception the runs end FAILED with it as the error.
    """
    status = RunStatus.FAILED if _uncaught else RunStatus.FINISHED
    error = _uncaught[-1][-8000:] if _uncaught else None
    for run in list(_live):
        if not run._ended:
            try:
                run.end(status, error=error)
            except Exception:
                log.warning("could not end run %s at exit", run.id, exc_info=True)


_hooks_installed = False


def _install_exit_hooks() -> None:
    """Installed when the first run starts, not at import: importing loopwright changes nothing."""
    global _hooks_installed, _previous_hook
    with _stack_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        _previous_hook = sys.excepthook
        sys.excepthook = _record_uncaught
        atexit.register(_end_all_at_exit)
