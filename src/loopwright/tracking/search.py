"""The run-search language: filter expressions and order-by clauses, parsed into a small AST.

Pure Python on purpose: the SQL backend compiles the AST (``backends/sql/search.py``), and any
other backend (or a client validating before it sends) can reuse the same parser, so every store
rejects the same filters with the same messages.

Grammar (keywords are case-insensitive)::

    filter     := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" or ")" | comparison
    comparison := field op value
                | field ["NOT"] ("LIKE" | "ILIKE") string
                | field ["NOT"] "IN" "(" value ("," value)* ")"
                | field "IS" ["NOT"] "NULL"
    field      := prefix "." key | attribute
    op         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="

Prefixes: ``metrics.``, ``params.``/``param.``, ``tags.``/``tag.``,
``attributes.``/``attribute.``/``attr.`` (or a bare attribute name). A key runs until whitespace
or an operator and may contain dots, slashes, dashes and colons (``metrics.val/loss``); anything
else is quoted with backticks or double quotes *directly after the dot* (``metrics.`val loss```).
Everywhere else a double-quoted token is a string literal. Inside a string the quote character is
escaped by doubling it (``'it''s'``). LIKE patterns use ``%`` and ``_``; a backslash makes the next
character literal.

Semantics the backends implement:

- a comparison on a metric, param or tag matches only runs that *have* that key (and, for metrics,
  a non-NaN latest value), so ``params.x != 'a'`` skips runs without ``x`` while
  ``NOT params.x = 'a'`` keeps them;
- ``IS NULL`` means the run has no such key (attributes: the column is empty);
- a number compared with a param or tag compares numerically, and values that are not numbers
  simply do not match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

from loopwright.errors import InvalidInput, MalformedFilter
from loopwright.tracking.entities import RunStatus

__all__ = [
    "ATTRIBUTES",
    "And",
    "Compare",
    "Entity",
    "Expr",
    "Field",
    "InList",
    "IsNull",
    "Not",
    "Or",
    "OrderKey",
    "Value",
    "parse_filter",
    "parse_order_by",
]

Entity = Literal["metric", "param", "tag", "attribute"]
CompareOp = Literal["=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]
Value = str | int | float

#: Canonical attribute name -> "string", "number" or "status" (what its values are).
ATTRIBUTES: dict[str, str] = {
    "id": "string",
    "name": "string",
    "status": "status",
    "start_time": "number",
    "end_time": "number",
    "user": "string",
    "experiment_id": "string",
    "parent_run_id": "string",
}
_ATTRIBUTE_ALIASES = {"run_id": "id", "run_name": "name"}
_PREFIXES: dict[str, Entity] = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
}
_VALID_PREFIXES = "metrics., params., tags., attributes. (or a bare attribute name)"
_LIKE_OPS = {"LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"}
_ORDER_OPS = {"<", "<=", ">", ">="}
_MAX_DEPTH = 50  # of NOT and parentheses: well past any real filter, far below Python's limit


# --------------------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Field:
    """What a condition looks at; attribute keys are canonical (``run_id`` becomes ``id``)."""

    entity: Entity
    key: str


@dataclass(frozen=True, slots=True)
class Compare:
    """``field op value``; an ``int``/``float`` value against a param or tag is numeric."""

    field: Field
    op: CompareOp
    value: Value


@dataclass(frozen=True, slots=True)
class InList:
    """``field [NOT] IN (values)``; all values share one type (numbers or strings)."""

    field: Field
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    """``field IS [NOT] NULL``: whether the run lacks the key (or the attribute is empty)."""

    field: Field
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Compare | InList | IsNull | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One ordering clause; runs lacking the key sort last in either direction."""

    entity: Entity
    key: str
    descending: bool = False

    @property
    def field(self) -> Field:
        return Field(self.entity, self.key)


# ------------------------------------------------------------------------------------ tokens

TokenKind = Literal["field", "word", "string", "number", "op", "punct", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: TokenKind
    text: str  # the source slice, for messages
    pos: int
    value: str | float | int = ""
    prefix: str = ""  # for "field" tokens: what came before the dot


class _ParseError(Exception):
    """Raised inside the parser; the public functions translate it into loopwright's errors.

    The message reads ``"<what> at position <pos>[; <hint>]"`` so every error has one shape.
    """

    def __init__(self, what: str, pos: int, hint: str = "") -> None:
        self.message = f"{what} at position {pos}" + (f"; {hint}" if hint else "")
        self.pos = pos
        super().__init__(self.message)


_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9_.\-/:]+")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.])")
_OPERATOR = re.compile(r"==|!=|<=|>=|=|<|>")


