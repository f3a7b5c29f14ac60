"""MonitorService and SqlMonitorStore end to end on SQLite and PostgreSQL.

A prediction log with chosen timestamps covers three UTC days of a deployment ``credit``:

- day 0: inputs like the training data, every prediction labelled and right (accuracy 1.0);
- day 1: the same inputs, 10 failed requests, 3 of 4 labelled predictions right (0.75),
  half of the rows labelled at first (the rest arrive late);
- day 2: feature ``x`` shifted by 3 standard deviations (``z`` stable), accuracy 0.5, and a
  shadow version 2 seeing every request.

An alert rule ``perf.accuracy < 0.8 for 2 windows`` with a webhook on 127.0.0.1 fires on day 2
and resolves on day 3, when accuracy is back to 1.0.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from loopwright.backends.sql.monitoring import SqlMonitorStore
from loopwright.client import Client
from loopwright.errors import Conflict, InvalidInput, NotFound
from loopwright.monitoring.config import MonitorConfig
from loopwright.monitoring.profiles import ReferenceProfile
from loopwright.monitoring.store import AlertChange, AlertRecord, SeriesPoint, WindowRecord
from loopwright.serving.predlog import LabelStore, PredictionLog
from tests.conftest import _truncate, quiet_settings

DAY = 86_400_000
HOUR = 3_600_000
DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
N = 200  # answered requests per day
DEPLOYMENT = "credit"


# -- a webhook receiver -----------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


# -- the scenario -----------------------------------------------------------------------------


def training_frame(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n)})
    frame["y"] = (frame["x"] > 0).astype(int)
    return frame


def day_records(day: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(prediction records, labels) of one day; see the module docstring."""
    rng = np.random.default_rng(seed)
    shift = 3.0 if day == 2 else 0.0
    x = rng.normal(loc=shift, size=N)
    z = rng.normal(size=N)
    accuracy = {0: 1.0, 1: 0.75, 2: 0.5, 3: 1.0}[day]
    start = DAY0 + day * DAY
    records: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    n_right = round(N * accuracy)
    for i in range(N):
        ts = start + int(i * (DAY - HOUR) / N) + 1000  # spread over the day
        prediction = int(x[i] > 0)
        rid = f"d{day}-{i}"
        records.append(
            {
                "request_id": rid,
                "ts": ts,
                "route": "champion",
                "model": "credit",
                "version": 1,
                "inputs": {"x": float(x[i]), "z": float(z[i])},
                "prediction": prediction,
                "probabilities": [0.9 - 0.8 * prediction, 0.1 + 0.8 * prediction],
                "latency_ms": 1.0,
                "error": None,
                "shadow": False,
            }
        )
        if day == 2:
            records.append({**records[-1], "route": "shadow", "version": 2, "shadow": True,
                            "prediction": 1 - prediction})  # fmt: skip
        label = prediction if i < n_right else 1 - prediction
        labels.append({"request_id": rid, "label": label, "ts": ts + HOUR})
    if day == 1:
        for i in range(10):
            records.append(
                {**records[i], "request_id": f"d1-err{i}", "error": "MODEL_ERROR: boom",
                 "prediction": None, "probabilities": None}
            )  # fmt: skip
    return records, labels


