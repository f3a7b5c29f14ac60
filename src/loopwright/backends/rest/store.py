"""The tracking and artifact stores over HTTP, talking to a loopwright server.

Same protocols, same return types, same exceptions as the SQL and fs stores: the server serialises
a ``LoopwrightError`` as ``{"error": {"code", ...}}`` and :func:`_raise_for_error` re-raises the
same class through :func:`loopwright.errors.from_wire`. httpx's own errors are translated in one
place, :func:`_translate`, into ``StoreUnavailable``.

The ``httpx.Client`` is injectable (STYLE habit 3): Starlette's ``TestClient`` is one, so tests run
the whole REST path in-process.

Retries: idempotent requests (GET, HEAD, blob PUT) are retried on transport errors and on 502-504
with exponential backoff. POSTs are retried only when the connection was never made, because
they are not idempotent, except those carrying an ``Idempotency-Key``: a metric batch gets a fresh
key, and the server applies a key once, so a batch whose answer was lost is resent safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import httpx
import orjson

from loopwright.backends.fs.artifacts import CHUNK_SIZE, digest_bytes, digest_file
from loopwright.backends.rest import wire
from loopwright.config import Settings
from loopwright.errors import (
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
    from_wire,
)
from loopwright.tracking import validation
from loopwright.tracking.entities import (
    ArtifactRef,
    DatasetInput,
    Experiment,
    Metric,
    Page,
    Run,
    RunStatus,
)
from loopwright.tracking.store import iter_chunks

__all__ = ["RestArtifactStore", "RestTrackingStore", "auth_headers"]

API = "/api/v1"
#: The acting user's header, honoured by a server with auth off (``loopwright.server.auth``).
USER_HEADER = "X-Loopwright-User"
RETRIES = 2
BACKOFF_S = 0.25
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT"})
_RETRY_STATUS = frozenset({502, 503, 504})
#: Error codes for answers without a loopwright body (HEAD, or a proxy in front of the server).
_BODYLESS_CODES = {
    401: Unauthenticated.code,
    403: PermissionDenied.code,
    404: NotFound.code,
    413: PayloadTooLarge.code,
    **{status: StoreUnavailable.code for status in _RETRY_STATUS},
}
#: Errors raised before any byte of the request left: safe to retry even a POST.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Content = bytes | Callable[[], Iterable[bytes]] | None


@contextlib.contextmanager
def _translate(method: str, url: str) -> Iterator[None]:
    """The one boundary where httpx errors become loopwright's."""
    try:
        yield
    except httpx.TransportError as exc:
        raise StoreUnavailable(
            f"{method} {url} failed: {type(exc).__name__}: {exc}", url=url
        ) from exc


def _raise_for_error(response: httpx.Response) -> None:
    """Re-raise the server's ``LoopwrightError``; a foreign error page becomes a generic one."""
    if response.is_success:
        return
    response.read()
    body = _error_body(response)
    if body is None:
        code = _BODYLESS_CODES.get(response.status_code)
        text = response.text[:200].strip()
        body = {"code": code, "message": f"server answered HTTP {response.status_code}: {text}"}
    raise from_wire(body, response.status_code)


