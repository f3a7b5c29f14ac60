"""The retraining loop end to end on a real embedded store, a real scikit-learn champion and a
prediction log with chosen timestamps (see ``conftest.py`` for the world)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopwright.automation import describe
from loopwright.errors import InvalidInput
from tests.automation.conftest import DAY, DAY0, HOUR, MODEL, World


def kinds(events: list) -> list[str]:
    return [e.kind for e in events]


def test_trigger_trains_registers_gates_and_sets_the_challenger(world: World) -> None:
    world.serve(1)  # labelled traffic of day 1, answered by the champion
    controller = world.controller()
    events = controller.trigger(world.policy(), "quarterly refresh", now_ms=DAY0 + 2 * DAY)

    assert kinds(events) == ["policy", "triggered", "trained", "registered", "gates", "challenger"]
    trained, registered = events[2].detail, events[3].detail
    registry = world.client.registry
    run = world.client.get_run(trained["run_id"])
    assert run.status.value == "FINISHED"
    assert run.tags["lw.loop.cycle"] == events[1].cycle
    assert trained["logged"]["rows"] == 300 and trained["reference"]["rows"] == 800
    assert trained["dataset"]["rows"] == round(1100 * 0.8)
    assert trained["metrics"]["val_roc_auc"] > 0.85
    # lineage: the run's inputs are the registered training set and the reference, by digest
    by_context = {d.context: d.digest for d in run.inputs}
    assert by_context["train"] == trained["dataset"]["digest"]
    assert by_context["reference"] == registry.find_dataset("churn-ref")["digest"]
    assert by_context["logged"] == trained["logged"]["digest"]
    assert registry.find_dataset(trained["dataset"]["digest"])["num_rows"] == 880
    mv = registry.get_version(MODEL, registered["version"])
    assert mv.version == 2 and mv.run_id == run.id
    assert [
        v.version
        for v in registry.search_versions(MODEL, dataset_digest=trained["dataset"]["digest"])
    ] == [2]
    assert events[4].detail["passed"] and events[4].detail["policy"] is None
    assert registry.resolve(f"{MODEL}@challenger").version == 2
    assert registry.resolve(f"{MODEL}@champion").version == 1
    # every step is in the audit trail, chained
    audit = registry.audit_events(target_type="loop", target_id=MODEL)
    assert [e.action for e in audit] == [f"loop.{k}" for k in kinds(events)]
    assert audit[1].reason == "quarterly refresh" and audit[1].actor == "loop-bot"
    assert registry.verify_audit().ok


def test_tick_is_idempotent_and_waits_for_evidence(world: World) -> None:
    world.serve(1)
    controller = world.controller()
    policy = world.policy()
    controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + HOUR) == []
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + 2 * HOUR) == []
    runs = world.client.search_runs(policy.experiment).items
    assert len(runs) == 1
    assert len(world.client.registry.search_versions(MODEL)) == 2
    assert controller.history(MODEL).phase == "challenger"
    with pytest.raises(Exception, match="in progress"):
        controller.trigger(policy, "again", now_ms=DAY0 + 2 * DAY + 3 * HOUR)


def test_promotes_a_better_challenger_compared_on_the_same_requests(world: World) -> None:
    world.serve(1)
    controller = world.controller()
    policy = world.policy()
    controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    world.serve(2, shadow=2)  # champion answers, v2 shadows the same requests
    # before the labels arrive (12 h after the traffic) there is not enough evidence
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + 6 * HOUR) == []
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY)

    assert kinds(events) == ["compared", "promoted"]
    figures = events[0].detail
    assert figures["n_requests"] == 300 and figures["n_labelled"] == 300
    assert figures["challenger_value"] > figures["champion_value"] + 0.1
    assert 0 < figures["agreement"] < 1
    assert figures["better"] is True
    registry = world.client.registry
    assert registry.resolve(f"{MODEL}@champion").version == 2
    assert "beat champion v1 on roc_auc" in events[1].reason
    assert controller.tick(policy, now_ms=DAY0 + 3 * DAY + HOUR) == []
    story = [describe(e) for e in controller.history(MODEL).events]
    assert story[-1].startswith("promoted: churn@champion -> v2 (was v1)")
    assert "compared on 300 shared requests (300 labelled): roc_auc" in story[-2]


def test_refuses_a_worse_challenger_and_clears_the_alias(world: World) -> None:
    world.serve(1)
    controller = world.controller()
    policy = world.policy(train={"entry_point": "tests.automation.trainers:fit_bad"})
    controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    world.serve(2, shadow=2)
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY)

    assert kinds(events) == ["compared", "not_promoted"]
    assert events[0].detail["better"] is False
    assert "does not beat champion v1 on roc_auc" in events[1].reason
    assert events[1].detail["challenger_cleared"] is True
    registry = world.client.registry
    assert registry.resolve(f"{MODEL}@champion").version == 1
    assert "challenger" not in registry.get_model(MODEL).aliases
    assert controller.history(MODEL).phase == "idle"


GATES = """
dataset: churn-holdout
target: y
thresholds:
  roc_auc: {min: %s}
