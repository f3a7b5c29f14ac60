"""describe_dataset: stable digests that change with the data, schemas, row counts, refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from loopwright.data.datasets import describe_dataset
from loopwright.errors import InvalidInput


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [1.0, 2.5, np.nan, 4.0],
            "n": [1, 2, 3, 4],
            "s": ["a", "b", None, "d"],
            "mixed": ["a", 1, None, 2.5],
            "when": pd.date_range("2024-01-01", periods=4),
            "cat": pd.Categorical(["u", "v", "u", "v"]),
        }
    )


def test_frame_schema_rows_and_fields(frame: pd.DataFrame) -> None:
    ds = describe_dataset(frame, "train", context="validation", source="s3://b/k.parquet")
    assert ds.name == "train"
    assert ds.context == "validation"
    assert ds.source == "s3://b/k.parquet"
    assert ds.num_rows == 4
    assert [c["name"] for c in ds.schema] == ["x", "n", "s", "mixed", "when", "cat"]
    assert ds.schema[0] == {"name": "x", "type": "float64"}
    assert ds.schema[1] == {"name": "n", "type": "int64"}
    assert ds.schema[5]["type"] == "category"
    assert len(ds.digest) == 64
    int(ds.digest, 16)


def test_same_data_same_digest(frame: pd.DataFrame) -> None:
    assert describe_dataset(frame, "a").digest == describe_dataset(frame.copy(), "b").digest


def test_index_does_not_matter(frame: pd.DataFrame) -> None:
    shifted = frame.set_axis(range(10, 14))
    assert describe_dataset(shifted, "a").digest == describe_dataset(frame, "a").digest


@pytest.mark.parametrize(
    ("column", "value"),
    [("x", 2.6), ("n", 20), ("s", "z"), ("mixed", "b"), ("when", pd.Timestamp("2000-01-01"))],
)
def test_one_cell_changes_digest(frame: pd.DataFrame, column: str, value: object) -> None:
    changed = frame.copy()
    changed.loc[1, column] = value
    assert describe_dataset(changed, "a").digest != describe_dataset(frame, "a").digest


def test_schema_changes_digest(frame: pd.DataFrame) -> None:
    base = describe_dataset(frame, "a").digest
    assert describe_dataset(frame.rename(columns={"x": "y"}), "a").digest != base
    assert describe_dataset(frame.astype({"n": "int32"}), "a").digest != base
    assert describe_dataset(frame.iloc[:, ::-1], "a").digest != base


def test_unhashable_objects_are_described() -> None:
    df = pd.DataFrame({"o": [[1, 2], {"k": 1}, None]})
    other = pd.DataFrame({"o": [[1, 3], {"k": 1}, None]})
    assert describe_dataset(df, "a").digest == describe_dataset(df.copy(), "a").digest
    assert describe_dataset(df, "a").digest != describe_dataset(other, "a").digest


def test_series_is_a_one_column_table() -> None:
    ds = describe_dataset(pd.Series([0, 1, 1], name="label"), "y", context="train_labels")
    assert ds.schema == [{"name": "label", "type": "int64"}]
    assert ds.num_rows == 3
    unnamed = describe_dataset(pd.Series([0.5, 1.5]), "y")
    assert unnamed.schema == [{"name": "0", "type": "float64"}]


def test_2d_array() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    ds = describe_dataset(arr, "x")
    assert ds.schema == [{"name": str(i), "type": "float32"} for i in range(3)]
    assert ds.num_rows == 4
    changed = arr.copy()
    changed[2, 1] += 1
    assert describe_dataset(changed, "x").digest != ds.digest
    assert describe_dataset(np.asfortranarray(arr), "x").digest == ds.digest
    assert describe_dataset(arr.reshape(3, 4), "x").digest != ds.digest
    assert describe_dataset(arr.astype(np.float64), "x").digest != ds.digest


def test_1d_array() -> None:
    ds = describe_dataset(np.array([0, 1, 0, 1]), "y")
    assert ds.schema == [{"name": "0", "type": "int64"}]
    assert ds.num_rows == 4
    assert describe_dataset(np.array([0, 1, 1, 1]), "y").digest != ds.digest


def test_object_array_hashes_values_not_pointers() -> None:
    a = np.array([["a", 1], [None, "b"]], dtype=object)
    b = np.array([["a", 1], [None, "b"]], dtype=object)  # equal values, different objects
    assert describe_dataset(a, "x").digest == describe_dataset(b, "x").digest
    b[1, 1] = "c"
    assert describe_dataset(a, "x").digest != describe_dataset(b, "x").digest


def test_structured_array_uses_field_names() -> None:
    arr = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
    ds = describe_dataset(arr, "x")
    assert ds.schema == [{"name": "a", "type": "int32"}, {"name": "b", "type": "float64"}]


def test_empty_frames() -> None:
    assert describe_dataset(pd.DataFrame(), "e").num_rows == 0
    no_columns = describe_dataset(pd.DataFrame(index=range(3)), "e")
    assert (no_columns.num_rows, no_columns.schema) == (3, [])


@pytest.mark.parametrize("data", [[1, 2, 3], {"a": [1]}, "text", None, (np.zeros(2), np.ones(2))])
def test_unsupported_type_is_invalid_input(data: object) -> None:
    with pytest.raises(InvalidInput, match=type(data).__name__) as info:
        describe_dataset(data, "x")
    assert info.value.field == "data"


def test_3d_array_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="3-D") as info:
        describe_dataset(np.zeros((2, 2, 2)), "x")
    assert info.value.field == "data"


_CHILD = """
import numpy as np, pandas as pd
from loopwright.data.datasets import describe_dataset
df = pd.DataFrame({"x": np.arange(100) / 7, "s": [f"v{i}" for i in range(100)],
                   "o": [i if i % 2 else str(i) for i in range(100)]})
print(describe_dataset(df, "a").digest, describe_dataset(df["x"].to_numpy(), "a").digest)
"""


def test_digest_is_stable_across_processes() -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", _CHILD],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)},
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]
    assert len(runs[0].split()) == 2
