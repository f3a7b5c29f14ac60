"""The ``loopwright`` command line against a real SQLite store in a temporary directory.

Data is written through the SDK (``Client``), read back through the CLI, and errors are checked
for what a user sees: exit code 2 and one ``error:`` line naming the offending field.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from loopwright import Client, RunStatus, Settings
from loopwright.cli import commands, render
from loopwright.cli.main import app, hoist_global_options

WIDE = {"COLUMNS": "250", "LOOPWRIGHT_TRACKING_URI": None, "LOOPWRIGHT_ARTIFACTS_URI": None}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def client(store: Path) -> Iterator[Client]:
    made = Client(str(store), settings=Settings(capture_environment=False))
    yield made
    made.close()


def cli(store: Path, *args: str, **env: str | None) -> Result:
    """Invoke the CLI on ``store`` with a wide terminal, so tables are not truncated."""
    return CliRunner().invoke(app, ["--tracking-uri", str(store), *args], env=WIDE | env)


def make_run(
    client: Client,
    name: str,
    params: dict[str, object] | None = None,
    metrics: dict[str, float] | None = None,
    experiment: str = "exp",
) -> str:
    """A finished run with the given params and final metrics; returns its id."""
    run = client.start_run(
        experiment, run_name=name, capture_environment=False, monitor_resources=False
    )
    run.log_params(params or {})
    for key, value in (metrics or {}).items():
        run.log_metric(key, value)
    run.end()
    return run.id


def running_run(client: Client, name: str, start_time: int | None = None) -> str:
    """A RUNNING run with no process behind it (as after a crash)."""
    exp = client.get_or_create_experiment("exp")
    return client.tracking.create_run(exp.id, name=name, start_time=start_time).id


def order_of(output: str, *names: str) -> list[str]:
    """The given names sorted by where they first appear in ``output`` (absent ones dropped)."""
    return sorted((n for n in names if n in output), key=output.index)


# -- experiments -------------------------------------------------------------------------------


def test_experiments_create_then_list(store: Path) -> None:
    created = cli(store, "experiments", "create", "churn", "--tag", "team=risk", "--tag", "q=a=b")
    assert created.exit_code == 0, created.output
    assert "created experiment 'churn'" in created.output

    listed = cli(store, "experiments", "list")
    assert listed.exit_code == 0, listed.output
    assert "churn" in listed.output
    assert "q=a=b, team=risk" in listed.output


def test_creating_an_existing_experiment_is_a_one_line_error(store: Path) -> None:
    cli(store, "experiments", "create", "churn")
    again = cli(store, "experiments", "create", "churn")
    assert again.exit_code == 2
    assert again.stderr.startswith("error: ")
    assert "already exists" in again.stderr


# -- runs list ---------------------------------------------------------------------------------


@pytest.fixture
def four_runs(client: Client) -> dict[str, str]:
    aucs = {"run-alpha": 0.7, "run-bravo": 0.9, "run-charlie": 0.8, "run-delta": 0.6}
    return {name: make_run(client, name, {"lr": 0.1}, {"auc": auc}) for name, auc in aucs.items()}


def test_runs_list_filters_and_orders(store: Path, four_runs: dict[str, str]) -> None:
    result = cli(
        store, "runs", "list", "--filter", "metrics.auc > 0.65", "--order-by", "metrics.auc DESC"
    )
    assert result.exit_code == 0, result.output
    assert order_of(result.output, *four_runs) == ["run-bravo", "run-charlie", "run-alpha"]
    assert "auc" in result.output  # the filtered/ordered metric gets a column
    assert four_runs["run-bravo"][:8] in result.output


def test_runs_list_json_lines_parse(store: Path, four_runs: dict[str, str]) -> None:
    result = cli(store, "runs", "list", "--order-by", "metrics.auc ASC", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in records] == ["run-delta", "run-alpha", "run-charlie", "run-bravo"]
    assert records[0]["id"] == four_runs["run-delta"]
    assert records[0]["metrics"] == {"auc": 0.6}
    assert records[0]["status"] == "FINISHED"
    assert records[0]["experiment_name"] == "exp"


def test_runs_list_pages_with_a_token(store: Path, four_runs: dict[str, str]) -> None:
    first = cli(store, "runs", "list", "--order-by", "name", "--max", "3")
    assert order_of(first.output, *four_runs) == ["run-alpha", "run-bravo", "run-charlie"]
    token = first.output.split("--page-token ")[1].split()[0]

    second = cli(store, "runs", "list", "--order-by", "name", "--max", "3", "--page-token", token)
    assert second.exit_code == 0, second.output
    assert order_of(second.output, *four_runs) == ["run-delta"]
    assert "--page-token" not in second.output


def test_runs_list_by_experiment_name(store: Path, client: Client) -> None:
    make_run(client, "in-a", experiment="a")
    make_run(client, "in-b", experiment="b")
    result = cli(store, "runs", "list", "--experiment", "b")
    assert result.exit_code == 0, result.output
    assert order_of(result.output, "in-a", "in-b") == ["in-b"]


def test_a_running_run_without_heartbeat_is_shown_as_stale(store: Path, client: Client) -> None:
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    running_run(client, "ghost", start_time=an_hour_ago)
    running_run(client, "alive")
    result = cli(store, "runs", "list", "--json")
    stale = {r["name"]: r["stale"] for r in map(json.loads, result.stdout.splitlines())}
    assert stale == {"ghost": True, "alive": False}
    assert "RUNNING (stale)" in cli(store, "runs", "list").output


# -- runs show / compare / history -------------------------------------------------------------


def test_runs_show_includes_params_metrics_inputs_and_artifacts(
    store: Path, client: Client
) -> None:
    run = client.start_run(
        "exp", run_name="shown", capture_environment=False, monitor_resources=False
    )
    run.log_params({"max_depth": 7})
    run.log_metric("val_auc", 0.875)
    run.set_tags({"owner": "ana", "lw.python": "3.11.9"})
    run.log_dataset(pd.DataFrame({"x": [1, 2, 3], "y": [4, 5, 6]}), name="credit", context="train")
    run.log_text("hello", "notes/readme.txt")
    run.end()

    result = cli(store, "runs", "show", run.id)
    assert result.exit_code == 0, result.output
    for expected in ("FINISHED", "max_depth", "7", "val_auc", "0.875", "owner", "ana", "credit",
                     "notes/readme.txt", "5 B"):  # fmt: skip
        assert expected in result.output, expected
    assert result.output.index("environment") < result.output.index("lw.python")

    data = json.loads(cli(store, "runs", "show", run.id, "--json").stdout)
    assert data["params"] == {"max_depth": "7"}
    assert data["artifacts"][0]["path"] == "notes/readme.txt"
    assert data["inputs"][0]["num_rows"] == 3


def test_runs_compare_shows_every_runs_values(store: Path, client: Client) -> None:
    a = make_run(client, "first", {"lr": 0.1, "depth": 3}, {"auc": 0.81})
    b = make_run(client, "second", {"lr": 0.2, "depth": 3}, {"auc": 0.93, "f1": 0.5})
    result = cli(store, "runs", "compare", a, b)
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "0.1" in lines["lr"] and "0.2" in lines["lr"]
    assert "0.81" in lines["auc"] and "0.93" in lines["auc"]
    assert "—" in lines["f1"]  # missing in the first run

    comparison = commands.compare_runs(client, [a, b])
    assert {r.key: r.differs for r in comparison.params} == {"depth": False, "lr": True}


def test_runs_history_lists_the_series(store: Path, client: Client) -> None:
    run = client.start_run("exp", capture_environment=False, monitor_resources=False)
    for value in (1.0, 0.5, 0.25):
        run.log_metric("loss", value)
    run.end()
    result = cli(store, "runs", "history", run.id, "loss")
    assert result.exit_code == 0, result.output
    assert "loss (3 points)" in result.output
    assert "0.25" in result.output
    assert render.SPARK[-1] in result.output and render.SPARK[0] in result.output

    missing = cli(store, "runs", "history", run.id, "accuracy")
    assert missing.exit_code == 2
    assert "key" in missing.stderr and "loss" in missing.stderr


# -- runs end / resume -------------------------------------------------------------------------


def test_runs_end_closes_a_running_run(store: Path, client: Client) -> None:
    run_id = running_run(client, "crashed")
    result = cli(store, "runs", "end", run_id, "--status", "KILLED")
    assert result.exit_code == 0, result.output
    assert "KILLED" in result.output
    assert client.get_run(run_id).status is RunStatus.KILLED

    resumed = cli(store, "runs", "resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert client.get_run(run_id).status is RunStatus.RUNNING


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["runs", "show", "0" * 32], "run_id"),
        (["runs", "end", "0" * 32], "run_id"),
        (["runs", "list", "--filter", "metrics.auc >"], "filter"),
        (["runs", "list", "--order-by", "metrics.auc SIDEWAYS"], "order_by"),
        (["runs", "list", "--experiment", "nope"], "experiment"),
        (["runs", "end", "RUN", "--status", "DONE"], "status"),
        (["runs", "end", "RUN", "--status", "RUNNING"], "status"),
        (["experiments", "create", "x", "--tag", "no-equals-sign"], "tag"),
        (["runs", "compare", "RUN"], "run_ids"),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    store: Path, client: Client, args: list[str], field: str
) -> None:
    run_id = make_run(client, "some-run")
    result = cli(store, *[run_id if a == "RUN" else a for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert field in result.stderr
    assert "Traceback" not in result.output


def test_usage_errors_still_exit_2(store: Path) -> None:
    assert cli(store, "runs", "list", "--max", "0").exit_code == 2
    assert cli(store, "runs", "frobnicate").exit_code == 2


def test_an_unexpected_error_is_a_bug_with_a_traceback_only_under_debug(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(client: Client) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "list_experiments", broken)
    quiet = cli(store, "experiments", "list")
    assert quiet.exit_code == 1
    assert "unexpected RuntimeError: boom" in quiet.stderr
    assert "--debug" in quiet.stderr

    loud = cli(store, "--debug", "experiments", "list")
    assert isinstance(loud.exception, RuntimeError)


# -- configuration -----------------------------------------------------------------------------


def test_tracking_uri_comes_from_the_environment_and_the_flag_wins(
    tmp_path: Path, client: Client
) -> None:
    make_run(client, "in-store")
    runner = CliRunner()
    env = WIDE | {"LOOPWRIGHT_TRACKING_URI": str(tmp_path / "store")}
    from_env = runner.invoke(app, ["runs", "list"], env=env)
    assert "in-store" in from_env.output
    flag = runner.invoke(app, ["runs", "list", "--tracking-uri", str(tmp_path / "other")], env=env)
    assert flag.exit_code == 0, flag.output
    assert "in-store" not in flag.output


def test_a_malformed_setting_names_the_variable(store: Path) -> None:
    result = cli(store, "runs", "list", LOOPWRIGHT_HTTP_TIMEOUT_S="soon")
    assert result.exit_code == 2
    assert "LOOPWRIGHT_HTTP_TIMEOUT_S" in result.stderr


def test_global_options_may_follow_the_command() -> None:
    args = ["runs", "list", "--tracking-uri", "x", "--filter", "a", "--debug", "--", "--debug"]
    assert hoist_global_options(args) == [
        "--tracking-uri", "x", "--debug", "runs", "list", "--filter", "a", "--", "--debug",
    ]  # fmt: skip
    assert hoist_global_options(["db", "current", "--artifacts-uri=a"]) == [
        "--artifacts-uri=a", "db", "current",
    ]  # fmt: skip


# -- db ----------------------------------------------------------------------------------------


def test_db_upgrade_creates_then_is_idempotent(store: Path) -> None:
    first = cli(store, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert "upgraded from an empty database to" in first.output
    again = cli(store, "db", "upgrade")
    assert again.exit_code == 0, again.output
    assert "already at" in again.output and "(head)" in again.output
    current = cli(store, "db", "current")
    assert "(head)" in current.output


def test_an_outdated_store_is_refused_until_db_upgrade(tmp_path: Path) -> None:
    from loopwright.backends.sql.store import SqlTrackingStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = SqlTrackingStore(url)
    old.upgrade("0001")
    old.close()
    runner = CliRunner()

    refused = runner.invoke(app, ["--tracking-uri", url, "runs", "list"], env=WIDE)
    assert refused.exit_code == 2, refused.output
    assert "loopwright db upgrade" in refused.stderr
    current = runner.invoke(app, ["db", "current", "--store-uri", url], env=WIDE)
    assert "at 0001" in current.output and "run `loopwright db upgrade`" in current.output

    upgraded = runner.invoke(app, ["db", "upgrade", "--store-uri", url], env=WIDE)
    assert upgraded.exit_code == 0, upgraded.output
    assert "upgraded from 0001 to" in upgraded.output
    works = runner.invoke(app, ["--tracking-uri", url, "runs", "list"], env=WIDE)
    assert works.exit_code == 0, works.output


def test_db_upgrade_refuses_a_server_uri() -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--store-uri", "http://127.0.0.1:5000"])
    assert result.exit_code == 2
    assert "store_uri" in result.stderr and "server" in result.stderr


# -- wiring of server and quickstart -----------------------------------------------------------


def test_server_passes_settings_host_port_and_workers(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loopwright.server.main as server_main

    calls: list[tuple[Settings, str, int, int]] = []
    monkeypatch.setattr(server_main, "serve", lambda *a: calls.append(a))
    args = ["server", "--store-uri", "sqlite:///x.db", "--artifacts-uri", "blobs", "--port", "5055"]
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    settings, host, port, workers = calls[0]
    assert (settings.tracking_uri, settings.artifacts_uri) == ("sqlite:///x.db", "blobs")
    assert (host, port, workers) == ("127.0.0.1", 5055, 1)


def test_quickstart_is_wired(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import loopwright.demo.quickstart as demo

    calls: list[tuple[Settings, str]] = []
    monkeypatch.setattr(
        demo, "run", lambda settings, experiment: calls.append((settings, experiment))
    )
    result = cli(store, "quickstart", "--experiment", "demo")
    assert result.exit_code == 0, result.output
    assert calls == [(calls[0][0], "demo")]
    assert calls[0][0].tracking_uri == str(store)


# -- the installed entry point -----------------------------------------------------------------


@pytest.mark.slow
def test_the_console_script_runs(store: Path, client: Client) -> None:
    make_run(client, "from-a-process")
    exe = Path(sys.executable).parent / "loopwright"
    done = subprocess.run(
        [str(exe), "runs", "list", "--tracking-uri", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["name"] == "from-a-process"

    bad = subprocess.run(
        [str(exe), "runs", "show", "f" * 32, "--tracking-uri", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ")
