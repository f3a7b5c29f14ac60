"""Run rows -> :class:`~loopwright.tracking.entities.Run` entities, for search and ``get_run``.

A page of runs needs its params, tags, latest metrics and inputs. They come back in one
``UNION ALL`` query, ``(run_id, kind, key, text, number)`` rows, with the page's ids bound as a
single parameter (see :func:`~loopwright.backends.sql.search.id_list`): the statement is built once
per database, so SQLAlchemy compiles it once and never re-renders an ``IN (?, ?, ...)`` list.
Inputs need a join with ``datasets`` (JSON schemas); the union only says whether any run on the
page has one, and the join runs only then.

Rows are read as tuples and entities built positionally: at 250 runs a page the per-row costs of
attribute access on ``Row`` and of keyword arguments are a measurable share of a search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Select,
    Text,
    cast,
    literal_column,
    null,
    select,
    union_all,
)

from loopwright.backends.sql import schema as t
from loopwright.backends.sql.search import bind_ids, id_list
from loopwright.tracking.entities import DatasetInput, Run, RunStatus

__all__ = ["RUN_COLUMNS", "hydrate"]

#: The run columns in the order :class:`Run` takes them; select these for :func:`hydrate`.
RUN_COLUMNS = tuple(
    t.runs.c[name]
    for name in ("id", "experiment_id", "name", "status", "start_time", "end_time", "user",
                 "parent_run_id", "heartbeat_at", "error")
)  # fmt: skip

_PARAM, _TAG, _METRIC, _INPUT = range(4)
_STATUS = {status.value: status for status in RunStatus}
_NAN = math.nan
_STATEMENTS: dict[str, tuple[Any, Select[Any]]] = {}


def hydrate(conn: Connection, rows: Sequence[Any], dialect_name: str) -> list[Run]:
    """Runs for ``rows`` (tuples in :data:`RUN_COLUMNS` order), in the same order."""
    if not rows:
        return []
    attributes, inputs_stmt = _statements(dialect_name)
    params = {"ids": bind_ids([row[0] for row in rows], dialect_name)}
    by_run: dict[str, tuple[dict[str, str], dict[str, str], dict[str, float], list[Any]]] = {
        row[0]: ({}, {}, {}, []) for row in rows
    }
    has_inputs = False
    for run_id, kind, key, text, number in conn.execute(attributes, params).all():
        if kind == _METRIC:
            by_run[run_id][2][key] = _NAN if number is None else number
        elif kind == _INPUT:
            has_inputs = True
        else:
            by_run[run_id][kind][key] = text
    if has_inputs:
        for run_id, *fields in conn.execute(inputs_stmt, params):
            by_run[run_id][3].append(DatasetInput(*fields))
    return [
        Run(run_id, experiment_id, name, _STATUS[status], start, end, user, parent, heartbeat,
            error, *by_run[run_id])
        for run_id, experiment_id, name, status, start, end, user, parent, heartbeat, error in rows
    ]  # fmt: skip


def _statements(dialect_name: str) -> tuple[Any, Select[Any]]:
    """The two statements for this database, built on first use and then reused."""
    if dialect_name not in _STATEMENTS:
        _STATEMENTS[dialect_name] = (_attributes(dialect_name), _inputs(dialect_name))
    return _STATEMENTS[dialect_name]


def _attributes(dialect_name: str) -> Any:
    """Params, tags, latest metrics and input markers of the runs in ``:ids``, as one union."""
    no_text, no_number = cast(null(), Text), cast(null(), Float(precision=53))
    p, tg, lm, ri = t.params, t.tags, t.latest_metrics, t.run_inputs

    def kind(value: int) -> Any:
        return literal_column(str(value), Integer)

    return union_all(
        select(p.c.run_id, kind(_PARAM), p.c.key, p.c.value, no_number)
        .where(id_list(p.c.run_id, "ids", dialect_name)),
        select(tg.c.run_id, kind(_TAG), tg.c.key, tg.c.value, no_number)
        .where(id_list(tg.c.run_id, "ids", dialect_name)),
        select(lm.c.run_id, kind(_METRIC), lm.c.key, no_text, lm.c.value)
        .where(id_list(lm.c.run_id, "ids", dialect_name)),
        select(ri.c.run_id, kind(_INPUT), ri.c.name, no_text, no_number)
        .where(id_list(ri.c.run_id, "ids", dialect_name)),
    )  # fmt: skip


def _inputs(dialect_name: str) -> Select[Any]:
    """The inputs of the runs in ``:ids``, columns in :class:`DatasetInput` order after run_id."""
    ri, ds = t.run_inputs, t.datasets
    return (
        select(ri.c.run_id, ri.c.name, ds.c.digest, ds.c.schema, ds.c.num_rows, ri.c.context,
               ds.c.source)
        .join(ds, ds.c.digest == ri.c.digest)
        .where(id_list(ri.c.run_id, "ids", dialect_name))
        .order_by(ri.c.context, ri.c.name)
    )  # fmt: skip