def _tokenize(text: str) -> Iterator[_Token]:
    """Yield tokens lazily, so the first error in reading order is the one reported."""
    pos = 0
    while True:
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
        if pos >= len(text):
            yield _Token("end", "end of input", pos)
            return
        token = _next_token(text, pos)
        yield token
        pos = token.pos + len(token.text)


def _next_token(text: str, pos: int) -> _Token:
    char = text[pos]
    if char in "'\"":
        value, end = _read_quoted(text, pos)
        return _Token("string", text[pos:end], pos, value)
    if char in "(),":
        return _Token("punct", char, pos, char)
    if number := _NUMBER.match(text, pos):
        return _Token("number", number.group(), pos, _number_value(number.group(), pos))
    if operator := _OPERATOR.match(text, pos):
        return _Token("op", operator.group(), pos, operator.group())
    if word := _WORD.match(text, pos):
        return _word_or_field(text, pos, word.end())
    raise _ParseError(f"unexpected character {char!r}", pos)


def _word_or_field(text: str, pos: int, end: int) -> _Token:
    """A bare word (keyword or attribute), or ``prefix.key`` when a dot follows."""
    if end >= len(text) or text[end] != ".":
        return _Token("word", text[pos:end], pos, text[pos:end])
    prefix, key_pos = text[pos:end], end + 1
    if key_pos < len(text) and text[key_pos] in '`"':
        key, key_end = _read_quoted(text, key_pos)
    elif bare := _KEY.match(text, key_pos):
        key, key_end = bare.group(), bare.end()
    else:
        raise _ParseError(f"missing key after '{prefix}.'", key_pos, "quote unusual keys: `a b`")
    return _Token("field", text[pos:key_end], pos, key, prefix)


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a string quoted by ``text[pos]``; the quote doubled inside stands for itself."""
    quote, parts, i = text[pos], [], pos + 1
    while i < len(text):
        j = text.find(quote, i)
        if j < 0:
            break
        parts.append(text[i:j])
        if text.startswith(quote * 2, j):
            parts.append(quote)
            i = j + 2
            continue
        return "".join(parts), j + 1
    raise _ParseError("unterminated string", pos, f"close it with {quote}")


def _number_value(literal: str, pos: int) -> int | float:
    if re.fullmatch(r"[-+]?\d+", literal) and abs(int(literal)) < 2**63:
        return int(literal)  # beyond 64 bits a database cannot bind it: compare as a float
    value = float(literal)
    if not math.isfinite(value):
        raise _ParseError(f"number {literal} out of range", pos)
    return value


# ------------------------------------------------------------------------------------ parser


class _Parser:
    """Recursive descent with one token of lookahead; one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.current = next(self.tokens)
        self.depth = 0

    def advance(self) -> _Token:
        token = self.current
        if token.kind != "end":
            self.current = next(self.tokens)
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "word" and str(token.value).upper() in words

    def at_punct(self, char: str) -> bool:
        return self.current.kind == "punct" and self.current.value == char

    def expect_keyword(self, word: str, what: str) -> None:
        if not self.at_keyword(word):
            self.fail(what)
        self.advance()

    def expect_punct(self, char: str, what: str) -> None:
        if not self.at_punct(char):
            self.fail(what)
        self.advance()

    def fail(self, expected: str) -> NoReturn:
        token = self.current
        found = "end of input" if token.kind == "end" else f"token {token.text!r}"
        raise _ParseError(f"unexpected {found}", token.pos, f"expected {expected}")

    def parse(self) -> Expr:
        expr = self.parse_or()
        if self.current.kind != "end":
            self.fail("AND, OR or the end of the filter")
        return expr

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.at_keyword("OR"):
            self.advance()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Expr:
        items = [self.parse_not()]
        while self.at_keyword("AND"):
            self.advance()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Expr:
        """NOT and parentheses are where the parser recurses, so they bound the depth."""
        if not self.at_keyword("NOT") and not self.at_punct("("):
            return self.parse_comparison()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _ParseError("filter nested too deeply", self.current.pos, f"max {_MAX_DEPTH}")
        if self.advance().kind == "word":
            expr: Expr = Not(self.parse_not())
        else:
            expr = self.parse_or()
            self.expect_punct(")", "')'")
        self.depth -= 1
        return expr

    def parse_comparison(self) -> Expr:
        field = self.parse_field()
        if self.at_keyword("IS"):
            return self.parse_is_null(field)
        negated = self.at_keyword("NOT")
        if negated:
            self.advance()
            if not self.at_keyword("IN", "LIKE", "ILIKE"):
                self.fail("IN, LIKE or ILIKE after NOT")
        if self.at_keyword("IN"):
            return self.parse_in(field, negated)
        if self.at_keyword("LIKE", "ILIKE"):
            op = str(self.advance().value).upper()
            return self.parse_compare(field, f"NOT {op}" if negated else op)
        if self.current.kind == "op":
            op = str(self.advance().value)
            return self.parse_compare(field, "=" if op == "==" else op)
        self.fail("a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)")

    def parse_field(self) -> Field:
        token = self.current
        if token.kind == "field":
            self.advance()
            return _resolve_field(token)
        if token.kind == "word" and not self.at_keyword("AND", "OR", "NOT", "IN", "IS", "NULL"):
            self.advance()
            return _resolve_bare(token)
        self.fail(f"a field such as metrics.auc; valid prefixes: {_VALID_PREFIXES}")

    def parse_is_null(self, field: Field) -> IsNull:
        self.advance()
        negated = self.at_keyword("NOT")
        if negated:
            self.advance()
        self.expect_keyword("NULL", "NULL")
        return IsNull(field, negated)

    def parse_compare(self, field: Field, op: str) -> Compare:
        token = self.current
        value = self.parse_value()
        _check_compare(field, op, value, token.pos)
        value = _normalise(field, value)
        return Compare(field, op, value)  # type: ignore[arg-type]

    def parse_in(self, field: Field, negated: bool) -> InList:
        self.advance()
        self.expect_punct("(", "'(' after IN")
        values = [self.parse_in_value(field, None)]
        while self.at_punct(","):
            self.advance()
            values.append(self.parse_in_value(field, values[0]))
        self.expect_punct(")", "',' or ')'")
        return InList(field, tuple(_normalise(field, v) for v in values), negated)

    def parse_in_value(self, field: Field, first: Value | None) -> Value:
        """One list item, of the right type for ``field`` and the same type as ``first``."""
        token = self.current
        value = self.parse_value()
        _check_compare(field, "=", value, token.pos)
        if first is not None and isinstance(first, str) != isinstance(value, str):
            raise _ParseError("IN list mixes numbers and strings", token.pos)
        return value

    def parse_value(self) -> Value:
        token = self.current
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        self.fail("a value (a number or a quoted string)")


