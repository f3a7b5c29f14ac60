"""A small real world for the retraining loop: an embedded store in a temp dir, a registered
scikit-learn champion, a reference dataset and a prediction log written with chosen timestamps.

The truth: ``y ~ Bernoulli(sigmoid(2.5 x1 + 0.3 x2))``. The champion (v1) was fitted on labels
that followed ``x2`` instead, so on live traffic its ROC AUC is poor (~0.6); a logistic regression
retrained on the reference data (``trainers:fit_good``) scores ~0.9; ``trainers:fit_bad`` learns
the opposite of the truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from loopwright.automation import LoopController, RetrainPolicy
from loopwright.client import Client
from loopwright.serving.predlog import LabelStore, PredictionLog
from tests.conftest import quiet_settings

DAY = 86_400_000
HOUR = 3_600_000
DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MODEL = "churn"
DEPLOYMENT = "churn-api"

POLICY = """
model: churn
deployment: churn-api
train: {entry_point: "tests.automation.trainers:fit_good", params: {C: 1.0}}
data: {reference: churn-ref, include_logged: true, window: 7d, label_column: y}
challenger: {mode: shadow, alias: challenger, min_requests: 150, min_labels: 100,
             max_wait: 2d, metric: roc_auc, margin: 0.01}
promote: {alias: champion}
"""


def population(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    p = 1 / (1 + np.exp(-(2.5 * x1 + 0.3 * x2)))
    return pd.DataFrame({"x1": x1, "x2": x2, "y": (rng.random(n) < p).astype(int)})


@dataclasses.dataclass
class World:
    root: Path
    client: Client
    settings: Any

    @property
    def log_uri(self) -> str:
        return str(self.root / "store" / "predictions")

    def policy(self, **changes: Any) -> RetrainPolicy:
        import yaml

        body = yaml.safe_load(POLICY)
        body["data"]["log_uri"] = self.log_uri
        for dotted, value in changes.items():
            section, _, key = dotted.partition("__")
            if key:
                body.setdefault(section, {})[key] = value
            else:
                body[section] = value
        return RetrainPolicy.from_dict(body)

    def controller(self, **kw: Any) -> LoopController:
        return LoopController(self.client, **kw)

    @contextlib.contextmanager
    def as_user(self, user: str) -> Iterator[Client]:
        other = Client(settings=dataclasses.replace(self.settings, user=user))
        try:
            yield other
        finally:
            other.close()

    def serve(
        self,
        day: int,
        n: int = 300,
        shadow: int | None = None,
        *,
        seed: int | None = None,
        label_delay_ms: int = 12 * HOUR,
        route: str = "champion",
        version: int | None = None,
    ) -> pd.DataFrame:
        """Day ``day``'s traffic answered by ``version`` (default: the champion) on ``route``,
        mirrored to version ``shadow`` on the same request ids; labels arrive after the delay."""
        frame = population(n, seed if seed is not None else 100 + day)
        registry = self.client.registry
        answering = (
            registry.get_version(MODEL, version)
            if version
            else registry.resolve(f"{MODEL}@champion")
        )
        start = DAY0 + day * DAY
        ids = [f"{route}-d{day}-{i}" for i in range(n)]
        ts = [start + i * 1000 for i in range(n)]
        records = self._answers(answering, frame, ids, ts, route=route, shadow=False)
        if shadow is not None:
            records += self._answers(
                registry.get_version(MODEL, shadow),
                frame,
                ids,
                [t + 5 for t in ts],
                route="shadow",
                shadow=True,
            )
        log = PredictionLog(self.log_uri, DEPLOYMENT)
        log.append(records)
        assert log.flush() == len(records)
        labels = [
            {"request_id": rid, "label": int(y), "ts": start + label_delay_ms}
            for rid, y in zip(ids, frame["y"], strict=True)
        ]
        LabelStore(self.log_uri).add(labels)
        return frame

    def _answers(
        self,
        mv: Any,
        frame: pd.DataFrame,
        ids: list[str],
        ts: list[int],
        *,
        route: str,
        shadow: bool,
    ) -> list[dict[str, Any]]:
        model = self.client.registry.load(mv)
        features = frame[["x1", "x2"]]
        predictions = model.predict(features)
        proba = model.predict_proba(features)
        return [
            {
                "request_id": rid,
                "ts": t,
                "route": route,
                "model": MODEL,
                "version": mv.version,
                "latency_ms": 1.0,
                "error": None,
                "shadow": shadow,
                "prediction": int(p),
                "probabilities": [float(q) for q in pr],
                "inputs": {"x1": float(a), "x2": float(b)},
            }
            for rid, t, p, pr, a, b in zip(
                ids, ts, predictions, proba, frame["x1"], frame["x2"], strict=True
            )
        ]


def _release_champion(client: Client) -> None:
    """v1: fitted on labels that follow x2 (the wrong feature), promoted to champion."""
    train = population(600, 1)
    rng = np.random.default_rng(2)
    wrong = (rng.random(len(train)) < 1 / (1 + np.exp(-2.5 * train["x2"]))).astype(int)
    model = LogisticRegression().fit(train[["x1", "x2"]], wrong)
    with client.start_run("churn-training", run_name="v1") as run:
        run.log_dataset(train, "churn-v1-train")
        run.log_model(model, "model", input_example=train[["x1", "x2"]].head(10))
    mv = client.registry.register(MODEL, run.id, description="first release")
    client.registry.set_alias(MODEL, "champion", mv.version, reason="first release")


def make_world(root: Path, db_url: str | None = None) -> World:
    """A world on SQLite under ``root`` or, with ``db_url``, on PostgreSQL (artifacts and the
    prediction log under ``root`` either way)."""
    settings = quiet_settings(
        tracking_uri=db_url or str(root / "store"),
        artifacts_uri=str(root / "artifacts") if db_url else None,
        user="loop-bot",
        resource_sample_interval_s=0.5,
    )
    client = Client(settings=settings)
    client.registry.register_dataset(population(800, 7), "churn-ref")
    client.registry.register_dataset(population(400, 8), "churn-holdout")
    _release_champion(client)
    return World(root, client, settings)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)
    yield made
    made.client.close()
