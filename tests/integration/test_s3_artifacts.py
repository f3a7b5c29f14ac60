"""Artifacts on an S3 API: a local moto server on 127.0.0.1 stands in for the object store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import free_port

from loopwright import Client, IntegrityError
from loopwright.backends.fs.artifacts import FsArtifactStore

moto_server = pytest.importorskip("moto.server", reason="S3 tests need the dev extra (moto)")
pytest.importorskip("s3fs", reason="S3 tests need the s3 extra (s3fs)")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_options(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL_S3", endpoint
    )  # botocore's override: never leave 127.0.0.1
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="ml-artifacts"
    )
    return {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}


def test_blobs_round_trip_and_dedupe_on_s3(s3_options: dict[str, object], tmp_path: Path) -> None:
    store = FsArtifactStore("s3://ml-artifacts/lw", **s3_options)
    digest = store.put_bytes(b"model bytes")
    assert store.put_bytes(b"model bytes") == digest
    assert store.get_bytes(digest) == b"model bytes"
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)
    d2, size = store.put_file(str(big))
    assert size == big.stat().st_size and store.exists(d2)
    store.download(d2, str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == big.read_bytes()
    keys = store.fs.find("ml-artifacts/lw")
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == sorted([digest, d2])  # no temp objects


def test_a_tampered_object_is_detected(s3_options: dict[str, object]) -> None:
    store = FsArtifactStore("s3://ml-artifacts/t", **s3_options)
    digest = store.put_bytes(b"original")
    store.fs.pipe(store.blob_path(digest), b"tampered")
    with pytest.raises(IntegrityError):
        store.get_bytes(digest)


def test_a_run_logs_artifacts_to_s3(s3_options: dict[str, object], tmp_path: Path) -> None:
    """The SDK path: only the URI and the standard AWS settings, no loopwright-specific knobs."""
    client = Client(f"sqlite:///{tmp_path / 'lw.db'}", artifacts_uri="s3://ml-artifacts/runs")
    (tmp_path / "notes.txt").write_text("trained on Q3 data")
    with client.start_run("s3", capture_environment=False, monitor_resources=False) as run:
        run.log_artifact(tmp_path / "notes.txt")
    assert client.download_artifact(run.id, "notes.txt") == b"trained on Q3 data"