@dataclass
class Scenario:
    client: Client
    log_uri: str
    labels: dict[int, list[dict[str, Any]]]

    def config(self, **extra: Any) -> MonitorConfig:
        body = {
            "deployment": DEPLOYMENT,
            "log_uri": self.log_uri,
            "windows": ["1d"],
            "min_rows": 50,
            "recompute_labels": 2,
            **extra,
        }
        return MonitorConfig.from_dict(body)

    def log_day(self, day: int, *, labels: str = "all") -> None:
        records, day_labels = day_records(day, seed=day + 10)
        with PredictionLog(self.log_uri, DEPLOYMENT) as log:
            log.append(records)
        if labels == "half":
            day_labels, self.labels[day] = day_labels[: N // 2], day_labels[N // 2 :]
        LabelStore(self.log_uri).add(day_labels)

    def late_labels(self, day: int) -> None:
        LabelStore(self.log_uri).add(self.labels.pop(day))


def make_client(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Client:
    if kind == "sqlite":
        return Client(str(tmp_path / "store"), settings=quiet_settings())
    url = request.getfixturevalue("pg_url")
    _truncate(url)
    return Client(url, artifacts_uri=str(tmp_path / "artifacts"), settings=quiet_settings())


def register_credit(client: Client, reference: bool = True) -> None:
    data = training_frame()
    model = LogisticRegression().fit(data[["x", "z"]], data["y"])
    with client.start_run("credit", monitor_resources=False) as run:
        run.log_model(model, input_example=data[["x", "z"]].head())
        run.log_metric("val_accuracy", 0.97)
    ref = data[["x", "z"]] if reference else None
    client.registry.register("credit", run.id, reference_data=ref)


@pytest.fixture(params=["sqlite", "postgres"])
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scenario]:
    client = make_client(request.param, tmp_path, request)
    register_credit(client)
    made = Scenario(client, str(tmp_path / "log"), {})
    made.log_day(0)
    made.log_day(1, labels="half")
    made.log_day(2)
    yield made
    client.close()


def rule(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "accuracy-drop",
        "series": "perf.accuracy",
        "op": "<",
        "threshold": 0.8,
        "for_windows": 2,
        "severity": "critical",
        "notify": [{"webhook": url, "retries": 1, "backoff_s": 0.01}, {"log": True}],
        **extra,
    }


# -- the service ------------------------------------------------------------------------------


def test_windows_series_alerts_end_to_end(scenario: Scenario, receiver: Receiver) -> None:
    monitor = scenario.client.monitor
    config = scenario.config(alerts=[rule(receiver.url)])
    now = DAY0 + 3 * DAY + 2 * 60_000
    results = monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config)
    assert [r.start_ms for r in results] == [DAY0, DAY0 + DAY, DAY0 + 2 * DAY]
    assert [r.n_predictions for r in results] == [N, N + 10, N]  # shadow rows not counted
    assert [r.n_labelled for r in results] == [N, N // 2, N]

    series = {r.start_ms: r.series for r in results}
    day0, day1, day2 = series[DAY0], series[DAY0 + DAY], series[DAY0 + 2 * DAY]
    assert day0["serving.requests"] == N and day0["serving.error_rate"] == 0.0
    assert day1["serving.error_rate"] == pytest.approx(10 / (N + 10))
    assert day0["perf.accuracy"] == 1.0
    assert day1["perf.accuracy"] == 1.0  # the first half of day 1's rows are the right ones
    assert day2["perf.accuracy"] == 0.5
    assert day0["perf.accuracy.delta"] == pytest.approx(1.0 - 0.97)
    assert day1["labels.coverage"] == pytest.approx(0.5)
    # input drift: x shifted on day 2 only; z never
    assert day0["drift.share"] == 0.0
    assert day2["drift.share"] == 0.5 and day2["drift.n_drifted"] == 1.0
    assert day2["drift.psi.x"] > 1.0 > day0["drift.psi.x"]
    # prediction drift: day 0 is the baseline, day 2 predicts mostly 1
    assert "drift.prediction" not in day0 and day2["drift.prediction"] == 1.0
    # the shadow version is compared on the same traffic (its answers are all wrong here...)
    assert day2["version.2.requests"] == N and day2["version.1.requests"] == N
    assert day2["version.2.perf.accuracy"] == 0.5  # ...half of v1's are wrong, so half of v2's
    assert (results[2].drift_share, results[2].drifted) == (0.5, ["x"])
    assert results[2].metrics["accuracy"] == 0.5 and results[0].drifted == []

    # the alert: breached on day 1? no (1.0); day 2 only once -> not yet
    assert monitor.alerts(DEPLOYMENT) == []
    # late labels for day 1 arrive: the window is recomputed, accuracy drops to 0.5
    scenario.late_labels(1)
    again = monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config)
    assert [(r.start_ms, r.recomputed) for r in again] == [(DAY0 + DAY, True)]
    assert again[0].n_labelled == N and again[0].series["perf.accuracy"] == pytest.approx(0.75)
    assert monitor.series(DEPLOYMENT, "labels.coverage", "1d") == [
        (DAY0 + DAY, 1.0), (DAY0 + 2 * DAY, 1.0), (DAY0 + 3 * DAY, 1.0)
    ]  # fmt: skip
    # idempotent: nothing new, nothing recomputed
    assert monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config) == []
    assert len(monitor.windows(DEPLOYMENT, "1d")) == 3

    # day 3 is bad again (day 1 after its late labels, day 2, day 3: fire), day 4 good (resolve)
    records, labels = day_records(2, seed=99)
    shifted = [
        {**r, "request_id": "d9" + r["request_id"][2:], "ts": r["ts"] + DAY} for r in records
    ]
    with PredictionLog(scenario.log_uri, DEPLOYMENT) as log:
        log.append(shifted)
    LabelStore(scenario.log_uri).add(
        [{**lab, "request_id": "d9" + lab["request_id"][2:], "ts": lab["ts"] + DAY}
         for lab in labels]
    )  # fmt: skip
    fired = monitor.run(DEPLOYMENT, "1d", now_ms=now + DAY, config=config)
    assert [a["action"] for a in fired[-1].alerts] == ["fire"]
    firing = monitor.alerts(DEPLOYMENT, "firing")
    assert len(firing) == 1 and firing[0].rule == "accuracy-drop"
    assert firing[0].window_end_ms == DAY0 + 4 * DAY and firing[0].value == 0.5
    assert firing[0].deliveries["fire"][0]["ok"] is True
    assert [b["transition"] for b in receiver.bodies] == ["fire"]
    assert receiver.bodies[0]["deployment"] == DEPLOYMENT
    assert receiver.bodies[0]["rule"] == "accuracy-drop"
    # the same run again notifies nobody
    assert monitor.run(DEPLOYMENT, "1d", now_ms=now + DAY, config=config) == []
    assert len(receiver.bodies) == 1

    records, labels = day_records(3, seed=13)
    with PredictionLog(scenario.log_uri, DEPLOYMENT) as log:
        log.append([{**r, "ts": r["ts"] + DAY} for r in records])
    LabelStore(scenario.log_uri).add([{**lab, "ts": lab["ts"] + DAY} for lab in labels])
    resolved = monitor.run(DEPLOYMENT, "1d", now_ms=now + 2 * DAY, config=config)
    assert [a["action"] for a in resolved[-1].alerts] == ["resolve"]
    assert monitor.alerts(DEPLOYMENT, "firing") == []
    done = monitor.alerts(DEPLOYMENT, "resolved")[0]
    assert done.resolved_value == 1.0 and done.resolution is None
    assert [b["transition"] for b in receiver.bodies] == ["fire", "resolve"]

    audit = [e.action for e in scenario.client.registry.audit_events(target_type="alert")]
    assert audit == ["alert.fire", "alert.resolve"]


