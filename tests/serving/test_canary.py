"""Canary analysis: the SLO tracker's rules, the state file, and rollback/promotion in-process.

The faulty and slow canaries are real registered versions (pyfunc models wrapping a real
scikit-learn model, loaded with ``trusted=True``); nothing of loopwright is mocked. The SLO
window is driven by a hand-advanced clock where a test needs time to pass.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

from loopwright.cli.deployments import render_status
from loopwright.client import Client
from loopwright.config import Settings
from loopwright.errors import BY_CODE, ModelError, from_wire, http_status
from loopwright.governance.audit import acting_as
from loopwright.serving.app import create_serving_app
from loopwright.serving.canary import (
    CanaryAnalysis,
    Decision,
    StateFile,
    agreeing_rows,
)
from loopwright.serving.deployment import CanarySLO, DeploymentSpec
from loopwright.serving.predlog import read_predictions
from loopwright.serving.runtime import DeploymentRuntime

COLUMNS = ["a", "b", "n"]


# -- models ---------------------------------------------------------------------------------


class Faulty:
    """A real classifier that raises on rows with ``n == 0``: a fifth of the inputs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

    def _check(self, X: pd.DataFrame) -> None:
        if (np.asarray(X["n"]) == 0).any():
            raise ValueError("n == 0 is not supported by this build")

    def predict(self, X: pd.DataFrame) -> Any:
        self._check(X)
        return self.inner.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> Any:
        self._check(X)
        return self.inner.predict_proba(X)


class Slow:
    """A real classifier that sleeps ``delay_s`` in every call."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.classes_ = inner.classes_

    def predict(self, X: pd.DataFrame) -> Any:
        time.sleep(self.delay_s)
        return self.inner.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> Any:
        time.sleep(self.delay_s)
        return self.inner.predict_proba(X)


# The server processes of the HTTP tests cannot import this module: pickle its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class CanaryStore:
    """``churn``: v1 champion (logistic regression), v2 faulty, v3 slow, v4 trained on flipped
    labels (disagrees with v1); ``challenger`` -> 2."""

    root: Path
    data: pd.DataFrame
    v1: LogisticRegression

    def client(self) -> Client:
        return Client(str(self.root), settings=Settings(capture_environment=False))

    def rows(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        frame = self.data[COLUMNS]
        return [frame.iloc[(start + i) % len(frame)].to_dict() for i in range(n)]

    def expected(self, rows: list[dict[str, Any]]) -> list[str]:
        return self.v1.predict(pd.DataFrame(rows)[COLUMNS]).tolist()


def make_data(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "n": np.arange(n) % 5})  # fmt: skip
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    return frame


def register_canary_store(root: Path, delay_s: float = 0.3) -> CanaryStore:
    data = make_data()
    X = data[COLUMNS]
    v1 = LogisticRegression().fit(X, data["y"])
    flipped = LogisticRegression().fit(X, np.where(data["y"] == "yes", "no", "yes"))
    client = Client(str(root), settings=Settings(capture_environment=False))
    models: list[tuple[Any, str | None]] = [
        (v1, None), (Faulty(v1), "pyfunc"), (Slow(v1, delay_s), "pyfunc"), (flipped, None),
    ]  # fmt: skip
    for model, flavor in models:
        with client.start_run("canary", monitor_resources=False) as run:
            run.log_model(model, flavor=flavor, input_example=X.head())
        client.registry.register("churn", run.id)
    client.registry.set_alias("churn", "champion", 1)
    client.registry.set_alias("churn", "challenger", 2)
    client.close()
    return CanaryStore(root, data, v1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CanaryStore:
    return register_canary_store(tmp_path_factory.mktemp("canary-store"))


def canary_spec(log: Path, ref: str = "challenger", **slo: Any) -> DeploymentSpec:
    rules = {"window_s": 60, "min_requests": 20, "max_p99_ratio": 1000, **slo}
    return DeploymentSpec.from_dict({
        "name": "churn-canary", "model": "churn",
        "canary": {"ref": ref, "weight": 0.5}, "slo": rules,
        "log": {"uri": str(log)}, "watch_interval_s": 60,
    })  # fmt: skip


@pytest.fixture
def served(store: CanaryStore, tmp_path: Path) -> Iterator[tuple[TestClient, DeploymentRuntime]]:
    client = store.client()
    runtime = DeploymentRuntime(client, canary_spec(tmp_path / "log"), trusted=True)
    with TestClient(create_serving_app(runtime)) as http:
        yield http, runtime
    client.close()


class Clock:
    """Milliseconds that move only when a test says so."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


