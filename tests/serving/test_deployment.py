"""Deployment specs: YAML in, validated models out, mistakes named by their YAML path."""

from __future__ import annotations

import pytest

from loopwright.errors import InvalidInput
from loopwright.serving.deployment import Batching, DeploymentSpec, ref_of

SPEC = """
name: churn-api
model: churn
champion: 3
canary: {ref: challenger, weight: 0.1}
shadows: [latest]
batching: {max_batch_size: 8, max_wait_ms: 1}
slo: {min_requests: 20}
log: {uri: /tmp/predictions}
"""


def test_yaml_round_trip_and_refs() -> None:
    spec = DeploymentSpec.from_yaml(SPEC)
    assert spec.champion == "3"
    assert spec.batching == Batching(max_batch_size=8, max_wait_ms=1)
    assert spec.slo is not None and spec.slo.min_requests == 20 and spec.slo.max_error_rate == 0.05
    assert (spec.champion_ref, spec.canary_ref, spec.shadow_refs) == (
        "churn/3",
        "churn@challenger",
        ["churn/latest"],
    )
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec


def test_defaults_and_from_uri() -> None:
    spec = DeploymentSpec.from_uri("churn@champion")
    assert (spec.name, spec.model, spec.champion, spec.canary, spec.shadows) == (
        "churn",
        "churn",
        "champion",
        None,
        [],
    )
    assert spec.batching.max_batch_size == 32 and spec.log.enabled
    assert DeploymentSpec.from_uri("churn/3", name="api").champion_ref == "churn/3"
    assert ref_of("churn", "7") == "churn/7" and ref_of("churn", "prod") == "churn@prod"


def test_from_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deploy.yaml"
    path.write_text(SPEC, encoding="utf-8")
    assert DeploymentSpec.from_file(path).name == "churn-api"
    with pytest.raises(InvalidInput) as err:
        DeploymentSpec.from_file(tmp_path / "missing.yaml")
    assert err.value.field == "path"


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("name: a\nmodel: m\nbatching: {max_batchsize: 4}", "batching.max_batchsize", "wait_ms"),
        ("name: a\nmodel: m\nshadow: [x]", "shadow", "shadows"),
        ("name: a\nmodel: m\ncanary: {ref: b, weight: 1.5}", "canary.weight", "less than 1"),
        ("name: a\nmodel: m\ncanary: {ref: 'b/2', weight: 0.5}", "canary.ref", "'/'"),
        ("name: a\nmodel: 'm@x'", "model", "cannot contain"),
        ("name: a\nmodel: m\nbatching: {max_batch_size: 0}", "batching.max_batch_size", "to 1"),
        ("name: a\nmodel: m\nshadows: [x, x]", "deployment", "repeat"),
        ("model: m", "name", "required"),
    ],
)
def test_mistakes_name_the_yaml_path(text: str, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        DeploymentSpec.from_yaml(text)
    assert err.value.field == field
    assert says in err.value.message


def test_not_a_mapping_or_not_yaml() -> None:
    for text in ("- a\n- b", "", "a: [b"):
        with pytest.raises(InvalidInput) as err:
            DeploymentSpec.from_yaml(text)
        assert err.value.field == "deployment"