def test_report_keeps_drift_performance_and_versions(scenario: Scenario) -> None:
    monitor = scenario.client.monitor
    monitor.run(DEPLOYMENT, "1d", now_ms=DAY0 + 3 * DAY + 60_000, config=scenario.config())
    record = monitor.report(DEPLOYMENT, "1d")  # the newest: day 2
    assert record.start_ms == DAY0 + 2 * DAY
    report = record.report
    assert report["reference"] == {"model": "credit", "version": 1, "source": "reference_data"}
    assert report["drift"]["drifted"] == ["x"]
    assert report["performance"]["metrics"]["accuracy"] == 0.5
    assert set(report["versions"]) == {"credit/1", "credit/2"}
    assert report["versions"]["credit/2"]["routes"] == ["shadow"]
    with pytest.raises(NotFound):
        monitor.report(DEPLOYMENT, "1d", DAY0 + 17)
    html = monitor.report_html(DEPLOYMENT, "1d")
    assert html.startswith("<!DOCTYPE html>") and "Drift" in html and ">x<" in html


def test_incomplete_windows_wait_and_settle(scenario: Scenario) -> None:
    monitor = scenario.client.monitor
    config = scenario.config(settle="10m")
    # 5 minutes after day 2 ended: day 2 is not settled yet
    assert (
        len(monitor.run(DEPLOYMENT, "1d", now_ms=DAY0 + 3 * DAY + 5 * 60_000, config=config)) == 2
    )
    hourly = monitor.run(DEPLOYMENT, "6h", now_ms=DAY0 + DAY + 10 * 60_000, config=config)
    assert [r.start_ms for r in hourly] == [DAY0 + i * 6 * HOUR for i in range(4)]
    assert sum(r.n_predictions for r in hourly) == N


