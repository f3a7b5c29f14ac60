"""Entry points the retraining tests name in their policies (``tests.automation.trainers:...``)."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression

FEATURES = ["x1", "x2"]


def fit_good(data: Any) -> Any:
    """Logistic regression on the data it is given: learns the real relation."""
    model = LogisticRegression(C=float(data.params.get("C", 1.0)))
    return model.fit(data.frame[FEATURES], data.frame[data.label_column].astype(int))


def fit_bad(data: Any) -> Any:
    """Learns the opposite of the truth (flipped labels): clearly worse on live traffic."""
    model = LogisticRegression()
    return model.fit(data.frame[FEATURES], 1 - data.frame[data.label_column].astype(int))


def fit_fails(data: Any) -> Any:
    raise RuntimeError("the training job ran out of patience")


def fit_held(data: Any) -> Any:
    """``fit_good``, but first waits while the file named by ``params.hold`` exists (bounded), so
    a test can keep a controller inside its training run; writes ``params.started`` on entry."""
    import time
    from pathlib import Path

    Path(data.params["started"]).write_text("training")
    hold = Path(data.params["hold"])
    deadline = time.monotonic() + 120
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return fit_good(data)
