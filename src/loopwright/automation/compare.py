"""Champion versus challenger on live traffic, from the prediction log and the late labels.

Shadow mode
    The deployment sends every request to the champion (which answers) and to the challenger
    (``shadow`` rows, same ``request_id``). The comparison uses only request ids both answered
    without error: the metric is computed for each version on the *same* labelled rows, and the
    agreement rate is the share of those requests where both predicted the same thing.
Canary mode
    Each request is answered by one version, so no request has both answers: each version's
    metric is computed on its own labelled requests from the canary's first answer on, and the
    agreement rate is not defined.

Only labels that had arrived by ``now`` count, so a run replayed at a past ``now`` decides the
same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from loopwright.governance.metrics import get_metric

__all__ = ["Comparison", "Evidence", "compare", "gather"]


@dataclass(frozen=True)
class Evidence:
    """The rows the comparison will use and how many there are."""

    mode: Literal["shadow", "canary"]
    challenger: pd.DataFrame  # the challenger's answers (shadow: only shared request ids)
    champion: pd.DataFrame  # the champion's answers (shadow: the same request ids)

    @property
    def n_requests(self) -> int:
        """Shadow: requests both answered. Canary: requests the challenger answered."""
        return len(self.challenger)

    @property
    def n_labelled(self) -> int:
        return int(self.challenger["label"].notna().sum()) if len(self.challenger) else 0


@dataclass(frozen=True)
class Comparison:
    """The figures a promotion decision rests on (all JSON-safe; ``None`` = not defined)."""

    mode: str
    metric: str
    higher_is_better: bool
    champion_version: int
    challenger_version: int
    n_requests: int
    n_labelled: int
    n_champion_labelled: int
    champion_value: float | None
    challenger_value: float | None
    delta: float | None  # challenger - champion (lower is better for log_loss, mae, rmse)
    margin: float
    agreement: float | None
    better: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _answers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["error"].isna() & frame["version"].notna()]


def gather(
    log: pd.DataFrame,
    mode: Literal["shadow", "canary"],
    model: str,
    champion_version: int,
    challenger_version: int,
) -> Evidence:
    """Split a joined log (``join_labels`` output; labels not yet arrived already dropped)."""
    if log.empty:
        empty = log.iloc[0:0].assign(label=None, label_value=None)
        return Evidence(mode, empty, empty)
    ok = _answers(log[log["model"] == model])
    version = ok["version"].astype(int)
    shadow = ok["shadow"].fillna(False).astype(bool)
    if mode == "shadow":
        challenger = ok[shadow & (version == challenger_version)]
        champion = ok[~shadow & (version == champion_version)]
        shared = set(challenger["request_id"]) & set(champion["request_id"])
        challenger = challenger[challenger["request_id"].isin(shared)]
        champion = champion[champion["request_id"].isin(shared)]
    else:  # the champion's answers over the span the canary was live
        challenger = ok[~shadow & (version == challenger_version)]
        champion = ok[~shadow & (version == champion_version)]
        if len(challenger):
            champion = champion[champion["ts"] >= challenger["ts"].min()]
    challenger = challenger.drop_duplicates("request_id", keep="last").sort_values("request_id")
    champion = champion.drop_duplicates("request_id", keep="last").sort_values("request_id")
    return Evidence(mode, challenger.reset_index(drop=True), champion.reset_index(drop=True))


def _value(frame: pd.DataFrame, metric: str, positive: Any) -> float | None:
    from loopwright.monitoring.performance import performance_report

    labelled = frame[frame["label"].notna()]
    if labelled.empty:
        return None
    task = get_metric(metric).task
    report = performance_report(labelled, task=task, positive=positive)
    value = report.metrics.get(get_metric(metric).name)
    return None if value is None or not math.isfinite(value) else float(value)


def _agreement(evidence: Evidence) -> float | None:
    if evidence.mode != "shadow" or evidence.n_requests == 0:
        return None
    champion = evidence.champion.set_index("request_id")["prediction"]
    challenger = evidence.challenger.set_index("request_id")["prediction"]
    same = champion.reindex(challenger.index).astype(str) == challenger.astype(str)
    return float(same.mean())


def compare(
    evidence: Evidence,
    *,
    metric: str,
    margin: float,
    positive: Any,
    champion_version: int,
    challenger_version: int,
) -> Comparison:
    """Whether the challenger beats the champion by ``margin`` on ``metric``, and why (not)."""
    spec = get_metric(metric)
    champion = _value(evidence.champion, metric, positive)
    challenger = _value(evidence.challenger, metric, positive)
    delta = better = None
    if champion is not None and challenger is not None:
        delta = challenger - champion
        gain = delta if spec.higher_is_better else -delta
        better = gain >= margin
    if better is None:
        why = (
            f"{metric} is not defined on the labelled shared requests "
            f"({evidence.n_labelled} labelled; a metric needs labels, and roc_auc both classes)"
        )
    else:
        direction = "higher" if spec.higher_is_better else "lower"
        verdict = "beats" if better else "does not beat"
        why = (
            f"challenger v{challenger_version} {verdict} champion v{champion_version} on "
            f"{metric} ({direction} is better): {challenger:.4f} vs {champion:.4f}, "
            f"difference {delta:+.4f}, margin {margin}"
        )
    return Comparison(
        mode=evidence.mode,
        metric=metric,
        higher_is_better=spec.higher_is_better,
        champion_version=champion_version,
        challenger_version=challenger_version,
        n_requests=evidence.n_requests,
        n_labelled=evidence.n_labelled,
        n_champion_labelled=int(evidence.champion["label"].notna().sum())
        if len(evidence.champion)
        else 0,
        champion_value=champion,
        challenger_value=challenger,
        delta=delta,
        margin=margin,
        agreement=_agreement(evidence),
        better=bool(better),
        why=why,
    )
