"""The monitor config (YAML): what ``loopwright monitor run`` computes for one deployment.

Example::

    deployment: credit
    windows: ["1d"]            # one or more window specs: <n>m, <n>h or <n>d
    task: classification       # or regression
    positive: 1                # the positive class (classification)
    segment_by: region         # per-segment metrics (a logged input feature)
    sensitive: gender          # fairness measures, as the gates compute them
    min_rows: 30               # fewer rows in a window: drift and performance are skipped
    recompute_labels: 3        # recompute the newest N windows when more labels arrived
    settle: 1m                 # a window counts as complete this long after its end
    drift: {...}               # DriftOptions (loopwright.monitoring.drift)
    alerts:                    # AlertRule list (loopwright.monitoring.alerts)
      - {name: drift, series: drift.share, op: ">", threshold: 0.3, for_windows: 2}

Every section refuses unknown keys; errors name the YAML path (see :mod:`loopwright.yamldoc`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from loopwright.errors import InvalidInput
from loopwright.monitoring.alerts import AlertRule
from loopwright.monitoring.drift import DriftOptions
from loopwright.yamldoc import YamlDocument

__all__ = ["MonitorConfig", "duration_ms", "window_ms"]

_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SPEC = re.compile(r"^([1-9][0-9]*)([smhd])$")
MIN_WINDOW_MS = 60_000
MAX_WINDOW_MS = 366 * 86_400_000


def duration_ms(spec: str, field: str = "window") -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` -> milliseconds; anything else is InvalidInput."""
    match = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise InvalidInput(
            f"{field} must be a number and a unit (s, m, h or d) such as 15m, 1h or 1d; "
            f"got {spec!r}",
            field=field,
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def window_ms(spec: str, field: str = "window") -> int:
    """A window spec's length; windows are between one minute and a year long."""
    size = duration_ms(spec, field)
    if not MIN_WINDOW_MS <= size <= MAX_WINDOW_MS:
        raise InvalidInput(f"{field} must be between 1m and 366d, got {spec!r}", field=field)
    return size


def _window(spec: str) -> str:
    try:
        window_ms(spec)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return spec.strip()


def _duration(spec: str) -> str:
    try:
        duration_ms(spec, "settle")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return spec.strip()


def _deployment(name: str) -> str:
    if not name.strip() or "/" in name:
        raise ValueError("a deployment name must be non-empty and cannot contain '/'")
    return name


WindowSpec = Annotated[str, AfterValidator(_window)]


class MonitorConfig(BaseModel, YamlDocument):
    """What to monitor for one deployment; see the module docstring for the YAML."""

    model_config = ConfigDict(extra="forbid")
    document_name: ClassVar[str] = "monitor config"
    document_field: ClassVar[str] = "config"

    deployment: Annotated[str, AfterValidator(_deployment)]
    log_uri: str | None = None  # default: the serving default, <tracking dir>/predictions
    windows: list[WindowSpec] = Field(default_factory=lambda: ["1d"], min_length=1)
    task: Literal["classification", "regression"] = "classification"
    positive: str | int | float | bool = 1
    segment_by: str | None = None
    sensitive: str | None = None
    baseline: dict[str, float] | None = None  # default: the version's logged (validation) metrics
    min_rows: int = Field(default=30, ge=1)
    recompute_labels: int = Field(default=3, ge=0)
    settle: Annotated[str, AfterValidator(_duration)] = "1m"
    drift: DriftOptions = Field(default_factory=DriftOptions)
    alerts: list[AlertRule] = Field(default_factory=list)

    def rule(self, name: str) -> Any:
        """The alert rule called ``name``, or None (a rule removed since the alert fired)."""
        return next((r for r in self.alerts if r.name == name), None)
