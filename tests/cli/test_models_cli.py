"""``loopwright models``, ``datasets`` and ``audit`` against a real SQLite store in a temp dir.

Models are trained and logged through the SDK (``run.log_model``); everything after that —
registering, aliases, gates, approvals by two different ``--user``s, the audit trail — goes
through the command line, checking what a user sees: tables, verdicts, exit codes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

from loopwright import Client, Settings
from loopwright.cli.main import app

WIDE = {
    "COLUMNS": "250",
    "LOOPWRIGHT_TRACKING_URI": None,
    "LOOPWRIGHT_ARTIFACTS_URI": None,
    "LOOPWRIGHT_USER": None,
}
POLICY = """\
dataset: holdout
target: y
thresholds:
  roc_auc: {min: 0.9}
protected_aliases: [champion]
required_approvals: 1
"""
_REQUEST_ID = re.compile(r"request ([0-9a-f]{32})")


def cli(store: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--tracking-uri", str(store), *args], env=WIDE)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def client(store: Path) -> Iterator[Client]:
    made = Client(str(store), settings=Settings(capture_environment=False))
    yield made
    made.close()


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    data["y"] = (data["a"] - 0.5 * data["b"] > 0).astype(int)
    return data.iloc[:200].reset_index(drop=True), data.iloc[200:].reset_index(drop=True)


def logged_model(client: Client, train: pd.DataFrame, good: bool) -> str:
    """A finished run that logged a fitted model; returns its id."""
    model = LogisticRegression() if good else DummyClassifier(strategy="prior")
    model.fit(train[["a", "b"]], train["y"])
    run = client.start_run("churn", capture_environment=False, monitor_resources=False)
    run.log_metric("train_accuracy", float(model.score(train[["a", "b"]], train["y"])))
    run.log_model(model)
    run.end()
    return run.id


@pytest.fixture
def registered(store: Path, client: Client, frames: tuple[pd.DataFrame, pd.DataFrame]) -> Path:
    """``churn`` v1 (good) and v2 (a dummy), registered through the CLI."""
    for good in (True, False):
        run_id = logged_model(client, frames[0], good)
        result = cli(store, "models", "register", "churn", "--run", run_id[:8])
        assert result.exit_code == 0, result.output
        assert "registered churn/" in result.output
    return store


@pytest.fixture
def governed(registered: Path, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]) -> Path:
    """Plus a gate policy and the holdout dataset (registered from a Parquet file)."""
    holdout = tmp_path / "holdout.parquet"
    frames[1].to_parquet(holdout, index=False)
    assert cli(registered, "datasets", "register", "holdout", str(holdout)).exit_code == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    result = cli(registered, "models", "policy", "set", "churn", str(policy))
    assert result.exit_code == 0, result.output
    return registered


# -- models ------------------------------------------------------------------------------------


def test_register_alias_and_show(registered: Path) -> None:
    moved = cli(registered, "models", "alias", "set", "churn", "staging", "1", "--reason", "try")
    assert moved.exit_code == 0, moved.output
    assert "churn@staging -> version 1" in moved.output
    shown = cli(registered, "models", "show", "churn")
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if "sklearn" in line]
    assert len(rows) == 2
    assert "staging" in rows[0] and "train_accuracy=" in rows[0]
    listed = cli(registered, "models", "list", "--alias", "staging")
    assert "churn" in listed.output and "staging=1" in listed.output


def test_create_and_list_by_tag(store: Path) -> None:
    created = cli(store, "models", "create", "fraud", "--description", "x", "--tag", "team=risk")
    assert created.exit_code == 0, created.output
    assert cli(store, "models", "create", "churn").exit_code == 0
    listed = cli(store, "models", "list", "--tag", "team=risk")
    assert "fraud" in listed.output and "churn" not in listed.output
    bad = cli(store, "models", "list", "--tag", "team")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.stderr


def test_unknown_model_is_a_one_line_error(store: Path) -> None:
    result = cli(store, "models", "show", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "not found" in result.stderr


def test_alias_delete_needs_a_reason(registered: Path) -> None:
    cli(registered, "models", "alias", "set", "churn", "staging", "2")
    missing = cli(registered, "models", "alias", "delete", "churn", "staging")
    assert missing.exit_code == 2  # the parser: --reason is required
    deleted = cli(registered, "models", "alias", "delete", "churn", "staging", "--reason", "done")
    assert deleted.exit_code == 0, deleted.output
    assert "staging" not in cli(registered, "models", "show", "churn").output


# -- gates -------------------------------------------------------------------------------------


def test_policy_show_prints_yaml(governed: Path) -> None:
    shown = cli(governed, "models", "policy", "show", "churn")
    assert shown.exit_code == 0, shown.output
    assert "roc_auc" in shown.output and "holdout" in shown.output


def test_evaluate_prints_each_check_and_the_verdict(
    governed: Path, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    failed = cli(governed, "models", "evaluate", "churn/2", "--data", "holdout")
    assert failed.exit_code == 0, failed.output  # a verdict, not an error
    row = next(line for line in failed.output.splitlines() if "roc_auc" in line)
    assert "FAIL" in row and "0.5" in row and "0.9" in row
    assert "FAILED: churn/2 on holdout" in failed.output
    csv = tmp_path / "fresh.csv"
    frames[1].to_csv(csv, index=False)
    passed = cli(governed, "models", "evaluate", "churn/1", "--data", str(csv))
    assert passed.exit_code == 0, passed.output
    assert "PASSED: churn/1 on fresh" in passed.output
    blocked = cli(governed, "models", "alias", "set", "churn", "champion", "2")
    assert blocked.exit_code == 2 and "roc_auc" in blocked.stderr


def test_evaluate_without_a_policy_says_how_to_set_one(registered: Path) -> None:
    result = cli(registered, "models", "evaluate", "churn/1")
    assert result.exit_code == 2 and "policy set" in result.stderr


# -- approvals ---------------------------------------------------------------------------------


def request_id(result: Result) -> str:
    found = _REQUEST_ID.search(result.output)
    assert found, result.output
    return found.group(1)


def test_request_and_approve_as_different_users(governed: Path) -> None:
    assert cli(governed, "models", "evaluate", "churn/1").exit_code == 0
    blocked = cli(governed, "--user", "alice", "models", "alias", "set", "churn", "champion", "1")
    assert blocked.exit_code == 2 and "approval" in blocked.stderr
    asked = cli(governed, "models", "request", "churn", "champion", "1", "--comment", "better",
                "--user", "alice")  # fmt: skip
    assert asked.exit_code == 0, asked.output
    rid = request_id(asked)
    own = cli(governed, "--user", "alice", "models", "approve", rid)
    assert own.exit_code == 2 and "cannot approve" in own.stderr
    approved = cli(governed, "--user", "bob", "models", "approve", rid, "--comment", "ok")
    assert approved.exit_code == 0 and "APPROVED" in approved.output
    moved = cli(governed, "--user", "alice", "models", "alias", "set", "churn", "champion", "1")
    assert moved.exit_code == 0, moved.output
    listed = cli(governed, "models", "requests", "--model", "churn", "--status", "applied")
    assert rid in listed.output and "alice" in listed.output


def test_reject_needs_a_comment(governed: Path) -> None:
    rid = request_id(
        cli(governed, "--user", "alice", "models", "request", "churn", "champion", "1")
    )
    assert cli(governed, "--user", "bob", "models", "reject", rid).exit_code == 2
    rejected = cli(governed, "--user", "bob", "models", "reject", rid, "--comment", "not yet")
    assert rejected.exit_code == 0 and "REJECTED" in rejected.output


# -- audit -------------------------------------------------------------------------------------


def test_audit_verify_anchor_export_and_log(governed: Path, tmp_path: Path) -> None:
    rid = request_id(
        cli(governed, "--user", "alice", "models", "request", "churn", "champion", "1")
    )
    cli(governed, "--user", "bob", "models", "approve", rid)
    verified = cli(governed, "audit", "verify")
    assert verified.exit_code == 0 and "audit log ok" in verified.output
    anchor = cli(governed, "audit", "anchor").stdout.strip()
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", anchor)
    assert cli(governed, "audit", "verify", "--anchor", anchor).exit_code == 0
    out = tmp_path / "audit.jsonl"
    assert cli(governed, "audit", "export", "--out", str(out)).exit_code == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert f"{events[-1]['seq']}:{events[-1]['hash']}" == anchor
    assert {"alice", "bob"} <= {e["actor"] for e in events}
    exported = cli(governed, "audit", "export")
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line)["seq"] for line in exported.stdout.splitlines()] == [
        e["seq"] for e in events
    ]
    log = cli(governed, "audit", "log", "--target-type", "approval_request", "--limit", "5")
    assert "approval.approve" in log.output and "bob" in log.output


def test_audit_verify_names_the_first_tampered_event(governed: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{governed / 'loopwright.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
    engine.dispose()
    result = cli(governed, "audit", "verify")
    assert result.exit_code == 1
    assert "event 2" in result.stderr
    assert cli(governed, "audit", "anchor").exit_code == 2


def test_a_bad_anchor_names_the_option(governed: Path) -> None:
    result = cli(governed, "audit", "verify", "--anchor", "nonsense")
    assert result.exit_code == 2 and "SEQ:HASH" in result.stderr
