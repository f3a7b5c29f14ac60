"""``executor: ray`` runs the same entry point as a Ray task on a local Ray instance; the driver
logs and registers the model, so the registered result is the local one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.automation.conftest import DAY, DAY0, MODEL, make_world, population


@pytest.mark.slow
def test_the_ray_executor_registers_what_the_local_one_does(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray package is a dev dependency")
    from loopwright.automation import RayExecutor

    results = {}
    executor = RayExecutor()
    try:
        for name in ("local", "ray"):
            world = make_world(tmp_path / name)
            try:
                world.serve(1)
                policy = world.policy(
                    train={"entry_point": "tests.automation.trainers:fit_good", "executor": name}
                )
                controller = world.controller(executor=executor if name == "ray" else None)
                events = controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
                assert [e.kind for e in events][-4:] == [
                    "trained",
                    "registered",
                    "gates",
                    "challenger",
                ]
                trained = events[-4].detail
                mv = world.client.registry.get_version(MODEL, events[-3].detail["version"])
                scores = world.client.registry.load(mv).predict_proba(
                    population(50, 99)[["x1", "x2"]]
                )
                results[name] = (trained, mv, scores)
            finally:
                world.client.close()
        assert executor.started
    finally:
        executor.shutdown()

    (local, local_mv, local_scores), (ray, ray_mv, ray_scores) = results["local"], results["ray"]
    assert ray["executor"] == "ray" and local["executor"] == "local"
    assert ray["dataset"] == local["dataset"]  # the same training set, by digest
    assert ray["metrics"] == local["metrics"]
    assert ray_mv.version == local_mv.version == 2
    assert ray_mv.flavor == local_mv.flavor and ray_mv.signature == local_mv.signature
    # the same fitted model (the skops file's bytes carry a timestamp, so compare answers)
    assert (ray_scores == local_scores).all()
