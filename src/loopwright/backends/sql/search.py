"""Compile the run-search AST (:mod:`loopwright.tracking.search`) into SQLAlchemy Core.

The parser has already rejected every ill-typed filter, so nothing here raises
:class:`~loopwright.errors.LoopwrightError`. Conditions on metrics, params and tags are ``EXISTS``
subqueries correlated with ``runs``, which makes every leaf two-valued (true or false, never
NULL): ``NOT`` is then an exact complement, and a run lacking a key fails any comparison on it.
Metric conditions read ``latest_metrics``, where a NULL value means NaN and NaN never matches.

What SQLite and PostgreSQL disagree on lives in :class:`_Dialect` and its two subclasses only:
how a text value becomes a number without raising, and how to get a case-sensitive LIKE.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Numeric,
    Select,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.sql.elements import UnaryExpression

from loopwright.backends.sql import schema
from loopwright.tracking.search import (
    ATTRIBUTES,
    And,
    Compare,
    Expr,
    Field,
    InList,
    IsNull,
    Not,
    Or,
    OrderKey,
    Value,
)

__all__ = ["NUMBER_PATTERN", "apply_search", "like_to_glob", "order_clauses"]

#: When a param or tag value counts as a number (the same rule on every database): an optional
#: sign, digits with an optional fraction, and an exponent of at most three digits. The bounded
#: exponent and length keep PostgreSQL's NUMERIC cast from ever overflowing; ``(?!\n)`` stops
#: Python's ``$`` (SQLite's REGEXP is Python's ``re``) from accepting a trailing newline.
NUMBER_PATTERN = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,3})?(?!\n)$"
_MAX_NUMBER_LENGTH = 64

_OPERATORS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_KEY_VALUE_TABLES: dict[str, Table] = {
    "metric": schema.latest_metrics,
    "param": schema.params,
    "tag": schema.tags,
}
_runs = schema.runs


# ---------------------------------------------------------------------------------- dialects


class _Dialect:
    """Per-database pieces; subclasses override only what differs (alembic's ``Impl`` idea)."""

    numeric_type: Any = Float(precision=53)

    def number(self, value: int | float) -> ColumnElement[Any]:
        """A numeric literal of the type :meth:`as_number` produces."""
        return literal(float(value), Float(precision=53))

    def as_number(self, text: ColumnElement[str]) -> ColumnElement[Any]:
        """``text`` as a number, or NULL when it is not one (so it never matches)."""
        is_number = and_(func.length(text) <= _MAX_NUMBER_LENGTH, text.regexp_match(NUMBER_PATTERN))
        return case((is_number, cast(text, self.numeric_type)), else_=None)

    def like(self, column: ColumnElement[str], pattern: str) -> ColumnElement[bool]:
        """Case-sensitive LIKE with ``\\`` as the escape character."""
        return column.like(pattern)

    def ilike(self, column: ColumnElement[str], pattern: str) -> ColumnElement[bool]:
        return column.ilike(pattern)


class _Postgres(_Dialect):
    """NUMERIC, not float8: an exact cast that cannot overflow for the values the regex allows.

    LIKE/ILIKE are native and already treat backslash as the escape character.
    """

    numeric_type = Numeric()

    def number(self, value: int | float) -> ColumnElement[Any]:
        return literal(Decimal(repr(value)), Numeric())


class _Sqlite(_Dialect):
    """SQLite's LIKE ignores ASCII case, so a case-sensitive LIKE is rewritten as GLOB."""

    def like(self, column: ColumnElement[str], pattern: str) -> ColumnElement[bool]:
        return column.op("GLOB", is_comparison=True)(literal(like_to_glob(pattern)))

    def ilike(self, column: ColumnElement[str], pattern: str) -> ColumnElement[bool]:
        return column.like(pattern, escape="\\")


_DIALECTS: dict[str, _Dialect] = {"postgresql": _Postgres(), "sqlite": _Sqlite()}


def like_to_glob(pattern: str) -> str:
    """Translate a LIKE pattern (``%``, ``_``, ``\\`` escapes) into an equivalent GLOB pattern."""
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(_glob_literal(next(chars, "\\")))
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append(_glob_literal(char))
    return "".join(out)


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


def _dialect(name: str) -> _Dialect:
    try:
        return _DIALECTS[name]
    except KeyError:
        # A programming error (the store only opens these databases), so not a LoopwrightError.
        raise ValueError(f"search supports {sorted(_DIALECTS)}, not {name!r}") from None


# -------------------------------------------------------------------------------- public API


def apply_search(
    stmt: Select[Any],
    filter_expr: Expr | None,
    order_keys: Sequence[OrderKey] | None,
    dialect_name: str,
) -> Select[Any]:
    """Add the filter's WHERE and a stable ORDER BY to ``stmt``, a select over ``schema.runs``.

    ``dialect_name`` is ``engine.dialect.name`` (``"sqlite"`` or ``"postgresql"``). The ORDER BY
    always ends with ``start_time DESC, id`` so offset or keyset pagination is stable; pass a
    statement without its own ORDER BY (these clauses are appended) that selects FROM
    ``schema.runs`` itself, not an alias: the subqueries correlate with that table.
    """
    dialect = _dialect(dialect_name)
    if filter_expr is not None:
        stmt = stmt.where(_compile(filter_expr, dialect))
    return stmt.order_by(*order_clauses(order_keys or ()))


def order_clauses(order_keys: Sequence[OrderKey]) -> list[UnaryExpression[Any]]:
    """The ORDER BY terms: each key with missing values last, then the tiebreaker."""
    terms = []
    for key in order_keys:
        expr = _order_expression(key)
        terms.append((expr.desc() if key.descending else expr.asc()).nulls_last())
    terms += [_runs.c.start_time.desc(), _runs.c.id.asc()]
    return terms


def _order_expression(key: OrderKey) -> ColumnElement[Any]:
    if key.entity == "attribute":
        return _runs.c[key.key]
    table = _KEY_VALUE_TABLES[key.entity]
    value = select(table.c.value).where(table.c.run_id == _runs.c.id, table.c.key == key.key)
    return value.correlate(_runs).scalar_subquery()


# ---------------------------------------------------------------------------------- compiler


def _compile(expr: Expr, dialect: _Dialect) -> ColumnElement[bool]:
    """One AST node to one boolean SQL expression; leaves go to :func:`_leaf`."""
    if isinstance(expr, And):
        return and_(*(_compile(item, dialect) for item in expr.items))
    if isinstance(expr, Or):
        return or_(*(_compile(item, dialect) for item in expr.items))
    if isinstance(expr, Not):
        return not_(_compile(expr.item, dialect))
    if isinstance(expr, IsNull):
        return _is_null(expr)
    return _leaf(expr, dialect)


def _is_null(expr: IsNull) -> ColumnElement[bool]:
    if expr.field.entity == "attribute":
        column = _runs.c[expr.field.key]
        return column.is_not(None) if expr.negated else column.is_(None)
    present = _exists(expr.field, None)
    return present if expr.negated else not_(present)


def _leaf(expr: Compare | InList, dialect: _Dialect) -> ColumnElement[bool]:
    """A comparison, applied to the run's column or inside an EXISTS over its key rows."""
    field = expr.field
    if field.entity != "attribute":
        table = _KEY_VALUE_TABLES[field.entity]
        return _exists(field, _predicate(expr, table.c.value, dialect))
    column = _runs.c[field.key]
    predicate = _predicate(expr, column, dialect)
    # A NULL attribute must make the leaf false (not unknown), so NOT stays a complement.
    return and_(column.is_not(None), predicate) if column.nullable else predicate


def _exists(field: Field, predicate: ColumnElement[bool] | None) -> ColumnElement[bool]:
    """EXISTS a row of ``field``'s table for this run and key (and matching ``predicate``)."""
    table = _KEY_VALUE_TABLES[field.entity]
    conditions = [table.c.run_id == _runs.c.id, table.c.key == field.key]
    if predicate is not None:
        conditions.append(predicate)
    return select(table.c.run_id).where(*conditions).correlate(_runs).exists()


def _predicate(
    expr: Compare | InList, column: ColumnElement[Any], dialect: _Dialect
) -> ColumnElement[bool]:
    values = (expr.value,) if isinstance(expr, Compare) else expr.values
    if isinstance(expr, Compare) and "LIKE" in expr.op:
        return _like(expr, column, dialect)
    if _compares_as_number(expr.field, values):
        column = dialect.as_number(column) if expr.field.entity in ("param", "tag") else column
        literals = [_number_literal(expr.field, v, dialect) for v in values]
    else:
        literals = [literal(v, column.type) for v in values]
    if isinstance(expr, InList):
        return column.not_in(literals) if expr.negated else column.in_(literals)
    return _OPERATORS[expr.op](column, literals[0])


def _like(expr: Compare, column: ColumnElement[str], dialect: _Dialect) -> ColumnElement[bool]:
    pattern = str(expr.value)
    matched = (
        dialect.ilike(column, pattern) if "ILIKE" in expr.op else dialect.like(column, pattern)
    )
    return not_(matched) if expr.op.startswith("NOT") else matched


def _compares_as_number(field: Field, values: Sequence[Value]) -> bool:
    """Metrics and time attributes always; params and tags when the literal is a number."""
    if field.entity == "metric" or ATTRIBUTES.get(field.key) == "number":
        return True
    return field.entity in ("param", "tag") and not isinstance(values[0], str)


def _number_literal(field: Field, value: Value, dialect: _Dialect) -> ColumnElement[Any]:
    """Typed literals, so no driver-side bind cast truncates 1.5 to a BIGINT 2."""
    if field.entity in ("param", "tag"):
        return dialect.number(float(value) if isinstance(value, float) else int(value))
    if isinstance(value, int):
        return literal(value, BigInteger())
    return literal(float(value), Float(precision=53))
