"""Micro-batching: concurrent requests answered by one model call.

A request waits at most ``max_wait_ms`` for others (or until ``max_batch_size`` rows are
waiting); the frames are then concatenated, ``predict`` runs once in the executor — one worker
thread by default, so a native library's own threads are not oversubscribed — and the result is
split back per request along axis 0. While a batch runs, newcomers queue up and form the next
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
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopwright.errors import StoreUnavailable

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    frame: pd.DataFrame
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
        predict: Callable[[pd.DataFrame], Any],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.on_batch: Callable[[int], None] | None = None
        self.batches = 0
        self.rows = 0
        self.last_batch_size = 0
        self._executor = executor
        self._owns_executor = executor is None
        self._pending: list[_Request] = []
        self._pending_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the one being predicted)."""
        return len(self._pending)

    async def submit(self, frame: pd.DataFrame) -> Any:
        """The result for ``frame``'s rows, in order, once its batch has been predicted."""
        if self._closed:
            raise StoreUnavailable("the model is being unloaded; retry the request")
        loop = asyncio.get_running_loop()
        self._bind(loop)
        request = _Request(frame, loop.create_future(), loop.time())
        self._pending.append(request)
        self._pending_rows += request.rows
        if self._pending_rows >= self.max_batch_size:
            assert self._full is not None
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return await request.future

    async def close(self) -> None:
        """Answer what is queued, then release the executor (if this batcher made it)."""
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            await asyncio.shield(worker)
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- the worker -----------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the asyncio primitives in the running loop (first submit, or a new loop)."""
        if self._loop is not loop:
            self._loop = loop
            self._full = asyncio.Event()
            self._worker = None

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
        assert self._loop is not None and self._full is not None
        if self._pending_rows >= self.max_batch_size:
            return
        if self.last_batch_size <= 1 and len(self._pending) == 1:
            return  # no sign of concurrency: do not make a lone request wait for company
        deadline = self._pending[0].arrived + self.max_wait_ms / 1000.0
        timeout = deadline - self._loop.time()
        if timeout <= 0:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), timeout)

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

    def _predict_all(self, frames: list[pd.DataFrame]) -> list[Any]:
        """One call for all frames; if it fails, one call per frame so only failures fail."""
        if len(frames) == 1:
            return [self._predict_one(frames[0])]
        try:
            first = frames[0]
            if all(f.columns is first.columns for f in frames):  # the numeric fast path
                combined = pd.DataFrame(
                    np.vstack([f.to_numpy() for f in frames]), columns=first.columns, copy=False
                )
            else:
                combined = pd.concat(frames, ignore_index=True)
            return _split(self._call(combined), [len(f) for f in frames])
        except Exception:
            return [self._predict_one(frame) for frame in frames]

    def _predict_one(self, frame: pd.DataFrame) -> Any:
        try:
            return self._call(frame)
        except Exception as exc:
            return exc

    def _call(self, frame: pd.DataFrame) -> Any:
        result = self.predict(frame)
        parts = result if isinstance(result, tuple) else (result,)
        for part in parts:
            if part is not None and len(part) != len(frame):
                raise ValueError(f"predict returned {len(part)} results for {len(frame)} rows")
        return result


def _split(result: Any, sizes: list[int]) -> list[Any]:
    """``result`` (an array or a tuple of arrays) cut into consecutive pieces of ``sizes``."""
    bounds = np.cumsum(sizes)[:-1]
    if isinstance(result, tuple):
        columns = [
            [None] * len(sizes) if part is None else np.split(np.asarray(part), bounds)
            for part in result
        ]
        return [tuple(pieces) for pieces in zip(*columns, strict=True)]
    return list(np.split(np.asarray(result), bounds))


def _fail(batch: list[_Request], exc: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)