def _error_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        error = orjson.loads(response.content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return error if isinstance(error, dict) else None


def auth_headers(settings: Settings) -> dict[str, str]:
    """What every request carries: the API token, and the declared user (for auth-off servers)."""
    headers: dict[str, str] = {}
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    if settings.user:
        headers[USER_HEADER] = settings.user
    return headers


class _Http:
    """Base URL, default headers (auth), retries and error translation, shared by both stores.

    The headers go on each request rather than on the client, so an injected client (a
    ``TestClient`` shared by several stores acting as different users) is never modified.
    """

    def __init__(
        self,
        base_url: str,
        client: httpx.Client | None,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.owns_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self.headers = dict(headers or {})

    def url(self, *segments: str) -> str:
        """``/api/v1/`` + segments, each percent-encoded (ids and names may hold ``/``)."""
        return self.base_url + API + "".join("/" + quote(s, safe="") for s in segments)

    def call(self, method: str, url: str, **kw: Any) -> Any:
        """Send, raise on error, and return the decoded JSON body (``None`` when empty)."""
        response = self.send(method, url, **kw)
        return orjson.loads(response.content) if response.content else None

    def send(self, method: str, url: str, *, content: Content = None, **kw: Any) -> httpx.Response:
        kw["headers"] = {**self.headers, **(kw.get("headers") or {})}
        keyed = "idempotency-key" in kw["headers"]  # the server applies such a request once
        for attempt in range(RETRIES + 1):
            body = content() if callable(content) else content
            try:
                with _translate(method, url):
                    response = self.client.request(method, url, content=body, **kw)
            except StoreUnavailable as exc:
                if attempt == RETRIES or not _retryable(method, exc.__cause__, keyed):
                    raise
            else:
                if attempt == RETRIES or not _retry_status(method, response, keyed):
                    _raise_for_error(response)
                    return response
            time.sleep(BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def stream(self, url: str) -> Iterator[httpx.Response]:
        """A streamed GET (not retried: a half-read body cannot be replayed transparently)."""
        stream = self.client.stream("GET", url, headers=self.headers)
        with _translate("GET", url), stream as response:
            _raise_for_error(response)
            yield response

    def close(self) -> None:
        if self.owns_client:
            self.client.close()


def _retryable(method: str, cause: BaseException | None, keyed: bool = False) -> bool:
    return method in _IDEMPOTENT or keyed or isinstance(cause, _NOT_SENT)


def _retry_status(method: str, response: httpx.Response, keyed: bool = False) -> bool:
    return (method in _IDEMPOTENT or keyed) and response.status_code in _RETRY_STATUS


class RestTrackingStore:
    """A :class:`~loopwright.tracking.store.TrackingStore` backed by a loopwright server."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._http = _Http(base_url, client, timeout, headers)

    def __repr__(self) -> str:
        return f"RestTrackingStore({self._http.base_url!r})"

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> Experiment:
        body = {"name": name, "tags": tags}
        return wire.experiment_from_dict(self._post(self._http.url("experiments"), body))

    def get_experiment(self, experiment_id: str) -> Experiment:
        return wire.experiment_from_dict(self._get(self._http.url("experiments", experiment_id)))

    def get_experiment_by_name(self, name: str) -> Experiment:
        return wire.experiment_from_dict(self._get(self._http.url("experiments-by-name", name)))

    def list_experiments(self) -> list[Experiment]:
        data = self._get(self._http.url("experiments"))
        return [wire.experiment_from_dict(e) for e in data["experiments"]]

    def create_run(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run:
        body = {
            "experiment_id": experiment_id,
            "name": name,
            "user": user,
            "tags": tags,
            "parent_run_id": parent_run_id,
            "start_time": start_time,
        }
        return wire.run_from_dict(self._post(self._http.url("runs"), body))

    def get_run(self, run_id: str) -> Run:
        return wire.run_from_dict(self._get(self._http.url("runs", run_id)))

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        end_time: int | None = None,
        error: str | None = None,
    ) -> Run:
        body = {"status": str(status), "end_time": end_time, "error": error}
        return wire.run_from_dict(self._post(self._http.url("runs", run_id, "end"), body))

    def resume_run(self, run_id: str) -> Run:
        return wire.run_from_dict(self._post(self._http.url("runs", run_id, "resume"), None))

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Columnar and orjson-encoded; resent on a lost answer under one idempotency key, so
        the server applies it once."""
        try:
            body = wire.batch_to_json(metrics, params, tags)
        except (TypeError, ValueError):
            validation.metric_rows(run_id, metrics)  # raises InvalidInput naming the bad point
            raise
        key = idempotency_key or uuid.uuid4().hex
        headers = {"content-type": "application/json", "idempotency-key": key}
        self._http.send(
            "POST", self._http.url("runs", run_id, "batch"), content=body, headers=headers
        )

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        data = self._get(self._http.url("runs", run_id, "metric-history"), params={"key": key})
        return wire.metrics_from_columns(data["metrics"])

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page:
        body = {
            "experiment_ids": None if experiment_ids is None else list(experiment_ids),
            "filter": filter,
            "order_by": None if order_by is None else list(order_by),
            "max_results": max_results,
            "page_token": page_token,
        }
        return wire.page_from_dict(self._post(self._http.url("runs", "search"), body))

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        body = {"datasets": [wire.dataset_to_dict(d) for d in datasets]}
        self._post(self._http.url("runs", run_id, "inputs"), body)

    def log_artifacts(self, run_id: str, refs: Sequence[ArtifactRef]) -> None:
        body = {"artifacts": [wire.artifact_to_dict(r) for r in refs]}
        self._post(self._http.url("runs", run_id, "artifacts"), body)

    def list_artifacts(self, run_id: str, prefix: str = "") -> list[ArtifactRef]:
        data = self._get(self._http.url("runs", run_id, "artifacts"), params={"prefix": prefix})
        return [wire.artifact_from_dict(a) for a in data["artifacts"]]

    def close(self) -> None:
        self._http.close()

    def _get(self, url: str, **kw: Any) -> Any:
        return self._http.call("GET", url, **kw)

    def _post(self, url: str, body: Any) -> Any:
        headers = {"content-type": "application/json"}
        return self._http.call("POST", url, content=orjson.dumps(body), headers=headers)


class RestArtifactStore:
    """An :class:`~loopwright.tracking.store.ArtifactStore` backed by a loopwright server.

    Digests are computed here before upload and verified here after download, so bytes damaged in
    transit are caught at both ends.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._http = _Http(base_url, client, timeout, headers)

    def __repr__(self) -> str:
        return f"RestArtifactStore({self._http.base_url!r})"

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self._upload(digest, bytes(data))
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Hash the file, skip the upload if the server has the content, else stream it."""
        digest, size = digest_file(path)
        if not self.exists(digest):
            self._upload(digest, lambda: _file_chunks(path), size)
        return digest, size

    def get_bytes(self, digest: str) -> bytes:
        data = self._http.send("GET", self._http.url("blobs", digest)).content
        _verify(digest, digest_bytes(data))
        return data

    def open(self, digest: str) -> BinaryIO:
        """A lazy stream; ``IntegrityError`` at the end if the bytes do not match ``digest``."""
        stack = contextlib.ExitStack()
        response = stack.enter_context(self._http.stream(self._http.url("blobs", digest)))
        reader = _VerifyingResponse(response, digest, stack)
        return cast(BinaryIO, io.BufferedReader(reader, CHUNK_SIZE))

    def exists(self, digest: str) -> bool:
        try:
            self._http.send("HEAD", self._http.url("blobs", digest))
        except NotFound:
            return False
        return True

    def download(self, digest: str, dest: str | os.PathLike[str]) -> None:
        """Stream to a temp file beside ``dest``, verify, rename: ``dest`` is all or nothing."""
        dest = os.path.abspath(os.fspath(dest))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.{os.getpid()}.part"
        try:
            with self.open(digest) as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def close(self) -> None:
        self._http.close()

    def _upload(self, digest: str, content: Content, size: int | None = None) -> None:
        headers = {"content-type": "application/octet-stream"}
        if size is not None:
            headers["content-length"] = str(size)  # lets the server refuse oversize up front
        self._http.send("PUT", self._http.url("blobs", digest), content=content, headers=headers)


class _VerifyingResponse(io.RawIOBase):
    """A response body as a raw stream, hashed as it is read and checked at EOF."""

    def __init__(self, response: httpx.Response, digest: str, stack: contextlib.ExitStack) -> None:
        super().__init__()
        self._chunks = response.iter_bytes(CHUNK_SIZE)
        self._digest = digest
        self._stack = stack
        self._hasher = hashlib.sha256()
        self._pending = b""
        self._url = str(response.url)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = self._next_chunk()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next_chunk(self) -> bytes:
        with _translate("GET", self._url):
            chunk = next(self._chunks, b"")
        if chunk:
            self._hasher.update(chunk)
        else:
            _verify(self._digest, self._hasher.hexdigest())
        return chunk

    def close(self) -> None:
        if not self.closed:
            self._stack.close()
        super().close()


def _verify(expected: str, actual: str) -> None:
    if actual != expected:
        raise IntegrityError(
            f"blob {expected} is corrupt: its content hashes to {actual}",
            expected=expected,
            actual=actual,
        )


def _file_chunks(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Re-created on every attempt, so a retried upload starts from the first byte."""
    with open(path, "rb") as f:
        yield from iter_chunks(f, CHUNK_SIZE)
