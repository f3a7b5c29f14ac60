"""A small five-field cron matcher (UTC): when a scheduled retraining is due.

``minute hour day-of-month month day-of-week``, each field a comma list of ``*``, ``N``,
``A-B``, ``*/S``, ``A-B/S`` or ``A/S`` (from ``A`` to the field's end, every ``S``); months and
weekdays also by name (``jan``..``dec``, ``sun``..``sat``); weekday ``0`` and ``7`` are both
Sunday. ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly`` are shorthands.

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither starts with
``*``), a day matches if *either* does: ``0 3 1 * mon`` is 03:00 on the 1st and on Mondays.

The controller asks one question -- "has a scheduled time passed since the last retraining?" --
which is :meth:`CronSchedule.next_after` (the first matching minute strictly after a moment)
compared with now; that is enough, and it never replays every missed slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from loopwright.errors import InvalidInput

__all__ = ["CronSchedule"]

_FIELDS = (  # name, lowest, highest
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
#: How far :meth:`CronSchedule.next_after` looks ahead (28 years covers "Feb 29 on a Monday").
_HORIZON_DAYS = 28 * 366


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression; :meth:`parse` is the only way to build one."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day-of-month field starts with '*'
    any_weekday: bool  # the day-of-week field starts with '*'

    @classmethod
    def parse(cls, expression: str, field: str = "schedule") -> CronSchedule:
        """Parse ``expression``; a mistake is :class:`InvalidInput` naming the cron field."""
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidInput("a cron schedule must be a non-empty string", field=field)
        text = " ".join(expression.split())
        body = _SHORTHANDS.get(text.lower(), text)
        parts = body.split(" ")
        if len(parts) != 5:
            raise InvalidInput(
                f"cron schedule {expression!r} must have 5 fields (minute hour day-of-month "
                f"month day-of-week) or be one of {', '.join(_SHORTHANDS)}; got {len(parts)}",
                field=field,
            )
        sets = [
            _parse_field(part, name, low, high, expression, field)
            for part, (name, low, high) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(
            expression=text,
            minutes=tuple(sorted(sets[0])),
            hours=tuple(sorted(sets[1])),
            days=frozenset(sets[2]),
            months=frozenset(sets[3]),
            weekdays=weekdays,
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )

    def __str__(self) -> str:
        return self.expression

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays  # Python: Monday 0; cron: Sunday 0
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def matches(self, moment: datetime | int) -> bool:
        """Whether the minute holding ``moment`` (a datetime or ms since the epoch) is scheduled."""
        at = _utc(moment)
        return at.minute in self.minutes and at.hour in self.hours and self.day_matches(at.date())

    def next_after(self, moment: datetime | int) -> int | None:
        """The first scheduled minute strictly after ``moment``, in ms since the epoch (UTC);
        ``None`` if the expression never matches (``0 0 31 2 *``)."""
        at = _utc(moment).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = at.date()
        for offset in range(_HORIZON_DAYS):
            current = day + timedelta(days=offset)
            if not self.day_matches(current):
                continue
            for hour in self.hours:
                if offset == 0 and hour < at.hour:
                    continue
                for minute in self.minutes:
                    if offset == 0 and hour == at.hour and minute < at.minute:
                        continue
                    found = datetime(
                        current.year, current.month, current.day, hour, minute, tzinfo=UTC
                    )
                    return int(found.timestamp() * 1000)
        return None

    def due(self, since_ms: int, now_ms: int) -> int | None:
        """The first scheduled time in ``(since_ms, now_ms]``, if there is one."""
        found = self.next_after(since_ms)
        return found if found is not None and found <= now_ms else None


def _utc(moment: datetime | int) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(moment / 1000, tz=UTC)


def _parse_field(
    text: str, name: str, low: int, high: int, expression: str, field: str
) -> set[int]:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(
            f"cron schedule {expression!r}: {name} field {text!r}: {why}", field=field
        )

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad("empty list item")
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(f"step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(a, name, bad), _value(b, name, bad)
            if start > end:
                raise bad(f"range {body!r} runs backwards")
        else:
            start = _value(body, name, bad)
            end = high if step_text else start
        for v in (start, end):
            if not low <= v <= high:
                raise bad(f"{v} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _value(token: str, name: str, bad: Callable[[str], InvalidInput]) -> int:
    names = _MONTHS if name == "month" else _DAYS if name == "day of week" else {}
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    if not token.isdigit():
        raise bad(f"{token!r} is not a number" + (" or a name" if names else ""))
    return int(token)
