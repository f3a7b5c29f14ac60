"""Alert rules: YAML, persistence, dedup and resolve; notifications to a real HTTP receiver."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loopwright.errors import InvalidInput
from loopwright.monitoring.alerts import (
    Alert,
    AlertRule,
    AlertRules,
    Notifier,
    Notify,
    alert_id,
    evaluate_rules,
    load_rules,
    sign,
    verify,
)

DAY = 86_400_000
T0 = 1_700_000_000_000

RULES_YAML = """
rules:
  - name: auc-drop
    series: perf.roc_auc.delta
    op: "<"
    threshold: -0.05
    for_windows: 2
    severity: critical
    notify:
      - log: true
      - webhook: http://127.0.0.1:9/hook
        headers: {Authorization: Bearer abc}
        retries: 2
        backoff_s: 0.1
  - name: drift
    series: drift.share
    op: ">="
    threshold: 0.3
"""


def _days(*values: float | None) -> list[tuple[int, float | None]]:
    return [(T0 + i * DAY, v) for i, v in enumerate(values)]


# -- rules as YAML ----------------------------------------------------------------------------


def test_rules_parse_from_yaml_with_defaults() -> None:
    rules = load_rules(RULES_YAML)
    auc, drift = rules
    assert (auc.name, auc.series, auc.op, auc.threshold, auc.for_windows) == (
        "auc-drop",
        "perf.roc_auc.delta",
        "<",
        -0.05,
        2,
    )
    assert [n.kind for n in auc.notify] == ["log", "webhook"]
    assert auc.notify[1].headers == {"Authorization": "Bearer abc"}
    assert (auc.notify[1].retries, auc.notify[1].backoff_s) == (2, 0.1)
    assert drift.for_windows == 1 and drift.severity == "warning"
    assert drift.notify == [Notify(log=True)]
    # a bare list, a mapping and one rule on its own all read the same
    assert load_rules(AlertRules.from_yaml(RULES_YAML).model_dump()["rules"]) == rules
    assert AlertRule.from_yaml(rules[1].to_yaml()) == drift


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"thresold": 1}, "rules.1.thresold", "unknown key"),
        ({"op": "=="}, "rules.1.op", "'>'"),
        ({"for_windows": 0}, "rules.1.for_windows", "greater than or equal to 1"),
        ({"threshold": "nan"}, "rules.1.threshold", "finite"),
        ({"notify": [{"log": True, "webhook": "http://x"}]}, "rules.1.notify.0", "exactly one"),
        ({"notify": [{"webhook": "ftp://x"}]}, "rules.1.notify.0.webhook", "http"),
        ({"notify": [{"webhook": "http://x", "retries": -1}]}, "rules.1.notify.0.retries", "0"),
        ({"severity": "page"}, "rules.1.severity", "critical"),
    ],
)
def test_rule_errors_name_the_yaml_path(patch: dict, field: str, words: str) -> None:
    data: dict[str, Any] = AlertRules.from_yaml(RULES_YAML).model_dump(exclude_none=True)
    data["rules"][1].update(patch)
    with pytest.raises(InvalidInput) as err:
        load_rules(data)
    assert err.value.field == field
    assert words in err.value.message


def test_duplicate_rule_names_and_bad_yaml_are_refused() -> None:
    rule = {"name": "x", "series": "drift.share", "op": ">", "threshold": 0.1}
    with pytest.raises(InvalidInput, match="repeated: x"):
        load_rules([rule, rule])
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_rules("rules: [")
    assert load_rules("") == []


# -- evaluation -------------------------------------------------------------------------------


def _rule(**kw: Any) -> AlertRule:
    base = {"name": "auc", "series": "perf.roc_auc", "op": "<", "threshold": 0.7}
    return AlertRule.model_validate({**base, **kw})


def test_for_windows_fires_only_when_the_last_n_windows_all_breach() -> None:
    rule = _rule(for_windows=3)
    steps = [
        (_days(0.8, 0.6, 0.6), "pending", 2),
        (_days(0.6, 0.8, 0.6, 0.6), "pending", 2),  # an ok window resets the run
        (_days(0.6, 0.6, None, 0.6), "pending", 1),  # so does an undefined one
        (_days(0.6, 0.6, 0.6, 0.9), "ok", 0),  # breaches long ago do not count
    ]
    for points, status, streak in steps:
        (t,) = evaluate_rules([rule], {"perf.roc_auc": points}, [], "churn")
        assert (t.action, t.status, t.breaching_windows) == ("unchanged", status, streak)
        assert not t.notifies and t.alert is None
    (t,) = evaluate_rules([rule], {"perf.roc_auc": _days(0.8, 0.65, 0.6, 0.69)}, [], "churn")
    assert (t.action, t.status, t.breaching_windows) == ("fire", "firing", 3)
    alert = t.alert
    assert alert is not None and t.notifies
    assert alert.window_end_ms == T0 + 3 * DAY and alert.value == 0.69
    assert alert.fired_at_ms == alert.window_end_ms  # data time, not wall time
    assert alert.id == alert_id("churn", "auc", T0 + 3 * DAY)
    assert alert.message == "auc on churn: perf.roc_auc = 0.69 < 0.7 for 3 windows"


def test_every_operator() -> None:
    for op, value, breach in [
        (">", 0.7, False),
        (">", 0.71, True),
        (">=", 0.7, True),
        ("<", 0.7, False),
        ("<=", 0.7, True),
    ]:
        (t,) = evaluate_rules([_rule(op=op)], {"perf.roc_auc": _days(value)})
        assert (t.action == "fire") is breach, (op, value)


def test_a_firing_alert_is_not_fired_again_and_resolves_when_the_window_clears() -> None:
    rule = _rule()
    (first,) = evaluate_rules([rule], {"perf.roc_auc": _days(0.6)}, [], "churn")
    assert first.action == "fire" and first.alert is not None
    open_alerts = [first.alert]

    # re-running on the same windows, and a new breaching window: no new alert
    for points in (_days(0.6), _days(0.6, 0.5)):
        (again,) = evaluate_rules([rule], {"perf.roc_auc": points}, open_alerts, "churn")
        assert (again.action, again.status) == ("unchanged", "firing")
        assert again.alert == first.alert and not again.notifies

    # another deployment's alert does not count for this one
    (other,) = evaluate_rules([rule], {"perf.roc_auc": _days(0.6)}, open_alerts, "fraud")
    assert other.action == "fire" and other.alert is not None
    assert other.alert.id != first.alert.id

    (done,) = evaluate_rules([rule], {"perf.roc_auc": _days(0.6, 0.5, 0.75)}, open_alerts, "churn")
    assert (done.action, done.status) == ("resolve", "ok") and done.notifies
    assert done.alert is not None and done.alert.id == first.alert.id
    assert done.alert.state == "resolved"
    assert (done.alert.resolved_at_ms, done.alert.resolved_value) == (T0 + 2 * DAY, 0.75)
    assert "resolved" in done.message

    # a resolved alert is history: the next breach is a new alert
    (anew,) = evaluate_rules([rule], {"perf.roc_auc": _days(0.6, 0.5, 0.75, 0.6)}, [done.alert])
    assert anew.action == "fire" and anew.alert is not None and anew.alert.id != first.alert.id


def test_a_missing_series_is_no_data_not_a_breach() -> None:
    rules = [_rule(), _rule(name="err", series="serving.error_rate", op=">", threshold=0.0)]
    got = evaluate_rules(rules, {"perf.roc_auc": _days(0.9, None)}, [], "churn")
    assert [(t.action, t.status) for t in got] == [("unchanged", "no_data")] * 2
    assert "no data" in got[0].message and "no series" in got[1].message
    # no data never resolves an open alert either
    (fired,) = evaluate_rules([rules[0]], {"perf.roc_auc": _days(0.5)}, [], "churn")
    assert fired.alert is not None
    (kept,) = evaluate_rules([rules[0]], {}, [fired.alert], "churn")
    assert (kept.action, kept.status, kept.alert) == ("unchanged", "no_data", fired.alert)


def test_points_are_ordered_by_window_and_nan_is_no_value() -> None:
    rule = _rule(for_windows=2)
    shuffled = [(T0 + 2 * DAY, 0.5), (T0, 0.9), (T0 + DAY, 0.6)]
    (t,) = evaluate_rules([rule], {"perf.roc_auc": shuffled})
    assert t.action == "fire" and t.window_end_ms == T0 + 2 * DAY
    (t,) = evaluate_rules([rule], {"perf.roc_auc": [(T0, 0.5), (T0 + DAY, float("nan"))]})
    assert t.status == "no_data"


def test_alert_round_trips_through_json() -> None:
    (t,) = evaluate_rules([_rule()], {"perf.roc_auc": _days(0.5)}, [], "churn", now_ms=42)
    assert t.alert is not None and t.alert.fired_at_ms == 42
    assert Alert.from_dict(json.loads(json.dumps(t.alert.to_dict()))) == t.alert


# -- notifications ----------------------------------------------------------------------------


class _Receiver:
    """A real HTTP server on 127.0.0.1 answering with the scripted statuses, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(
                    {"headers": dict(self.headers), "body": json.loads(body), "raw": body}
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                if status == 429:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(b"busy" if status >= 500 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _fired(rule: AlertRule) -> Any:
    (t,) = evaluate_rules([rule], {rule.series: _days(0.9, 0.6)}, [], "churn")
    assert t.action == "fire"
    return t


def _webhook(url: str, **kw: Any) -> Notify:
    return Notify.model_validate({"webhook": url, "backoff_s": 0.01, **kw})


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    with Notifier() as n:
        yield n


def test_webhook_retries_5xx_until_the_receiver_accepts(notifier: Notifier) -> None:
    with _Receiver([503, 503]) as receiver:
        hook = _webhook(receiver.url, headers={"Authorization": "Bearer s3cret"})
        t = _fired(_rule(severity="critical", notify=[hook.model_dump()]))
        (delivery,) = notifier.notify([t])
    assert (delivery.ok, delivery.attempts, delivery.status, delivery.error) == (
        True,
        3,
        200,
        None,
    )
    assert len(receiver.requests) == 3
    bodies = [r["body"] for r in receiver.requests]
    assert bodies[0] == bodies[1] == bodies[2]  # a retry sends the same request
    body, alert = bodies[0], t.alert
    assert body["transition"] == "fire"
    assert (body["deployment"], body["rule"], body["severity"]) == ("churn", "auc", "critical")
    assert (body["series"], body["op"], body["value"], body["threshold"]) == (
        "perf.roc_auc",
        "<",
        0.6,
        0.7,
    )
    assert body["window"] == {"end_ms": T0 + DAY, "end": "2023-11-15T22:13:20Z"}
    assert body["message"] == alert.message and body["id"] == alert.id
    assert body["alert"] == alert.to_dict()
    headers = {k.lower(): v for k, v in receiver.requests[0]["headers"].items()}
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == f"{alert.id}:fire"


def test_429_is_retried_and_a_resolution_is_delivered_too(notifier: Notifier) -> None:
    with _Receiver([429]) as receiver:
        rule = _rule(notify=[_webhook(receiver.url).model_dump()])
        fired = _fired(rule)
        (done,) = evaluate_rules(
            [rule], {rule.series: _days(0.9, 0.6, 0.8)}, [fired.alert], "churn"
        )
        (delivery,) = notifier.notify([done])
    assert delivery.ok and delivery.attempts == 2 and delivery.transition == "resolve"
    body = receiver.requests[-1]["body"]
    assert (body["transition"], body["state"], body["value"]) == ("resolve", "resolved", 0.8)


def test_a_4xx_is_not_retried(notifier: Notifier) -> None:
    with _Receiver([400, 400, 400]) as receiver:
        t = _fired(_rule(notify=[_webhook(receiver.url).model_dump()]))
        (delivery,) = notifier.notify([t])
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 400)
    assert delivery.error is not None and "HTTP 400" in delivery.error
    assert len(receiver.requests) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_receiver_ends_after_the_bounded_attempts(
    notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    t = _fired(_rule(notify=[_webhook(url, retries=2).model_dump()]))
    with caplog.at_level(logging.WARNING, logger="loopwright.alerts"):
        (delivery,) = notifier.notify([t])
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, None)
    assert delivery.error is not None and delivery.error.startswith("ConnectError")
    assert any("webhook delivery failed" in r.getMessage() for r in caplog.records)


def test_the_total_time_bound_stops_retries_before_a_long_backoff(notifier: Notifier) -> None:
    with _Receiver([503, 503]) as receiver:
        hook = _webhook(receiver.url, retries=5, backoff_s=30, max_total_s=1)
        (delivery,) = notifier.notify([_fired(_rule(notify=[hook.model_dump()]))])
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 503)
    assert delivery.error is not None and "max_total_s=1" in delivery.error


