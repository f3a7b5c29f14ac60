"""Content-addressed artifact bytes over fsspec: the key of a blob is the SHA-256 of its content.

This is the middle layer of the storage stack (STYLE habit 11): fsspec moves bytes, this module
hashes, dedupes and verifies them, and tracking maps run paths to digests on top.

Layout under the root::

    <root>/blobs/sha256/<first 2 hex>/<64-hex digest>   one file per distinct content
    <root>/tmp/<random>                                 in-flight writes (local roots only)

Why writes look the way they do: the final key depends on the hash, which is only known once every
byte has been seen, so content is always staged first. On a local root the stage is a file under
``<root>/tmp/`` (same filesystem, so ``os.replace`` is an atomic rename). On a remote root (object
stores, ``memory://``) a rename is a copy, so the stage is a local temporary file and the blob is
then uploaded to its final key in one PUT, which object stores make visible atomically. Either way a
reader never sees a partial blob, and a blob that already exists is not written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, cast

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from loopwright.errors import IntegrityError, InvalidInput, NotFound

__all__ = ["CHUNK_SIZE", "FsArtifactStore", "digest_bytes", "digest_file", "walk_dir"]

#: Bytes read or written per step when streaming; bounds memory regardless of the blob's size.
CHUNK_SIZE = 1 << 20

_DIGEST = re.compile(r"[0-9a-f]{64}")

#: fsspec protocol -> the loopwright extra that installs its filesystem package.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def digest_bytes(data: bytes) -> str:
    """The SHA-256 hex digest that names ``data`` in the store."""
    return hashlib.sha256(data).hexdigest()


def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(digest, size)`` of a local file, read in chunks so big files never sit in memory."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def walk_dir(local_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(relative posix path, absolute path)`` of every file under ``local_dir``, sorted.

    Logging a directory as artifacts needs stable, OS-independent relative names. Symlinked files
    are included (their target's bytes); symlinked directories are not descended, to avoid cycles.
    """
    root = Path(local_dir).resolve()
    if not root.is_dir():
        raise InvalidInput(f"not a directory: {os.fspath(local_dir)!r}", field="local_dir")
    found: list[tuple[str, str]] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            found.append((path.relative_to(root).as_posix(), str(path)))
    return sorted(found)


def _check_digest(digest: object) -> str:
    """Reject anything that is not a lowercase SHA-256 hex string before it becomes a path."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        shown = repr(digest)[:80]
        raise InvalidInput(
            f"digest must be 64 lowercase hex characters, got {shown}", field="digest"
        )
    return digest


def _filesystem_class(root: str) -> type[AbstractFileSystem]:
    """Resolve the fsspec class for ``root`` without connecting, naming the extra if missing."""
    protocol = fsspec.core.split_protocol(root)[0] or "file"
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        hint = f"pip install 'loopwright[{extra}]'" if extra else str(exc)
        raise InvalidInput(
            f"artifact root {root!r} needs an optional package: {hint}", field="root"
        ) from exc
    except ValueError as exc:
        raise InvalidInput(
            f"unknown storage protocol {protocol!r} in {root!r}", field="root"
        ) from exc


def _integrity_error(expected: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"blob {expected} is corrupt: its content hashes to {actual}",
        expected=expected,
        actual=actual,
    )


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _create_exclusive(directory: str, prefix: str = "") -> tuple[str, BinaryIO]:
    """A brand-new file with a random name: concurrent writers never share a temp file."""
    path = os.path.join(directory, f"{prefix}{uuid.uuid4().hex}.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return path, os.fdopen(fd, "wb")


def _write_hashing(chunks: Iterable[bytes], out: BinaryIO) -> tuple[str, int]:
    """Copy ``chunks`` into ``out``, hashing on the way so the content is read only once."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def _file_chunks(path: str | os.PathLike[str]) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(CHUNK_SIZE), b"")


