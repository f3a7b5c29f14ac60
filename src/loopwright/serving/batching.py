"""Micro-batching: concurrent requests answered by one model call.

A batch leaves when ``max_batch_size`` rows are waiting, when ``max_wait_ms`` has passed since
its first request, or, with :class:`Arrivals`, as soon as **no other request is on its way**:
the HTTP app counts requests from their first byte until they reach a batcher, so a batch waits
exactly as long as there is company to wait for. Under a closed-loop load of 16 clients the
16 requests form one batch without idling out ``max_wait_ms``; a lone request leaves at once.
Without :class:`Arrivals` (in-process use) a batch waits for ``max_wait_ms`` once requests have
been seen to come together.

The frames are then combined, and ``predict`` runs once: in one worker thread (``thread``, the
default: the event loop goes on parsing requests meanwhile, which pays for models that release
the GIL, and one thread keeps a native library's own threads from being oversubscribed), or on
the event loop itself (``inline``: no hand-over between threads, which pays for models that
hold the GIL, such as scikit-learn's tree ensembles, whose per-tree loop is Python). The result
is split back per request along axis 0. While a batch runs, newcomers queue up and form the next
batch, so batches grow with load. If the combined call raises, each request is retried alone:
only the requests that fail get the exception.

``predict`` returns an array, or a tuple of arrays (e.g. predictions and probabilities), each
with one entry per row (a ``None`` in the tuple stays ``None``); :meth:`MicroBatcher.submit`
returns the same shape for its rows.
One batcher belongs to one event loop; its asyncio primitives are made on the first submit, so
it can be built before uvicorn starts its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopwright.errors import Overloaded, StoreUnavailable

__all__ = ["EXECUTORS", "Arrivals", "MicroBatcher"]

#: Where ``predict`` runs: a worker thread, or the event loop itself.
EXECUTORS = ("thread", "inline")


class Arrivals:
    """Requests on their way to a batcher: counted from their first byte until they submit.

    The app calls :meth:`begin` when a request starts and :meth:`end` once it has submitted (or
    failed before that); batchers waiting for company are woken when the count drops to 0.
    Only the event loop's thread touches it.
    """

    __slots__ = ("_listeners", "n")

    def __init__(self) -> None:
        self.n = 0
        self._listeners: list[Callable[[], None]] = []

    def begin(self) -> None:
        self.n += 1

    def end(self) -> None:
        self.n -= 1
        if self.n <= 0:
            self.n = 0
            for wake in self._listeners:
                wake()

    def listen(self, wake: Callable[[], None]) -> None:
        self._listeners.append(wake)

    def forget(self, wake: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(wake)


log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    frame: Any  # a DataFrame, or anything with len(), .columns and .to_numpy() (serving's Rows)
    future: asyncio.Future[Any]
    arrived: float = field(default=0.0)

    @property
    def rows(self) -> int:
        return len(self.frame)


class MicroBatcher:
    """Joins concurrent :meth:`submit` calls into one ``predict`` call (see the module doc).

    Counters for ``/metrics``: ``batches`` (combined calls), ``rows`` (rows predicted),
    ``last_batch_size`` (rows), :attr:`queue_depth` (requests waiting) and the ``on_batch``
    hook, called in the event loop with each batch's row count.
    """

    def __init__(
        self,
        predict: Callable[[Any], Any],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        executor: Executor | None = None,
        *,
        run: str = "thread",
        arrivals: Arrivals | None = None,
        max_queue: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        if run not in EXECUTORS:
            raise ValueError(f"run must be one of {', '.join(EXECUTORS)}, got {run!r}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.inline = run == "inline"
        self.arrivals = arrivals
        self.max_queue = max_queue
        self.on_batch: Callable[[int], None] | None = None
        self.batches = 0
        self.rows = 0
        self.last_batch_size = 0
        self._executor = executor
        self._owns_executor = executor is None
        self._pending: list[_Request] = []
        self._pending_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None  # the worker waiting for company
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the one being predicted)."""
        return len(self._pending)

    async def submit(self, frame: Any) -> Any:
        """The result for ``frame``'s rows, in order, once its batch has been predicted."""
        if self._closed:
            raise StoreUnavailable("the model is being unloaded; retry the request")
        if self.max_queue is not None and len(self._pending) >= self.max_queue:
            raise Overloaded(
                f"{len(self._pending)} requests are already waiting for this model (max_queue "
                f"{self.max_queue}); retry in a moment",
                retry_after_s=1,
            )
        loop = asyncio.get_running_loop()
        self._bind(loop)
        request = _Request(frame, loop.create_future(), loop.time())
        self._pending.append(request)
        self._pending_rows += request.rows
        self._wake()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return await request.future

    async def close(self) -> None:
        """Answer what is queued, then release the executor (if this batcher made it)."""
        self._closed = True
        if self.arrivals is not None:
            self.arrivals.forget(self._wake)
        worker = self._worker
        if worker is not None and not worker.done():
            await asyncio.shield(worker)
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- the worker -----------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt the running loop (first submit, or a new loop)."""
        if self._loop is not loop:
            self._loop = loop
            self._waiter = None
            self._worker = None
            if self.arrivals is not None:
                self.arrivals.forget(self._wake)
                self.arrivals.listen(self._wake)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _work(self) -> None:
        while self._pending:
            await self._wait_for_batch()
            batch = self._take()
            try:
                await self._run(batch)
            except Exception as exc:  # never leave a caller waiting
                log.exception("micro-batch failed")
                _fail(batch, exc)

    async def _wait_for_batch(self) -> None:
        """Return when the batch should leave (see the module docstring)."""
        loop = self._loop
        assert loop is not None
        deadline = self._pending[0].arrived + self.max_wait_ms / 1000.0
        arrivals = self.arrivals
        while self._pending_rows < self.max_batch_size:
            if arrivals is not None:
                if arrivals.n == 0:
                    await asyncio.sleep(0)  # requests whose bytes are already here start now
                    if arrivals.n == 0 and self._pending_rows < self.max_batch_size:
                        return
                    continue
            elif self.last_batch_size <= 1 and len(self._pending) == 1:
                return  # no sign of concurrency: do not make a lone request wait for company
            if loop.time() >= deadline:
                return
            await self._sleep_until(loop, deadline)

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Until a submit, the last arrival's submit (see :class:`Arrivals`) or ``deadline``."""
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _take(self) -> list[_Request]:
        """The oldest requests up to ``max_batch_size`` rows (at least one, however large)."""
        batch: list[_Request] = []
        rows = 0
        while self._pending and (not batch or rows + self._pending[0].rows <= self.max_batch_size):
            request = self._pending.pop(0)
            batch.append(request)
            rows += request.rows
        self._pending_rows -= rows
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # a caller may have gone away
        if not live:
            return
        assert self._loop is not None
        frames = [r.frame for r in live]
        if self.inline:
            outcomes = self._predict_all(frames)
        else:
            outcomes = await self._loop.run_in_executor(self._pool(), self._predict_all, frames)
        size = sum(len(f) for f in frames)
        self.batches += 1
        self.rows += size
        self.last_batch_size = size
        for request, outcome in zip(live, outcomes, strict=True):
            if request.future.done():
                continue
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
        self._report(size)

    def _report(self, size: int) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(size)
        except Exception:
            log.exception("on_batch hook failed")

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="loopwright-batch")
        return self._executor

    # -- in the executor ------------------------------------------------------------------------

    def _predict_all(self, frames: list[Any]) -> list[Any]:
        """One call for all frames; if it fails, one call per frame so only failures fail."""
        if len(frames) == 1:
            return [self._predict_one(frames[0])]
        try:
            return _split(self._call(_combine(frames)), [len(f) for f in frames])
        except Exception:
            return [self._predict_one(frame) for frame in frames]

    def _predict_one(self, frame: Any) -> Any:
        try:
            return self._call(frame)
        except Exception as exc:
            return exc

    def _call(self, frame: Any) -> Any:
        result = self.predict(frame)
        parts = result if isinstance(result, tuple) else (result,)
        for part in parts:
            if part is not None and len(part) != len(frame):
                raise ValueError(f"predict returned {len(part)} results for {len(frame)} rows")
        return result