def test_no_reference_profile_means_no_input_drift(tmp_path: Path) -> None:
    client = Client(str(tmp_path / "store"), settings=quiet_settings())
    register_credit(client, reference=False)
    made = Scenario(client, str(tmp_path / "log"), {})
    made.log_day(0)
    [result] = client.monitor.run(
        DEPLOYMENT, "1d", now_ms=DAY0 + DAY + 60_000, config=made.config()
    )
    assert "drift.share" not in result.series
    assert any("no reference profile" in note for note in result.notes)
    assert result.series["perf.accuracy"] == 1.0
    client.close()


def test_reference_profile_from_the_runs_registered_dataset(tmp_path: Path) -> None:
    client = Client(str(tmp_path / "store"), settings=quiet_settings())
    data = training_frame()
    client.registry.register_dataset(data[["x", "z"]], "credit-train")
    model = LogisticRegression().fit(data[["x", "z"]], data["y"])
    with client.start_run("credit", monitor_resources=False) as run:
        run.log_dataset(data[["x", "z"]], "credit-train")
        run.log_model(model, input_example=data[["x", "z"]].head())
    mv = client.registry.register("credit", run.id)
    store = client.monitor.store
    found = store.get_reference_profile("credit", mv.version)
    assert found is not None and found[1].startswith("dataset:")
    assert set(ReferenceProfile.from_dict(found[0]).features) == {"x", "z"}
    client.close()


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    client = Client(str(tmp_path / "store"), settings=quiet_settings())
    with pytest.raises(InvalidInput) as info:
        config = MonitorConfig(deployment=DEPLOYMENT, log_uri=str(tmp_path))
        client.monitor.run(DEPLOYMENT, "3q", config=config)
    assert info.value.field == "window"
    with pytest.raises(InvalidInput) as info:
        MonitorConfig.from_dict({"deployment": DEPLOYMENT, "windows": ["1d", "2x"]})
    assert info.value.field == "windows.1"
    with pytest.raises(InvalidInput) as info:
        client.monitor.run("other", "1d", config=MonitorConfig(deployment=DEPLOYMENT))
    assert info.value.field == "deployment"
    with pytest.raises(InvalidInput) as info:
        Client("http://127.0.0.1:9", settings=quiet_settings()).monitor  # noqa: B018
    assert info.value.field == "tracking_uri"
    assert client.monitor.run(DEPLOYMENT, "1d", config=MonitorConfig(
        deployment=DEPLOYMENT, log_uri=str(tmp_path / "empty"))) == []  # fmt: skip
    client.close()


