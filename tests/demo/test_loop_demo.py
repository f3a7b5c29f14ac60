"""The README's main job, shortened: the whole loop must tell the true story of the scenario."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from loopwright.cli.main import app
from loopwright.client import Client
from loopwright.demo.loop import MARKER, run_demo
from loopwright.demo.scenario import DRIFTING, STABLE
from loopwright.errors import InvalidInput


@pytest.mark.slow
def test_the_loop_detects_retrains_and_promotes_a_better_model(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = run_demo(root, days=11, per_day=1_000, console=Console(file=io.StringIO()))

    # drift: found on what the scenario moved, never on what it kept still
    assert result.drifted_features & set(STABLE) == set()
    assert {"income", "debt_ratio", "purpose", "utilization"} <= result.drifted_features
    assert result.drifted_features <= set(DRIFTING)
    assert result.drifted_by_day[1] == []  # day 1 is still the training population
    # an alert fired, a retrain happened, the challenger was promoted through bob's approval
    assert [a["rule"] for a in result.alerts if a.get("action") == "fire"] == ["input-drift"]
    assert result.retrained == [2]
    assert result.promoted == 2 and result.promoted_day is not None
    # v2's reference is the new normal it was trained on: once it answers, the alert resolves
    (resolved,) = [a for a in result.alerts if a.get("action") == "resolve"]
    assert resolved["rule"] == "input-drift" and resolved["day"] > result.promoted_day
    assert len(result.drifted_by_day[11]) <= 2  # drift share under the rule's 0.3
    (comparison,) = result.comparisons
    assert comparison["better"] and comparison["challenger_value"] > comparison["champion_value"]
    # and it really is better on the drifted traffic, re-scored on the same labelled requests
    assert result.auc["2"] > result.auc["1"] + 0.02
    assert result.audit_ok
    assert result.report is not None and "<svg" in result.report.read_text()
    assert json.loads((root / "story.json").read_text())["promoted"] == 2

    # the CLI tells the same story: drift verdicts per feature, and the loop's steps
    day6 = "2026-01-11T00:00:00Z"  # day 6: the drifted traffic, before the retrain
    report = CliRunner().invoke(
        app, ["--tracking-uri", str(root), "monitor", "report", "credit-api", "--start", day6,
              "--out", str(tmp_path / "r.html")], env={"COLUMNS": "200"}
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    verdicts = {line.split()[0]: line.split()[1] for line in report.output.splitlines()[1:10]}
    assert all(verdicts[f] == "no" for f in STABLE), report.output
    assert verdicts["purpose"] == verdicts["debt_ratio"] == "yes", report.output
    story = CliRunner().invoke(app, ["--tracking-uri", str(root), "loop", "status", "credit-risk"])
    assert story.exit_code == 0, story.output
    assert "triggered by alert input-drift" in story.output and "promoted" in story.output

    client = Client(str(root))
    try:
        assert client.registry.resolve("credit-risk@champion").version == 2
        actions = [e.action for e in client.registry.audit_events(limit=1000)]
        assert "loop.promoted" in actions and "loop.triggered" in actions
    finally:
        client.close()


def test_the_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInput) as info:
        run_demo(tmp_path, days=2, per_day=100, batch=50)
    assert info.value.field == "dir"
    assert (tmp_path / "precious.txt").exists() and not (tmp_path / MARKER).exists()


def test_the_demo_command_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    refused = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert refused.exit_code == 2 and "not a loopwright demo directory" in refused.output
    assert (tmp_path / "precious.txt").exists()
    too_short = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "d"), "--days", "1"])
    assert too_short.exit_code == 2 and "--days" in too_short.output
    assert not (tmp_path / "d").exists()
