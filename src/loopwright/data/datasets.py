"""Describe a dataset by a digest of its schema and content, so runs can say exactly what they used.

The digest is a SHA-256 over a header (the kind of container, its shape and the schema, as JSON)
followed by the content: for frames and series the 64-bit row hashes of
:func:`pandas.util.hash_pandas_object` (seeded with a fixed key, so they are the same in every
process), for plain numeric arrays their C-contiguous bytes. Identical data therefore gives the
identical digest anywhere, and changing one cell changes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from loopwright.errors import InvalidInput
from loopwright.tracking.entities import DatasetInput

__all__ = ["describe_dataset"]

Schema = list[dict[str, str]]


def describe_dataset(
    data: Any, name: str, context: str = "train", source: str | None = None
) -> DatasetInput:
    """A :class:`DatasetInput` for a pandas DataFrame or Series or a 1-D/2-D numpy array.

    Raises :class:`InvalidInput` (field ``data``) for any other type, naming it, so a caller
    learns at once what to convert rather than getting a digest of something meaningless.
    """
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        schema, num_rows, digest = _describe_frame(data)
    elif isinstance(data, np.ndarray):
        schema, num_rows, digest = _describe_array(data)
    else:
        raise InvalidInput(
            f"cannot describe a dataset of type {type(data).__module__}.{type(data).__qualname__}; "
            "pass a pandas DataFrame or Series or a 1-D/2-D numpy array",
            field="data",
        )
    return DatasetInput(
        name=name, digest=digest, schema=schema, num_rows=num_rows, context=context, source=source
    )


def _describe_frame(df: pd.DataFrame) -> tuple[Schema, int, str]:
    schema = [{"name": str(col), "type": str(dtype)} for col, dtype in df.dtypes.items()]
    header = _header("frame", df.shape, schema)
    return schema, len(df), _sha256(header, _frame_content(df))


def _describe_array(arr: np.ndarray) -> tuple[Schema, int, str]:
    if arr.dtype.names is not None:  # a structured array is a table with named columns
        return _describe_frame(pd.DataFrame(arr))
    if arr.ndim not in (1, 2):
        raise InvalidInput(
            f"cannot describe a {arr.ndim}-D numpy array as a dataset; pass a 1-D or 2-D array",
            field="data",
        )
    table = arr if arr.ndim == 2 else arr.reshape(-1, 1)
    schema = [{"name": str(i), "type": str(arr.dtype)} for i in range(table.shape[1])]
    header = _header("ndarray", arr.shape, schema, dtype=arr.dtype.str)
    return schema, len(arr), _sha256(header, _array_content(table))


def _array_content(table: np.ndarray) -> bytes | memoryview:
    """Raw bytes for plain dtypes; objects go through pandas, as their bytes are pointers."""
    if table.dtype.hasobject:
        return _frame_content(pd.DataFrame(table))
    return np.ascontiguousarray(table).data.cast("B")


def _frame_content(df: pd.DataFrame) -> bytes | memoryview:
    if df.shape[1] == 0:
        return b""
    try:
        hashes = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable cells (lists, dicts): hash their repr instead
        hashes = pd.util.hash_pandas_object(_repr_objects(df), index=False)
    return np.ascontiguousarray(hashes.to_numpy(dtype=np.uint64)).data.cast("B")


def _repr_objects(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for i, dtype in enumerate(df.dtypes):
        if pd.api.types.is_object_dtype(dtype):
            out.isetitem(i, df.iloc[:, i].map(repr))
    return out


def _header(kind: str, shape: tuple[int, ...], schema: Schema, **extra: str) -> bytes:
    """Schema and shape as canonical JSON, so two tables with the same bytes but different
    column names or types never share a digest."""
    body = {"kind": kind, "shape": list(shape), "schema": schema, **extra}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _sha256(header: bytes, content: bytes | memoryview) -> str:
    h = hashlib.sha256()
    h.update(len(header).to_bytes(8, "big"))
    h.update(header)
    h.update(content)
    return h.hexdigest()
