"""Input checks shared by every tracking store, so each backend refuses the same things alike.

Each function takes the field name first: the error a user sees always says which field was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from loopwright.errors import InvalidInput
from loopwright.tracking.entities import ArtifactRef, DatasetInput, Metric, RunStatus

MAX_KEY = 250
MAX_VALUE = 8000
_ID = re.compile(r"^[0-9a-f]{1,32}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_STEP = 2**63 - 1


def identifier(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(f"{field} must be a hex id, got {value!r}", field=field)
    return value


def key(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY:
        raise InvalidInput(f"{field} must be a string of 1..{MAX_KEY} characters", field=field)
    if _CONTROL.search(value) or value != value.strip():
        raise InvalidInput(
            f"{field} {value!r} has control characters or surrounding spaces", field=field
        )
    return value


name = key


def string_map(field: str, values: Any) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidInput(f"{field} must be a mapping of strings", field=field)
    out: dict[str, str] = {}
    for k, x in values.items():
        key(f"{field} key", k)
        text = x if isinstance(x, str) else str(x)
        if len(text) > MAX_VALUE:
            raise InvalidInput(
                f"{field}.{k} is {len(text)} characters; the limit is {MAX_VALUE}",
                field=f"{field}.{k}",
            )
        out[k] = text
    return out


def timestamp(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"{field} must be milliseconds since the epoch (an int >= 0)", field=field
        )
    return value


def run_status(field: str, value: Any) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in RunStatus)
        raise InvalidInput(f"{field} must be one of {valid}, got {value!r}", field=field) from None


def metric_rows(
    run_id: str, metrics: Sequence[Metric]
) -> list[tuple[str, str, int, int, float | None]]:
    """Validate metrics and turn them into database rows (NaN becomes NULL).

    Fast path first: one comprehension over well-typed tuples; only when it trips do we walk the
    points again to name the first bad one.
    """
    try:
        rows = [(run_id, m[0], m[2], m[3], None if m[1] != m[1] else float(m[1])) for m in metrics]
        keys = {r[1] for r in rows}
        steps_ok = all(type(r[2]) is int and type(r[3]) is int for r in rows)
    except (TypeError, ValueError, IndexError):
        steps_ok, keys, rows = False, set(), []
    if steps_ok:
        for k in keys:
            key("metrics.key", k)
        return rows
    for i, m in enumerate(metrics):
        _check_metric(i, m)
    raise InvalidInput("metrics are malformed", field="metrics")  # pragma: no cover - defensive


def _check_metric(i: int, m: Any) -> None:
    if not isinstance(m, tuple) or len(m) != 4:
        raise InvalidInput(
            f"metrics[{i}] must be (key, value, step, timestamp)", field=f"metrics[{i}]"
        )
    key(f"metrics[{i}].key", m[0])
    if isinstance(m[1], bool) or not isinstance(m[1], int | float):
        raise InvalidInput(
            f"metrics[{i}].value must be a number, got {m[1]!r}", field=f"metrics[{i}].value"
        )
    for j, part in ((2, "step"), (3, "timestamp")):
        if isinstance(m[j], bool) or not isinstance(m[j], int):
            raise InvalidInput(
                f"metrics[{i}].{part} must be an integer, got {m[j]!r}",
                field=f"metrics[{i}].{part}",
            )


def metric_value(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars, Decimals
        except (TypeError, ValueError):
            raise InvalidInput(f"{field} must be a number, got {value!r}", field=field) from None
    return float(value)


def dataset_input(field: str, d: Any) -> DatasetInput:
    if not isinstance(d, DatasetInput):
        raise InvalidInput(f"{field} must be a DatasetInput", field=field)
    key(f"{field}.name", d.name)
    key(f"{field}.context", d.context)
    digest(f"{field}.digest", d.digest)
    if not isinstance(d.num_rows, int) or d.num_rows < 0:
        raise InvalidInput(f"{field}.num_rows must be an int >= 0", field=f"{field}.num_rows")
    if not isinstance(d.schema, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in d.schema
    ):
        raise InvalidInput(
            f"{field}.schema must be a list of {{name, type}}", field=f"{field}.schema"
        )
    return d


def artifact_ref(field: str, r: Any) -> ArtifactRef:
    if not isinstance(r, ArtifactRef):
        raise InvalidInput(f"{field} must be an ArtifactRef", field=field)
    artifact_path(f"{field}.path", r.path)
    digest(f"{field}.digest", r.digest)
    if not isinstance(r.size, int) or r.size < 0:
        raise InvalidInput(f"{field}.size must be an int >= 0", field=f"{field}.size")
    return r


def artifact_path(field: str, path: Any) -> str:
    if not isinstance(path, str) or not path or len(path) > 1000:
        raise InvalidInput(f"{field} must be a relative path of 1..1000 characters", field=field)
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(
            f"{field} {path!r} must be a relative POSIX path without '.', '..' or empty parts",
            field=field,
        )
    return path


def digest(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise InvalidInput(f"{field} must be a 64-character SHA-256 hex digest", field=field)
    return value
