"""Lineage of a registered version, built from a real training run inside a real git work tree.

The environment capture reads git from the working directory, so each test trains inside a
temporary repository made with the git CLI; the graph must then name the exact commit, dataset
digest, run ids and environment digest the run recorded.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from loopwright import Client, Settings
from loopwright.cli.main import app
from loopwright.lineage import (
    NodeKind,
    Relation,
    dataset_consumers,
    openlineage_events,
    render_tree,
    version_lineage,
    versions_trained_on,
)
from loopwright.lineage.openlineage import PRODUCER, SCHEMA_URL


@dataclass
class Trained:
    """What a test needs to know about the training it set up."""

    client: Client
    repo: Path
    commit: str
    parent_id: str
    run_id: str
    train: pd.DataFrame
    digest: str
    other_digest: str


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_repo(path: Path) -> str:
    """A git work tree with one commit; returns the commit id."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "ci@example.com")
    git(path, "config", "user.name", "CI")
    (path / "train.py").write_text("print('train')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


def churn_frame(seed: int, rows: int = 120) -> pd.DataFrame:
    """Features, a binary target and a sensitive attribute (never a model input)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    churned = (a + 0.3 * rng.normal(size=rows) > 0).astype(int)
    region = np.where(np.arange(rows) % 2 == 0, "north", "south")
    return pd.DataFrame({"a": a, "b": b, "region": region, "churned": churned})


def fit(frame: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(frame[["a", "b"]], frame["churned"])


def train_and_register(client: Client, repo: Path) -> Trained:
    """A parent run with a child that trains ``churn``; a second model ``other`` on other data."""
    train, other = churn_frame(0), churn_frame(1)
    with client.start_run("churn-exp", run_name="sweep", monitor_resources=False) as parent:
        run = client.start_run(
            "churn-exp", run_name="lr", parent_run_id=parent.id, monitor_resources=False
        )
        with run:
            ds = run.log_dataset(train, name="churn-train")
            run.log_dataset(train.head(20), name="churn-valid", context="validation")
            run.log_params({"C": 1.0})
            run.log_metric("accuracy", 0.91)
            run.log_model(fit(train))
    client.registry.register("churn", run.id, description="ranks customers by churn risk")
    with client.start_run("other-exp", run_name="other", monitor_resources=False) as o:
        other_ds = o.log_dataset(other, name="other-train")
        o.log_model(fit(other))
    client.registry.register("other", o.id)
    return Trained(client, repo, git(repo, "rev-parse", "HEAD"), parent.id, run.id, train,
                   ds.digest, other_ds.digest)  # fmt: skip


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trained]:
    repo = tmp_path / "repo"
    make_repo(repo)
    monkeypatch.chdir(repo)
    client = Client(str(tmp_path / "store"), settings=Settings(capture_environment=True))
    yield train_and_register(client, repo)
    client.close()


# -- the graph ---------------------------------------------------------------------------------


def test_graph_names_the_exact_data_code_environment_and_runs(trained: Trained) -> None:
    graph = version_lineage(trained.client, "churn/1")
    run = trained.client.get_run(trained.run_id)
    root = graph.nodes[graph.root or ""]
    assert root.kind is NodeKind.MODEL_VERSION and root.id == "churn/1"

    dataset = graph.get(NodeKind.DATASET, trained.digest)
    assert dataset is not None and dataset.attributes["num_rows"] == len(trained.train)
    assert dataset.attributes["schema"][0] == {"name": "a", "type": "float64"}
    code = graph.get(NodeKind.CODE, trained.commit)
    assert code is not None and code.attributes["branch"] == "main"
    assert code.attributes["dirty"] is False
    env = graph.get(NodeKind.ENVIRONMENT, run.tags["lw.env_digest"])
    assert env is not None and env.attributes["python"] == run.tags["lw.python"]

    relations = {(e.source, e.target, e.relation) for e in graph.edges}
    assert (f"dataset:{trained.digest}", f"run:{trained.run_id}", Relation.USED_BY) in relations
    assert (f"code:{trained.commit}", f"run:{trained.run_id}", Relation.RAN) in relations
    assert (f"run:{trained.run_id}", "model_version:churn/1", Relation.PRODUCED) in relations
    assert (f"run:{trained.run_id}", f"run:{trained.parent_id}", Relation.CHILD_OF) in relations
    assert graph.get(NodeKind.DATASET, trained.other_digest) is None


def test_to_dict_is_strict_json(trained: Trained) -> None:
    data = version_lineage(trained.client, "churn/latest").to_dict()
    text = json.dumps(data, allow_nan=False)
    assert trained.digest in text and trained.run_id in text
    keys = {n["key"] for n in data["nodes"]}
    assert all(e["from"] in keys and e["to"] in keys for e in data["edges"])


def test_a_dirty_work_tree_is_its_own_code_node(trained: Trained) -> None:
    (trained.repo / "train.py").write_text("print('changed')\n")
    with trained.client.start_run("churn-exp", run_name="dirty", monitor_resources=False) as run:
        run.log_model(fit(trained.train))
    mv = trained.client.registry.register("churn", run.id)
    code = version_lineage(trained.client, mv.uri).of_kind(NodeKind.CODE)
    tags = trained.client.get_run(run.id).tags
    assert len(code) == 1 and code[0].attributes["dirty"] is True
    assert code[0].id == f"{trained.commit}+{tags['lw.git.diff_digest']}"


def test_aliases_and_evaluations_point_at_the_version(trained: Trained) -> None:
    trained.client.registry.set_alias("churn", "staging", 1)
    graph = version_lineage(trained.client, "churn@staging")
    alias = graph.get(NodeKind.ALIAS, "churn@staging")
    assert alias is not None
    assert graph.edges_from(alias.key, Relation.POINTS_TO)[0].target == "model_version:churn/1"


def test_versions_trained_on_a_digest_exclude_other_data(trained: Trained) -> None:
    assert [v.uri for v in versions_trained_on(trained.client, trained.digest)] == ["churn/1"]
    assert [v.uri for v in versions_trained_on(trained.client, trained.other_digest)] == ["other/1"]
    assert versions_trained_on(trained.client, "0" * 64) == []


def test_dataset_consumers_lists_runs_and_versions(trained: Trained) -> None:
    found = dataset_consumers(trained.client, trained.digest)
    assert [r.id for r in found.runs] == [trained.run_id]
    assert [v.uri for v in found.versions] == ["churn/1"]


def test_the_tree_shows_the_digest_commit_and_parent(trained: Trained) -> None:
    console = Console(record=True, width=300)
    console.print(render_tree(version_lineage(trained.client, "churn/1")))
    text = console.export_text()
    assert text.startswith("model_version churn/1")
    for expected in (trained.digest, trained.commit, trained.parent_id[:8], "(child_of)"):
        assert expected in text


def test_lineage_is_the_same_over_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip(
        "loopwright.backends.rest.registry", reason="no REST registry backend yet (RestRegistry)"
    )
    from fastapi.testclient import TestClient

    from loopwright.client import open_stores
    from loopwright.server.app import create_app

    repo = tmp_path / "repo"
    commit = make_repo(repo)
    monkeypatch.chdir(repo)
    server_settings = Settings(tracking_uri=str(tmp_path / "server-store"))
    http = TestClient(create_app(*open_stores(server_settings), server_settings))
    request.addfinalizer(http.close)
    remote = Client("http://testserver", settings=Settings(), http_client=http)
    trained = train_and_register(remote, repo)
    graph = version_lineage(remote, "churn/1")
    for kind, node_id in ((NodeKind.DATASET, trained.digest), (NodeKind.RUN, trained.run_id),
                          (NodeKind.RUN, trained.parent_id), (NodeKind.CODE, commit)):  # fmt: skip
        assert graph.get(kind, node_id) is not None
    assert [v.uri for v in versions_trained_on(remote, trained.digest)] == ["churn/1"]


# -- OpenLineage -------------------------------------------------------------------------------

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_facets(facets: Any) -> None:
    """Every facet is an object carrying the base facet's ``_producer`` and ``_schemaURL``."""
    assert isinstance(facets, dict)
    for facet in facets.values():
        assert isinstance(facet, dict)
        assert isinstance(facet["_producer"], str) and facet["_producer"].startswith("https://")
        assert isinstance(facet["_schemaURL"], str) and facet["_schemaURL"].startswith("https://")


def check_dataset(dataset: dict[str, Any], extra: str) -> None:
    assert isinstance(dataset["namespace"], str) and isinstance(dataset["name"], str)
    check_facets(dataset.get("facets", {}))
    check_facets(dataset.get(extra, {}))


def check_run_event(event: dict[str, Any]) -> None:
    """The RunEvent shape of spec 2-0-2: required fields, their types and the enumerations."""
    assert {"eventTime", "producer", "schemaURL", "run", "job"} <= event.keys()
    assert event["eventType"] in {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert event["producer"] == PRODUCER and event["schemaURL"] == SCHEMA_URL
    assert _UUID.match(event["run"]["runId"])
    check_facets(event["run"].get("facets", {}))
    job = event["job"]
    assert job["namespace"] == "loopwright" and isinstance(job["name"], str)
    check_facets(job.get("facets", {}))
    for dataset in event.get("inputs", []):
        check_dataset(dataset, "inputFacets")
    for dataset in event.get("outputs", []):
        check_dataset(dataset, "outputFacets")


def test_openlineage_events_are_well_formed_run_events(trained: Trained) -> None:
    events = openlineage_events(trained.client, "churn/1")
    json.dumps(events, allow_nan=False)
    for event in events:
        check_run_event(event)
    parent, child = events  # ancestors first
    assert parent["run"]["runId"] == str(uuid.UUID(trained.parent_id))
    assert child["run"]["runId"] == str(uuid.UUID(trained.run_id))
    assert [e["eventType"] for e in events] == ["COMPLETE", "COMPLETE"]
    assert child["job"]["name"] == "churn-exp/lr"
    link = child["run"]["facets"]["parent"]
    assert link["run"]["runId"] == parent["run"]["runId"]
    assert link["job"] == {"namespace": "loopwright", "name": "churn-exp/sweep"}
    assert "nominalStartTime" in child["run"]["facets"]["nominalTime"]


def test_openlineage_datasets_code_and_model(trained: Trained) -> None:
    child = openlineage_events(trained.client, "churn/1", repo_url="https://git.example/churn")[1]
    train = next(d for d in child["inputs"] if d["name"] == "churn-train")
    assert train["facets"]["version"]["datasetVersion"] == trained.digest
    assert train["facets"]["schema"]["fields"][0] == {"name": "a", "type": "float64"}
    assert train["inputFacets"]["inputStatistics"]["rowCount"] == len(trained.train)
    (model,) = child["outputs"]
    mv = trained.client.registry.get_version("churn", 1)
    assert model["name"] == "models/churn/1"
    assert model["facets"]["version"]["datasetVersion"] == mv.digest
    source = child["job"]["facets"]["sourceCodeLocation"]
    assert source["type"] == "git" and source["version"] == trained.commit
    assert source["url"] == f"https://git.example/churn/tree/{trained.commit}"
    assert source["branch"] == "main"


def test_a_failed_run_exports_fail_with_its_error(trained: Trained) -> None:
    r = trained.client.start_run("churn-exp", run_name="boom", monitor_resources=False)
    with pytest.raises(RuntimeError), r:
        r.log_model(fit(trained.train))
        raise RuntimeError("diverged")
    mv = trained.client.registry.register("churn", r.id)
    (event,) = openlineage_events(trained.client, mv.uri)
    check_run_event(event)
    assert event["eventType"] == "FAIL"
    assert "diverged" in event["run"]["facets"]["errorMessage"]["message"]


# -- command line ------------------------------------------------------------------------------


def cli(trained: Trained, *args: str) -> Any:
    store = str(Path(trained.client.settings.tracking_uri or ""))
    env = {"COLUMNS": "300", "LOOPWRIGHT_TRACKING_URI": None, "LOOPWRIGHT_ARTIFACTS_URI": None}
    return CliRunner().invoke(app, ["--tracking-uri", store, *args], env=env)


def test_cli_prints_the_tree_json_and_openlineage(trained: Trained) -> None:
    tree = cli(trained, "lineage", "churn/1")
    assert tree.exit_code == 0, tree.output
    assert trained.digest in tree.output and trained.commit in tree.output
    as_json = cli(trained, "lineage", "churn/1", "--json")
    assert json.loads(as_json.output)["root"] == "model_version:churn/1"
    lines = cli(trained, "lineage", "churn/1", "--openlineage").output.splitlines()
    assert [json.loads(line)["eventType"] for line in lines] == ["COMPLETE", "COMPLETE"]


def test_cli_lists_versions_trained_on_a_dataset(trained: Trained) -> None:
    result = cli(trained, "lineage", "--dataset", trained.digest, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["uri"] for line in result.output.splitlines()] == ["churn/1"]
    assert "churn/1" in cli(trained, "lineage", "--dataset", trained.digest).output


def test_cli_needs_exactly_one_of_uri_and_dataset(trained: Trained) -> None:
    result = cli(trained, "lineage")
    assert result.exit_code == 2
    both = cli(trained, "lineage", "churn/1", "--dataset", trained.digest)
    assert both.exit_code == 2
