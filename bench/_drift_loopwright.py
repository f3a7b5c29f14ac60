"""loopwright's side of the drift bench (loopwright's interpreter): profile once, then a window.

``lw-profile`` times :func:`profile_frame` over the reference frame -- paid once, at registration
-- and writes the profile as JSON. ``lw-window`` times what a monitoring window pays: parsing that
JSON back into a :class:`ReferenceProfile` (as the service does when it reads the stored profile)
plus :func:`compute_drift` over the current frame, with default options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from loopwright.monitoring.drift import DriftReport, compute_drift
from loopwright.monitoring.profiles import ReferenceProfile, profile_frame


def load(tool: str, data: Path, profile: Path | None) -> Any:
    if tool == "lw-profile":
        return pd.read_parquet(data / "reference.parquet")
    assert profile is not None, "lw-window needs --profile"
    return profile.read_bytes(), pd.read_parquet(data / "current.parquet")


def compute(tool: str, inputs: Any, profiling: bool = False) -> Any:
    if tool == "lw-profile":
        return profile_frame(inputs)
    blob, current = inputs
    workers = 1 if profiling else None  # cProfile sees only the calling thread
    return compute_drift(ReferenceProfile.from_json(blob), current, workers=workers)


def verdict(tool: str, result: Any, inputs: Any, profile: Path | None) -> dict[str, Any]:
    if tool == "lw-profile":
        assert isinstance(result, ReferenceProfile) and profile is not None
        blob = result.to_json()
        profile.write_bytes(blob)
        return {"profile_bytes": len(blob), "features": len(result.features)}
    assert isinstance(result, DriftReport)
    return {
        "drifted": list(result.drifted),
        "features": {
            f.name: {"drifted": f.drifted, "method": f.method, "value": f.value,
                     "p": f.p_value, "reason": f.reason}
            for f in result.features
        },
    }  # fmt: skip


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("loopwright", "pandas", "numpy", "scipy", "pyarrow")}
