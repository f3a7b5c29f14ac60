"""Signatures: inferred from training data, stored as JSON, checked against requests and
compared between versions for breaking changes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loopwright.errors import InvalidInput
from loopwright.registry.signature import (
    ColumnSpec,
    Signature,
    check_input,
    compatibility,
    extra_columns,
    infer_signature,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30, 41, 52],
            "income": [1.5, np.nan, 3.0],
            "member": [True, False, True],
            "city": ["Oslo", "Lima", "Pune"],
            "plan": pd.Categorical(["a", "b", "a"]),
            "joined": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "visits": pd.array([1, None, 3], dtype="Int64"),
        }
    )


def _sig(*inputs: ColumnSpec, outputs: tuple[ColumnSpec, ...] = ()) -> Signature:
    return Signature(inputs, outputs)


# -- inference --------------------------------------------------------------------------------


def test_infer_from_a_frame(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame, pd.Series([0, 1, 0], name="churned"))
    assert [(c.name, c.type, c.nullable) for c in sig.inputs] == [
        ("age", "int64", False),
        ("income", "float64", True),
        ("member", "bool", False),
        ("city", "string", False),
        ("plan", "category", False),
        ("joined", "datetime", False),
        ("visits", "int64", True),
    ]
    assert sig.outputs == (ColumnSpec("churned", "int64"),)
    assert sig.input_names[0] == "age"


def test_infer_from_arrays_names_columns_by_position() -> None:
    sig = infer_signature(np.zeros((4, 3), dtype=np.float32), np.array([1, 0, 1, 0]))
    assert sig.input_names == ["0", "1", "2"]
    assert {c.type for c in sig.inputs} == {"float64"}
    assert sig.outputs == (ColumnSpec("0", "int64"),)


def test_object_columns_are_typed_by_content() -> None:
    sig = infer_signature(pd.DataFrame({"n": pd.Series([1, 2], dtype=object), "s": ["a", None]}))
    assert [(c.type, c.nullable) for c in sig.inputs] == [("int64", False), ("string", True)]


def test_types_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        infer_signature(pd.DataFrame({"wait": pd.to_timedelta([1, 2], unit="s")}))
    assert info.value.field == "wait"
    with pytest.raises(InvalidInput):
        infer_signature([[1, 2]])


# -- storage ----------------------------------------------------------------------------------


def test_round_trip_through_json(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame, frame["age"])
    stored = json.loads(json.dumps(sig.to_dict()))
    assert Signature.from_dict(stored) == sig
    assert stored["inputs"][1] == {"name": "income", "type": "float64", "nullable": True}


def test_outputs_are_optional_and_unknown_keys_ignored() -> None:
    sig = Signature.from_dict({"inputs": [{"name": "a", "type": "int64"}], "version": 2})
    assert sig == _sig(ColumnSpec("a", "int64"))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "signature"),
        ({}, "inputs"),
        ({"inputs": "a"}, "inputs"),
        ({"inputs": ["a"]}, "inputs[0]"),
        ({"inputs": [{"type": "int64"}]}, "inputs[0].name"),
        ({"inputs": [{"name": "a", "type": "int"}]}, "inputs[0].type"),
        ({"inputs": [{"name": "a", "type": "bool", "nullable": "no"}]}, "inputs[0].nullable"),
        ({"inputs": [], "outputs": [{"name": "p", "type": "x"}]}, "outputs[0].type"),
        ({"inputs": [{"name": "a", "type": "bool"}] * 2}, "inputs"),
    ],
)
def test_bad_dicts_name_the_field(data: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Signature.from_dict(data)
    assert info.value.field == field


def test_signatures_are_frozen() -> None:
    sig = _sig(ColumnSpec("a", "int64"))
    with pytest.raises(AttributeError):
        sig.inputs = ()  # type: ignore[misc]


# -- checking requests ------------------------------------------------------------------------


def test_a_matching_frame_has_no_problems(frame: pd.DataFrame) -> None:
    assert check_input(infer_signature(frame), frame) == []


def test_every_problem_is_listed_at_once(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame)
    bad = frame.drop(columns=["city"]).assign(
        age=[30.0, 40.5, 50.0],  # 40.5 is not an int
        income=["1.5", "x", "2"],  # text where a number belongs
        member=[True, None, False],  # missing in a non-nullable column
    )
    problems = check_input(sig, bad)
    assert len(problems) == 4, problems
    assert any("'city'" in p and "missing" in p for p in problems)
    assert any("'age'" in p and "int64" in p for p in problems)
    assert any("'income'" in p and "float64" in p for p in problems)
    assert any("'member'" in p and "not nullable" in p for p in problems)


def test_safe_casts_are_accepted(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame)
    request = frame.assign(
        age=[30.0, 41.0, 52.0],  # integral floats, as JSON often sends them
        income=[1, 2, 3],  # ints where floats are expected
        member=[1, 0, 1],
        plan=["a", "c", "b"],
        joined=["2024-05-01", "2024-05-02T10:00:00", "2024-05-03"],
    )
    assert check_input(sig, request) == []


def test_absent_nullable_columns_and_extras(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame)
    request = frame.drop(columns=["income"]).assign(note="hi")
    assert check_input(sig, request) == []
    assert extra_columns(sig, request) == ["note"]


def test_arrays_are_checked_by_position() -> None:
    sig = infer_signature(np.zeros((2, 2)))
    assert check_input(sig, np.array([["a", "b"]], dtype=object)) == [
        "column '0' should be float64, got string values",
        "column '1' should be float64, got string values",
    ]


# -- compatibility ----------------------------------------------------------------------------

OLD = _sig(
    ColumnSpec("age", "int64"),
    ColumnSpec("income", "float64", nullable=True),
    outputs=(ColumnSpec("score", "float64"),),
)


def test_identical_and_harmless_changes_are_compatible() -> None:
    assert compatibility(OLD, OLD) == []
    harmless = _sig(
        ColumnSpec("age", "float64"),  # int64 -> float64 widens
        ColumnSpec("region", "string", nullable=True),  # new but optional
        outputs=(ColumnSpec("score", "float64"), ColumnSpec("label", "int64")),
    )  # income removed: clients may still send it
    assert compatibility(OLD, harmless) == []


def test_breaking_changes_are_listed() -> None:
    new = _sig(
        ColumnSpec("age", "string"),
        ColumnSpec("income", "float64"),
        ColumnSpec("region", "string"),
        outputs=(ColumnSpec("label", "int64"),),
    )
    assert compatibility(OLD, new) == [
        "input 'age' changed type int64 -> string",
        "input 'income' no longer accepts missing values",
        "input 'region' is new and required",
        "output 'score' was removed",
    ]


def test_output_changes_are_judged_from_the_consumer_side() -> None:
    narrower = _sig(*OLD.inputs, outputs=(ColumnSpec("score", "int64"),))
    assert compatibility(OLD, narrower) == []  # every int is a float for the reader
    wider = _sig(*OLD.inputs, outputs=(ColumnSpec("score", "string", nullable=True),))
    assert compatibility(OLD, wider) == [
        "output 'score' changed type float64 -> string",
        "output 'score' may now be missing",
    ]