# -- the tracker ----------------------------------------------------------------------------


def feed(analysis: CanaryAnalysis, route: str, n: int, errors: int = 0, ms: float = 2.0) -> None:
    for i in range(n):
        analysis.observe(route, i >= errors, ms)


def test_error_rate_rule_waits_for_min_requests_and_names_its_numbers() -> None:
    clock = Clock()
    analysis = CanaryAnalysis(CanarySLO(min_requests=20, max_error_rate=0.05), clock)
    feed(analysis, "champion", 80)
    feed(analysis, "canary", 19, errors=4)
    assert analysis.judge() is None  # 19 < min_requests
    feed(analysis, "canary", 1)
    verdict = analysis.judge()
    assert verdict is not None and verdict.breached and verdict.rule == "error_rate"
    assert verdict.breaches == ("error_rate",)
    assert verdict.measured["canary_error_rate"] == pytest.approx(0.2)
    assert verdict.measured["champion_error_rate"] == 0.0
    assert verdict.thresholds["error_rate_limit"] == 0.05
    assert "20.0% (4 of 20 answers)" in verdict.reason and "above 5.0%" in verdict.reason
    assert json.loads(json.dumps(verdict.to_dict()))["rule"] == "error_rate"


def test_error_rate_must_also_exceed_the_ratio_to_the_champion() -> None:
    slo = CanarySLO(min_requests=20, max_error_rate=0.05, max_error_rate_ratio=2.0)
    analysis = CanaryAnalysis(slo, Clock())
    feed(analysis, "champion", 100, errors=15)  # the champion fails 15% too
    feed(analysis, "canary", 20, errors=4)  # 20% < 2 x 15%
    verdict = analysis.judge()
    assert verdict is not None and not verdict.breached and verdict.rule is None
    assert verdict.thresholds["error_rate_limit"] == pytest.approx(0.3)


def test_p99_rule_compares_with_the_champion_above_a_floor() -> None:
    analysis = CanaryAnalysis(CanarySLO(min_requests=20, max_p99_ratio=2.0), Clock())
    feed(analysis, "champion", 20, ms=4.0)
    feed(analysis, "canary", 20, ms=9.0)
    verdict = analysis.judge()
    assert verdict is not None and verdict.rule == "p99_latency"
    assert verdict.measured["canary_p99_ms"] == 9.0 and verdict.thresholds["p99_limit_ms"] == 8.0
    floored = CanaryAnalysis(CanarySLO(min_requests=20, p99_floor_ms=10.0), Clock())
    feed(floored, "champion", 20, ms=4.0)
    feed(floored, "canary", 20, ms=9.0)
    assert not floored.judge().breached  # type: ignore[union-attr]
    few = CanaryAnalysis(CanarySLO(min_requests=20), Clock())
    feed(few, "champion", 5, ms=1.0)  # too few champion answers to compare latencies with
    feed(few, "canary", 20, ms=50.0)
    assert few.judge().thresholds["p99_limit_ms"] is None  # type: ignore[union-attr]