protected_aliases: [champion]
required_approvals: %d
"""


def test_failed_gates_end_the_cycle_before_any_traffic(world: World) -> None:
    world.serve(1)
    world.client.registry.set_policy(MODEL, GATES % (0.99, 0), reason="strict")
    controller = world.controller()
    events = controller.trigger(world.policy(), "refresh", now_ms=DAY0 + 2 * DAY)

    assert kinds(events)[-2:] == ["gates", "not_promoted"]
    gates = events[-2].detail
    assert gates["passed"] is False
    assert [c["name"] for c in gates["checks"] if not c["passed"]] == ["threshold:roc_auc>=0.99"]
    assert events[-1].reason.startswith("gates failed: ")
    assert events[-1].detail["stage"] == "gates"
    assert "challenger" not in world.client.registry.get_model(MODEL).aliases
    assert controller.tick(world.policy(), now_ms=DAY0 + 3 * DAY) == []


def test_promotion_waits_for_approval_and_finishes_once_granted(world: World) -> None:
    world.serve(1)
    world.client.registry.set_policy(MODEL, GATES % (0.6, 1), reason="risk policy")
    controller = world.controller()
    policy = world.policy()
    events = controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    assert events[-2].detail["passed"] is True
    world.serve(2, shadow=2)
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY)

    assert kinds(events) == ["compared", "awaiting_approval"]
    request_id = events[-1].detail["request_id"]
    registry = world.client.registry
    assert registry.get_request(request_id).requested_by == "loop-bot"
    assert registry.resolve(f"{MODEL}@champion").version == 1
    # pending: later ticks wait and do not ask twice
    assert controller.tick(policy, now_ms=DAY0 + 3 * DAY + HOUR) == []
    assert len(registry.list_requests(MODEL)) == 1
    with world.as_user("bob") as bob:
        bob.registry.decide(request_id, "APPROVE", "figures reviewed")
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY + 2 * HOUR)

    assert kinds(events) == ["promoted"]
    assert registry.resolve(f"{MODEL}@champion").version == 2
    assert registry.get_request(request_id).status.value == "APPLIED"
    moved = registry.audit_events(target_type="alias", target_id=f"{MODEL}@champion")[-1]
    assert moved.action == "alias.promote" and moved.after["approval_request"] == request_id
    assert events[0].detail["request_id"] == request_id


def test_a_rejected_request_ends_the_cycle_with_the_reason(world: World) -> None:
    world.serve(1)
    world.client.registry.set_policy(MODEL, GATES % (0.6, 1), reason="risk policy")
    controller = world.controller()
    policy = world.policy()
    controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    world.serve(2, shadow=2)
    request_id = controller.tick(policy, now_ms=DAY0 + 3 * DAY)[-1].detail["request_id"]
    with world.as_user("bob") as bob:
        bob.registry.decide(request_id, "REJECT", "wait for the quarter end")
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY + HOUR)

    assert kinds(events) == ["not_promoted"]
    assert "was rejected (bob: wait for the quarter end)" in events[0].reason
    assert world.client.registry.resolve(f"{MODEL}@champion").version == 1


def test_max_wait_without_enough_evidence_is_not_a_promotion(world: World) -> None:
    world.serve(1)
    controller = world.controller()
    policy = world.policy()
    controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    world.serve(2, n=40, shadow=2)  # 40 shared requests; the policy wants 150
    assert controller.tick(policy, now_ms=DAY0 + 3 * DAY) == []
    events = controller.tick(policy, now_ms=DAY0 + 4 * DAY)  # max_wait 2d has passed

    assert kinds(events) == ["compared", "not_promoted"]
    assert events[0].detail["n_requests"] == 40 and events[0].detail["enough"] is False
    assert events[1].reason.startswith("after max_wait 2d the challenger had 40 of 150 requests")


def test_training_failure_is_recorded_and_ends_the_cycle(world: World) -> None:
    controller = world.controller()
    policy = world.policy(train={"entry_point": "tests.automation.trainers:fit_fails"})
    events = controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)

    assert kinds(events) == ["policy", "triggered", "failed"]
    assert "RuntimeError: the training job ran out of patience" in events[-1].detail["error"]
    run = world.client.get_run(events[-1].detail["run_id"])
    assert run.status.value == "FAILED"
    assert controller.history(MODEL).phase == "idle"


def test_a_crash_after_training_resumes_without_training_again(world: World) -> None:
    """What a controller killed between the run's end and its ``trained`` record leaves: a
    ``triggered`` event and a finished run tagged with the cycle. The next tick adopts the run."""
    from loopwright.automation.history import LoopEvent

    world.serve(1)
    policy = world.policy()
    controller = world.controller()
    controller.tick(policy, now_ms=DAY0 + DAY)  # records the policy
    registry = world.client.registry
    registry.record_event(
        "loop.triggered",
        "loop",
        MODEL,
        before={"phase": "idle"},
        after={"cycle": "c0ffee", "at_ms": DAY0 + 2 * DAY, "trigger": "manual"},
        reason="before the crash",
    )
    from sklearn.linear_model import LogisticRegression

    from tests.automation.conftest import population

    frame = population(300, 5)
    with world.client.start_run(policy.experiment, tags={"lw.loop.cycle": "c0ffee"}) as run:
        run.log_dataset(frame, "churn-retrain")
        model = LogisticRegression().fit(frame[["x1", "x2"]], frame["y"])
        run.log_model(model, "model", input_example=frame[["x1", "x2"]].head(5))
    events = controller.tick(policy, now_ms=DAY0 + 2 * DAY + HOUR)

    assert kinds(events) == ["trained", "registered", "gates", "challenger"]
    assert events[0].detail["resumed"] is True and events[0].detail["run_id"] == run.id
    assert len(world.client.search_runs(policy.experiment).items) == 1
    assert all(isinstance(e, LoopEvent) and e.cycle == "c0ffee" for e in events)


def test_a_canary_is_judged_on_its_own_requests(world: World) -> None:
    world.serve(1)
    controller = world.controller()
    policy = world.policy(
        challenger={
            "mode": "canary",
            "weight": 0.2,
            "min_requests": 100,
            "min_labels": 100,
            "metric": "roc_auc",
            "margin": 0.01,
        }
    )
    events = controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY)
    assert events[-1].detail["mode"] == "canary" and events[-1].detail["weight"] == 0.2
    world.serve(2, n=400)  # the champion's share
    world.serve(2, n=120, route="canary", version=2, seed=900)
    events = controller.tick(policy, now_ms=DAY0 + 3 * DAY)

    assert kinds(events) == ["compared", "promoted"]
    figures = events[0].detail
    assert figures["n_requests"] == 120 and figures["agreement"] is None
    assert figures["n_champion_labelled"] == 400


@pytest.mark.postgres
def test_the_approval_path_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from tests.automation.conftest import make_world
    from tests.conftest import _truncate

    _truncate(pg_url)
    world = make_world(tmp_path, pg_url)
    try:
        world.serve(1)
        world.client.registry.set_policy(MODEL, GATES % (0.6, 1), reason="risk policy")
        controller = world.controller()
        policy = world.policy()
        assert kinds(controller.trigger(policy, "refresh", now_ms=DAY0 + 2 * DAY))[-1] == (
            "challenger"
        )
        assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + HOUR) == []
        world.serve(2, shadow=2)
        events = controller.tick(policy, now_ms=DAY0 + 3 * DAY)
        assert kinds(events) == ["compared", "awaiting_approval"]
        with world.as_user("bob") as bob:
            bob.registry.decide(events[-1].detail["request_id"], "APPROVE", "ok")
        assert kinds(controller.tick(policy, now_ms=DAY0 + 3 * DAY + HOUR)) == ["promoted"]
        assert world.client.registry.resolve(f"{MODEL}@champion").version == 2
        assert len(world.client.search_runs(policy.experiment).items) == 1
        assert world.client.registry.verify_audit().ok
    finally:
        world.client.close()


def test_a_logged_reference_profile_is_the_traffic_the_challenger_learned_from(
    world: World,
) -> None:
    served = world.serve(1, n=400)  # the new normal, labelled
    controller = world.controller()
    policy = world.policy(data__reference_profile="logged")
    events = controller.trigger(policy, "re-baseline", now_ms=DAY0 + 2 * DAY)
    trained, registered = events[2].detail, events[3].detail
    assert trained["profile"]["source"] == "logged" and trained["profile"]["rows"] == 400
    assert registered["reference_profile"]["source"] == "logged"
    assert "drift reference: logged (400 rows)" in events[3].reason

    profile, source = world.client.monitor.store.get_reference_profile(
        MODEL, registered["version"], "features"
    )
    assert source == "reference_data" and profile["rows"] == 400
    x1 = next(f for f in profile["features"] if f["name"] == "x1")
    assert x1["mean"] == pytest.approx(served["x1"].mean())  # not the 800 reference rows'


def test_too_little_logged_traffic_falls_back_to_the_training_profile_and_says_so(
    world: World,
) -> None:
    world.serve(1, n=150)
    policy = world.policy(data__reference_profile="logged", data__min_profile_rows=200)
    events = world.controller().trigger(policy, "re-baseline", now_ms=DAY0 + 2 * DAY)
    profile = events[2].detail["profile"]
    assert profile["source"] == "training" and "only 150 logged rows" in profile["why"]
    assert "drift reference: training" in events[3].reason
    stored, _ = world.client.monitor.store.get_reference_profile(MODEL, 2, "features")
    assert stored["rows"] > 150  # the whole training set's


def test_reference_profile_must_be_training_or_logged(world: World) -> None:
    with pytest.raises(InvalidInput) as err:
        world.policy(data__reference_profile="yesterday")
    assert err.value.field == "data.reference_profile"
