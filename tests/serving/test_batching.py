"""The micro-batcher: concurrent requests share model calls; a failure stays with its request."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pandas as pd
import pytest

from loopwright.errors import Overloaded, StoreUnavailable
from loopwright.serving.batching import Arrivals, MicroBatcher
from loopwright.serving.predictor import Rows


class Doubler:
    """``predict`` that doubles ``x``, counts its calls and refuses frames holding ``-1``."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls.append(len(frame))
        self.threads.add(threading.current_thread().name)
        if (frame["x"] == -1).any():
            raise ValueError("poisoned row")
        return frame["x"].to_numpy() * 2


def one_row(x: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [x]})


def test_concurrent_requests_share_few_calls_and_get_their_own_answers() -> None:
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=20)
    sizes: list[int] = []
    batcher.on_batch = sizes.append

    async def main() -> list[np.ndarray]:
        answers = await asyncio.gather(*(batcher.submit(one_row(i)) for i in range(50)))
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert [a.tolist() for a in answers] == [[2 * i] for i in range(50)]
    assert len(model.calls) < 10 and sum(model.calls) == 50
    assert batcher.batches == len(model.calls) == len(sizes) and sum(sizes) == 50
    assert batcher.rows == 50 and batcher.queue_depth == 0
    assert model.threads and all(t.startswith("loopwright-batch") for t in model.threads)


def test_batches_respect_max_batch_size_in_rows() -> None:
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=10, max_wait_ms=50)

    async def main() -> list[np.ndarray]:
        frames = [pd.DataFrame({"x": [i, i + 1, i + 2]}) for i in range(0, 60, 3)]
        return await asyncio.gather(*(batcher.submit(f) for f in frames))

    answers = asyncio.run(main())
    assert np.concatenate(answers).tolist() == [2 * i for i in range(60)]
    assert max(model.calls) <= 10 and batcher.last_batch_size <= 10


def test_a_failing_request_fails_alone() -> None:
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=20)

    async def main() -> list[object]:
        xs = [-1 if i % 7 == 3 else i for i in range(30)]
        return await asyncio.gather(
            *(batcher.submit(one_row(x)) for x in xs), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    for i, outcome in enumerate(outcomes):
        if i % 7 == 3:
            assert isinstance(outcome, ValueError) and "poisoned" in str(outcome)
        else:
            assert isinstance(outcome, np.ndarray) and outcome.tolist() == [2 * i]


def test_tuples_split_per_request_and_none_passes_through() -> None:
    def both(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, None]:
        x = frame["x"].to_numpy()
        return x, np.stack([x, -x], axis=1), None

    batcher = MicroBatcher(both, max_wait_ms=10)

    async def main() -> list[tuple[np.ndarray, np.ndarray, None]]:
        return await asyncio.gather(batcher.submit(one_row(1)), batcher.submit(one_row(2)))

    (a, pa, na), (b, pb, nb) = asyncio.run(main())
    assert (a.tolist(), pa.tolist(), na) == ([1], [[1, -1]], None)
    assert (b.tolist(), pb.tolist(), nb) == ([2], [[2, -2]], None)


def test_wrong_result_length_is_an_error() -> None:
    batcher = MicroBatcher(lambda frame: np.zeros(len(frame) + 1))
    with pytest.raises(ValueError, match="results for 1 rows"):
        asyncio.run(batcher.submit(one_row(1)))


def test_zero_wait_and_reuse_across_event_loops_then_close() -> None:
    model = Doubler()
    batcher = MicroBatcher(model, max_wait_ms=0)
    assert asyncio.run(batcher.submit(one_row(3))).tolist() == [6]
    assert asyncio.run(batcher.submit(one_row(4))).tolist() == [8]
    asyncio.run(batcher.close())
    with pytest.raises(StoreUnavailable):
        asyncio.run(batcher.submit(one_row(5)))


# -- arrivals: a batch leaves as soon as no request is on its way -------------------------------

#: Long enough that a test waiting for it would hang: the arrivals, not the clock, must decide.
FOREVER_MS = 600_000.0
GUARD_S = 30.0


def test_a_batch_waits_for_requests_on_their_way_and_leaves_when_none_is() -> None:
    model = Doubler()
    arrivals = Arrivals()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=FOREVER_MS, arrivals=arrivals)

    async def request(x: int) -> np.ndarray:
        arrivals.begin()
        await asyncio.sleep(0.01 * x)  # reading its body, validating...
        arrivals.end()  # reached the batcher
        return await batcher.submit(one_row(x))

    async def main() -> list[np.ndarray]:
        answers = await asyncio.wait_for(asyncio.gather(*(request(x) for x in range(4))), GUARD_S)
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert [a.tolist() for a in answers] == [[0], [2], [4], [6]]
    assert model.calls == [4]  # the first waited for the three on their way, then all left


