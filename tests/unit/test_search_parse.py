"""The filter and order-by parser: the AST it builds and every error it raises, with positions."""

from __future__ import annotations

import pytest

from loopwright.errors import InvalidInput, MalformedFilter
from loopwright.tracking.search import (
    And,
    Compare,
    Field,
    InList,
    IsNull,
    Not,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
)

AUC = Field("metric", "auc")
MODEL = Field("param", "model")
TEAM = Field("tag", "team")


def _malformed(text: str) -> MalformedFilter:
    with pytest.raises(MalformedFilter) as info:
        parse_filter(text)
    assert info.value.field == "filter"
    return info.value


# ------------------------------------------------------------------------------ the AST


@pytest.mark.parametrize("text", [None, "", "   \n\t"])
def test_no_filter(text: str | None) -> None:
    assert parse_filter(text) is None


def test_brief_example() -> None:
    assert parse_filter("metrics.auc > 0.8 and params.model = 'gbm' and tags.team = 'risk'") == And(
        (Compare(AUC, ">", 0.8), Compare(MODEL, "=", "gbm"), Compare(TEAM, "=", "risk"))
    )


def test_and_binds_tighter_than_or() -> None:
    a, b, c = "metrics.a > 1", "metrics.b > 2", "metrics.c > 3"
    expr = parse_filter(f"{a} or {b} and {c}")
    assert expr == Or(
        (
            Compare(Field("metric", "a"), ">", 1),
            And((Compare(Field("metric", "b"), ">", 2), Compare(Field("metric", "c"), ">", 3))),
        )
    )


def test_parentheses_override_precedence() -> None:
    expr = parse_filter("(metrics.a > 1 OR metrics.b > 2) AND metrics.c > 3")
    assert isinstance(expr, And)
    assert isinstance(expr.items[0], Or)


def test_not_binds_tighter_than_and() -> None:
    expr = parse_filter("NOT metrics.a > 1 AND metrics.b > 2")
    assert expr == And(
        (Not(Compare(Field("metric", "a"), ">", 1)), Compare(Field("metric", "b"), ">", 2))
    )


def test_not_of_group_and_double_not() -> None:
    inner = Compare(Field("metric", "a"), "=", 1)
    assert parse_filter("not (metrics.a = 1)") == Not(inner)
    assert parse_filter("NOT NOT metrics.a = 1") == Not(Not(inner))


def test_chains_are_flat() -> None:
    expr = parse_filter("metrics.a=1 or metrics.b=2 or metrics.c=3")
    assert isinstance(expr, Or)
    assert len(expr.items) == 3


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("metrics.auc = 1", "="),
        ("metrics.auc == 1", "="),
        ("metrics.auc != 1", "!="),
        ("metrics.auc < 1", "<"),
        ("metrics.auc <= 1", "<="),
        ("metrics.auc > 1", ">"),
        ("metrics.auc >= 1", ">="),
        ("metrics.auc>=1", ">="),
    ],
)
def test_comparison_operators(text: str, op: str) -> None:
    assert parse_filter(text) == Compare(AUC, op, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("params.model LIKE 'g%'", "LIKE"),
        ("params.model like 'g%'", "LIKE"),
        ("params.model ILIKE 'g%'", "ILIKE"),
        ("params.model NOT LIKE 'g%'", "NOT LIKE"),
        ("params.model not ilike 'g%'", "NOT ILIKE"),
    ],
)
def test_like_operators(text: str, op: str) -> None:
    assert parse_filter(text) == Compare(MODEL, op, "g%")  # type: ignore[arg-type]


def test_in_and_not_in() -> None:
    assert parse_filter("params.model IN ('a', \"b\")") == InList(MODEL, ("a", "b"))
    assert parse_filter("metrics.auc not in (1, 2.5)") == InList(AUC, (1, 2.5), negated=True)
    assert parse_filter("params.model IN('a')") == InList(MODEL, ("a",))


def test_is_null_and_is_not_null() -> None:
    assert parse_filter("tags.team IS NULL") == IsNull(TEAM)
    assert parse_filter("tags.team is not null") == IsNull(TEAM, negated=True)


