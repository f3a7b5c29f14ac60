"""Evidently's side of the drift bench (Evidently's interpreter, pandas 2).

The report is Evidently's data-drift preset with its defaults over every column, as its
documentation shows it: ``Report([DataDriftPreset()], include_tests=True).run(current,
reference)``. ``include_tests`` makes each column's verdict (``drift_detected``) readable from the
snapshot; the clock stops when ``run`` returns, before the snapshot is turned into a dict.
Evidently infers the column types itself (no ``DataDefinition``), as a first user would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

_COLUMN = re.compile(r"^Value Drift for column (.+)$")


def load(tool: str, data: Path, profile: Path | None) -> Any:
    return pd.read_parquet(data / "reference.parquet"), pd.read_parquet(data / "current.parquet")


def compute(tool: str, inputs: Any, profiling: bool = False) -> Any:
    reference, current = inputs
    return Report([DataDriftPreset()], include_tests=True).run(current, reference)


def verdict(tool: str, result: Any, inputs: Any, profile: Path | None) -> dict[str, Any]:
    body = result.dict()
    values = {}
    for m in body["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            values[cfg["column"]] = (cfg.get("method"), cfg.get("threshold"), m.get("value"))
    features: dict[str, dict[str, Any]] = {}
    for t in body["tests"]:
        match = _COLUMN.match(t.get("name", ""))
        if not match:
            continue
        col = match.group(1)
        method, threshold, value = values.get(col, (None, None, None))
        features[col] = {"drifted": t["status"] == "FAIL", "method": method,
                         "threshold": threshold, "value": value}  # fmt: skip
    return {"drifted": sorted(c for c, f in features.items() if f["drifted"]),
            "features": features}  # fmt: skip


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("evidently", "pandas", "numpy", "scipy", "pyarrow")}