def _resolve_field(token: _Token) -> Field:
    entity = _PREFIXES.get(token.prefix.lower())
    if entity is None:
        raise _ParseError(
            f"unknown prefix {token.prefix!r}", token.pos, f"valid prefixes: {_VALID_PREFIXES}"
        )
    key = str(token.value)
    if not key:
        raise _ParseError(f"empty key in {token.text!r}", token.pos)
    if entity == "attribute":
        return Field("attribute", _attribute_name(key, token.pos))
    return Field(entity, key)


def _resolve_bare(token: _Token) -> Field:
    word = str(token.value)
    if word.lower() in _PREFIXES:
        raise _ParseError(
            f"missing key after {word!r}", token.pos + len(word), f"write {word}.<key>"
        )
    return Field("attribute", _attribute_name(word, token.pos))


def _attribute_name(name: str, pos: int) -> str:
    canonical = _ATTRIBUTE_ALIASES.get(name.lower(), name.lower())
    if canonical not in ATTRIBUTES:
        valid = ", ".join([*ATTRIBUTES, *_ATTRIBUTE_ALIASES])
        hint = f"valid attributes: {valid} (metrics, params and tags need a prefix)"
        raise _ParseError(f"unknown attribute {name!r}", pos, hint)
    return canonical


def _kind_of(field: Field) -> str:
    """What values a field holds: "number", "string", "keyvalue" (params/tags) or "status"."""
    if field.entity == "metric":
        return "number"
    if field.entity in ("param", "tag"):
        return "keyvalue"
    return ATTRIBUTES[field.key]