def test_log_lines_are_one_line_of_key_values(
    notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    t = _fired(_rule(severity="critical"))
    with caplog.at_level(logging.INFO, logger="loopwright.alerts"):
        (delivery,) = notifier.notify([t])
        unchanged = evaluate_rules([_rule()], {"perf.roc_auc": _days(0.6)}, [t.alert], "churn")
        assert notifier.notify(unchanged) == []
    assert delivery.ok and delivery.kind == "log"
    (record,) = caplog.records
    assert record.name == "loopwright.alerts" and record.levelno == logging.CRITICAL
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith("alert transition=fire id=" + t.alert.id)
    for part in ("deployment=churn", "rule=auc", "value=0.6", "op=<", "threshold=0.7"):
        assert part in line.split(), part
    assert 'message="auc on churn: perf.roc_auc = 0.6 < 0.7"' in line


def test_a_delivery_never_raises(notifier: Notifier) -> None:
    t = _fired(_rule())
    bad = Notify.model_construct(webhook="http://[::1", log=None, headers={}, retries=0)
    (delivery,) = notifier.send(t.alert, t, [bad])
    assert not delivery.ok and delivery.error


def test_the_rules_in_the_docs_parse() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = load_rules(block)
    assert [r.name for r in rules] == ["auc-drop", "drift", "income-psi", "few-labels", "errors"]
    assert rules[0].notify[1].webhook == "https://hooks.example.com/loopwright"


def test_a_signed_webhook_verifies_at_the_receiver_and_headers_come_from_the_environment(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_KEY", "k3y")
    monkeypatch.setenv("PAGER_TOKEN", "t0ken")
    with _Receiver([]) as receiver:
        hook = _webhook(receiver.url, secret_env="ALERT_KEY",
                        headers={"Authorization": "Bearer ${PAGER_TOKEN}"})  # fmt: skip
        (delivery,) = notifier.notify([_fired(_rule(notify=[hook.model_dump()]))])
    assert delivery.ok
    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == "Bearer t0ken"  # the YAML held only the variable's name
    signature = headers["x-loopwright-signature"]
    assert verify(b"k3y", request["raw"], signature)
    assert not verify(b"other", request["raw"], signature)
    assert not verify(b"k3y", request["raw"] + b" ", signature)  # a changed body
    old = sign(b"k3y", request["raw"], at=int(time.time()) - 3600)
    assert not verify(b"k3y", request["raw"], old)  # a replay of an hour-old request


def test_a_missing_secret_fails_the_delivery_and_sends_nothing_unsigned(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_KEY", raising=False)
    with _Receiver([]) as receiver:
        hook = _webhook(receiver.url, secret_env="ALERT_KEY")
        (delivery,) = notifier.notify([_fired(_rule(notify=[hook.model_dump()]))])
    assert not delivery.ok and delivery.error is not None and "ALERT_KEY" in delivery.error
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"webhook": "http://x/hook", "secret_env": "not a name"}, "secret_env"),
        ({"webhook": "http://x/hook", "headers": {"A": "${1bad}"}}, "not a variable name"),
        ({"log": True, "secret_env": "ALERT_KEY"}, "belong to a webhook"),
    ],
)
def test_secrets_config_errors(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Notify.model_validate(entry)


def test_backoff_is_jittered_between_half_and_all_of_the_exponential_step() -> None:
    slept: list[float] = []
    with Notifier(sleep=slept.append) as notifier, _Receiver([503, 503]) as receiver:
        notifier._jitter = lambda: 0.5
        hook = _webhook(receiver.url, retries=2, backoff_s=0.2)
        (delivery,) = notifier.notify([_fired(_rule(notify=[hook.model_dump()]))])
    assert delivery.ok and delivery.attempts == 3
    assert slept == pytest.approx([0.1, 0.2])  # 0.2 x 2**k x 0.5
