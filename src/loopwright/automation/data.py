"""The training data of a retraining: the reference dataset plus newly labelled logged traffic.

Logged traffic is what the deployment answered (shadow rows excluded, errors excluded) within
``data.window`` before now, joined with the labels that had arrived by now; one row per request
id, the model inputs as logged (``in_<feature>`` columns, or ``inputs_json``) and the label under
``data.label_column``. The label takes the reference's dtype when it can, so ``0``/``1`` stays an
integer column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput

if TYPE_CHECKING:
    from loopwright.automation.policy import RetrainPolicy
    from loopwright.registry.service import RegistryService

__all__ = ["TrainingData", "assemble", "labelled_traffic"]


@dataclass(frozen=True)
class TrainingData:
    """What the entry point receives (picklable, so a Ray task gets the same object).

    ``frame`` holds the features and ``label_column``; ``spec`` is the policy's ``train`` and
    ``data`` sections as plain JSON; the digests name the parts in lineage. ``params`` is
    ``train.params``. ``validation`` is the held-out part (the controller scores it; the entry
    point may ignore it).
    """

    frame: pd.DataFrame
    label_column: str
    spec: dict[str, Any]
    reference_digest: str | None
    logged_digest: str | None
    params: dict[str, Any] = field(default_factory=dict)
    validation: pd.DataFrame | None = None

    @property
    def features(self) -> pd.DataFrame:
        return self.frame.drop(columns=[self.label_column])

    @property
    def labels(self) -> pd.Series:
        return self.frame[self.label_column]


@dataclass(frozen=True)
class Assembled:
    """The parts, before the split: reference rows, logged rows, and both together."""

    reference: pd.DataFrame | None
    reference_digest: str | None
    logged: pd.DataFrame | None
    combined: pd.DataFrame


def inputs_of(predictions: pd.DataFrame) -> pd.DataFrame:
    """The logged model inputs: ``in_<feature>`` columns renamed, else ``inputs_json`` parsed."""
    columns = [c for c in predictions.columns if c.startswith("in_")]
    if columns:
        return predictions[columns].rename(columns=lambda c: c[3:]).reset_index(drop=True)
    rows = [json.loads(x) if x else {} for x in predictions.get("inputs_json", [])]
    return pd.DataFrame(rows, index=range(len(predictions)))


def labelled_traffic(
    log_uri: str,
    deployment: str,
    start_ms: int,
    now_ms: int,
    label_column: str,
) -> pd.DataFrame:
    """Answered requests of ``[start_ms, now_ms)`` with a label that arrived by ``now_ms``."""
    from loopwright.serving.predlog import (
        LABEL_SLACK_MS,
        join_labels,
        read_labels,
        read_predictions,
    )

    served = read_predictions(log_uri, deployment, start_ms, now_ms)
    if served.empty:
        return pd.DataFrame()
    served = served[~served["shadow"].fillna(False).astype(bool) & served["error"].isna()]
    joined = join_labels(served, read_labels(log_uri, since_ms=start_ms - LABEL_SLACK_MS))
    arrived = joined["label"].notna() & (
        joined["label_ts"] <= pd.Timestamp(now_ms, unit="ms", tz="UTC")
    )
    rows = joined[arrived].drop_duplicates("request_id", keep="last").reset_index(drop=True)
    if rows.empty:
        return pd.DataFrame()
    frame = inputs_of(rows)
    values = rows["label_value"]
    frame[label_column] = values.to_numpy() if values.notna().all() else rows["label"].to_numpy()
    return frame


def assemble(
    registry: RegistryService, policy: RetrainPolicy, log_uri: str, now_ms: int
) -> Assembled:
    """Reference dataset (if any) + labelled logged traffic (if asked for), as one frame."""
    from loopwright.monitoring.config import duration_ms

    label = policy.data.label_column
    reference = digest = None
    if policy.data.reference is not None:
        reference = registry.load_dataset(policy.data.reference)
        digest = str(registry.find_dataset(policy.data.reference)["digest"])
        if label not in reference.columns:
            raise InvalidInput(
                f"the reference dataset {policy.data.reference!r} has no column {label!r}",
                field="data.label_column",
            )
    logged = None
    if policy.data.include_logged:
        start = now_ms - duration_ms(policy.data.window, "data.window")
        found = labelled_traffic(log_uri, policy.deployment, start, now_ms, label)
        logged = found if not found.empty else None
    if logged is not None and reference is not None:
        logged = _like(logged, reference, label)
        combined = pd.concat([reference, logged], ignore_index=True)
    else:
        only = reference if reference is not None else logged
        combined = pd.DataFrame() if only is None else only.copy()
    if combined.empty:
        raise InvalidInput(
            f"no training data: the reference is empty or missing and no labelled traffic of "
            f"{policy.deployment!r} in the last {policy.data.window}",
            field="data",
        )
    return Assembled(reference, digest, logged, combined.reset_index(drop=True))


def _like(logged: pd.DataFrame, reference: pd.DataFrame, label: str) -> pd.DataFrame:
    """Logged rows in the reference's columns (extra logged columns dropped) and label dtype."""
    keep = [c for c in logged.columns if c in reference.columns]
    logged = logged[keep].copy()
    want = reference[label].dtype
    if logged[label].dtype != want:
        try:
            cast = logged[label].astype(want)
        except (TypeError, ValueError):
            pass
        else:
            if pd.api.types.is_numeric_dtype(want) and not np.allclose(
                cast.astype(float), pd.to_numeric(logged[label], errors="coerce"), equal_nan=True
            ):
                pass  # casting would change values (0.5 -> 0): keep them as they are
            else:
                logged[label] = cast
    return logged


def split(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(train, validation): a seeded shuffle; no validation part when ``fraction`` is 0 or the
    frame is too small for both parts to have rows."""
    n_val = round(len(frame) * fraction)
    if fraction <= 0 or n_val < 1 or n_val >= len(frame):
        return frame, None
    order = np.random.default_rng(seed).permutation(len(frame))
    val = frame.iloc[np.sort(order[:n_val])].reset_index(drop=True)
    train = frame.iloc[np.sort(order[n_val:])].reset_index(drop=True)
    return train, val
