"""Blob upload, download and existence over HTTP: nothing partial or unverified becomes visible."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from http_helpers import BASE_URL, MAX_ARTIFACT, MAX_REQUEST, error_of, make_client

from loopwright.backends.fs.artifacts import FsArtifactStore
from loopwright.backends.rest import RestArtifactStore
from loopwright.errors import IntegrityError, NotFound

pytestmark = pytest.mark.usefixtures("spool")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_files(artifacts: FsArtifactStore) -> list[Path]:
    return [p for p in Path(artifacts.root).rglob("*") if p.is_file()]


def test_put_get_head_round_trip(client: httpx.Client, artifacts: FsArtifactStore) -> None:
    data = b"weights" * 1000
    digest = _digest(data)
    assert client.head(f"/api/v1/blobs/{digest}").status_code == 404

    response = client.put(f"/api/v1/blobs/{digest}", content=data)
    assert response.status_code == 201
    assert response.json() == {"digest": digest, "size": len(data)}
    assert artifacts.get_bytes(digest) == data

    assert client.head(f"/api/v1/blobs/{digest}").status_code == 200
    got = client.get(f"/api/v1/blobs/{digest}")
    assert got.content == data and got.headers["etag"] == f'"{digest}"'


def test_wrong_digest_is_refused_and_nothing_stored(
    client: httpx.Client, artifacts: FsArtifactStore, spool: Path
) -> None:
    claimed = _digest(b"something else")
    error = error_of(client.put(f"/api/v1/blobs/{claimed}", content=b"data"), 400, "INVALID_INPUT")
    assert error["field"] == "digest"
    assert error["details"] == {"expected": claimed, "actual": _digest(b"data")}
    assert not artifacts.exists(claimed) and not artifacts.exists(_digest(b"data"))
    assert _stored_files(artifacts) == [] and list(spool.iterdir()) == []


def test_blob_limit_is_separate_from_the_request_limit(
    client: httpx.Client, artifacts: FsArtifactStore, spool: Path
) -> None:
    allowed = b"x" * (MAX_REQUEST * 2)  # over the JSON limit, under the blob limit
    assert client.put(f"/api/v1/blobs/{_digest(allowed)}", content=allowed).status_code == 201

    too_big = b"y" * (MAX_ARTIFACT + 1)

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to refuse up front
        yield from (too_big[i : i + 8192] for i in range(0, len(too_big), 8192))

    response = client.put(f"/api/v1/blobs/{_digest(too_big)}", content=chunks())
    error_of(response, 413, "PAYLOAD_TOO_LARGE")
    assert not artifacts.exists(_digest(too_big))
    assert list(spool.iterdir()) == []


def test_a_cut_off_upload_leaves_nothing(app: Any, artifacts: FsArtifactStore, spool: Path) -> None:
    """The client goes away mid-body: the spool is removed and no blob appears."""
    data = b"z" * 4096
    digest = _digest(data)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": data[:1000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": f"/api/v1/blobs/{digest}", "raw_path": b"", "root_path": "",
        "query_string": b"", "headers": [(b"content-length", str(len(data)).encode())],
        "server": ("testserver", 80), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    anyio.run(app, scope, receive, send)

    assert sent[0]["status"] == 400
    assert not artifacts.exists(digest)
    assert _stored_files(artifacts) == [] and list(spool.iterdir()) == []


def test_rest_put_file_streams_and_skips_existing_content(
    client: httpx.Client, rest_artifacts: RestArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"m" * 100_000)
    methods: list[str] = []
    client.event_hooks = {"request": [lambda request: methods.append(request.method)]}

    digest, size = rest_artifacts.put_file(source)
    assert (digest, size) == (_digest(source.read_bytes()), 100_000)
    assert methods == ["HEAD", "PUT"]

    methods.clear()
    assert rest_artifacts.put_file(source) == (digest, size)
    assert methods == ["HEAD"]


def test_rest_reads_verify_the_digest(
    rest_artifacts: RestArtifactStore, artifacts: FsArtifactStore, tmp_path: Path
) -> None:
    digest = rest_artifacts.put_bytes(b"payload")
    assert rest_artifacts.get_bytes(digest) == b"payload"
    with rest_artifacts.open(digest) as stream:
        assert stream.read() == b"payload"
    dest = tmp_path / "out" / "p.bin"
    rest_artifacts.download(digest, str(dest))
    assert dest.read_bytes() == b"payload"
    assert rest_artifacts.exists(digest)

    with pytest.raises(NotFound):
        rest_artifacts.get_bytes(_digest(b"never stored"))
    assert not rest_artifacts.exists(_digest(b"never stored"))


def test_rest_catches_bytes_corrupted_on_the_server(
    app: Any, artifacts: FsArtifactStore, tmp_path: Path
) -> None:
    """The server's stream dies mid-way (its store notices); the client must not accept it."""
    digest = artifacts.put_bytes(b"original")
    Path(artifacts.blob_path(digest)).write_bytes(b"tampered")
    with make_client(app, raise_server_exceptions=False) as client:
        store = RestArtifactStore(BASE_URL, client=client)
        with pytest.raises(IntegrityError):
            store.get_bytes(digest)
        dest = tmp_path / "d.bin"
        with pytest.raises(IntegrityError):
            store.download(digest, str(dest))
        assert not dest.exists()
