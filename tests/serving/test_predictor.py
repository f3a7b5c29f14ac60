"""Request validation against signatures, and a ModelSlot answering with a real sklearn model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from loopwright.errors import InvalidInput
from loopwright.registry.flavors import save_sklearn
from loopwright.registry.model import LoadedModel, load_model
from loopwright.registry.signature import ColumnSpec, Signature, infer_signature
from loopwright.serving.deployment import Batching
from loopwright.serving.predictor import ModelSlot, Rows, validate_columns, validate_records

SIGNATURE = Signature(
    (
        ColumnSpec("age", "int64"),
        ColumnSpec("income", "float64"),
        ColumnSpec("member", "bool"),
        ColumnSpec("plan", "string", nullable=True),
    )
)


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    signature: dict[str, Any] | None

    @property
    def uri(self) -> str:
        return f"{self.model}/{self.version}"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def classifier(data: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(data[["a", "b"]], data["y"])


def make_slot(native: Any, data: pd.DataFrame, **batching: Any) -> ModelSlot:
    signature = infer_signature(data[["a", "b"]])
    model = load_model("sklearn", save_sklearn(native), trusted=True)
    version = Version("churn", 3, signature.to_dict())
    return ModelSlot("churn@champion", version, model, Batching(**batching))


# -- validation -------------------------------------------------------------------------------


def test_records_are_ordered_and_cast_to_the_signature() -> None:
    records = [
        {"plan": "gold", "member": True, "income": 10, "age": 30.0, "extra": "x"},
        {"age": 41, "income": 2.5, "member": False},
    ]
    frame = validate_records(records, SIGNATURE)
    assert list(frame.columns) == ["age", "income", "member", "plan"]
    assert frame["age"].dtype == np.int64 and frame["income"].dtype == np.float64
    assert frame["member"].dtype == bool and frame["member"].tolist() == [True, False]
    assert frame["plan"].iloc[0] == "gold" and pd.isna(frame["plan"].iloc[1])


def test_every_problem_reported_and_the_first_column_named() -> None:
    records = [{"age": 2.5, "income": "lots", "member": True}, {"income": 1.0, "member": True}]
    with pytest.raises(InvalidInput) as err:
        validate_records(records, SIGNATURE)
    assert err.value.field == "age"
    problems = err.value.details["problems"]
    assert any("'income'" in p for p in problems) and len(problems) >= 2


@pytest.mark.parametrize(
    ("records", "field"),
    [({"age": 1}, "records"), ([], "records"), ([{"age": 1}, 7], "records[1]")],
)
def test_records_shape_errors_name_the_field(records: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_records(records, SIGNATURE)
    assert err.value.field == field


def test_without_a_signature_the_frame_is_as_sent() -> None:
    frame = validate_records([{"b": 1, "a": "x"}], None)
    assert list(frame.columns) == ["b", "a"] and frame.iloc[0].tolist() == [1, "x"]


def test_columns_input() -> None:
    columns = {"income": [1, 2], "age": [3, 4], "member": [0, 1]}
    frame = validate_columns(columns, SIGNATURE)
    assert list(frame.columns) == ["age", "income", "member", "plan"]
    assert frame["income"].tolist() == [1.0, 2.0] and frame["member"].tolist() == [False, True]
    with pytest.raises(InvalidInput) as err:
        validate_columns({"age": [1, 2], "income": [1.0]}, SIGNATURE)
    assert err.value.field == "inputs" and err.value.details["lengths"] == {"age": 2, "income": 1}
    with pytest.raises(InvalidInput) as err:
        validate_columns({"age": 1}, SIGNATURE, field="body")
    assert err.value.field == "body.age"
    with pytest.raises(InvalidInput) as err:
        validate_columns({"age": [1], "income": ["x"], "member": [True]}, SIGNATURE)
    assert err.value.field == "income"


# -- the slot ---------------------------------------------------------------------------------


def test_classifier_slot_answers_like_the_model(
    classifier: LogisticRegression, data: pd.DataFrame
) -> None:
    slot = make_slot(classifier, data, max_wait_ms=20)
    assert (slot.ref, slot.uri, slot.version, slot.model_name) == (
        "churn@champion",
        "churn/3",
        3,
        "churn",
    )
    assert slot.signature is not None and slot.signature.input_names == ["a", "b"]
    rows = [data[["a", "b"]].iloc[[i]] for i in range(40)]

    async def main() -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(slot.predict(r) for r in rows))
        await slot.close()
        return answers

    answers = asyncio.run(main())
    expected = classifier.predict(data[["a", "b"]].iloc[:40]).tolist()
    proba = classifier.predict_proba(data[["a", "b"]].iloc[:40])
    assert [a["predictions"][0] for a in answers] == expected
    assert np.allclose([a["probabilities"][0] for a in answers], proba)
    assert slot.batcher.batches < 40 and not slot.loaded
    assert slot.classes == ["no", "yes"]


def test_regressor_slot_has_no_probabilities(data: pd.DataFrame) -> None:
    X = data[["a", "b"]]
    native = LinearRegression().fit(X, data["a"] * 2 + 1)
    slot = ModelSlot("r/1", Version("r", 1, None), LoadedModel("sklearn", native), Batching())
    assert slot.signature is None
    answer = asyncio.run(slot.predict(X.iloc[:3]))
    assert answer["probabilities"] is None
    assert np.allclose(answer["predictions"], X["a"].iloc[:3] * 2 + 1)


FLOATS = Signature((ColumnSpec("x", "float64"), ColumnSpec("y", "float64")))


def test_all_float_records_take_the_fast_path_with_the_same_result() -> None:
    records = [{"y": 2, "x": 1.5, "extra": "ignored"}, {"x": -1, "y": 0.25}]
    rows = validate_records(records, FLOATS)
    assert isinstance(rows, Rows) and len(rows) == 2
    assert list(rows.columns) == ["x", "y"] and rows.values.dtype == np.float64
    assert rows.to_numpy().tolist() == [[1.5, 2.0], [-1.0, 0.25]]
    expected = pd.DataFrame({"x": [1.5, -1.0], "y": [2.0, 0.25]})
    pd.testing.assert_frame_equal(rows.to_frame(), expected)  # for models that need a frame
    columns = validate_columns({"y": [2, 0.25], "x": [1.5, -1]}, FLOATS)
    assert isinstance(columns, Rows)
    assert columns.to_numpy().tolist() == [[1.5, 2.0], [-1.0, 0.25]]


@pytest.mark.parametrize(
    ("records", "field", "words"),
    [
        ([{"x": 1.0}], "y", "y"),  # a missing column: the general path names it
        ([{"x": 1.0, "y": "high"}], "y", "y"),  # a string where a number belongs
        ([{"x": 1.0, "y": [1, 2]}], "y", "y"),
    ],
)
def test_all_float_records_that_do_not_fit_get_the_general_errors(
    records: Any, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_records(records, FLOATS)
    assert info.value.field == field and words in info.value.message


def test_a_pipeline_selecting_columns_by_name_is_served_from_frames(data: pd.DataFrame) -> None:
    """Numeric inputs in fitted order, but the model needs names: the NumPy shortcut steps aside."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = data[["a", "b"]]
    native = Pipeline(
        [("prep", ColumnTransformer([("num", StandardScaler(), ["a", "b"])])),
         ("model", LogisticRegression())]
    ).fit(X, data["y"])  # fmt: skip
    slot = make_slot(native, data, max_wait_ms=0)

    async def main() -> list[dict[str, Any]]:
        answers = [await slot.predict(X.iloc[[i]]) for i in range(5)]
        await slot.close()
        return answers

    answers = asyncio.run(main())
    assert [a["predictions"][0] for a in answers] == native.predict(X.iloc[:5]).tolist()
    assert np.allclose([a["probabilities"][0] for a in answers], native.predict_proba(X.iloc[:5]))
