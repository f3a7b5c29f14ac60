"""Domain entities of experiment tracking.

Frozen dataclasses for things people look at; :class:`Metric` is a ``NamedTuple`` because a
training loop makes hundreds of thousands of them and tuples are what the database driver wants
anyway (no conversion on the hot path).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self is not RunStatus.RUNNING


class Metric(NamedTuple):
    """One point of a metric's step series. ``timestamp`` is milliseconds since the epoch."""

    key: str
    value: float
    step: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    name: str
    created_at: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetInput:
    """A dataset a run consumed, identified exactly by the digest of its content and schema."""

    name: str
    digest: str
    schema: list[dict[str, str]]  # [{"name": col, "type": dtype}, ...]
    num_rows: int
    context: str = "train"  # what the run used it for: train, validation, test, ...
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A run's logical artifact path and the content digest that holds its bytes."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    experiment_id: str
    name: str
    status: RunStatus
    start_time: int
    end_time: int | None = None
    user: str | None = None
    parent_run_id: str | None = None
    heartbeat_at: int | None = None
    error: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value per key (highest step)
    inputs: list[DatasetInput] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        return None if self.end_time is None else (self.end_time - self.start_time) / 1000.0


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search; pass ``next_page_token`` back to get the next one."""

    items: list[Any]
    next_page_token: str | None = None


def encode_float(value: float) -> float | str:
    """JSON has no NaN or infinity: send them as strings and keep every other float as is."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def decode_float(value: float | int | str | None) -> float:
    if value is None:
        return math.nan
    return float(value)
