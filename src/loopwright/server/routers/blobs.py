"""Content-addressed blobs: upload (streamed), download (streamed), existence check.

An upload is spooled to a private temp file while it is hashed, and only handed to the artifact
store once every byte has arrived and matches the digest in the URL. So a cut-off upload, an
oversized one or one with the wrong digest leaves nothing visible, with nothing but the
:class:`~loopwright.tracking.store.ArtifactStore` protocol asked of the store. The price is one
extra local copy; the store's own staging makes the final write atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from loopwright.errors import InvalidInput
from loopwright.server.auth import Permission, require
from loopwright.server.deps import Artifacts
from loopwright.server.schemas import BlobPublic
from loopwright.tracking.store import iter_chunks

router = APIRouter(tags=["blobs"])

#: Request chunks are small (~64 KiB); write them to disk in blocks this big, off the event loop.
SPOOL_BLOCK = 1 << 20
_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/blobs/{digest}",
    status_code=201,
    response_model=BlobPublic,
    openapi_extra=_RAW_BODY,
    dependencies=[require(Permission.WRITE)],
)
async def put_blob(digest: str, request: Request, artifacts: Artifacts) -> dict[str, Any]:
    """Store the raw body under ``digest``; 400 (and nothing stored) if the bytes hash otherwise."""
    with _spool() as path:
        actual = await _receive_into(request.stream(), path)
        if actual != digest:
            raise InvalidInput(
                f"digest: upload hashes to {actual}, not {digest}",
                field="digest",
                expected=digest,
                actual=actual,
            )
        stored, size = await run_in_threadpool(artifacts.put_file, path)
    return {"digest": stored, "size": size}


#: Blobs up to this size are read (and so verified) before the response starts, so a corrupt
#: one is answered with a proper 500 INTEGRITY_ERROR; bigger ones stream and the client verifies.
VERIFY_BEFORE_SEND = 32 * 1024 * 1024


@router.get(
    "/blobs/{digest}", response_class=StreamingResponse, dependencies=[require(Permission.READ)]
)
async def get_blob(digest: str, artifacts: Artifacts) -> Response:
    """Small blobs are verified before sending; large ones stream (the client verifies too)."""
    stream = await run_in_threadpool(artifacts.open, digest)
    headers = {"ETag": f'"{digest}"', "Cache-Control": "public, max-age=31536000, immutable"}
    try:
        head, done = await run_in_threadpool(_read_up_to, stream, VERIFY_BEFORE_SEND)
    except BaseException:
        stream.close()
        raise
    if done:
        stream.close()
        return Response(head, media_type="application/octet-stream", headers=headers)
    return StreamingResponse(
        _closing_chunks(stream, head), media_type="application/octet-stream", headers=headers
    )


def _read_up_to(stream: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Read until ``limit`` bytes or the end (where the store checks the digest)."""
    parts, size = [], 0
    while size <= limit:
        chunk = stream.read(1 << 20)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


@router.head("/blobs/{digest}", dependencies=[require(Permission.READ)])
def head_blob(digest: str, artifacts: Artifacts) -> Response:
    return Response(status_code=200 if artifacts.exists(digest) else 404)


@contextlib.contextmanager
def _spool() -> Iterator[str]:
    """A private temp file that is always deleted, whatever happens to the upload."""
    fd, path = tempfile.mkstemp(prefix="loopwright-upload-")
    os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _receive_into(chunks: AsyncIterator[bytes], path: str) -> str:
    """Copy the body into ``path`` and return its SHA-256; a dropped client is a 400."""
    hasher = hashlib.sha256()
    block = bytearray()
    with open(path, "wb") as out:
        try:
            async for chunk in chunks:
                block += chunk
                if len(block) >= SPOOL_BLOCK:
                    await to_thread.run_sync(_write, hasher, out, bytes(block))
                    block.clear()
        except ClientDisconnect as exc:
            raise InvalidInput("body: the upload was cut off before its end", field="body") from exc
        await to_thread.run_sync(_write, hasher, out, bytes(block))
    return hasher.hexdigest()


def _write(hasher: Any, out: BinaryIO, data: bytes) -> None:
    hasher.update(data)
    out.write(data)


def _closing_chunks(stream: BinaryIO, head: bytes = b"") -> Iterator[bytes]:
    with stream:
        if head:
            yield head
        yield from iter_chunks(stream)
