"""``loopwright monitor`` / ``alerts`` on a terminal, ``server --scheduler``, and the REST routes.

The prediction log covers the two UTC days before today (so the scheduler, which uses the real
clock, has exactly two complete daily windows to compute). No model is registered: without a
reference profile drift is skipped and the windows carry serving and performance series.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from loopwright.cli.main import app
from loopwright.cli.monitor import parse_time, scheduled
from loopwright.client import Client, open_stores
from loopwright.serving.predlog import LabelStore, PredictionLog
from tests.conftest import quiet_settings

DAY = 86_400_000
TODAY = int(time.time() * 1000) // DAY * DAY
DAY0 = TODAY - 2 * DAY
N = 60
ENV = {
    "COLUMNS": "250",
    "LOOPWRIGHT_TRACKING_URI": None,
    "LOOPWRIGHT_ARTIFACTS_URI": None,
    "LOOPWRIGHT_USER": None,
}
CONFIG = """\
deployment: credit
log_uri: {log}
windows: [1d]
min_rows: 10
alerts:
  - name: low-accuracy
    series: perf.accuracy
    op: "<"
    threshold: 0.9
    notify: [{{log: true}}]
"""


def log_days(log: str) -> None:
    """Day 0: every answer right; day 1: half of them wrong. All labelled."""
    records: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for day in (0, 1):
        for i in range(N):
            ts = DAY0 + day * DAY + i * 60_000
            prediction = i % 2
            records.append(
                {"request_id": f"{day}-{i}", "ts": ts, "route": "champion", "model": "credit",
                 "version": 1, "inputs": {"x": float(i)}, "prediction": prediction,
                 "probabilities": [1.0 - prediction, float(prediction)], "shadow": False}
            )  # fmt: skip
            wrong = day == 1 and i < N // 2
            labels.append({"request_id": f"{day}-{i}", "label": 1 - prediction if wrong
                           else prediction, "ts": ts})  # fmt: skip
    with PredictionLog(log, "credit") as writer:
        writer.append(records)
    LabelStore(log).add(labels)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """(store directory, monitor config file)."""
    log_days(str(tmp_path / "log"))
    config = tmp_path / "monitors" / "credit.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG.format(log=tmp_path / "log"))
    return tmp_path / "store", config


def cli(store: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--tracking-uri", str(store), *args], env=ENV)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def test_monitor_run_windows_series_and_alerts(setup: tuple[Path, Path]) -> None:
    store, config = setup
    now = iso(TODAY + 5 * 60_000)
    first = cli(store, "monitor", "run", "credit", "--window", "1d", "--config", str(config),
                "--now", now)  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "credit: 2 window(s)" in first.output
    assert "fire low-accuracy" in first.output
    again = cli(store, "monitor", "run", "credit", "--config", str(config), "--now", now)
    assert again.exit_code == 0 and "up to date" in again.output

    windows = cli(store, "monitor", "windows", "credit", "--json")
    rows = [json.loads(line) for line in windows.output.splitlines()]
    assert [(r["start_ms"], r["n_predictions"], r["n_labelled"]) for r in rows] == [
        (DAY0, N, N), (DAY0 + DAY, N, N)
    ]  # fmt: skip
    series = cli(store, "monitor", "series", "credit", "perf.accuracy", "--json")
    assert [json.loads(line) for line in series.output.splitlines()] == [
        {"end_ms": DAY0 + DAY, "value": 1.0}, {"end_ms": TODAY, "value": 0.5}
    ]  # fmt: skip
    table = cli(store, "monitor", "series", "credit", "perf.accuracy")
    assert table.exit_code == 0 and "perf.accuracy" in table.output and "0.5" in table.output
    names = cli(store, "monitor", "series", "credit")
    assert {"serving.requests", "perf.accuracy", "labels.coverage"} <= set(names.output.split())

    page = store.parent / "report.html"
    written = cli(store, "monitor", "report", "credit", "--start", iso(DAY0), "--out", str(page))
    assert written.exit_code == 0, written.output
    assert page.read_text().startswith("<!DOCTYPE html>")

    listed = cli(store, "alerts", "list", "--state", "firing", "--json")
    [alert] = [json.loads(line) for line in listed.output.splitlines()]
    assert (alert["rule"], alert["value"], alert["state"]) == ("low-accuracy", 0.5, "firing")
    assert "low-accuracy" in cli(store, "alerts", "list").output
    resolved = cli(store, "alerts", "resolve", alert["id"][:8], "--reason", "known bad batch")
    assert resolved.exit_code == 0, resolved.output
    assert cli(store, "alerts", "list", "--state", "firing", "--json").output == ""
    gone = cli(store, "alerts", "resolve", alert["id"], "--reason", "again")
    assert gone.exit_code == 2 and "already resolved" in gone.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["monitor", "run", "credit", "--window", "3q"], "window"),
        (["monitor", "run", "credit", "--now", "yesterday"], "now"),
        (["monitor", "windows", "credit", "--window", "0d"], "window"),
        (["monitor", "series", "credit", "perf.nope"], "name"),
        (["alerts", "list", "--state", "bogus"], "state"),
        (["alerts", "resolve", "ab", "--reason", "x"], "alert_id"),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    setup: tuple[Path, Path], args: list[str], named: str
) -> None:
    store, _ = setup
    result = cli(store, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_config_for_another_deployment_is_refused(setup: tuple[Path, Path]) -> None:
    store, config = setup
    result = cli(store, "monitor", "run", "other", "--config", str(config))
    assert result.exit_code == 2 and "config" in result.output


def test_parse_time() -> None:
    assert parse_time("2024-05-01T00:00:00Z") == 1_714_521_600_000
    assert parse_time("2024-05-01T02:00:00+02:00") == 1_714_521_600_000
    assert parse_time("2024-05-01") == 1_714_521_600_000
    assert parse_time("1714521600000") == 1_714_521_600_000


def test_server_scheduler_computes_windows_in_the_background(setup: tuple[Path, Path]) -> None:
    store, config = setup
    settings = quiet_settings(tracking_uri=str(store))
    with scheduled(settings, config.parent, 0.001) as scheduler:
        deadline = time.monotonic() + 60
        while scheduler.rounds < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert scheduler.rounds >= 2 and scheduler.last_errors == {}
    client = Client(str(store), settings=quiet_settings())
    assert [w.start_ms for w in client.monitor.windows("credit", "1d")] == [DAY0, DAY0 + DAY]
    client.close()


@pytest.fixture
def http(setup: tuple[Path, Path]) -> Iterator[TestClient]:
    from loopwright.server.app import create_app

    store, config = setup
    assert cli(store, "monitor", "run", "credit", "--config", str(config)).exit_code == 0
    settings = quiet_settings(tracking_uri=str(store))
    tracking, artifacts = open_stores(settings)
    with TestClient(create_app(tracking, artifacts, settings)) as made:
        yield made
    tracking.close()


def test_rest_routes(http: TestClient) -> None:
    base = "/api/v1/monitoring/credit"
    windows = http.get(f"{base}/windows", params={"window": "1d"}).json()["windows"]
    assert [w["start_ms"] for w in windows] == [DAY0, DAY0 + DAY]
    series = http.get(f"{base}/series/perf.accuracy", params={"window": "1d"}).json()
    assert series["points"] == [[DAY0 + DAY, 1.0], [TODAY, 0.5]]
    alerts = http.get(f"{base}/alerts", params={"state": "firing"}).json()["alerts"]
    assert [a["rule"] for a in alerts] == ["low-accuracy"]
    bad = http.get(f"{base}/series/perf.accuracy", params={"window": "3q"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "window"
    report = http.get(f"{base}/report.html", params={"window": "1d"})
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "credit: 1d window from" in report.text and "low-accuracy" in report.text
    older = http.get(f"{base}/report.html", params={"window": "1d", "start_ms": DAY0})
    assert older.status_code == 200 and older.text != report.text
    missing = http.get("/api/v1/monitoring/nobody/report.html")
    assert missing.status_code == 404