@pytest.mark.parametrize(
    ("literal", "value"),
    [("3", 3), ("-3", -3), ("+3", 3), ("0.5", 0.5), (".5", 0.5), ("1e-3", 0.001), ("2E3", 2000.0)],
)
def test_number_literals(literal: str, value: float) -> None:
    expr = parse_filter(f"metrics.auc > {literal}")
    assert isinstance(expr, Compare)
    assert expr.value == value
    assert type(expr.value) is type(value)


def test_huge_integer_becomes_float() -> None:
    expr = parse_filter("metrics.auc > 99999999999999999999")
    assert isinstance(expr, Compare)
    assert isinstance(expr.value, float)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("params.model = 'gbm'", "gbm"),
        ('params.model = "gbm"', "gbm"),
        ("params.model = 'it''s'", "it's"),
        ('params.model = "say ""hi"""', 'say "hi"'),
        ("params.model = 'a and b'", "a and b"),
        ("params.model = ''", ""),
    ],
)
def test_string_literals(text: str, value: str) -> None:
    assert parse_filter(text) == Compare(MODEL, "=", value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("metrics.system.peak_memory_mb > 1", Field("metric", "system.peak_memory_mb")),
        ("metrics.val/loss > 1", Field("metric", "val/loss")),
        ("metrics.f1-score > 1", Field("metric", "f1-score")),
        ("metrics.`val loss` > 1", Field("metric", "val loss")),
        ('metrics."val loss" > 1', Field("metric", "val loss")),
        ("metrics.`a``b` > 1", Field("metric", "a`b")),
        ("metric.auc > 1", AUC),
        ("METRICS.auc > 1", AUC),
        ("params.lr > 1", Field("param", "lr")),
        ("param.lr > 1", Field("param", "lr")),
        ("tags.epochs > 1", Field("tag", "epochs")),
        ("tag.epochs > 1", Field("tag", "epochs")),
        ("params.and > 1", Field("param", "and")),
    ],
)
def test_keys_and_prefixes(text: str, field: Field) -> None:
    expr = parse_filter(text)
    assert isinstance(expr, Compare)
    assert expr.field == field


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("start_time > 1", "start_time"),
        ("attributes.start_time > 1", "start_time"),
        ("attribute.end_time > 1", "end_time"),
        ("attr.end_time > 1", "end_time"),
        ("run_id = 'x'", "id"),
        ("id = 'x'", "id"),
        ("run_name = 'x'", "name"),
        ("attr.run_name = 'x'", "name"),
        ("user = 'x'", "user"),
        ("USER = 'x'", "user"),
        ("experiment_id = 'x'", "experiment_id"),
        ("parent_run_id = 'x'", "parent_run_id"),
    ],
)
def test_attributes_and_aliases(text: str, key: str) -> None:
    expr = parse_filter(text)
    assert isinstance(expr, Compare)
    assert expr.field == Field("attribute", key)


def test_double_quotes_are_a_key_after_the_dot_and_a_string_elsewhere() -> None:
    assert parse_filter('params."a b" = "a b"') == Compare(Field("param", "a b"), "=", "a b")


def test_status_is_normalised_to_upper_case() -> None:
    assert parse_filter("status = 'finished'") == Compare(
        Field("attribute", "status"), "=", "FINISHED"
    )
    assert parse_filter("status IN ('failed', 'Killed')") == InList(
        Field("attribute", "status"), ("FAILED", "KILLED")
    )


@pytest.mark.parametrize(
    "text",
    [
        "params.lr > 3",
        "params.lr = 0.1",
        "tags.epochs <= 10",
        "params.lr IN (1, 2)",
        "params.lr > '3'",
        "start_time >= 1700000000000",
        "end_time < 1.5e12",
        "name < 'b'",
    ],
)
def test_allowed_type_combinations(text: str) -> None:
    assert parse_filter(text) is not None


def test_numeric_literal_against_param_keeps_its_type() -> None:
    assert parse_filter("params.lr > 3") == Compare(Field("param", "lr"), ">", 3)


