"""One retraining controller per model at a time: the lease in the metadata database, two real
controller processes racing, and a controller killed inside its training run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from loopwright.backends.sql.leases import SqlLeases
from loopwright.backends.sql.store import SqlTrackingStore
from loopwright.errors import InvalidInput
from tests.automation.conftest import DAY, DAY0, MODEL, POLICY, World

LOOPWRIGHT = str(Path(sys.executable).parent / "loopwright")


def race(leases: SqlLeases, name: str, n: int = 8) -> list[bool]:
    """``n`` holders take one lease at the same moment; returns who got it."""
    barrier = threading.Barrier(n)
    got: list[bool] = [False] * n

    def take(i: int) -> None:
        barrier.wait()
        got[i] = leases.acquire(name, f"holder-{i}", 60_000).ok

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def check_lease_semantics(leases: SqlLeases) -> None:
    tag = uuid.uuid4().hex[:8]  # (a shared database may hold other runs' leases)
    assert sum(race(leases, f"loop:race-{tag}")) == 1
    name = f"loop:m-{tag}"
    first = leases.acquire(name, "a", 60_000)
    assert first.ok and first.previous is None
    refused = leases.acquire(name, "b", 60_000)
    assert not refused.ok and refused.lease.holder == "a"  # who holds it, and until when
    again = leases.acquire(name, "a", 60_000)  # the holder again: renewed
    assert again.ok and again.lease.acquired_at_ms == first.lease.acquired_at_ms
    later = again.lease.expires_at_ms + 1  # a (pretended) moment after a's lease ran out
    taken = leases.acquire(name, "b", 60_000, now=later)
    assert taken.ok and taken.previous is not None and taken.previous.holder == "a"
    assert not leases.renew(name, "a", 60_000) and not leases.release(name, "a")
    assert leases.release(name, "b") and leases.get(name) is None
    with pytest.raises(InvalidInput) as err:
        leases.acquire(name, "a", 0)
    assert err.value.field == "ttl"


def test_a_lease_has_one_holder_on_sqlite(world: World) -> None:
    store = world.client._open()[0]
    assert isinstance(store, SqlTrackingStore)
    check_lease_semantics(SqlLeases(store))


@pytest.mark.postgres
def test_a_lease_has_one_holder_on_postgresql(pg_url: str) -> None:
    store = SqlTrackingStore(pg_url).initialize()
    try:
        check_lease_semantics(SqlLeases(store))
    finally:
        store.close()


def held_policy(world: World, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A policy file whose training waits while ``hold`` exists; writes ``started``."""
    hold, started = tmp_path / "hold", tmp_path / "started"
    body = yaml.safe_load(POLICY)
    body["data"]["log_uri"] = world.log_uri
    body["train"] = {"entry_point": "tests.automation.trainers:fit_held",
                     "params": {"hold": str(hold), "started": str(started)}}  # fmt: skip
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(body))
    return policy, hold, started


def controller_process(world: World, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "250",
           "LOOPWRIGHT_CAPTURE_ENVIRONMENT": "false"}  # fmt: skip
    cmd = [LOOPWRIGHT, "--tracking-uri", str(world.root / "store"), "--user", "ops", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=Path(__file__).parents[2])  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
            raise AssertionError(f"the controller never started training: {out}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_controllers_never_train_one_model_at_once(world: World, tmp_path: Path) -> None:
    world.serve(1)
    policy, hold, started = held_policy(world, tmp_path)
    hold.write_text("hold")
    now = "2024-05-03T00:00:00Z"
    first = controller_process(world, "loop", "trigger", str(policy), "--reason", "drift",
                               "--now", now)  # fmt: skip
    try:
        wait_for(started, first)  # the first controller is inside its training run
        second = controller_process(world, "loop", "run", str(policy), "--once", "--now", now)
        second_out = second.communicate(timeout=120)[0]
    finally:
        hold.unlink(missing_ok=True)
        first_out = first.communicate(timeout=120)[0]
    assert second.returncode == 0, second_out
    assert "busy" in second_out and "holds 'churn'" in second_out
    assert first.returncode == 0, first_out
    assert "registered churn/2" in first_out
    versions = world.client.registry.search_versions(MODEL)
    assert sorted(v.version for v in versions) == [1, 2]  # one retrain, not two
    runs = world.client.search_runs(
        world.client.get_experiment_by_name("churn-retraining").id, max_results=10
    ).items
    assert len(runs) == 1


@pytest.mark.slow
def test_a_killed_controller_s_run_is_marked_orphaned_and_the_cycle_trains_again(
    world: World, tmp_path: Path
) -> None:
    world.serve(1)
    policy, hold, started = held_policy(world, tmp_path)
    hold.write_text("hold")
    proc = controller_process(world, "loop", "trigger", str(policy), "--reason", "drift",
                              "--now", "2024-05-03T00:00:00Z", "--lease-ttl", "2")  # fmt: skip
    try:
        wait_for(started, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    hold.unlink()
    experiment = world.client.get_experiment_by_name("churn-retraining")
    (stuck,) = world.client.search_runs(experiment.id, max_results=10).items
    assert stuck.status.value == "RUNNING"  # what the dead controller left

    controller = world.controller()
    lease = controller.lease(MODEL)
    assert lease is not None and lease.holder != controller.holder
    busy = controller.tick(world.policy(), now_ms=DAY0 + 2 * DAY)
    if time.time() * 1000 < lease.expires_at_ms:  # (always, unless this machine stalled 2 s)
        assert [e.kind for e in busy] == ["busy"] and lease.holder in (busy[0].reason or "")
    while time.time() * 1000 <= lease.expires_at_ms:  # the dead one stops renewing: it expires
        time.sleep(0.05)

    events = controller.tick(world.policy(), now_ms=DAY0 + 2 * DAY)
    events = [e for e in events if e.kind != "policy"]  # (this policy is not the file's)
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["orphaned", "trained", "registered"], kinds
    assert events[0].detail["run_id"] == stuck.id and "orphaned" in (events[0].reason or "")
    dead = world.client.get_run(stuck.id)
    assert dead.status.value == "FAILED" and "lw.loop.orphaned" in dead.tags
    assert events[1].detail["run_id"] != stuck.id
    assert world.client.registry.resolve(f"{MODEL}@challenger").version == 2
    story = controller.history(MODEL).current
    assert story is not None and "orphaned" in [s.kind for s in story.steps]
    assert controller.lease(MODEL) is None  # released at the end of the tick


def test_lease_ttl_is_validated(world: World) -> None:
    with pytest.raises(InvalidInput) as err:
        world.controller(lease_ttl_s=0)
    assert err.value.field == "lease_ttl_s"