def _describe(field: Field) -> str:
    return f"{field.entity} {field.key!r}"


def _check_compare(field: Field, op: str, value: Value, pos: int) -> None:
    """Reject a literal of the wrong type for ``field``, naming the field and what it needs."""
    kind, is_text = _kind_of(field), isinstance(value, str)
    if op in _LIKE_OPS:
        if kind in ("number", "status"):
            raise _ParseError(f"{op} on {_describe(field)}", pos, "LIKE needs a string field")
        if not is_text:
            raise _ParseError(f"{op} with {value!r}", pos, "the pattern must be a quoted string")
        _check_like_pattern(str(value), pos)
    elif kind == "number" and is_text:
        raise _ParseError(
            f"string {value!r} compared with {_describe(field)}",
            pos,
            "metrics compare with numbers only",
        )
    elif kind == "string" and not is_text:
        raise _ParseError(
            f"number {value!r} compared with {_describe(field)}", pos, "quote it as a string"
        )
    elif kind == "status":
        _check_status(op, value, pos)


def _check_status(op: str, value: Value, pos: int) -> None:
    valid = ", ".join(s.value for s in RunStatus)
    if op in _ORDER_OPS:
        raise _ParseError(f"operator {op} on status", pos, "use =, !=, IN or NOT IN")
    if not isinstance(value, str) or value.upper() not in RunStatus.__members__:
        raise _ParseError(f"invalid status {value!r}", pos, f"valid statuses: {valid}")


def _check_like_pattern(pattern: str, pos: int) -> None:
    """A trailing lone backslash escapes nothing; PostgreSQL rejects it, so reject it here."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    if trailing % 2:
        raise _ParseError("LIKE pattern ends with a lone backslash", pos, "write \\\\ for one")


def _normalise(field: Field, value: Value) -> Value:
    """Statuses are stored upper-case; accept them in any case."""
    if field.entity == "attribute" and field.key == "status" and isinstance(value, str):
        return value.upper()
    return value


# ----------------------------------------------------------------------------- public parsers


def parse_filter(text: str | None) -> Expr | None:
    """Parse a filter expression; ``None`` or blank means "no filter".

    Raises :class:`MalformedFilter` (``field="filter"``, ``details["position"]``) whose message
    shows the expression with a caret under the offending position.
    """
    if text is None or not text.strip():
        return None
    try:
        return _Parser(text).parse()
    except _ParseError as exc:
        message = f"{exc.message}\n{_caret(text, exc.pos)}"
        raise MalformedFilter(message, field="filter", position=exc.pos) from None


def parse_order_by(items: Sequence[str] | None) -> list[OrderKey]:
    """Parse clauses such as ``metrics.auc DESC`` or ``start_time``; ascending by default.

    Raises :class:`InvalidInput` with ``field="order_by"`` and ``details`` ``index`` (which
    clause) and ``position`` (where in it).
    """
    if isinstance(items, str):
        raise InvalidInput("order_by must be a list of clauses, not a string", field="order_by")
    keys = []
    for index, item in enumerate(items or ()):
        try:
            keys.append(_parse_order_item(item))
        except _ParseError as exc:
            message = f"order_by[{index}]: {exc.message}\n{_caret(item, exc.pos)}"
            raise InvalidInput(message, field="order_by", index=index, position=exc.pos) from None
    return keys


def _parse_order_item(item: str) -> OrderKey:
    parser = _Parser(item)
    if parser.current.kind == "end":
        parser.fail("a field such as metrics.auc")
    field = parser.parse_field()
    descending = False
    if parser.at_keyword("ASC", "DESC"):
        descending = str(parser.advance().value).upper() == "DESC"
    if parser.current.kind != "end":
        parser.fail("ASC, DESC or the end of the clause")
    return OrderKey(field.entity, field.key, descending)


_CARET_WINDOW = 70


def _caret(text: str, pos: int) -> str:
    """Two indented lines: the (windowed, single-line) text and a caret under ``pos``."""
    shown = re.sub(r"\s", " ", text)
    start = max(0, pos - _CARET_WINDOW // 2)
    end = min(len(shown), start + _CARET_WINDOW)
    prefix = "..." if start else ""
    suffix = "..." if end < len(shown) else ""
    snippet = prefix + shown[start:end] + suffix
    return f"  {snippet}\n  {' ' * (len(prefix) + pos - start)}^"
