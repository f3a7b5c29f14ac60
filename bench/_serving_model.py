"""The model every server in ``bench/serving.py`` answers with, and the request bodies.

One ``HistGradientBoostingClassifier`` on 20 numeric features (``f0`` .. ``f19``), fitted once
on a DataFrame (so it knows its feature names, as a model trained from pandas does). loopwright
gets it through its own SDK (a run logs it, registers it and the ``champion`` alias points at
it); MLServer gets the same fitted object saved with joblib. Setup, never timed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from loopwright import Client

MODEL = "bench-hgb"
ALIAS = "champion"
FEATURES = [f"f{i}" for i in range(20)]
EXPERIMENT = "bench-serving"


@dataclass(frozen=True)
class Fitted:
    model: Any
    frame: pd.DataFrame  # the training features (a row and a batch are taken from it)

    @property
    def row(self) -> pd.DataFrame:
        return self.frame.iloc[:1].reset_index(drop=True)

    def batch(self, rows: int) -> pd.DataFrame:
        return self.frame.iloc[:rows].reset_index(drop=True)

    @property
    def values(self) -> list[float]:
        return [round(float(v), 6) for v in self.frame.iloc[0].tolist()]


def fit(rows: int = 20_000) -> Fitted:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = make_classification(
        n_samples=rows, n_features=len(FEATURES), n_informative=10, random_state=0
    )
    frame = pd.DataFrame(x, columns=FEATURES)
    model = HistGradientBoostingClassifier(random_state=0).fit(frame, y)
    return Fitted(model, frame)


def register(fitted: Fitted, db: Path, artifacts: Path) -> str:
    """Log, register and alias the model in a fresh SQLite store; returns ``name@alias``."""
    client = Client(f"sqlite:///{db}", artifacts_uri=str(artifacts))
    try:
        with client.start_run(
            EXPERIMENT, capture_environment=False, monitor_resources=False
        ) as run:
            run.log_model(fitted.model, input_example=fitted.batch(20), register_as=MODEL)
        version = client.registry.resolve(f"{MODEL}/latest")
        client.registry.set_alias(MODEL, ALIAS, version.version)
    finally:
        client.close()
    return f"{MODEL}@{ALIAS}"


def save_joblib(fitted: Fitted, path: Path) -> Path:
    joblib.dump(fitted.model, path)
    return path


# -- request bodies ----------------------------------------------------------------------------


def predict_body(fitted: Fitted) -> bytes:
    """loopwright's ``POST /predict``: one record keyed by column name."""
    return json.dumps({"records": [dict(zip(FEATURES, fitted.values, strict=True))]}).encode()


def v2_body(fitted: Fitted) -> bytes:
    """Open Inference Protocol: one ``[1, 20]`` FP64 tensor (the same bytes for every server)."""
    tensor = {"name": "input-0", "shape": [1, len(FEATURES)], "datatype": "FP64",
              "data": fitted.values}  # fmt: skip
    return json.dumps({"inputs": [tensor]}).encode()


def expected_label(fitted: Fitted) -> int:
    return int(np.asarray(fitted.model.predict(fitted.row))[0])