def test_like_pattern_may_end_with_an_escaped_backslash() -> None:
    assert parse_filter("params.p LIKE 'a\\\\'") == Compare(Field("param", "p"), "LIKE", "a\\\\")


# --------------------------------------------------------------------------- the errors


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.auc > and x", 14, "unexpected token 'and' at position 14; expected a value"),
        ("metrics.auc >", 13, "unexpected end of input at position 13; expected a value"),
        ("metrics.auc", 11, "expected a comparison operator"),
        ("metrics.auc 0.8", 12, "expected a comparison operator"),
        ("metrics.auc > 1 metrics.b > 2", 16, "expected AND, OR or the end of the filter"),
        ("metrics.auc > 1 and", 19, "expected a field such as metrics.auc"),
        ("metrics.auc > 1 and or metrics.b > 1", 20, "unexpected token 'or'"),
        ("(metrics.auc > 1", 16, "expected ')'"),
        ("metrics.auc > 1)", 15, "unexpected token ')'"),
        ("()", 1, "expected a field"),
        ("metrics.auc ~ 1", 12, "unexpected character '~'"),
        ("metrics.auc = 'open", 14, "unterminated string at position 14"),
        ("metrics.`open > 1", 8, "unterminated string"),
        ("metrics. = 1", 8, "missing key after 'metrics.'"),
        ("metrics = 1", 7, "missing key after 'metrics'"),
        ("metrics.`` = 1", 0, "empty key"),
        ("params.x IN 'a'", 12, "expected '(' after IN"),
        ("params.x IN ('a' 'b')", 17, "expected ',' or ')'"),
        ("params.x IN ()", 13, "expected a value"),
        ("params.x NOT = 'a'", 13, "expected IN, LIKE or ILIKE after NOT"),
        ("params.x IS 'a'", 12, "expected NULL"),
        ("params.x IS NOT 3", 16, "expected NULL"),
        ("params.x = 'a' = 'b'", 15, "unexpected token '='"),
        ("metrics.auc > 1e999", 14, "number 1e999 out of range"),
        ("metrics.auc > 3abc", 14, "unexpected character '3'"),
    ],
)
def test_syntax_errors(text: str, position: int, fragment: str) -> None:
    error = _malformed(text)
    assert error.details["position"] == position
    assert fragment in error.message


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert parse_filter("(" * 50 + "metrics.a > 1" + ")" * 50) is not None
    assert _malformed("(" * 51 + "metrics.a > 1" + ")" * 51).details["position"] == 50
    assert "nested too deeply" in _malformed("NOT " * 1000 + "metrics.a > 1").message


def test_error_message_shows_a_caret_under_the_position() -> None:
    error = _malformed("metrics.auc > and ...")
    assert error.message == (
        "unexpected token 'and' at position 14; expected a value (a number or a quoted string)\n"
        "  metrics.auc > and ...\n"
        "                ^"
    )


def test_caret_on_a_multiline_filter_stays_aligned() -> None:
    error = _malformed("metrics.a > 1\nand metrics.b >")
    shown, caret = error.message.splitlines()[1:]
    assert shown == "  metrics.a > 1 and metrics.b >"
    assert caret.index("^") == len(shown)


def test_caret_in_a_long_filter_is_windowed() -> None:
    text = " and ".join(f"metrics.m{i} > {i}" for i in range(20)) + " and )"
    error = _malformed(text)
    shown, caret = error.message.splitlines()[1:]
    assert len(shown) < 90
    assert shown[caret.index("^")] == ")"


def test_unknown_prefix_lists_the_valid_ones() -> None:
    error = _malformed("metrics.auc > 1 and foo.bar = 1")
    assert error.details["position"] == 20
    assert "unknown prefix 'foo'" in error.message
    for prefix in ("metrics.", "params.", "tags.", "attributes."):
        assert prefix in error.message