def test_scheduler_runs_every_config_in_a_directory(tmp_path: Path) -> None:
    from loopwright.monitoring.service import MonitorScheduler

    client = Client(str(tmp_path / "store"), settings=quiet_settings())
    register_credit(client)
    made = Scenario(client, str(tmp_path / "log"), {})
    made.log_day(0)
    configs = tmp_path / "monitors"
    configs.mkdir()
    (configs / "credit.yaml").write_text(made.config(windows=["1d", "12h"]).to_yaml())
    (configs / "broken.yaml").write_text("deployment: x\nwindows: [1q]\n")
    now = DAY0 + DAY + 60_000
    scheduler = MonitorScheduler(
        lambda: Client(str(tmp_path / "store"), settings=quiet_settings()),
        configs,
        60,
        clock=lambda: now,
    )
    out = scheduler.run_once(now_ms=now)
    assert {k: len(v) for k, v in out.items()} == {"credit.yaml:1d": 1, "credit.yaml:12h": 2}
    assert "broken.yaml" in scheduler.last_errors
    assert scheduler.run_once(now_ms=now) == {
        "credit.yaml:1d": [], "credit.yaml:12h": []
    }  # fmt: skip
    # the thread: starts, runs rounds, stops
    scheduler.interval_s = 0.01
    scheduler.start()
    deadline = time.monotonic() + 60
    while scheduler.rounds < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.stop()
    assert scheduler.rounds >= 4
    client.close()


# -- the store --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlMonitorStore]:
    client = make_client(request.param, tmp_path, request)
    made = client.monitor.store
    assert isinstance(made, SqlMonitorStore)
    yield made
    client.close()


def window(start: int, n: int = 5) -> WindowRecord:
    return WindowRecord("d", "1h", start, start + HOUR, 1, n, 0, {"n": n, "nan": math.nan})


def alert(alert_id: str = "a" * 32, **extra: Any) -> AlertRecord:
    base = dict(
        id=alert_id, deployment="d", rule="r", series="s", window="1h", op=">", state="firing",
        severity="warning", threshold=0.5, value=0.9, window_end_ms=HOUR, fired_at_ms=HOUR,
        message="r fired",
    )  # fmt: skip
    return AlertRecord(**{**base, **extra})  # type: ignore[arg-type]


def test_store_windows_are_written_once(store: SqlMonitorStore) -> None:
    points = [SeriesPoint("s", HOUR, 1.0), SeriesPoint("t", HOUR, math.nan)]
    assert store.record_window(window(0), points) is True
    assert store.record_window(window(0, n=9), [SeriesPoint("s", HOUR, 7.0)]) is False
    assert store.computed_starts("d", "1h") == {0}
    assert store.get_window("d", "1h", 0).report == {"n": 5, "nan": "NaN"}
    assert store.series("d", "s", "1h") == [(HOUR, 1.0)]
    assert math.isnan(store.series("d", "t", "1h")[0][1])
    # replace swaps the window and its points
    assert store.record_window(window(0, n=9), [SeriesPoint("s", HOUR, 7.0)], replace=True)
    assert store.get_window("d", "1h", 0).n_predictions == 9
    assert store.series_names("d") == ["s"]
    for i in range(1, 5):
        store.record_window(window(i * HOUR), [SeriesPoint("s", (i + 1) * HOUR, float(i))])
    assert store.series("d", "s", "1h", limit=2) == [(4 * HOUR, 3.0), (5 * HOUR, 4.0)]
    assert store.series("d", "s", "1h", start_ms=3 * HOUR, end_ms=4 * HOUR) == [(4 * HOUR, 3.0)]
    assert [w.start_ms for w in store.list_windows("d", "1h", limit=2)] == [3 * HOUR, 4 * HOUR]
    assert store.list_windows("d", "1h")[0].report == {}  # listings leave the reports out
    with pytest.raises(NotFound):
        store.get_window("d", "1h", 17)


def test_store_a_failing_window_leaves_nothing(store: SqlMonitorStore) -> None:
    store.record_window(window(0), [], [AlertChange("fire", alert())])
    # the same alert id again makes the whole second transaction fail: no window, no points
    store.record_window(window(HOUR), [SeriesPoint("s", 2 * HOUR, 1.0)],
                        [AlertChange("fire", alert())])  # fmt: skip
    assert store.computed_starts("d", "1h") == {0}
    assert store.series("d", "s", "1h") == []


