"""What both sides of the bench must agree on; imported by loopwright's and MLflow's interpreter."""

from __future__ import annotations

import random

SEARCH_EXPERIMENT = "bench-search"
HISTORY_EXPERIMENT = "bench-history"
SEARCH_FILTER = "metrics.auc > 0.8 and params.model = 'gbm' and tags.team = 'risk'"
HISTORY_KEY = "loss"


def search_rows(n: int) -> list[tuple[float, str, str]]:
    """The (auc, model, team) of every seeded run, identical for both tools."""
    rng = random.Random(42)
    return [
        (rng.random(), rng.choice(("gbm", "lr")), rng.choice(("risk", "growth"))) for _ in range(n)
    ]
