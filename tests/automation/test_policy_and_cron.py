"""The retraining policy's YAML errors name the field; the cron matcher, exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopwright.automation import CronSchedule, RetrainPolicy
from loopwright.errors import InvalidInput

BASE = """
model: churn
deployment: churn-api
train: {entry_point: "pkg.mod:fit"}
"""


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


# -- policy -----------------------------------------------------------------------------------


def test_a_minimal_policy_gets_the_documented_defaults() -> None:
    policy = RetrainPolicy.from_yaml(BASE)
    assert policy.challenger.mode == "shadow" and policy.challenger.alias == "challenger"
    assert policy.promote.alias == "champion" and policy.data.window == "7d"
    assert policy.experiment == "churn-retraining"
    assert RetrainPolicy.from_yaml(policy.to_yaml()) == policy
    assert policy.digest == RetrainPolicy.from_yaml(BASE + "\n").digest


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("challenger: {marginn: 0.1}", "challenger.marginn", "expected one of mode, alias"),
        ("triggers: {schedule: '61 * * * *'}", "triggers.schedule", "61 is outside 0-59"),
        ("triggers: {schedule: '0 3 * *'}", "triggers.schedule", "must have 5 fields"),
        ("triggers: {new_labels: 0}", "triggers.new_labels", "greater than or equal to 1"),
        ("challenger: {max_wait: 2 days}", "challenger.max_wait", "a number and a unit"),
        ("challenger: {metric: auroc}", "challenger.metric", "unknown metric 'auroc'"),
        ("challenger: {weight: 0.2}", "challenger", "weight applies to mode: canary only"),
        ("challenger: {mode: blue-green}", "challenger.mode", "'shadow' or 'canary'"),
        ("challenger: {alias: champion}", "policy", "the challenger needs its own alias"),
        ("promote: {reason: 'v{versio}'}", "promote.reason", "unknown placeholder {versio}"),
        ("data: {window: 1w}", "data.window", "a number and a unit"),
        ("data: {include_logged: false}", "data", "give a reference dataset"),
    ],
)
def test_bad_policy_yaml_names_the_field(extra: str, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RetrainPolicy.from_yaml(BASE + extra)
    assert caught.value.field == field
    assert words in caught.value.message
    assert caught.value.message.startswith(f"retraining policy: {field}: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("model: churn\ndeployment: x\ntrain: {entry_point: 'no colon'}", "train.entry_point"),
        ("model: churn/2\ndeployment: x\ntrain: {entry_point: 'a:b'}", "model"),
        ("model: churn\ntrain: {entry_point: 'a:b'}", "deployment"),
        ("model: churn\ndeployment: x", "train"),
        ("- just\n- a list", "policy"),
        ("model: [unclosed", "policy"),
    ],
)
def test_more_policy_errors(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RetrainPolicy.from_yaml(text)
    assert caught.value.field == field


def test_an_unimportable_entry_point_is_reported_when_training() -> None:
    from loopwright.automation.executors import load_entry_point

    with pytest.raises(InvalidInput, match=r"cannot import 'no_such_pkg\.mod'") as caught:
        load_entry_point("no_such_pkg.mod:fit")
    assert caught.value.field == "train.entry_point"
    with pytest.raises(InvalidInput, match="has no 'nope'"):
        load_entry_point("tests.automation.trainers:nope")
    assert callable(load_entry_point("tests.automation.trainers:fit_good"))


# -- cron -------------------------------------------------------------------------------------


def test_cron_matches_minutes_hours_and_weekdays() -> None:
    c = CronSchedule.parse("*/15 9-17 * * mon-fri")
    assert c.matches(ms(2024, 5, 6, 9, 0))  # Monday
    assert c.matches(ms(2024, 5, 6, 17, 45))
    assert not c.matches(ms(2024, 5, 6, 18, 0))
    assert not c.matches(ms(2024, 5, 6, 9, 10))
    assert not c.matches(ms(2024, 5, 5, 9, 0))  # Sunday
    assert c.matches(datetime(2024, 5, 10, 12, 30, 59, tzinfo=UTC))  # Friday, within the minute


def test_cron_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    c = CronSchedule.parse("0 0 1 * sun")
    assert c.matches(ms(2024, 5, 1, 0, 0))  # the 1st, a Wednesday
    assert c.matches(ms(2024, 5, 5, 0, 0))  # a Sunday
    assert not c.matches(ms(2024, 5, 2, 0, 0))
    only_days = CronSchedule.parse("0 0 1,15 * *")
    assert only_days.matches(ms(2024, 5, 15, 0, 0)) and not only_days.matches(ms(2024, 5, 5))


def test_cron_names_steps_ranges_and_sunday_as_seven() -> None:
    assert CronSchedule.parse("0 0 * jan,JUL 7").matches(ms(2024, 7, 7, 0, 0))
    assert CronSchedule.parse("5/20 * * * *").minutes == (5, 25, 45)
    assert CronSchedule.parse("0 1-10/3 * * *").hours == (1, 4, 7, 10)
    assert CronSchedule.parse("@daily").expression == "@daily"
    assert CronSchedule.parse("@weekly").weekdays == frozenset({0})


def test_cron_next_after_is_strictly_after_and_crosses_months_and_years() -> None:
    daily = CronSchedule.parse("0 3 * * *")
    assert daily.next_after(ms(2024, 5, 1, 2, 59)) == ms(2024, 5, 1, 3, 0)
    assert daily.next_after(ms(2024, 5, 1, 3, 0)) == ms(2024, 5, 2, 3, 0)
    assert daily.next_after(ms(2024, 5, 1, 3, 0) + 30_000) == ms(2024, 5, 2, 3, 0)
    assert CronSchedule.parse("30 23 31 12 *").next_after(ms(2024, 5, 1)) == ms(
        2024, 12, 31, 23, 30
    )
    assert CronSchedule.parse("0 0 29 2 *").next_after(ms(2025, 1, 1)) == ms(2028, 2, 29)
    assert CronSchedule.parse("0 0 31 2 *").next_after(ms(2025, 1, 1)) is None
    assert daily.due(ms(2024, 5, 1, 4, 0), ms(2024, 5, 2, 2, 0)) is None
    assert daily.due(ms(2024, 5, 1, 4, 0), ms(2024, 5, 3, 5, 0)) == ms(2024, 5, 2, 3, 0)


def test_cron_next_after_agrees_with_a_minute_by_minute_scan() -> None:
    start = ms(2024, 2, 27, 22, 0)
    for expr in ("*/7 */5 * * *", "0 0 1 * mon", "15 12 * feb,mar thu", "0 0 29 * *"):
        c = CronSchedule.parse(expr)
        t = start
        expected = None
        for step in range(1, 60 * 24 * 40):
            if c.matches(start + step * 60_000):
                expected = start + step * 60_000
                break
        assert c.next_after(t) == expected, expr


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "must have 5 fields"),
        ("60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day of month field '0'"),
        ("* * * 13 *", "month field"),
        ("* * * * 8", "day of week field"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("5-1 * * * *", "runs backwards"),
        ("* * * foo *", "'foo' is not a number or a name"),
        ("1,,2 * * * *", "empty list item"),
        ("", "non-empty"),
    ],
)
def test_cron_errors_say_which_field(expr: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        CronSchedule.parse(expr)
    assert words in caught.value.message and caught.value.field == "schedule"
