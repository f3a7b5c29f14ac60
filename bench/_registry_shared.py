"""What both sides of ``bench/registry.py`` agree on: the model, its data and the names.

Imported by loopwright's interpreter and by MLflow's (through ``_mlflow_registry.py``); both
venvs have the same scikit-learn, and the forest is seeded and fitted on one thread, so each
interpreter builds the same model from the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any

#: Trees in the forest: about 10 MB pickled (full) and about 1 MB (``--quick``).
FULL_TREES = 170
QUICK_TREES = 17
MODEL_PATH = "model"  # the artifact path both tools log the model under
ALIAS = "champion"
#: The one type in a forest that skops does not trust by default; both tools must be told (after
#: review) that it may be loaded, loopwright by ``load(trusted=...)``, MLflow by
#: ``log_model(skops_trusted_types=...)``.
TRUSTED = ["sklearn.tree._tree.Tree"]
#: The requirement MLflow is given, so ``log_model`` skips its pip inference (a subprocess).
PIP_REQUIREMENTS = ["scikit-learn"]


@functools.cache
def build_model(trees: int) -> tuple[Any, Any]:
    """A ``RandomForestClassifier`` on synthetic data (setup) and one row to predict."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=4000, n_features=20, n_informative=10, random_state=0)
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(x, y)
    return model, x[:1]


def predict_one(model: Any, row: Any) -> list[float]:
    """The class probabilities for one row, as plain floats for the ``RESULT`` line."""
    return [round(float(p), 6) for p in model.predict_proba(row)[0]]