def test_store_alerts_fire_resolve_and_audit(store: SqlMonitorStore) -> None:
    store.record_window(window(0), [], [AlertChange("fire", alert())])
    assert [a.state for a in store.list_alerts("d", "firing")] == ["firing"]
    store.set_deliveries("a" * 32, "fire", [{"ok": True}])
    assert store.get_alert("a" * 32).deliveries == {"fire": [{"ok": True}]}
    resolved = store.resolve_alert("a" * 32, resolved_at_ms=5, reason="known outage")
    assert resolved.state == "resolved" and resolved.resolution == "known outage"
    with pytest.raises(Conflict):
        store.resolve_alert("a" * 32, resolved_at_ms=6, reason="again")
    with pytest.raises(NotFound):
        store.get_alert("b" * 32)
    store.record_window(window(HOUR), [], [AlertChange("fire", alert("c" * 32))])
    store.record_window(
        window(2 * HOUR), [],
        [AlertChange("resolve", alert("c" * 32, state="resolved", resolved_at_ms=3 * HOUR,
                                      resolved_value=0.1, message="ok again"))],
    )  # fmt: skip
    done = store.get_alert("c" * 32)
    assert (done.state, done.resolved_value, done.message) == ("resolved", 0.1, "ok again")
    with store._read() as conn:
        from loopwright.backends.sql.audit import read_events

        events = read_events(conn, target_type="alert")
    assert [(e.action, e.reason) for e in events] == [
        ("alert.fire", None), ("alert.resolve", "known outage"),
        ("alert.fire", None), ("alert.resolve", "ok again"),
    ]  # fmt: skip


def test_store_reference_profiles(store: SqlMonitorStore) -> None:
    assert store.get_reference_profile("m", 1) is None
    assert store.put_reference_profile("m", 1, {"a": 1}, source="x") is True
    assert store.put_reference_profile("m", 1, {"a": 2}, kind="predictions", replace=False)
    assert store.put_reference_profile("m", 1, {"a": 3}, kind="predictions", replace=False) is False
    assert store.get_reference_profile("m", 1) == ({"a": 1}, "x")
    assert store.get_reference_profile("m", 1, "predictions") == ({"a": 2}, None)
    store.put_reference_profile("m", 1, {"a": 4})
    assert store.get_reference_profile("m", 1) == ({"a": 4}, None)
    with pytest.raises(InvalidInput):
        store.put_reference_profile("m", 1, {}, kind="nope")  # type: ignore[arg-type]


def test_a_performance_alert_fires_once_late_labels_arrive(tmp_path: Path) -> None:
    """Labels come back after the window was computed: the recomputed window is judged again."""
    client = Client(str(tmp_path / "store"), settings=quiet_settings())
    try:
        register_credit(client)
        uri = str(tmp_path / "log")
        late: list[dict[str, Any]] = []
        for day in (0, 1):
            records, labels = day_records(day, seed=day + 10)  # day 1: accuracy 0.75
            with PredictionLog(uri, DEPLOYMENT) as log:
                log.append(records)
            late += labels
        config = MonitorConfig.from_dict(
            {"deployment": DEPLOYMENT, "log_uri": uri, "min_rows": 50,
             "alerts": [{"name": "accuracy", "series": "perf.accuracy", "op": "<",
                         "threshold": 0.8, "notify": [{"log": True}]}]}
        )  # fmt: skip
        now = DAY0 + 2 * DAY + 2 * 60_000
        first = client.monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config)
        assert [r.n_labelled for r in first] == [0, 0]
        assert all(r.alerts == [] for r in first)
        assert client.monitor.alerts(DEPLOYMENT) == []

        LabelStore(uri).add(late)
        again = client.monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config)
        assert [(r.start_ms, r.recomputed) for r in again] == [(DAY0, True), (DAY0 + DAY, True)]
        assert again[1].series["perf.accuracy"] == pytest.approx(0.75)
        assert [a["action"] for a in again[1].alerts] == ["fire"]
        (alert,) = client.monitor.alerts(DEPLOYMENT, "firing")
        assert alert.rule == "accuracy" and alert.value == pytest.approx(0.75)

        assert client.monitor.run(DEPLOYMENT, "1d", now_ms=now, config=config) == []
        assert len(client.monitor.alerts(DEPLOYMENT)) == 1
    finally:
        client.close()
