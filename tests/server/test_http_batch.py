"""The metric batch: columnar JSON parsed with orjson, every field validated by name."""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from http_helpers import BASE_URL, error_of, make_client

from loopwright.backends.rest import RestTrackingStore, wire
from loopwright.config import Settings
from loopwright.errors import InvalidInput
from loopwright.server import create_app
from loopwright.tracking.entities import Metric

NON_FINITE = [1.5, math.nan, math.inf, -math.inf, 0.0, -2.0]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_nan_and_infinity_round_trip_through_rest(rest: RestTrackingStore, run_id: str) -> None:
    points = [Metric("loss", v, i, 1_700_000_000_000 + i) for i, v in enumerate(NON_FINITE)]
    rest.log_batch(run_id, points, params={"lr": "0.1"}, tags={"team": "a"})

    history = rest.get_metric_history(run_id, "loss")
    assert [(m.key, m.step, m.timestamp) for m in history] == [p[:1] + p[2:] for p in points]
    assert all(_same(got.value, sent.value) for got, sent in zip(history, points, strict=True))
    run = rest.get_run(run_id)
    assert run.params == {"lr": "0.1"} and run.tags == {"team": "a"}
    assert run.metrics["loss"] == -2.0


def test_non_finite_values_travel_as_strings(client: httpx.Client, run_id: str) -> None:
    columns = {"key": ["m"] * 3, "value": ["NaN", "Infinity", "-Infinity"], "step": [0, 1, 2],
               "timestamp": [1, 2, 3]}  # fmt: skip
    assert client.post(f"/api/v1/runs/{run_id}/batch", json={"metrics": columns}).status_code == 204
    body = client.get(f"/api/v1/runs/{run_id}/metric-history", params={"key": "m"}).json()
    assert body == {"metrics": columns}


def _columns(**overrides: Any) -> dict[str, Any]:
    columns: dict[str, Any] = {"key": ["a", "a", "a"], "value": [1.0, 2, 3.5],
                               "step": [0, 1, 2], "timestamp": [10, 11, 12]}  # fmt: skip
    return columns | overrides


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metrics": _columns(value=[1.0, 2.0, "abc"])}, "metrics.value[2]"),
        ({"metrics": _columns(value=[1.0, True, 2.0])}, "metrics.value[1]"),
        ({"metrics": _columns(value=[None, 1.0, 2.0])}, "metrics.value[0]"),
        ({"metrics": _columns(step=[0, 1.5, 2])}, "metrics.step[1]"),
        ({"metrics": _columns(timestamp=[1, 2, "3"])}, "metrics.timestamp[2]"),
        ({"metrics": _columns(key=["a", 7, "a"])}, "metrics.key[1]"),
        ({"metrics": _columns(step=[0, 1])}, "metrics.step"),
        ({"metrics": _columns(value="1.0")}, "metrics.value"),
        ({"metrics": {"key": [], "value": [], "step": []}}, "metrics.timestamp"),
        ({"metrics": _columns(extra=[])}, "metrics.extra"),
        ({"metrics": [1, 2]}, "metrics"),
        ({"params": {"lr": 0.1}}, "params.lr"),
        ({"tags": ["a"]}, "tags"),
        ({"metric": _columns()}, "metric"),
        ([1, 2, 3], "body"),
    ],
)
def test_each_bad_field_is_named(client: httpx.Client, run_id: str, body: Any, field: str) -> None:
    response = client.post(f"/api/v1/runs/{run_id}/batch", json=body)
    error = error_of(response, 400, "INVALID_INPUT")
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")


def test_a_refused_batch_logs_nothing(rest: RestTrackingStore, run_id: str) -> None:
    bad = wire.metrics_to_columns([Metric("a", 1.0, 0, 1)]) | {"step": ["x"]}
    with pytest.raises(InvalidInput):
        rest._http.send("POST", rest._http.url("runs", run_id, "batch"), content=orjson.dumps(
            {"metrics": bad, "params": {"p": "1"}}))  # fmt: skip
    assert rest.get_metric_history(run_id, "a") == []
    assert rest.get_run(run_id).params == {}


def test_numpy_scalars_are_sent_as_plain_numbers() -> None:
    columns = wire.metrics_to_columns([Metric("a", np.float32(0.5), np.int64(3), np.int64(9))])
    assert columns == {"key": ["a"], "value": [0.5], "step": [3], "timestamp": [9]}


def test_100k_points_parse_exactly() -> None:
    """The orjson fast path keeps every point, NaN included (its speed is measured in bench/)."""
    n = 100_000
    points = [
        Metric(f"m{i % 10}", i * 0.5 if i % 97 else math.nan, i, 1_700_000_000_000 + i)
        for i in range(n)
    ]
    body = wire.batch_to_json(points, None, None)
    parsed, params, tags = wire.parse_batch(body)
    assert params == {} and tags == {}
    assert len(parsed) == n and parsed[1:97] == points[1:97] and math.isnan(parsed[0].value)


def test_100k_points_through_the_route(tracking: Any, artifacts: Any) -> None:
    """End to end through HTTP and SQLite, with the default body limit (the tests' is tiny)."""
    n = 100_000
    points = [Metric("loss", 1.0 / (i + 1), i, 1_700_000_000_000 + i) for i in range(n)]
    with make_client(create_app(tracking, artifacts, Settings())) as client:
        rest = RestTrackingStore(BASE_URL, client=client)
        run_id = rest.create_run(rest.create_experiment("big").id).id
        rest.log_batch(run_id, points)
        history = rest.get_metric_history(run_id, "loss")
    assert len(history) == n and history[-1] == points[-1]


class _LostAnswers(httpx.BaseTransport):
    """Delivers every request to the real app, but loses the answer of the first ``lose``
    batch POSTs (a read timeout after the server applied them), as a flaky network does."""

    def __init__(self, inner: httpx.BaseTransport, lose: int) -> None:
        self.inner, self.lose, self.batch_keys = inner, lose, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/batch"):
            self.batch_keys.append(request.headers.get("idempotency-key"))
            if self.lose > 0:
                self.lose -= 1
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_a_batch_whose_answer_was_lost_is_resent_and_applied_once(
    client: httpx.Client, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loopwright.backends.rest.store as rest_store

    monkeypatch.setattr(rest_store, "BACKOFF_S", 0.0)
    lossy = _LostAnswers(client._transport, lose=2)  # the app behind the test client
    flaky = httpx.Client(transport=lossy, base_url=str(client.base_url))
    rest = RestTrackingStore(BASE_URL, client=flaky)
    points = [Metric("loss", 1.0 / (i + 1), i, 1_700_000_000_000 + i) for i in range(5)]
    rest.log_batch(run_id, points)

    assert len(lossy.batch_keys) == 3 and len(set(lossy.batch_keys)) == 1  # resent, one key
    history = rest.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]  # applied once, not three times
    rest.log_batch(run_id, points[:1])  # a new batch gets a new key: applied again
    assert len(rest.get_metric_history(run_id, "loss")) == 6
    flaky.close()


def test_a_batch_key_is_validated(rest: RestTrackingStore, run_id: str) -> None:
    with pytest.raises(InvalidInput) as err:
        rest.log_batch(run_id, [Metric("a", 1.0, 0, 1)], idempotency_key="x")
    assert err.value.field == "idempotency_key"
