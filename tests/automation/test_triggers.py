"""What starts a cycle: an open alert, a due cron schedule, enough new labels -- each once."""

from __future__ import annotations

from loopwright.monitoring.config import MonitorConfig
from tests.automation.conftest import DAY, DAY0, DEPLOYMENT, HOUR, MODEL, World

MONITOR = """
deployment: churn-api
windows: ["1d"]
min_rows: 10
alerts:
  - {name: busy, series: serving.requests, op: ">", threshold: 100, severity: warning,
     notify: [{log: true}]}
"""


def test_an_open_alert_named_by_the_policy_triggers_one_cycle(world: World) -> None:
    world.serve(1)
    policy = world.policy(triggers={"alerts": ["busy"]})
    controller = world.controller()
    assert [e.kind for e in controller.tick(policy, now_ms=DAY0 + DAY + HOUR)] == ["policy"]
    world.client.monitor.run(
        DEPLOYMENT, "1d", now_ms=DAY0 + 2 * DAY + HOUR, config=MonitorConfig.from_yaml(MONITOR)
    )
    firing = world.client.monitor.alerts(DEPLOYMENT, state="firing")
    assert [a.rule for a in firing] == ["busy"]
    events = controller.tick(policy, now_ms=DAY0 + 2 * DAY + HOUR)

    assert [e.kind for e in events][:2] == ["triggered", "trained"]
    assert events[0].detail["trigger"] == "alert"
    assert events[0].detail["alerts"] == [firing[0].id]
    assert "busy" in events[0].reason
    # the cycle ends (the challenger is worse after max_wait); the same alert does not retrigger
    assert [e.kind for e in controller.tick(policy, now_ms=DAY0 + 5 * DAY)] == [
        "compared",
        "not_promoted",
    ]
    assert controller.tick(policy, now_ms=DAY0 + 5 * DAY + HOUR) == []


def test_an_alert_of_another_rule_does_not_trigger(world: World) -> None:
    world.serve(1)
    policy = world.policy(triggers={"alerts": ["auc-drop"]})
    controller = world.controller()
    controller.tick(policy, now_ms=DAY0 + DAY + HOUR)
    world.client.monitor.run(
        DEPLOYMENT, "1d", now_ms=DAY0 + 2 * DAY + HOUR, config=MonitorConfig.from_yaml(MONITOR)
    )
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + HOUR) == []


def test_a_cron_schedule_fires_once_per_due_time(world: World) -> None:
    world.serve(1)
    policy = world.policy(triggers={"schedule": "0 3 * * *"})
    controller = world.controller()
    start = DAY0 + 2 * DAY + 2 * HOUR  # 02:00
    assert [e.kind for e in controller.tick(policy, now_ms=start)] == ["policy"]
    assert controller.tick(policy, now_ms=start + HOUR - 60_000) == []  # 02:59
    events = controller.tick(policy, now_ms=start + HOUR)  # 03:00
    assert events[0].kind == "triggered"
    assert events[0].detail == {
        "trigger": "schedule",
        "schedule": "0 3 * * *",
        "due_ms": start + HOUR,
    }
    assert world.client.registry.resolve(f"{MODEL}@challenger").version == 2


def test_enough_new_labels_trigger_a_cycle(world: World) -> None:
    policy = world.policy(triggers={"new_labels": 250})
    controller = world.controller()
    controller.tick(policy, now_ms=DAY0 + DAY)  # the loop starts watching on day 1
    world.serve(1, n=200)  # labels arrive at 12:00 on day 1
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY) == []  # 200 < 250
    world.serve(2, n=100)
    assert controller.tick(policy, now_ms=DAY0 + 2 * DAY + 6 * HOUR) == []  # not arrived yet
    events = controller.tick(policy, now_ms=DAY0 + 2 * DAY + 12 * HOUR)
    assert events[0].kind == "triggered"
    assert events[0].detail["new_labels"] == 300 and events[0].detail["threshold"] == 250
    assert events[1].detail["logged"]["rows"] == 300


def test_a_changed_policy_is_recorded(world: World) -> None:
    controller = world.controller()
    first = controller.tick(world.policy(), now_ms=DAY0)
    again = controller.tick(world.policy(), now_ms=DAY0 + HOUR)
    changed = controller.tick(world.policy(challenger={"margin": 0.05}), now_ms=DAY0 + 2 * HOUR)
    assert [e.kind for e in first] == ["policy"] and again == []
    assert [e.reason for e in changed] == ["policy changed"]
    assert changed[0].detail["policy"]["challenger"]["margin"] == 0.05
