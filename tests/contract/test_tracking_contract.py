"""The tracking contract: every test runs on SQLite, PostgreSQL and REST and expects the same."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopwright import (
    AlreadyExists,
    ArtifactRef,
    Client,
    Conflict,
    DatasetInput,
    IntegrityError,
    InvalidInput,
    MalformedFilter,
    Metric,
    NotFound,
    RunStatus,
)


def _run(client: Client, experiment: str = "exp", **kw):  # type: ignore[no-untyped-def]
    return client.start_run(experiment, monitor_resources=False, **kw)


# -- experiments ------------------------------------------------------------------------------


def test_experiments_create_get_list(client: Client) -> None:
    exp = client.create_experiment("churn", tags={"team": "risk"})
    assert client.get_experiment(exp.id) == exp
    assert client.get_experiment_by_name("churn") == exp
    assert [e.name for e in client.list_experiments()] == ["churn"]
    assert exp.tags == {"team": "risk"}


def test_duplicate_experiment_is_already_exists(client: Client) -> None:
    client.create_experiment("churn")
    with pytest.raises(AlreadyExists) as info:
        client.create_experiment("churn")
    assert info.value.field == "name"


def test_unknown_experiment_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get_experiment_by_name("nope")
    with pytest.raises(NotFound):
        client.get_experiment("0" * 32)


@pytest.mark.parametrize("bad", ["", " padded ", "x" * 251, "tab\there"])
def test_bad_experiment_name_names_the_field(client: Client, bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        client.create_experiment(bad)
    assert info.value.field == "name"


# -- runs -------------------------------------------------------------------------------------


def test_run_lifecycle_and_nesting(client: Client) -> None:
    with _run(client, run_name="parent", tags={"team": "risk"}) as parent:
        child = client.start_run("exp", parent_run_id=parent.id, monitor_resources=False)
        child.end()
    p, c = client.get_run(parent.id), client.get_run(child.id)
    assert p.status is RunStatus.FINISHED and p.end_time is not None
    assert p.end_time >= p.start_time
    assert p.name == "parent" and p.tags["team"] == "risk"
    assert c.parent_run_id == parent.id


def test_failing_block_ends_run_failed_with_the_error(client: Client) -> None:
    with pytest.raises(ZeroDivisionError), _run(client) as run:
        run.log_metric("loss", 1.0)
        1 / 0  # noqa: B018
    stored = client.get_run(run.id)
    assert stored.status is RunStatus.FAILED
    assert "ZeroDivisionError" in (stored.error or "")
    assert stored.metrics == {"loss": 1.0}  # flushed on error


def test_end_and_resume_a_run(client: Client) -> None:
    run = _run(client)
    run.end("KILLED")
    assert client.get_run(run.id).status is RunStatus.KILLED
    assert client.resume_run(run.id).status is RunStatus.RUNNING
    assert client.end_run(run.id, "FINISHED").status is RunStatus.FINISHED


def test_end_run_rejects_bad_status(client: Client) -> None:
    run = _run(client)
    with pytest.raises(InvalidInput) as info:
        client.end_run(run.id, "DONE")
    assert info.value.field == "status"
    with pytest.raises(InvalidInput):
        client.end_run(run.id, "RUNNING")
    run.end()


def test_unknown_run_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get_run("f" * 32)
    with pytest.raises(InvalidInput) as info:
        client.get_run("not-an-id!")
    assert info.value.field == "run_id"


# -- metrics, params, tags ----------------------------------------------------------------------


def test_metric_series_round_trip_nan_and_inf(client: Client) -> None:
    values = [0.5, math.nan, math.inf, -math.inf, -0.0, 1e-300, 1.7976931348623157e308]
    with _run(client) as run:
        for i, x in enumerate(values):
            run.log_metric("loss", x, step=i, timestamp=1_000 + i)
    history = client.get_metric_history(run.id, "loss")
    assert [m.step for m in history] == list(range(len(values)))
    assert [m.timestamp for m in history] == [1_000 + i for i in range(len(values))]
    for got, want in zip(history, values, strict=True):
        assert (math.isnan(got.value) and math.isnan(want)) or got.value == want


def test_latest_metric_is_the_highest_step_even_when_logged_out_of_order(client: Client) -> None:
    with _run(client) as run:
        run.log_metric("auc", 0.9, step=10)
        run.flush()
        run.log_metric("auc", 0.1, step=3)
        run.log_metric("auc", 0.7, step=7)
    assert client.get_run(run.id).metrics["auc"] == 0.9


def test_default_steps_count_up_per_key(client: Client) -> None:
    with _run(client) as run:
        for x in (3.0, 2.0, 1.0):
            run.log_metric("loss", x)
        run.log_metrics({"acc": 0.5})
    assert [m.step for m in client.get_metric_history(run.id, "loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.id, "acc")] == [0]


def test_large_batch_is_stored_exactly(client: Client) -> None:
    points = [Metric(f"k{i % 7}", float(i), i // 7, 5_000 + i) for i in range(30_000)]
    run = _run(client)
    client.log_batch(run.id, points)
    run.end()
    for k in range(7):
        history = client.get_metric_history(run.id, f"k{k}")
        assert [m.value for m in history] == [float(i) for i in range(k, 30_000, 7)]


def test_params_are_write_once(client: Client) -> None:
    with _run(client) as run:
        run.log_params({"lr": 0.1, "depth": 3})
        run.log_param("lr", 0.1)  # same value again: fine
        with pytest.raises(Conflict) as info:
            run.log_param("lr", 0.2)
        assert info.value.field == "params.lr"
        run.set_tag("stage", "dev")
        run.set_tag("stage", "prod")  # tags move
    stored = client.get_run(run.id)
    assert stored.params == {"lr": "0.1", "depth": "3"}
    assert stored.tags["stage"] == "prod"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: r.log_metric("", 1.0), "key"),
        (lambda r: r.log_metric("loss", "high"), "loss"),
        (lambda r: r.log_metric("loss", 1.0, step=1.5), "step"),
        (lambda r: r.log_param("x" * 300, 1), "params key"),
        (lambda r: r.log_param("p", "v" * 9000), "params.p"),
    ],
)
def test_bad_metric_and_param_input_names_the_field(client: Client, call, field) -> None:  # type: ignore[no-untyped-def]
    with _run(client) as run:
        with pytest.raises(InvalidInput) as info:
            call(run)
        assert info.value.field == field


def test_bad_points_sent_straight_to_the_store_are_refused(client: Client) -> None:
    run = _run(client)
    with pytest.raises(InvalidInput) as info:
        client.log_batch(run.id, [Metric("ok", 1.0, 0, 0), Metric("bad", "x", 1, 0)])  # type: ignore[arg-type]
    assert "metrics[1]" in (info.value.field or "")
    run.end()
    assert client.get_run(run.id).metrics == {}  # nothing of the bad batch was stored


# -- search -----------------------------------------------------------------------------------


def _seed(client: Client) -> dict[str, str]:
    ids = {}
    specs = [
        ("a", 0.95, "gbm", "risk"),
        ("b", 0.85, "gbm", "growth"),
        ("c", 0.75, "gbm", "risk"),
        ("d", 0.90, "lr", "risk"),
        ("e", math.nan, "gbm", "risk"),
    ]
    for name, auc, model, team in specs:
        with _run(client, "search", run_name=name, tags={"team": team}) as run:
            run.log_params({"model": model, "depth": len(name) * 3})
            run.log_metric("auc", auc)
        ids[name] = run.id
    return ids


def test_search_filter_over_metrics_params_tags(client: Client) -> None:
    ids = _seed(client)
    page = client.search_runs(
        "search", "metrics.auc > 0.8 and params.model = 'gbm' and tags.team = 'risk'"
    )
    assert [r.id for r in page.items] == [ids["a"]]
    page = client.search_runs("search", "metrics.auc >= 0.85", order_by="metrics.auc DESC")
    assert [r.name for r in page.items] == ["a", "d", "b"]
    page = client.search_runs("search", "attributes.status = 'FINISHED' and name LIKE 'c%'")
    assert [r.name for r in page.items] == ["c"]


def test_search_pages_cover_everything_once(client: Client) -> None:
    ids = _seed(client)
    seen, token = [], None
    while True:
        page = client.search_runs("search", order_by=["metrics.auc ASC"], max_results=2,
                                  page_token=token)  # fmt: skip
        seen += [r.id for r in page.items]
        token = page.next_page_token
        if token is None:
            break
    assert sorted(seen) == sorted(ids.values())
    assert seen[-1] == ids["e"]  # NaN / missing sorts last
    with pytest.raises(InvalidInput) as info:
        client.search_runs(
            "search",
            "metrics.auc > 0",
            max_results=2,
            page_token=page.next_page_token or _token(client),
        )
    assert info.value.field == "page_token"


def _token(client: Client) -> str:
    return client.search_runs("search", max_results=1).next_page_token or ""


def test_malformed_filter_points_at_the_error(client: Client) -> None:
    with pytest.raises(MalformedFilter) as info:
        client.search_runs(filter="metrics.auc > and params.x = 'y'")
    assert info.value.details["position"] == 14
    assert "^" in info.value.message


# -- datasets and artifacts -----------------------------------------------------------------------


def test_logged_dataset_identifies_the_data(client: Client) -> None:
    df = pd.DataFrame({"age": [31, 45, 27], "income": [3.5, 5.1, 2.2], "city": ["a", "b", "c"]})
    with _run(client) as run:
        ds = run.log_dataset(df, name="train", source="s3://bucket/train.parquet")
        run.log_dataset(df.iloc[:2], name="holdout", context="validation")
    stored = client.get_run(run.id).inputs
    assert {(d.name, d.context) for d in stored} == {("train", "train"), ("holdout", "validation")}
    train = next(d for d in stored if d.context == "train")
    assert isinstance(train, DatasetInput)
    assert train.digest == ds.digest and train.num_rows == 3
    assert [c["name"] for c in train.schema] == ["age", "income", "city"]
    assert train.source == "s3://bucket/train.parquet"
    other = client.get_run(run.id).inputs[0 if stored[0].context == "validation" else 1]
    assert other.digest != train.digest


def test_artifacts_files_and_directories(client: Client, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(np.arange(1000, dtype=np.float64).tobytes())
    (model_dir / "sub" / "config.json").write_text('{"depth": 3}')
    (tmp_path / "notes.txt").write_text("hello")
    with _run(client) as run:
        run.log_artifact(tmp_path / "notes.txt")
        run.log_artifact(model_dir)
        run.log_artifact(tmp_path / "notes.txt", "copies/notes.txt")
    refs = client.list_artifacts(run.id)
    assert [r.path for r in refs] == [
        "copies/notes.txt", "model/sub/config.json", "model/weights.bin", "notes.txt"
    ]  # fmt: skip
    assert refs[0].digest == refs[3].digest  # same content, one blob
    assert client.download_artifact(run.id, "model/sub/config.json") == b'{"depth": 3}'
    out = client.download_artifacts(run.id, tmp_path / "out", prefix="model/")
    assert (out / "model" / "weights.bin").read_bytes() == (model_dir / "weights.bin").read_bytes()
    assert [r.path for r in client.list_artifacts(run.id, "model/sub")] == ["model/sub/config.json"]


def test_missing_artifact_and_bad_paths(client: Client, tmp_path: Path) -> None:
    with _run(client) as run:
        with pytest.raises(InvalidInput) as info:
            run.log_artifact(tmp_path / "absent.txt")
        assert info.value.field == "local_path"
        with pytest.raises(InvalidInput):
            run.log_bytes(b"x", "../escape.txt")
    with pytest.raises(NotFound):
        client.download_artifact(run.id, "nothing/here")


def test_tampered_blob_is_detected(client: Client) -> None:
    with _run(client) as run:
        ref = run.log_bytes(b"original bytes", "data.bin")
    assert isinstance(ref, ArtifactRef)
    store = getattr(client, "server_artifacts", None) or client.artifacts
    path = Path(store.blob_path(ref.digest))  # type: ignore[attr-defined]
    path.write_bytes(b"tampered bytes")
    with pytest.raises(IntegrityError):
        client.download_artifact(run.id, "data.bin")


# -- environment and resources --------------------------------------------------------------------


def test_environment_and_resources_are_captured(client: Client) -> None:
    with client.start_run("env", capture_environment=True) as run:
        sum(i * i for i in range(200_000))
    stored = client.get_run(run.id)
    assert stored.tags["lw.python"].count(".") == 2
    assert len(stored.tags["lw.packages_digest"]) == 64
    assert stored.metrics["system.wall_time_s"] > 0
    assert stored.metrics["system.peak_memory_mb"] > 10
    requirements = client.download_artifact(run.id, "environment/requirements.txt").decode()
    assert "sqlalchemy==" in requirements.lower()


def test_run_id_prefixes_resolve_like_git(client: Client) -> None:
    run = _run(client)
    run.end()
    assert client.resolve_run_id(run.id[:8]) == run.id
    assert client.resolve_run_id(run.id) == run.id
    with pytest.raises(InvalidInput):
        client.resolve_run_id(run.id[:3])
    missing = "0000" if not run.id.startswith("0000") else "ffff"
    with pytest.raises(NotFound):
        client.resolve_run_id(missing)
