"""``loopwright loop run|trigger|status`` on a terminal, against the world of ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from loopwright.cli.main import app
from tests.automation.conftest import POLICY, World

ENV = {
    "COLUMNS": "250",
    "LOOPWRIGHT_TRACKING_URI": None,
    "LOOPWRIGHT_ARTIFACTS_URI": None,
    "LOOPWRIGHT_USER": None,
    "LOOPWRIGHT_CAPTURE_ENVIRONMENT": "false",
}


def lw(world: World, *args: str) -> Result:
    store = str(world.root / "store")
    return CliRunner().invoke(app, ["--tracking-uri", store, "--user", "ops", *args], env=ENV)


def test_trigger_then_run_once_then_status_tells_the_story(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "churn.yaml"
    policy.write_text(POLICY)
    world.serve(1)
    result = lw(
        world,
        "loop",
        "trigger",
        str(policy),
        "--reason",
        "drift on x1",
        "--now",
        "2024-05-03T00:00:00Z",
    )
    assert result.exit_code == 0, result.output
    assert "triggered by a manual trigger by ops: drift on x1" in result.output
    assert "churn@challenger -> v2 as shadow" in result.output
    assert "waits for 150 shadow requests and 100 labels on v2" in result.output

    world.serve(2, shadow=2)
    result = lw(world, "loop", "run", str(policy), "--once", "--now", "2024-05-04T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "promoted: churn@champion -> v2 (was v1)" in result.output
    assert "churn: idle" in result.output

    result = lw(world, "loop", "status", "churn")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "cycle 1 ·" in out and "· promoted" in out
    for n, words in enumerate(
        [
            "triggered by a manual trigger by ops",
            "trained on dataset churn-retrain",
            "registered churn/2",
            "gates: none",
            "churn@challenger -> v2 as shadow",
            "compared on 300 shared requests (300 labelled): roc_auc",
            "promoted: churn@champion",
        ],
        start=1,
    ):
        line = next(line for line in out.splitlines() if words in line)
        assert f"{n}." in line, (n, line)

    result = lw(world, "loop", "status", "churn", "--json")
    kinds = [line.split('"kind": "')[1].split('"')[0] for line in result.output.splitlines()]
    assert kinds == [
        "policy",
        "triggered",
        "trained",
        "registered",
        "gates",
        "challenger",
        "compared",
        "promoted",
    ]


def test_run_once_with_nothing_due_says_idle(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "churn.yaml"
    policy.write_text(POLICY)
    result = lw(world, "loop", "run", str(policy), "--once")
    assert result.exit_code == 0, result.output
    assert "policy" in result.output and "churn: idle" in result.output
    assert lw(world, "loop", "run", str(policy), "--once").output.strip() == (
        "churn: idle (no cycle in progress)"
    )


def test_a_bad_policy_exits_2_naming_the_field(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(POLICY.replace("margin: 0.01", "margin: -1"))
    result = lw(world, "loop", "run", str(policy), "--once")
    assert result.exit_code == 2
    assert "retraining policy: challenger.margin: Input should be greater than or equal to 0" in (
        result.output
    )


def test_status_of_a_model_without_a_loop(world: World) -> None:
    result = lw(world, "loop", "status", "nothing-here")
    assert result.exit_code == 0
    assert "no retraining loop has run" in result.output


def test_trigger_while_a_cycle_runs_is_a_conflict(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "churn.yaml"
    policy.write_text(POLICY)
    world.serve(1)
    assert (
        lw(
            world, "loop", "trigger", str(policy), "--reason", "a", "--now", "2024-05-03T00:00:00Z"
        ).exit_code
        == 0
    )
    result = lw(world, "loop", "trigger", str(policy), "--reason", "b")
    assert result.exit_code != 0 and "is in progress (challenger)" in result.output