def _combine(frames: list[Any]) -> Any:
    """One input of all ``frames``' rows, in order.

    Array-backed inputs of one type sharing one columns object (serving's ``Rows``: the
    validators hand out one columns object per signature) are stacked with one ``np.vstack``;
    frames are concatenated (their columns may have different dtypes).
    """
    first = frames[0]
    kind = type(first)
    if kind is not pd.DataFrame and all(
        type(f) is kind and f.columns is first.columns for f in frames
    ):
        return kind(np.vstack([f.to_numpy() for f in frames]), first.columns)
    return pd.concat([f if isinstance(f, pd.DataFrame) else f.to_frame() for f in frames],
                     ignore_index=True)  # fmt: skip


def _split(result: Any, sizes: list[int]) -> list[Any]:
    """``result`` (an array or a tuple of arrays) cut into consecutive pieces of ``sizes``
    (plain slices: ``np.split`` costs more than the model's share of a small request)."""
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    spans = list(itertools.pairwise(bounds))
    if isinstance(result, tuple):
        columns = [
            [None] * len(sizes) if part is None else _pieces(np.asarray(part), spans)
            for part in result
        ]
        return [tuple(pieces) for pieces in zip(*columns, strict=True)]
    return _pieces(np.asarray(result), spans)


def _pieces(array: np.ndarray, spans: list[tuple[int, int]]) -> list[np.ndarray]:
    return [array[a:b] for a, b in spans]


def _fail(batch: list[_Request], exc: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)