def test_unknown_attribute_lists_the_valid_ones() -> None:
    error = _malformed("auc > 0.8")
    assert error.details["position"] == 0
    assert "unknown attribute 'auc'" in error.message
    assert "start_time" in error.message
    assert "need a prefix" in error.message
    assert _malformed("attributes.bogus = 'x'").details["position"] == 0


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.auc = 'high'", 14, "string 'high' compared with metric 'auc'"),
        ("metrics.auc IN (1, 'x')", 19, "string 'x' compared with metric 'auc'"),
        ("metrics.auc LIKE 'a%'", 17, "LIKE on metric 'auc'"),
        ("name = 3", 7, "number 3 compared with attribute 'name'"),
        ("user IN ('a', 2)", 14, "number 2 compared with attribute 'user'"),
        ("start_time > 'yesterday'", 13, "compared with attribute 'start_time'"),
        ("end_time LIKE '1%'", 14, "LIKE on attribute 'end_time'"),
        ("status = 'DONE'", 9, "invalid status 'DONE'"),
        ("status IN ('RUNNING', 'nope')", 22, "invalid status 'nope'"),
        ("status = 1", 9, "invalid status 1"),
        ("status > 'RUNNING'", 9, "operator > on status"),
        ("status LIKE 'RUN%'", 12, "LIKE on attribute 'status'"),
        ("params.x LIKE 3", 14, "the pattern must be a quoted string"),
        ("params.x IN (1, 'a')", 16, "IN list mixes numbers and strings"),
        ("params.x IN ('a', 1)", 18, "IN list mixes numbers and strings"),
        ("params.x LIKE 'a\\'", 14, "lone backslash"),
    ],
)
def test_type_errors(text: str, position: int, fragment: str) -> None:
    error = _malformed(text)
    assert error.details["position"] == position
    assert fragment in error.message


def test_status_error_lists_valid_statuses() -> None:
    assert "RUNNING, FINISHED, FAILED, KILLED" in _malformed("status = 'x'").message


def test_malformed_filter_is_invalid_input_on_the_wire() -> None:
    body = _malformed("metrics.auc >").to_dict()
    assert body["code"] == "MALFORMED_FILTER"
    assert body["field"] == "filter"
    assert body["details"] == {"position": 13}


# ---------------------------------------------------------------------------- order by


def test_order_by_clauses() -> None:
    assert parse_order_by(
        ["metrics.auc DESC", "params.lr", "start_time asc", "attributes.name", "tags.t desc"]
    ) == [
        OrderKey("metric", "auc", True),
        OrderKey("param", "lr", False),
        OrderKey("attribute", "start_time", False),
        OrderKey("attribute", "name", False),
        OrderKey("tag", "t", True),
    ]


def test_order_by_aliases_and_quoting() -> None:
    assert parse_order_by(["run_name", "metrics.`val loss` DESC"]) == [
        OrderKey("attribute", "name"),
        OrderKey("metric", "val loss", True),
    ]
    assert OrderKey("metric", "auc").field == AUC


@pytest.mark.parametrize("items", [None, []])
def test_no_order_by(items: list[str] | None) -> None:
    assert parse_order_by(items) == []


@pytest.mark.parametrize(
    ("items", "index", "position", "fragment"),
    [
        (["metrics.auc up"], 0, 12, "expected ASC, DESC or the end of the clause"),
        (["start_time", ""], 1, 0, "expected a field"),
        (["metrics.auc DESC, start_time"], 0, 16, "unexpected token ','"),
        (["metrics.auc DESC DESC"], 0, 17, "unexpected token 'DESC'"),
        (["bogus"], 0, 0, "unknown attribute 'bogus'"),
        (["foo.bar"], 0, 0, "unknown prefix 'foo'"),
        (["metrics."], 0, 8, "missing key"),
        (["metrics.auc > 1"], 0, 12, "unexpected token '>'"),
    ],
)
def test_order_by_errors(items: list[str], index: int, position: int, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_order_by(items)
    error = info.value
    assert type(error) is InvalidInput
    assert error.field == "order_by"
    assert error.details == {"index": index, "position": position}
    assert fragment in error.message
    assert error.message.startswith(f"order_by[{index}]: ")


def test_order_by_rejects_a_bare_string() -> None:
    with pytest.raises(InvalidInput, match="list of clauses"):
        parse_order_by("metrics.auc DESC")  # type: ignore[arg-type]