def test_agreement_rule_and_sampling() -> None:
    slo = CanarySLO(min_requests=10, min_agreement=0.9, agreement_sample=1.0)
    analysis = CanaryAnalysis(slo, Clock())
    assert analysis.wants_comparison()
    feed(analysis, "champion", 10)
    feed(analysis, "canary", 10)
    analysis.observe_agreement(7, 10)
    verdict = analysis.judge()
    assert verdict is not None and verdict.rule == "agreement"
    assert verdict.measured["agreement"] == pytest.approx(0.7)
    assert "70.0% of 10 compared rows" in verdict.reason
    assert not CanaryAnalysis(CanarySLO(), Clock()).wants_comparison()
    sampled = CanaryAnalysis(CanarySLO(min_agreement=0.5, agreement_sample=0.25), seed=1)
    share = sum(sampled.wants_comparison() for _ in range(4000)) / 4000
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / 4000) ** 0.5
    assert agreeing_rows(["a", "b", 1.0], ["a", "c", 1.05], tolerance=0.1) == 2
    assert agreeing_rows([1.0, 2.0], [1.0, 2.5]) == 1


def test_the_window_slides_with_the_clock() -> None:
    clock = Clock()
    analysis = CanaryAnalysis(CanarySLO(window_s=10, min_requests=20), clock)
    feed(analysis, "champion", 50)
    feed(analysis, "canary", 20, errors=10)
    assert analysis.judge().breached  # type: ignore[union-attr]
    clock.now += 10_001  # everything above is older than the window now
    assert analysis.judge() is None
    feed(analysis, "champion", 50)
    feed(analysis, "canary", 20)
    assert not analysis.judge().breached  # type: ignore[union-attr]
    analysis.reset("canary")
    assert analysis.snapshot()["canary_requests"] == 0
    assert analysis.snapshot()["champion_requests"] == 50


def test_state_file_first_claim_wins(tmp_path: Path) -> None:
    state = StateFile(str(tmp_path), "api")
    assert state.read() is None
    first = Decision("rolled_back", 2, "churn@challenger", "errors", "slo", 1, worker=1)
    second = Decision("rolled_back", 2, "churn@challenger", "slow", "slo", 2, worker=2)
    assert state.claim(first) is None
    assert state.claim(second) == first  # the same version and state: the first one stands
    assert state.read() == first
    newer = Decision("rolled_back", 3, "churn@challenger", "errors", "slo", 3)
    assert state.claim(newer) is None and state.read() == newer
    promoted = Decision("promoted", 3, "churn@challenger", "good", "promote", 4)
    state.write(promoted)
    assert state.read() == promoted
    assert (tmp_path / "_state" / "api.json").exists()
    assert not [p for p in (tmp_path / "_state").iterdir() if p.suffix == ".tmp"]


def test_model_error_is_in_the_one_error_table() -> None:
    assert http_status(ModelError("boom")) == 422 and BY_CODE["MODEL_ERROR"] is ModelError
    again = from_wire(ModelError("boom", field="inputs").to_dict(), 422)
    assert isinstance(again, ModelError) and again.field == "inputs"


# -- rollback in-process --------------------------------------------------------------------