class _VerifyingReader(io.RawIOBase):
    """Reads a blob and raises ``IntegrityError`` once all of it has been read and it mismatches.

    Unbuffered on purpose: a buffer would read ahead to EOF and fail a caller who only asked for
    the first bytes. The check fires on reaching the stored size as well as at EOF, so a caller
    that reads exactly ``size`` bytes and never asks for more is still protected.
    """

    def __init__(self, inner: Any, digest: str, size: int) -> None:
        super().__init__()
        self._inner = inner
        self._digest = digest
        self._size = size
        self._hasher = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = bytes(self._inner.read(-1 if size is None else size))
        self._hasher.update(data)
        self._read += len(data)
        if not data or self._read >= self._size:
            self._verify()
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        actual = self._hasher.hexdigest()
        if actual != self._digest:
            raise _integrity_error(self._digest, actual)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class FsArtifactStore:
    """An :class:`~loopwright.tracking.store.ArtifactStore` on a local directory or fsspec URL.

    ``root`` is a path or a URL such as ``file:///data/lw``, ``memory://lw``, ``s3://bucket/lw`` or
    ``gs://bucket/lw``; ``storage_options`` go to the fsspec filesystem (credentials, endpoint).
    The constructor only checks that the filesystem can be loaded: nothing is connected or created
    until it is used, so opening a store is free and has no side effects.
    """

    def __init__(self, root: str | os.PathLike[str], **storage_options: Any) -> None:
        root = os.fspath(root)
        if not root:
            raise InvalidInput("artifact root must not be empty", field="root")
        _filesystem_class(root)
        self.root = root
        self._storage_options = storage_options

    def __repr__(self) -> str:
        return f"FsArtifactStore({self.root!r})"

    # -- wiring -----------------------------------------------------------------------------

    @cached_property
    def _fs_and_base(self) -> tuple[AbstractFileSystem, str]:
        fs, base = fsspec.core.url_to_fs(self.root, **self._storage_options)
        return fs, base.rstrip("/")

    @property
    def fs(self) -> AbstractFileSystem:
        return self._fs_and_base[0]

    @property
    def _base(self) -> str:
        return self._fs_and_base[1]

    @property
    def _is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def blob_path(self, digest: str) -> str:
        """Where the blob lives inside :attr:`fs` (useful for diagnostics and tests)."""
        digest = _check_digest(digest)
        return f"{self._base}/blobs/sha256/{digest[:2]}/{digest}"

    def _staging_dir(self) -> str:
        """Local roots stage next to the blobs (atomic rename); remote roots stage on local disk."""
        if not self._is_local:
            return tempfile.gettempdir()
        path = f"{self._base}/tmp"
        os.makedirs(path, exist_ok=True)
        return path

    # -- writes -----------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest. Storing the same bytes again is a no-op."""
        digest = digest_bytes(data)
        if self.exists(digest):
            return digest
        if self._is_local:
            self._put_staged([data], digest)
        else:
            self.fs.pipe_file(self.blob_path(digest), bytes(data))
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Store a local file by streaming it; returns ``(digest, size)``.

        On a remote root the file is hashed, then uploaded straight to its final key, so it must
        not change during the call (if it does, reads of that blob will raise ``IntegrityError``).
        """
        if self._is_local:
            return self.put_stream(_file_chunks(path))
        digest, size = digest_file(path)
        if not self.exists(digest):
            self.fs.put_file(os.fspath(path), self.blob_path(digest))
        return digest, size

    def put_stream(
        self, chunks: Iterable[bytes], expected_digest: str | None = None
    ) -> tuple[str, int]:
        """Store the concatenation of ``chunks``; returns ``(digest, size)``.

        Meant for uploads arriving in pieces. If ``chunks`` raises midway, the exception
        propagates and nothing is stored; if ``expected_digest`` is given and the content hashes
        to something else, ``IntegrityError`` is raised and nothing is stored.
        """
        if expected_digest is not None:
            _check_digest(expected_digest)
        return self._put_staged(chunks, expected_digest)

    def _put_staged(self, chunks: Iterable[bytes], expected_digest: str | None) -> tuple[str, int]:
        """Stage into a private temp file, check it, publish it; the temp file never survives."""
        tmp, out = _create_exclusive(self._staging_dir())
        try:
            with out:
                digest, size = _write_hashing(chunks, out)
            if expected_digest is not None and digest != expected_digest:
                raise IntegrityError(
                    f"upload hashes to {digest}, not the expected {expected_digest}",
                    expected=expected_digest,
                    actual=digest,
                )
            self._publish(tmp, digest)
            return digest, size
        finally:
            _unlink_quietly(tmp)

    def _publish(self, tmp: str, digest: str) -> None:
        """Make a fully written, hashed temp file visible under its digest, unless already there."""
        final = self.blob_path(digest)
        if self.exists(digest):
            return
        if not self._is_local:
            self.fs.put_file(tmp, final)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # A concurrent writer may hold the final name (e.g. on Windows); its content is ours.
            if not os.path.exists(final):
                raise

    # -- reads ------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self.blob_path(digest)))

    def get_bytes(self, digest: str) -> bytes:
        """The blob's content, verified against its digest."""
        path = self.blob_path(digest)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise self._not_found(digest) from exc
        actual = digest_bytes(data)
        if actual != digest:
            raise _integrity_error(digest, actual)
        return bytes(data)

    def open(self, digest: str) -> BinaryIO:
        """A non-seekable stream over the blob; ``IntegrityError`` once fully read if corrupt."""
        path = self.blob_path(digest)
        try:
            size = int(self.fs.size(path))
            inner = self.fs.open(path, "rb")
        except FileNotFoundError as exc:
            raise self._not_found(digest) from exc
        return cast(BinaryIO, _VerifyingReader(inner, digest, size))

    def download(self, digest: str, dest: str | os.PathLike[str]) -> None:
        """Write the blob to local ``dest`` atomically (temp file beside it, then rename).

        Parent directories are created. If the blob is corrupt, ``IntegrityError`` is raised and
        ``dest`` is left as it was.
        """
        dest = os.path.abspath(os.fspath(dest))
        with self.open(digest) as src:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp, out = _create_exclusive(os.path.dirname(dest), f".{os.path.basename(dest)}.")
            try:
                with out:
                    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
                        out.write(chunk)
                os.replace(tmp, dest)
            finally:
                _unlink_quietly(tmp)

    def _not_found(self, digest: str) -> NotFound:
        return NotFound(f"no artifact blob with digest {digest}", digest=digest)