def test_a_lone_request_leaves_at_once_and_a_request_that_fails_early_releases_the_batch() -> None:
    model = Doubler()
    arrivals = Arrivals()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=FOREVER_MS, arrivals=arrivals)
    batcher.last_batch_size = 8  # concurrency was seen before: without arrivals it would wait

    async def main() -> tuple[list[int], list[int]]:
        lone = await asyncio.wait_for(batcher.submit(one_row(5)), GUARD_S)
        arrivals.begin()  # one request is on its way...
        waiting = asyncio.ensure_future(batcher.submit(one_row(1)))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # ...so the batch waits for it
        arrivals.end()  # it failed validation: it will never come
        second = await asyncio.wait_for(waiting, GUARD_S)
        await batcher.close()
        return lone.tolist(), second.tolist()

    assert asyncio.run(main()) == ([10], [2])
    assert model.calls == [1, 1]


def test_inline_runs_the_model_on_the_event_loop_thread() -> None:
    model = Doubler()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=5, run="inline")

    async def main() -> tuple[list[np.ndarray], str]:
        answers = await asyncio.gather(*(batcher.submit(one_row(i)) for i in range(20)))
        await batcher.close()
        return answers, threading.current_thread().name

    answers, loop_thread = asyncio.run(main())
    assert [a.tolist() for a in answers] == [[2 * i] for i in range(20)]
    assert model.threads == {loop_thread} and sum(model.calls) == 20
    with pytest.raises(ValueError, match="run must be one of"):
        MicroBatcher(model, run="process")


def test_numeric_rows_are_stacked_as_one_matrix_in_order() -> None:
    seen: list[object] = []

    def predict(rows: Rows) -> np.ndarray:
        seen.append(rows)
        return rows.values.sum(axis=1)

    columns = pd.Index(["a", "b"])
    batcher = MicroBatcher(predict, max_batch_size=64, max_wait_ms=20)

    async def main() -> list[np.ndarray]:
        inputs = [Rows(np.array([[i, 10.0 * i]] * (1 + i % 2)), columns) for i in range(6)]
        answers = await asyncio.gather(*(batcher.submit(r) for r in inputs))
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert [a.tolist() for a in answers] == [[11.0 * i] * (1 + i % 2) for i in range(6)]
    assert all(isinstance(r, Rows) and r.columns is columns for r in seen)
    assert sum(len(r) for r in seen) == 9 and len(seen) < 6  # type: ignore[arg-type]


def test_a_full_queue_refuses_at_once_and_admitted_requests_are_answered() -> None:
    release = threading.Event()

    def slow(frame: pd.DataFrame) -> np.ndarray:
        release.wait(30)
        return frame["x"].to_numpy() * 2

    batcher = MicroBatcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=2)

    async def main() -> tuple[list[list[int]], Overloaded]:
        running = asyncio.ensure_future(batcher.submit(one_row(1)))  # in the model
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(one_row(x))) for x in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(one_row(4))
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(running, *queued), 30)
        await batcher.close()
        return [a.tolist() for a in answers], refused.value

    answers, refused = asyncio.run(main())
    assert answers == [[2], [4], [6]]
    assert refused.code == "OVERLOADED" and refused.details["retry_after_s"] == 1
    assert "max_queue 2" in refused.message