def drive(http: TestClient, store: CanaryStore, n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` single-row keyed requests; every champion answer must be v1's, every canary
    answer v1's or a MODEL_ERROR. Returns the 200 bodies."""
    answers = []
    for i, row in enumerate(store.rows(n, start)):
        response = http.post("/predict", json={"records": [row], "key": f"user-{start + i}"})
        if response.status_code == 422:
            assert response.json()["error"]["code"] == "MODEL_ERROR"
            assert row["n"] == 0
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == store.expected([row])
        answers.append(body)
    return answers


def test_a_faulty_canary_is_rolled_back_and_the_champion_keeps_answering(
    store: CanaryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = store.client()
    runtime = DeploymentRuntime(client, canary_spec(tmp_path / "log"), trusted=True)
    app = create_serving_app(runtime)
    with caplog.at_level(logging.WARNING, logger="loopwright.serving"), TestClient(app) as http:
        before = drive(http, store, 80)
        assert {a["version"] for a in before} == {1, 2}
        status = http.get("/status").json()
        assert status["state"] == "rolled_back"
        assert status["routes"]["canary"]["weight"] == 0.0
        after = drive(http, store, 40, start=80)
        assert {a["version"] for a in after} == {1} and len(after) == 40
        status = http.get("/status").json()
    client.close()
    canary = status["canary"]
    assert canary["state"] == "rolled_back" and canary["configured_weight"] == 0.5
    assert canary["decision"]["verdict"]["rule"] == "error_rate"
    assert "error rate" in canary["reason"] and canary["decision"]["by"] == "slo"
    [alert] = status["alerts"]
    assert alert["rule"] == "canary.error_rate" and alert["state"] == "firing"
    assert alert["value"] > alert["threshold"] == 0.05
    assert any("rolled back" in r.message and r.levelno == logging.WARNING for r in caplog.records)

    stored = StateFile(str(tmp_path / "log"), "churn-canary").read()
    assert stored is not None and stored.state == "rolled_back" and stored.canary_version == 2
    audit = store.client()
    [event] = audit.registry.audit_events(target_type="deployment", target_id="churn-canary")
    audit.close()
    assert event.action == "deployment.rollback" and event.reason == canary["reason"]
    assert event.before["weight"] == 0.5 and event.after["rule"] == "error_rate"

    out = io.StringIO()
    render_status(Console(file=out, width=200), status)
    text = out.getvalue()
    assert "rolled_back" in text and "error rate" in text and "canary.error_rate" in text


def test_a_rollback_survives_a_restart_and_a_new_canary_version_clears_it(
    tmp_path: Path,
) -> None:
    store = register_canary_store(tmp_path / "store")
    client = store.client()
    spec = canary_spec(tmp_path / "log")
    runtime = DeploymentRuntime(client, spec, trusted=True)
    with TestClient(create_serving_app(runtime)) as http:
        answer = http.post("/canary/rollback", json={"reason": "  "})
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "reason"
        done = http.post("/canary/rollback", json={"reason": "on-call says no"},
                         headers={"X-Loopwright-User": "carol"})  # fmt: skip
        assert done.status_code == 200 and done.json()["changed"] is True
        assert done.json()["audit_seq"] > 0
        again = http.post("/canary/rollback", json={"reason": "twice"}).json()
        assert again["changed"] is False
    [event] = client.registry.audit_events(target_type="deployment")
    assert event.actor == "carol" and event.reason == "on-call says no"

    restarted = DeploymentRuntime(client, spec, trusted=True)  # a restart, or another worker
    with TestClient(create_serving_app(restarted)) as http:
        status = http.get("/status").json()
        assert status["state"] == "rolled_back" and status["routes"]["canary"]["weight"] == 0.0
        assert status["canary"]["reason"] == "on-call says no"
        client.registry.set_alias("churn", "challenger", 4)
        assert http.portal.call(restarted.refresh) == ["canary:churn@challenger"]
        status = http.get("/status").json()
        assert status["state"] == "canary" and status["routes"]["canary"]["weight"] == 0.5
        client.registry.set_alias("churn", "challenger", 2)  # back to the version judged bad
        http.portal.call(restarted.refresh)
        assert http.get("/status").json()["state"] == "rolled_back"
    client.close()


def test_a_canary_that_disagrees_with_the_champion_is_rolled_back(
    store: CanaryStore, tmp_path: Path
) -> None:
    client = store.client()
    spec = canary_spec(tmp_path / "log", ref="4", min_agreement=0.9, min_requests=10)
    runtime = DeploymentRuntime(client, spec, trusted=True)
    with TestClient(create_serving_app(runtime)) as http:
        for i, row in enumerate(store.rows(60)):
            assert http.post("/predict", json={"records": [row], "key": f"k{i}"}).status_code == 200
        deadline = time.monotonic() + 10
        while runtime.state == "canary" and time.monotonic() < deadline:
            http.portal.call(runtime.judge)  # the comparisons finish off the request path
            time.sleep(0.02)
        status = http.get("/status").json()
    client.close()
    assert status["state"] == "rolled_back"
    verdict = status["canary"]["decision"]["verdict"]
    assert verdict["rule"] == "agreement" and verdict["measured"]["agreement"] < 0.9


def test_the_clock_drives_the_window_and_stamps_the_log(store: CanaryStore, tmp_path: Path) -> None:
    clock = Clock()
    client = store.client()
    spec = canary_spec(tmp_path / "log", window_s=5, min_requests=200)
    runtime = DeploymentRuntime(client, spec, trusted=True, clock=clock)
    with TestClient(create_serving_app(runtime)) as http:
        drive(http, store, 20)
        assert runtime.analysis is not None and runtime.analysis.size == 20
        clock.now += 6_000
        assert runtime.analysis.snapshot()["canary_requests"] == 0
        drive(http, store, 5, start=20)
    client.close()
    logged = read_predictions(str(tmp_path / "log"), deployment="churn-canary")
    stamps = sorted(int(pd.Timestamp(t).value // 1_000_000) for t in logged["ts"])
    assert stamps[0] == clock.now - 6_000 and stamps[-1] == clock.now


# -- promotion through gates and approvals --------------------------------------------------

POLICY = """
dataset: holdout
target: y
thresholds:
  accuracy: {min: 0.99}
protected_aliases: [champion]
required_approvals: 1
"""


def test_promotion_goes_through_gates_and_approvals(tmp_path: Path) -> None:
    store = register_canary_store(tmp_path / "store")
    client = store.client()
    client.registry.set_alias("churn", "challenger", 4)
    client.registry.set_policy("churn", POLICY)
    runtime = DeploymentRuntime(client, canary_spec(tmp_path / "log"), trusted=True)
    alice = {"X-Loopwright-User": "alice"}
    with TestClient(create_serving_app(runtime)) as http:
        gated = http.post("/canary/promote", json={"reason": "looks fine"}, headers=alice)
        assert gated.status_code == 422 and gated.json()["error"]["code"] == "GATE_FAILED"
        bad = http.post("/canary/promote", json={"override": True}, headers=alice)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "reason"
        asked = http.post("/canary/promote", json={"reason": "hotfix", "override": True},
                          headers=alice)  # fmt: skip
        assert asked.status_code == 409, asked.text
        error = asked.json()["error"]
        assert error["code"] == "APPROVAL_REQUIRED"
        request_id = error["details"]["request_id"]
        assert request_id in error["message"]
        with acting_as("bob"):
            client.registry.decide(request_id, "APPROVE", "checked")
        done = http.post("/canary/promote", json={"reason": "hotfix", "override": True},
                         headers=alice)  # fmt: skip
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["version"] == 4 and body["champion_version"] == 4
        assert body["status"]["state"] == "promoted"
        assert body["status"]["routes"]["canary"]["weight"] == 0.0
        row = store.rows(1)
        assert http.post("/predict", json={"records": row}).json()["version"] == 4
        refused = http.post("/canary/rollback", json={"reason": "too late"})
        assert refused.status_code == 409
    assert client.registry.resolve("churn@champion").version == 4
    actions = [e.action for e in client.registry.audit_events(target_id="churn/4")]
    assert "gate.override" in actions
    client.close()


def test_record_event_over_rest(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from tests.conftest import make_client

    from loopwright.errors import InvalidInput

    remote = make_client("rest", request, tmp_path)
    try:
        with acting_as("dave"):
            event = remote.registry.record_event(
                "deployment.rollback", "deployment", "api", after={"weight": 0}, reason="slow"
            )
        assert event.actor == "dave" and event.after == {"weight": 0} and event.seq > 0
        with pytest.raises(InvalidInput):
            remote.registry.record_event("alias.promote", "model_version", "churn/1")
    finally:
        remote.close()
