"""FsArtifactStore: content addressing, atomic writes and verified reads, on disk and in memory."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwright.backends.fs.artifacts import (
    FsArtifactStore,
    digest_bytes,
    digest_file,
    walk_dir,
)
from loopwright.errors import IntegrityError, InvalidInput, NotFound
from loopwright.tracking.store import ArtifactStore

MB = 1 << 20


class Staged:
    """A store plus where its in-flight temp files would be, so tests can prove none survive."""

    def __init__(self, store: FsArtifactStore, staging: Path) -> None:
        self.store = store
        self.staging = staging

    def blobs(self) -> list[str]:
        root = self.store.root.rstrip("/")
        if not self.store.fs.exists(f"{root}/blobs"):
            return []
        return self.store.fs.find(f"{root}/blobs")

    def leftovers(self) -> list[str]:
        return sorted(os.listdir(self.staging)) if self.staging.exists() else []


@pytest.fixture(params=["local", "memory"])
def staged(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Staged]:
    if request.param == "local":
        yield Staged(FsArtifactStore(tmp_path / "store"), tmp_path / "store" / "tmp")
        return
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    store = FsArtifactStore(f"memory://lw-test-{uuid.uuid4().hex}")
    yield Staged(store, staging)
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)


@pytest.fixture
def store(staged: Staged) -> FsArtifactStore:
    return staged.store


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tamper(store: FsArtifactStore, digest: str, data: bytes) -> None:
    store.fs.pipe_file(store.blob_path(digest), data)


# -- round trips ---------------------------------------------------------------------------------


def test_implements_the_artifact_store_protocol(store: FsArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


def test_bytes_round_trip(store: FsArtifactStore) -> None:
    data = b"weights" * 1000
    digest = store.put_bytes(data)
    assert digest == _sha(data)
    assert store.exists(digest)
    assert store.get_bytes(digest) == data
    with store.open(digest) as stream:
        assert stream.read() == data


def test_file_round_trip_and_download(store: FsArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 * MB + 17))
    digest, size = store.put_file(str(src))
    assert (digest, size) == (_sha(src.read_bytes()), src.stat().st_size)
    dest = tmp_path / "out" / "nested" / "model.bin"
    store.download(digest, str(dest))
    assert dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["model.bin"]


def test_empty_blob_round_trips(store: FsArtifactStore) -> None:
    digest = store.put_bytes(b"")
    assert digest == _sha(b"")
    assert store.get_bytes(digest) == b""
    with store.open(digest) as stream:
        assert stream.read() == b""


def test_stream_round_trip_with_expected_digest(staged: Staged) -> None:
    chunks = [b"a" * 1000, b"", b"b" * 5]
    data = b"".join(chunks)
    assert staged.store.put_stream(iter(chunks), expected_digest=_sha(data)) == (
        _sha(data),
        len(data),
    )
    assert staged.store.get_bytes(_sha(data)) == data
    assert staged.leftovers() == []


def test_blob_layout(store: FsArtifactStore) -> None:
    digest = store.put_bytes(b"layout")
    path = store.blob_path(digest)
    assert path.endswith(f"/blobs/sha256/{digest[:2]}/{digest}")
    assert store.fs.cat_file(path) == b"layout"


def test_file_url_root(tmp_path: Path) -> None:
    store = FsArtifactStore(f"file://{tmp_path}/viaurl")
    digest = store.put_bytes(b"x")
    assert (tmp_path / "viaurl" / "blobs" / "sha256" / digest[:2] / digest).read_bytes() == b"x"


def test_constructor_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lazy"
    store = FsArtifactStore(root)
    assert not root.exists()
    assert not store.exists(digest_bytes(b"nothing"))
    assert not root.exists()
    store.put_bytes(b"now")
    assert (root / "blobs").is_dir()


# -- dedupe and concurrency ----------------------------------------------------------------------


def test_same_content_is_stored_once(staged: Staged, tmp_path: Path) -> None:
    data = b"same content"
    src = tmp_path / "same.txt"
    src.write_bytes(data)
    digests = {
        staged.store.put_bytes(data),
        staged.store.put_bytes(data),
        staged.store.put_file(str(src))[0],
        staged.store.put_stream([b"same ", b"content"])[0],
    }
    assert digests == {_sha(data)}
    assert len(staged.blobs()) == 1
    assert staged.leftovers() == []


def test_concurrent_writers_of_same_content_leave_one_valid_blob(staged: Staged) -> None:
    data = os.urandom(2 * MB)
    n = 12
    barrier = threading.Barrier(n)
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            barrier.wait()
            chunks = (data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024))
            results.append(staged.store.put_stream(chunks))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {(_sha(data), len(data))}
    assert len(staged.blobs()) == 1
    assert staged.store.get_bytes(_sha(data)) == data
    assert staged.leftovers() == []


# -- integrity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"evil", b"weightz"], ids=["other-length", "same-length"])
def test_tampered_blob_fails_get_bytes(store: FsArtifactStore, bad: bytes) -> None:
    digest = store.put_bytes(b"weights")
    _tamper(store, digest, bad)
    with pytest.raises(IntegrityError) as info:
        store.get_bytes(digest)
    assert info.value.details == {"expected": digest, "actual": _sha(bad)}


@pytest.mark.parametrize("bad", [b"evil", b"weightz"], ids=["other-length", "same-length"])
def test_tampered_blob_fails_open_when_fully_read(store: FsArtifactStore, bad: bytes) -> None:
    digest = store.put_bytes(b"weights")
    _tamper(store, digest, bad)
    with store.open(digest) as stream, pytest.raises(IntegrityError):
        stream.read()
    with store.open(digest) as stream, pytest.raises(IntegrityError):
        stream.read(len(bad))  # exactly the stored size, never asking past EOF


def test_partial_read_of_tampered_blob_does_not_raise(store: FsArtifactStore) -> None:
    digest = store.put_bytes(b"0123456789")
    _tamper(store, digest, b"x123456789")
    with store.open(digest) as stream:
        assert stream.read(3) == b"x12"


def test_tampered_blob_fails_download_and_keeps_dest(
    store: FsArtifactStore, tmp_path: Path
) -> None:
    digest = store.put_bytes(os.urandom(3 * MB))
    _tamper(store, digest, os.urandom(3 * MB))
    dest = tmp_path / "dl" / "model.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with pytest.raises(IntegrityError):
        store.download(digest, str(dest))
    assert dest.read_bytes() == b"previous"
    assert os.listdir(dest.parent) == ["model.bin"]


def test_expected_digest_mismatch_stores_nothing(staged: Staged) -> None:
    wrong = _sha(b"something else")
    with pytest.raises(IntegrityError) as info:
        staged.store.put_stream([b"actual"], expected_digest=wrong)
    assert info.value.details == {"expected": wrong, "actual": _sha(b"actual")}
    assert staged.blobs() == []
    assert not staged.store.exists(_sha(b"actual"))
    assert staged.leftovers() == []


def test_cut_off_upload_leaves_no_blob_and_no_temp_file(staged: Staged) -> None:
    def upload() -> Iterator[bytes]:
        for _ in range(3):
            yield os.urandom(64 * 1024)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        staged.store.put_stream(upload())
    assert staged.blobs() == []
    assert staged.leftovers() == []


# -- errors --------------------------------------------------------------------------------------


def test_unknown_digest_is_not_found(store: FsArtifactStore, tmp_path: Path) -> None:
    missing = _sha(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(NotFound):
        store.get_bytes(missing)
    with pytest.raises(NotFound):
        store.open(missing)
    with pytest.raises(NotFound):
        store.download(missing, str(tmp_path / "nope.bin"))
    assert not (tmp_path / "nope.bin").exists()


MALFORMED = ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, "../" * 21 + "a", None, 7]


@pytest.mark.parametrize("digest", MALFORMED, ids=repr)
def test_malformed_digest_is_invalid_input(store: FsArtifactStore, digest: object) -> None:
    calls = [
        lambda: store.get_bytes(digest),  # type: ignore[arg-type]
        lambda: store.open(digest),  # type: ignore[arg-type]
        lambda: store.exists(digest),  # type: ignore[arg-type]
        lambda: store.download(digest, "unused"),  # type: ignore[arg-type]
    ]
    if digest is not None:  # None means "no expectation" for put_stream
        calls.append(lambda: store.put_stream([b"x"], expected_digest=digest))  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == "digest"


@pytest.mark.parametrize(
    ("url", "module", "extra"), [("s3://b/lw", "s3fs", "s3"), ("gs://b/lw", "gcsfs", "gcs")]
)
def test_missing_optional_filesystem_names_the_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    registry = sys.modules["fsspec.registry"]._registry  # protocols already imported
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    for protocol in ("s3", "s3a", "gs", "gcs"):
        monkeypatch.delitem(registry, protocol, raising=False)
    with pytest.raises(InvalidInput) as info:
        FsArtifactStore(url)
    assert info.value.field == "root"
    assert f"pip install 'loopwright[{extra}]'" in info.value.message


def test_unknown_protocol_and_empty_root_are_invalid() -> None:
    for root in ["nosuchproto://x", ""]:
        with pytest.raises(InvalidInput) as info:
            FsArtifactStore(root)
        assert info.value.field == "root"


# -- big files are streamed ----------------------------------------------------------------------


def test_large_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(20):
            f.write(os.urandom(MB))
    expected = digest_file(src)
    store = FsArtifactStore(tmp_path / "store")

    tracemalloc.start()
    try:
        assert store.put_file(str(src)) == expected
        store.download(expected[0], str(tmp_path / "copy.bin"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 8 * MB, f"peak Python allocation {peak / MB:.1f} MB for a 20 MB file"
    assert digest_file(tmp_path / "copy.bin") == expected


# -- helpers -------------------------------------------------------------------------------------


def test_digest_helpers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert digest_bytes(b"hello") == _sha(b"hello")
    assert digest_file(path) == (_sha(b"hello"), 5)
    assert digest_file(str(path)) == (_sha(b"hello"), 5)


def test_walk_dir_lists_files_sorted_with_posix_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "art"
    for rel in ["b.txt", "a/z.txt", "a/b/c.txt", "a.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "empty").mkdir()
    found = walk_dir(root)
    assert [rel for rel, _ in found] == ["a.txt", "a/b/c.txt", "a/z.txt", "b.txt"]
    for rel, absolute in found:
        assert os.path.isabs(absolute)
        assert Path(absolute).read_text() == rel


def test_walk_dir_of_empty_dir_and_of_non_dir(tmp_path: Path) -> None:
    assert walk_dir(tmp_path) == []
    with pytest.raises(InvalidInput):
        walk_dir(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput):
        walk_dir(tmp_path / "file")
