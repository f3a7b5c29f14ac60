"""The module-level SDK (``lw.start_run`` and friends) and what happens at interpreter exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import loopwright as lw


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[Path]:
    lw.set_tracking_uri(str(tmp_path))
    yield tmp_path
    while lw.active_run() is not None:
        lw.end_run()
    lw.set_tracking_uri(None)


def test_module_level_logging_goes_to_the_active_run(tracking: Path) -> None:
    assert lw.get_tracking_uri() == str(tracking)
    with lw.start_run(experiment="churn", capture_environment=False) as run:
        assert lw.active_run() is run
        lw.log_params({"lr": 0.01})
        lw.log_metric("loss", 0.4)
        lw.log_metrics({"loss": 0.3, "acc": 0.8})
        lw.set_tag("team", "risk")
    stored = lw.Client(str(tracking)).get_run(run.id)
    assert stored.params == {"lr": "0.01"}
    assert stored.metrics["loss"] == 0.3 and stored.metrics["acc"] == 0.8
    assert stored.tags["team"] == "risk"
    assert lw.active_run() is None


def test_nested_runs_need_to_say_so(tracking: Path) -> None:
    with lw.start_run(experiment="hpo", capture_environment=False) as parent:
        with pytest.raises(lw.InvalidInput) as info:
            lw.start_run()
        assert info.value.field == "nested"
        with lw.start_run(nested=True, capture_environment=False) as child:
            lw.log_metric("trial_auc", 0.7)
        assert lw.active_run() is parent
    stored = lw.Client(str(tracking)).get_run(child.id)
    assert stored.parent_run_id == parent.id
    assert lw.Client(str(tracking)).get_experiment(stored.experiment_id).name == "hpo"


def test_logging_without_a_run_is_a_clear_error(tracking: Path) -> None:
    with pytest.raises(lw.InvalidInput, match="no active run"):
        lw.log_metric("loss", 1.0)


SCRIPT = textwrap.dedent(
    """
    import sys
    import loopwright as lw
    lw.set_tracking_uri(sys.argv[1])
    run = lw.start_run(experiment="exit", capture_environment=False)
    print(run.id, flush=True)
    for i in range(1000):
        lw.log_metric("loss", 1.0 / (i + 1))
    if sys.argv[2] == "crash":
        raise RuntimeError("boom")
    """
)


@pytest.mark.parametrize(("mode", "status"), [("clean", "FINISHED"), ("crash", "FAILED")])
def test_exit_flushes_buffered_points_and_sets_the_status(
    tmp_path: Path, mode: str, status: str
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "s"), mode], capture_output=True, text=True
    )
    run_id = proc.stdout.split()[0]
    client = lw.Client(str(tmp_path / "s"))
    run = client.get_run(run_id)
    assert run.status.value == status
    assert len(client.get_metric_history(run_id, "loss")) == 1000
    if mode == "crash":
        assert "RuntimeError: boom" in (run.error or "")
