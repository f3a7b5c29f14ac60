"""A credit-risk population that changes over time, with a known truth to check the loop against.

Day 0 is the training population (the quickstart uses it too).
From ``drift_start`` the applicant mix shifts gradually: incomes fall and debt ratios rise a little
every day until ``settle_day``, then hold at that new level (covariate drift; the risk function is
unchanged, so a good model degrades only a little). On ``shock_day`` a new lending product
arrives: ``purpose = "bnpl"`` (buy now, pay later), a category the model has never seen, taken by
a fifth of applicants, whose defaults also depend much more on ``utilization`` (concept drift). A
model trained before the shock scores these applicants as if they were ordinary ones; a model
retrained on labelled traffic after it learns the new risk. ``age``, ``credit_lines``,
``employment_years`` and ``home_ownership`` never move: a drift detector that flags them is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["DRIFTING", "STABLE", "Scenario", "applicants"]

#: Features whose distribution the scenario moves (directly, or through the ones it moves).
DRIFTING = ("income", "debt_ratio", "delinquencies", "utilization", "purpose")
#: Features the scenario never moves.
STABLE = ("age", "credit_lines", "employment_years", "home_ownership")


@dataclass(frozen=True)
class Scenario:
    """When the population starts to move, how fast, and when the shock lands."""

    drift_start: int = 3
    settle_day: int = 5  # the last day the mix moves: a new normal from then on
    shock_day: int = 5
    income_fall_per_day: float = 0.035  # log-income drops by this much a day
    debt_rise_per_day: float = 0.02  # debt ratios rise by this much a day
    bnpl_share: float = 0.25

    def shift(self, day: int) -> float:
        """Days of gradual drift so far (it stops growing after ``settle_day``)."""
        return float(max(0, min(day, self.settle_day) - self.drift_start + 1))

    def shocked(self, day: int) -> bool:
        return day >= self.shock_day


def applicants(n: int, day: int, seed: int, scenario: Scenario | None = None) -> pd.DataFrame:
    """``n`` applicants arriving on ``day`` (0 = training time) with their true ``default``.

    Deterministic for (``n``, ``day``, ``seed``).
    """
    sc = scenario or Scenario()
    rng = np.random.default_rng([seed, day])
    shift = sc.shift(day) if day > 0 else 0.0
    shocked = day > 0 and sc.shocked(day)
    age = rng.integers(21, 75, n)
    income = np.round(rng.lognormal(10.6 - sc.income_fall_per_day * shift, 0.45, n), 2)
    debt_ratio = np.clip(
        rng.beta(2, 5, n) + sc.debt_rise_per_day * shift + rng.normal(0, 0.02, n), 0, 1.5
    )
    credit_lines = rng.poisson(4, n)
    delinquencies = rng.poisson(0.3 + 0.6 * (debt_ratio > 0.5), n)
    employment_years = np.clip(rng.gamma(2.0, 3.0, n), 0, age - 18)
    utilization = np.clip(rng.beta(2, 3, n) + 0.2 * (delinquencies > 0), 0, 1)
    home = rng.choice(["rent", "mortgage", "own"], n, p=[0.45, 0.4, 0.15])
    purposes = ["car", "home", "education", "debt_consolidation"]
    purpose = rng.choice(purposes, n)
    if shocked:
        bnpl = rng.random(n) < sc.bnpl_share
        purpose = np.where(bnpl, "bnpl", purpose)
        # BNPL customers run their cards hot.
        utilization = np.where(bnpl, np.clip(utilization + 0.25, 0, 1), utilization)
    else:
        bnpl = np.zeros(n, dtype=bool)
    sex = rng.choice(["f", "m"], n)  # sensitive: never a feature, audited for fairness
    logit = (
        -2.2
        + 3.2 * debt_ratio**2
        + 0.55 * delinquencies
        + 1.4 * utilization
        - 0.35 * np.log(income / 40_000)
        - 0.03 * employment_years
        + 0.4 * (home == "rent")
        + 0.3 * (purpose == "debt_consolidation")
        - 0.012 * (age - 21)
        + bnpl * (1.2 + 4.0 * (utilization - 0.6))  # the new product's own risk
    )
    default = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "age": age,
            "income": income,
            "debt_ratio": debt_ratio,
            "credit_lines": credit_lines,
            "delinquencies": delinquencies,
            "employment_years": employment_years,
            "utilization": utilization,
            "home_ownership": home,
            "purpose": purpose,
            "sex": sex,
            "default": default.astype(int),
        }
    )
