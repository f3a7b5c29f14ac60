"""The inference fast path: numeric rows end to end, ASGI dispatch, arrivals, ids, the GC freeze.

An all-float model (the common case for tabular models served at volume) takes every shortcut:
rows validated into one matrix, batches stacked, the estimator called on the array, the log
written column by column. These tests check the answers and the log are what the slow path
gives, and that the dispatch in front of Starlette keeps every other route and error intact.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from starlette.testclient import TestClient

from loopwright.client import Client
from loopwright.config import Settings
from loopwright.serving.app import create_serving_app
from loopwright.serving.deployment import DeploymentSpec
from loopwright.serving.predlog import read_predictions
from loopwright.serving.runtime import DeploymentRuntime, new_request_id

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def numeric_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, pd.DataFrame]:
    root = tmp_path_factory.mktemp("numeric-store")
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(400, len(FEATURES))), columns=FEATURES)
    y = (X["f0"] - X["f2"] > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    client = Client(str(root), settings=Settings(capture_environment=False))
    with client.start_run("fast", monitor_resources=False) as run:
        run.log_model(model, input_example=X.head(), register_as="scores")
    client.registry.set_alias("scores", "champion", 1)
    client.close()
    return root, model, X


@pytest.fixture
def served(
    numeric_store: tuple[Path, Any, pd.DataFrame], tmp_path: Path
) -> Iterator[tuple[TestClient, DeploymentRuntime, Path]]:
    root = numeric_store[0]
    log = tmp_path / "log"
    spec = DeploymentSpec.from_dict(
        {"name": "scores-api", "model": "scores", "log": {"uri": str(log)}}
    )
    client = Client(str(root), settings=Settings(capture_environment=False))
    runtime = DeploymentRuntime(client, spec)
    with TestClient(create_serving_app(runtime)) as http:
        yield http, runtime, log
    client.close()


def test_numeric_requests_answer_like_the_model_and_are_logged_as_columns(
    served: tuple[TestClient, DeploymentRuntime, Path],
    numeric_store: tuple[Path, Any, pd.DataFrame],
) -> None:
    http, runtime, log = served
    _, model, X = numeric_store
    rows = X.head(6)
    assert runtime.slot().batcher.inline  # auto: a scikit-learn model runs on the loop
    ids = []
    for i in range(len(rows)):
        body = http.post("/predict", json={"records": [rows.iloc[i].to_dict()]}).json()
        assert body["predictions"] == model.predict(rows.iloc[[i]]).tolist()
        assert np.allclose(body["probabilities"], model.predict_proba(rows.iloc[[i]]))
        ids.append(body["request_id"])
    tensor = {"name": "x", "shape": [6, 4], "datatype": "FP64",
              "data": rows.to_numpy().ravel().tolist()}  # fmt: skip
    v2 = http.post("/v2/models/scores/versions/1/infer", json={"id": "m", "inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == model.predict(rows).tolist()

    assert len(set(ids)) == 6 and all(len(i) == 32 for i in ids)
    assert runtime.predlog is not None and runtime.predlog.flush() >= 12
    logged = read_predictions(str(log)).set_index("request_id")
    assert set(ids) <= set(logged.index) and {f"m/{i}" for i in range(6)} <= set(logged.index)
    first = logged.loc[ids[0]]
    assert [first[f"in_{f}"] for f in FEATURES] == rows.iloc[0].tolist()
    assert pd.isna(first["inputs_json"])  # the numbers are in the in_ columns
    assert first["prediction"] == str(model.predict(rows.iloc[[0]])[0])
    assert runtime.arrivals.n == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("GET", "/predict", 405, "HTTP_ERROR"),  # the fast path only takes POST
        ("POST", "/v2/models//infer", 404, "Not Found"),  # not an infer path: Starlette answers
        ("POST", "/v2/models/scores/versions/1/extra/infer", 404, "Not Found"),
        ("POST", "/v2/models/nope/infer", 404, "'nope'"),  # V2 errors are plain strings
        ("POST", "/v2/models/scores/versions/7/infer", 404, "'7'"),
        ("POST", "/v2/models/scores/infer", 400, "malformed JSON"),
        ("POST", "/predict", 400, "INVALID_INPUT"),
    ],
)
def test_routes_around_the_fast_path_keep_their_errors(
    served: tuple[TestClient, DeploymentRuntime, Path],
    method: str,
    path: str,
    status: int,
    needle: str,
) -> None:
    http, runtime, _ = served
    answer = http.request(method, path, content=b"{not json")
    assert answer.status_code == status
    error = answer.json()["error"]
    assert needle in (error if isinstance(error, str) else error["code"])
    assert runtime.arrivals.n == 0  # a request that failed early does not hold a batch


def test_concurrent_requests_share_batches_without_waiting_out_max_wait(
    numeric_store: tuple[Path, Any, pd.DataFrame], tmp_path: Path
) -> None:
    """With a max wait far beyond the test's patience, concurrent requests are answered in
    shared batches: each batch left when no other request was on its way."""
    root, model, X = numeric_store
    spec = DeploymentSpec.from_dict({
        "name": "scores-api", "model": "scores", "log": {"enabled": False},
        "batching": {"max_batch_size": 64, "max_wait_ms": 600_000},
    })  # fmt: skip
    client = Client(str(root), settings=Settings(capture_environment=False))
    runtime = DeploymentRuntime(client, spec)
    app = create_serving_app(runtime)

    async def main() -> list[Any]:
        async with app.router.lifespan_context(app):  # type: ignore[arg-type]
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                calls = [http.post("/predict", json={"records": [X.iloc[i].to_dict()]})
                         for i in range(24)]  # fmt: skip
                return await asyncio.wait_for(asyncio.gather(*calls), 60)

    try:
        answers = asyncio.run(main())
    finally:
        client.close()
    got = [a.json()["predictions"][0] for a in answers]
    assert got == model.predict(X.head(24)).tolist()
    batcher = runtime.slot().batcher
    assert batcher.rows == 24 and batcher.batches < 24


def test_request_ids_are_unique_and_change_prefix_in_a_new_process() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    prefix = next(iter(ids))[:20]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked worker draws its own prefix
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 32 and child[:20] != prefix and new_request_id()[:20] == prefix


def test_a_server_worker_freezes_what_it_loaded_out_of_the_collector(
    numeric_store: tuple[Path, Any, pd.DataFrame], tmp_path: Path
) -> None:
    root = numeric_store[0]
    spec = DeploymentSpec.from_dict({"name": "scores-api", "model": "scores",
                                     "log": {"enabled": False}})  # fmt: skip
    client = Client(str(root), settings=Settings(capture_environment=False))
    runtime = DeploymentRuntime(client, spec)
    runtime.freeze_gc = True
    gc.unfreeze()
    try:
        with TestClient(create_serving_app(runtime)) as http:
            assert gc.get_freeze_count() > 0  # the model and the imports are out of sight
            assert http.post(
                "/predict", json={"records": [dict.fromkeys(FEATURES, 0.5)]}
            ).is_success
    finally:
        gc.unfreeze()
        client.close()


@pytest.mark.parametrize(
    ("tensor", "status", "needle"),
    [
        ({"shape": [2, 4], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}, 200, None),
        ({"shape": [2, 3], "datatype": "FP64", "data": [0.5] * 6}, 400, "[N, 4]"),
        ({"shape": [2, 4], "datatype": "FP64", "data": [0.5] * 7}, 400, "needs 8 values"),
        ({"shape": [1, 4], "datatype": "FP64", "data": [0.5, "x", 1, 2]}, 400, "'x'"),
        ({"shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}, 400, "datatype BYTES"),
        ({"shape": [1, 4], "datatype": "FP64", "data": [0.5, True, 1, 2]}, 400, "True"),
    ],
)
def test_a_v2_matrix_takes_the_fast_path_or_gets_the_general_errors(
    served: tuple[TestClient, DeploymentRuntime, Path],
    numeric_store: tuple[Path, Any, pd.DataFrame],
    tensor: dict[str, Any],
    status: int,
    needle: str | None,
) -> None:
    http, _, _ = served
    model = numeric_store[1]
    answer = http.post("/v2/models/scores/infer", json={"inputs": [{"name": "x", **tensor}]})
    assert answer.status_code == status, answer.text
    if needle is None:
        rows = pd.DataFrame(np.reshape(tensor["data"], (2, 4)).astype(float), columns=FEATURES)
        assert answer.json()["outputs"][0]["data"] == model.predict(rows).tolist()
    else:
        assert needle in answer.json()["error"]


def test_bodies_over_the_limit_are_refused_with_413_before_they_are_read(
    numeric_store: tuple[Path, Any, pd.DataFrame],
) -> None:
    root = numeric_store[0]
    spec = DeploymentSpec.from_dict(
        {"name": "scores-api", "model": "scores", "log": {"enabled": False}, "max_body_bytes": 2048}
    )
    client = Client(str(root), settings=Settings(capture_environment=False))
    runtime = DeploymentRuntime(client, spec)
    many = {"records": [dict.fromkeys(FEATURES, 0.123456789)] * 40}  # ~4 KB
    tensor = {"name": "x", "shape": [60, 4], "datatype": "FP64", "data": [0.123456789] * 240}

    def chunks() -> Iterator[bytes]:  # a chunked upload declares no length
        yield b'{"labels": ['
        for i in range(200):
            yield b'{"request_id": "r%d", "label": 1},' % i
        yield b'{"request_id": "last", "label": 1}]}'

    try:
        with TestClient(create_serving_app(runtime)) as http:
            own = http.post("/predict", json=many)
            v2 = http.post("/v2/models/scores/infer", json={"inputs": [tensor]})
            streamed = http.post("/feedback", content=chunks())
            fits = http.post("/predict", json={"records": many["records"][:5]})
    finally:
        client.close()
    assert own.status_code == 413 and own.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "2,048" in own.json()["error"]["message"]
    assert v2.status_code == 413 and "max_body_bytes" in v2.json()["error"]
    assert streamed.status_code == 413 and streamed.json()["error"]["field"] == "body"
    assert fits.status_code == 200


def test_an_overloaded_model_answers_503_with_retry_after_and_keeps_the_admitted(
    numeric_store: tuple[Path, Any, pd.DataFrame],
) -> None:
    root, model, X = numeric_store
    spec = DeploymentSpec.from_dict({
        "name": "scores-api", "model": "scores", "log": {"enabled": False},
        "batching": {"executor": "thread", "max_batch_size": 1, "max_wait_ms": 0,
                     "max_queue": 1},
    })  # fmt: skip
    client = Client(str(root), settings=Settings(capture_environment=False))
    runtime = DeploymentRuntime(client, spec)
    app = create_serving_app(runtime)
    release, entered = threading.Event(), threading.Event()

    async def main() -> tuple[list[httpx.Response], httpx.Response, str]:
        async with app.router.lifespan_context(app):  # type: ignore[arg-type]
            batcher = runtime.slot().batcher
            real = batcher.predict

            def held(rows: Any) -> Any:
                entered.set()
                release.wait(30)
                return real(rows)

            batcher.predict = held
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

                def post(i: int) -> Any:
                    return http.post("/predict", json={"records": [X.iloc[i].to_dict()]})

                async def until(done: Any) -> None:
                    for _ in range(3000):
                        if done():
                            return
                        await asyncio.sleep(0.01)

                admitted = [asyncio.ensure_future(post(0))]
                await until(entered.is_set)  # the first is in the model...
                admitted.append(asyncio.ensure_future(post(1)))
                await until(lambda: batcher.queue_depth == 1)  # ...the second waits
                refused = await post(2)  # the queue is full
                release.set()
                answers = await asyncio.wait_for(asyncio.gather(*admitted), 30)
                return answers, refused, (await http.get("/metrics")).text

    try:
        answers, refused, metrics = asyncio.run(main())
    finally:
        release.set()
        client.close()
    assert [a.json()["predictions"][0] for a in answers] == model.predict(X.head(2)).tolist()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "OVERLOADED"
    assert 'loopwright_requests_rejected_total{code="OVERLOADED"} 1' in metrics
    assert 'loopwright_request_errors_total{route="champion",version="1"} 0' in metrics
