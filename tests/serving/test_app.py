"""The serving app in-process: V2, /predict, errors, logging, feedback, metrics, hot swap."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

from loopwright.client import Client
from loopwright.config import Settings
from loopwright.serving.app import create_serving_app
from loopwright.serving.deployment import DeploymentSpec
from loopwright.serving.predlog import read_labels, read_predictions
from loopwright.serving.runtime import DeploymentRuntime


@dataclass
class Store:
    root: Path
    data: pd.DataFrame
    v1: LogisticRegression
    v2: LogisticRegression

    def client(self) -> Client:
        return Client(str(self.root), settings=Settings(capture_environment=False))


def make_data(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "n": rng.integers(0, 5, size=n)}
    )
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    return frame


def register_store(root: Path) -> Store:
    """``churn`` v1 (champion) and v2 (a model trained on flipped labels)."""
    data = make_data()
    X = data[["a", "b", "n"]]
    v1 = LogisticRegression().fit(X, data["y"])
    v2 = LogisticRegression().fit(X, np.where(data["y"] == "yes", "no", "yes"))
    client = Client(str(root), settings=Settings(capture_environment=False))
    for model in (v1, v2):
        with client.start_run("serving", monitor_resources=False) as run:
            run.log_model(model, input_example=X.head())
        client.registry.register("churn", run.id)
    client.registry.set_alias("churn", "champion", 1)
    client.close()
    return Store(root, data, v1, v2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return register_store(tmp_path_factory.mktemp("serving-store"))


@pytest.fixture
def served(store: Store, tmp_path: Path) -> Iterator[tuple[TestClient, DeploymentRuntime]]:
    spec = DeploymentSpec.from_dict(
        {"name": "churn-api", "model": "churn", "log": {"uri": str(tmp_path / "log")}}
    )
    client = store.client()
    runtime = DeploymentRuntime(client, spec)
    with TestClient(create_serving_app(runtime)) as http:
        yield http, runtime
    client.close()


def records(store: Store, n: int = 5) -> list[dict[str, Any]]:
    return store.data[["a", "b", "n"]].head(n).to_dict("records")


def expected(model: LogisticRegression, store: Store, n: int = 5) -> list[str]:
    return model.predict(store.data[["a", "b", "n"]].head(n)).tolist()


# -- V2 -------------------------------------------------------------------------------------


def test_v2_health_and_metadata(served: tuple[TestClient, DeploymentRuntime]) -> None:
    http, _ = served
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2").json()["name"] == "loopwright"
    meta = http.get("/v2/models/churn").json()
    assert meta["name"] == "churn" and meta["versions"] == ["1"]
    assert meta["platform"] == "loopwright-sklearn"
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert http.get("/v2/models/churn/versions/1").status_code == 200
    assert http.get("/v2/models/churn/ready").json()["ready"] is True


def v2_columns(store: Store, n: int = 5) -> list[dict[str, Any]]:
    X = store.data.head(n)
    return [
        {"name": "a", "shape": [n], "datatype": "FP64", "data": X["a"].tolist()},
        {"name": "b", "shape": [n, 1], "datatype": "FP64", "data": [[v] for v in X["b"]]},
        {"name": "n", "shape": [n], "datatype": "INT64", "data": X["n"].tolist()},
    ]


def test_v2_infer_columns_and_matrix(
    served: tuple[TestClient, DeploymentRuntime], store: Store
) -> None:
    http, _ = served
    answer = http.post("/v2/models/churn/infer", json={"id": "r1", "inputs": v2_columns(store)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "r1" and answer.headers["x-request-id"] == "r1"
    assert body["model_name"] == "churn" and body["model_version"] == "1"
    predict, proba = body["outputs"]
    assert predict == {"name": "predict", "shape": [5], "datatype": "BYTES",
                       "data": expected(store.v1, store)}  # fmt: skip
    assert proba["shape"] == [5, 2]
    want = store.v1.predict_proba(store.data[["a", "b", "n"]].head(5)).ravel()
    assert np.allclose(proba["data"], want)

    matrix = store.data[["a", "b", "n"]].head(5).to_numpy(dtype=float).tolist()
    tensor = {"name": "x", "shape": [5, 3], "datatype": "FP64", "data": matrix}
    body = http.post("/v2/models/churn/versions/1/infer", json={"inputs": [tensor]}).json()
    assert body["outputs"][0]["data"] == expected(store.v1, store)


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "nope"),
        ("/v2/models/churn/versions/9/infer", {"inputs": []}, 404, "9"),
        ("/v2/models/churn/infer", b"{not json", 400, "malformed JSON"),
        ("/v2/models/churn/infer", {"inputs": "a"}, 400, "inputs"),
    ],
)
def test_v2_request_errors(
    served: tuple[TestClient, DeploymentRuntime],
    path: str,
    payload: Any,
    status: int,
    needle: str,
) -> None:
    http, _ = served
    kw = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    answer = http.post(path, **kw)
    assert answer.status_code == status
    assert needle in answer.json()["error"]


def test_v2_tensor_errors_name_the_problem(
    served: tuple[TestClient, DeploymentRuntime], store: Store
) -> None:
    http, _ = served

    def infer(inputs: list[dict[str, Any]]) -> tuple[int, str]:
        answer = http.post("/v2/models/churn/infer", json={"inputs": inputs})
        return answer.status_code, answer.json()["error"]

    missing = [t for t in v2_columns(store) if t["name"] != "b"]
    status, error = infer(missing)
    assert status == 400 and "'b'" in error and "missing" in error

    wrong_type = v2_columns(store)
    wrong_type[0] = {"name": "a", "shape": [5], "datatype": "BYTES", "data": ["x"] * 5}
    status, error = infer(wrong_type)
    assert status == 400 and "'a'" in error and "BYTES" in error

    lying = v2_columns(store)
    lying[2] = {"name": "n", "shape": [5], "datatype": "INT64", "data": ["x"] * 5}
    status, error = infer(lying)
    assert status == 400 and "'n'" in error

    bad_shape = v2_columns(store)
    bad_shape[0] = {**bad_shape[0], "shape": [4]}
    status, error = infer(bad_shape)
    assert status == 400 and "shape" in error

    matrix = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}
    status, error = infer([matrix])
    assert status == 400 and "[N, 3]" in error


# -- /predict, errors, log, feedback, metrics -----------------------------------------------


def test_predict_matches_the_model(
    served: tuple[TestClient, DeploymentRuntime], store: Store
) -> None:
    http, _ = served
    answer = http.post("/predict", json={"records": records(store), "key": "user-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == expected(store.v1, store)
    assert body["model"] == "churn" and body["version"] == 1 and body["route"] == "champion"
    assert len(body["probabilities"]) == 5
    assert answer.headers["x-request-id"] == body["request_id"]
    pinned = http.post("/predict", json={"records": records(store)},
                       headers={"X-Request-Id": "from-header"})  # fmt: skip
    assert pinned.json()["request_id"] == "from-header"


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        (b"[", 400, "body"),
        ({"records": []}, 400, "records"),
        ({"records": [{"a": 1.0, "b": 2.0}]}, 400, "n"),
        ({"records": [{"a": "x", "b": 2.0, "n": 1}]}, 400, "a"),
        ({"records": [{"a": 1.0, "b": 2.0, "n": 1}], "key": 3}, 400, "key"),
    ],
)
def test_predict_errors(
    served: tuple[TestClient, DeploymentRuntime], payload: Any, status: int, field: str
) -> None:
    http, _ = served
    kw = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    answer = http.post("/predict", **kw)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == "INVALID_INPUT" and error["field"] == field


def test_a_failing_model_answers_422_and_keeps_serving(
    served: tuple[TestClient, DeploymentRuntime], store: Store
) -> None:
    http, runtime = served
    slot = runtime.slot()
    real = slot._infer

    def flaky(frame: pd.DataFrame) -> Any:
        if (frame["n"] == 4).any():
            raise ValueError("n=4 is cursed")
        return real(frame)

    slot.batcher.predict = flaky
    bad = http.post("/predict", json={"records": [{"a": 0.1, "b": 0.2, "n": 4}]})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "MODEL_ERROR" and "cursed" in bad.text
    good = http.post("/predict", json={"records": [{"a": 0.1, "b": 0.2, "n": 1}]})
    assert good.status_code == 200
    assert "loopwright_request_errors_total" in http.get("/metrics").text


def test_predictions_are_logged_and_labels_stored(store: Store, tmp_path: Path) -> None:
    spec = DeploymentSpec.from_dict({"name": "churn-api", "model": "churn"})
    client = store.client()
    runtime = DeploymentRuntime(client, spec)
    ids = []
    with TestClient(create_serving_app(runtime)) as http:
        for row in records(store, 3):
            ids.append(http.post("/predict", json={"records": [row]}).json()["request_id"])
        batch = http.post("/predict", json={"id": "many", "records": records(store, 2)})
        assert batch.status_code == 200
        feedback = http.post("/feedback", json={"labels": [{"request_id": ids[0], "label": "yes"}]})
        assert feedback.json() == {"accepted": 1}
        assert http.post("/feedback", json={"labels": [{"label": 1}]}).status_code == 400
        metrics = http.get("/metrics").text
    client.close()
    log_uri = str(store.root / "predictions")  # the embedded default
    logged = read_predictions(log_uri, deployment="churn-api")
    assert {*ids, "many/0", "many/1"} <= set(logged["request_id"])
    mine = logged[logged["request_id"].isin(ids)].sort_values("ts")
    assert mine["version"].tolist() == [1, 1, 1] and not mine["shadow"].any()
    assert read_labels(log_uri)["request_id"].tolist() == [ids[0]]
    assert 'loopwright_requests_total{route="champion",version="1"} 4' in metrics
    assert "loopwright_request_latency_seconds_bucket" in metrics
    assert 'loopwright_predictions_total{route="champion",version="1",class=' in metrics
    assert "loopwright_batch_size_count" in metrics and "loopwright_queue_depth" in metrics


def test_hot_swap_follows_the_alias(store: Store, tmp_path: Path) -> None:
    spec = DeploymentSpec.from_dict(
        {"name": "swap", "model": "churn", "shadows": ["2"], "log": {"uri": str(tmp_path)}}
    )
    client = store.client()
    runtime = DeploymentRuntime(client, spec)
    try:
        with TestClient(create_serving_app(runtime)) as http:
            before = http.post("/predict", json={"records": records(store)}).json()
            assert before["predictions"] == expected(store.v1, store)
            client.registry.set_alias("churn", "champion", 2)
            assert http.portal.call(runtime.refresh) == ["champion:churn@champion"]
            after = http.post("/predict", json={"records": records(store)}).json()
            assert after["version"] == 2
            assert after["predictions"] == expected(store.v2, store)
            status = http.get("/status").json()
            assert status["routes"]["champion"]["version"] == 2
            assert status["last_swap"]["from_version"] == 1
            assert status["last_swap"]["to_version"] == 2

            client.registry.set_alias("churn", "champion", 1)
            store_load = runtime.client.registry.load
            runtime.client.registry.load = _broken  # type: ignore[method-assign]
            try:
                assert http.portal.call(runtime.refresh) == []
            finally:
                runtime.client.registry.load = store_load  # type: ignore[method-assign]
            status = http.get("/status").json()
            assert status["routes"]["champion"]["version"] == 2  # the old one keeps serving
            assert "disk on fire" in status["errors"][-1]["error"]
    finally:
        client.registry.set_alias("churn", "champion", 1)
        client.close()
    shadows = read_predictions(str(tmp_path))
    assert shadows[shadows["shadow"]]["version"].unique().tolist() == [2]


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise OSError("disk on fire")


def test_a_shadow_follows_its_alias_in_and_out(store: Store, tmp_path: Path) -> None:
    """A shadow alias that points nowhere yet (no challenger) does not stop the deployment."""
    spec = DeploymentSpec.from_dict(
        {
            "name": "chall",
            "model": "churn",
            "shadows": ["challenger"],
            "log": {"uri": str(tmp_path)},
        }
    )
    client = store.client()
    runtime = DeploymentRuntime(client, spec)
    try:
        with TestClient(create_serving_app(runtime)) as http:
            assert http.get("/status").json()["pending_shadows"] == ["churn@challenger"]
            http.post("/predict", json={"records": records(store), "id": "before"})
            client.registry.set_alias("churn", "challenger", 2)
            assert http.portal.call(runtime.refresh) == ["shadow:churn@challenger"]
            http.post("/predict", json={"records": records(store), "id": "during"})
            client.registry.delete_alias("churn", "challenger")
            assert http.portal.call(runtime.refresh) == ["shadow:churn@challenger removed"]
            http.post("/predict", json={"records": records(store), "id": "after"})
            http.portal.call(runtime.drain)
            status = http.get("/status").json()
            assert status["shadows"] == [] and status["pending_shadows"] == ["churn@challenger"]
            assert status["errors"] == []
    finally:
        client.close()
    logged = read_predictions(str(tmp_path))
    shadow = logged[logged["shadow"]]
    assert sorted({rid.split("/")[0] for rid in shadow["request_id"]}) == ["during"]
    assert shadow["version"].unique().tolist() == [2]
    answered = logged[~logged["shadow"]]
    assert answered["version"].unique().tolist() == [1]
