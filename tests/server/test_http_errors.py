"""Every failure leaves the server as ``{"error": {...}}`` with the status from the one table, and
the REST backend re-raises the same class the store raised."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from http_helpers import BASE_URL, MAX_REQUEST, error_of, make_client

from loopwright.backends.rest import RestTrackingStore
from loopwright.backends.rest import store as rest_store
from loopwright.errors import AlreadyExists, InvalidInput, NotFound, StoreUnavailable


def test_unknown_run_is_404_and_notfound_through_rest(
    client: httpx.Client, rest: RestTrackingStore
) -> None:
    missing = uuid.uuid4().hex
    error_of(client.get(f"/api/v1/runs/{missing}"), 404, "NOT_FOUND")
    with pytest.raises(NotFound):
        rest.get_run(missing)


def test_missing_field_is_400_naming_it(client: httpx.Client) -> None:
    error = error_of(client.post("/api/v1/experiments", json={"tags": {}}), 400, "INVALID_INPUT")
    assert error["field"] == "name"
    assert error["message"] == "name: Field required"


def test_nested_field_is_named_with_its_index(client: httpx.Client, run_id: str) -> None:
    body = {"datasets": [{"name": "d", "schema": [], "num_rows": 1}]}
    error = error_of(client.post(f"/api/v1/runs/{run_id}/inputs", json=body), 400, "INVALID_INPUT")
    assert error["field"] == "datasets[0].digest"


def test_unknown_field_is_refused(client: httpx.Client) -> None:
    body = {"name": "e", "tgas": {}}
    error = error_of(client.post("/api/v1/experiments", json=body), 400, "INVALID_INPUT")
    assert error["field"] == "tgas"


def test_store_validation_keeps_its_field_through_rest(rest: RestTrackingStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        rest.get_run("not-a-hex-id")
    assert caught.value.field == "run_id"


@pytest.mark.parametrize("path", ["/api/v1/experiments", "/api/v1/runs/{run_id}/batch"])
def test_malformed_json_is_400(client: httpx.Client, run_id: str, path: str) -> None:
    headers = {"content-type": "application/json"}
    response = client.post(path.format(run_id=run_id), content=b'{"name": ', headers=headers)
    error = error_of(response, 400, "INVALID_INPUT")
    assert error["field"] == "body"
    assert "malformed JSON" in error["message"]


def test_unknown_route_and_method_keep_the_error_shape(client: httpx.Client) -> None:
    error_of(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    error_of(client.delete("/api/v1/experiments"), 405, "METHOD_NOT_ALLOWED")


def test_duplicate_experiment_is_409_and_alreadyexists(
    client: httpx.Client, rest: RestTrackingStore
) -> None:
    rest.create_experiment("twice")
    error_of(client.post("/api/v1/experiments", json={"name": "twice"}), 409, "ALREADY_EXISTS")
    with pytest.raises(AlreadyExists):
        rest.create_experiment("twice")


def test_oversized_body_declared_up_front_is_413(client: httpx.Client, run_id: str) -> None:
    body = b'{"params": {"x": "' + b"a" * MAX_REQUEST + b'"}}'
    response = client.post(f"/api/v1/runs/{run_id}/batch", content=body)
    error = error_of(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"] == {"limit": MAX_REQUEST}


def test_oversized_streamed_body_is_413(client: httpx.Client) -> None:
    """No Content-Length (chunked): the middleware counts chunks as they arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(MAX_REQUEST // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    headers = {"content-type": "application/json"}
    response = client.post("/api/v1/experiments", content=chunks(), headers=headers)
    error_of(response, 413, "PAYLOAD_TOO_LARGE")


def test_unexpected_error_is_500_with_traceback_logged(
    app: Any, tracking: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray KeyError is a bug: 500 INTERNAL_ERROR, never mistaken for a 404."""

    def broken(experiment_id: str) -> None:
        raise KeyError(experiment_id)

    monkeypatch.setattr(tracking, "get_experiment", broken)
    with (
        make_client(app, raise_server_exceptions=False) as client,
        caplog.at_level(logging.ERROR, logger="loopwright.server"),
    ):
        response = client.get("/api/v1/experiments/abc")
    error_of(response, 500, "INTERNAL_ERROR")
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


# -- the REST backend's transport boundary ----------------------------------------------------


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_store, "BACKOFF_S", 0.0)


def _failing_store(error: type[httpx.TransportError], calls: list[str]) -> RestTrackingStore:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise error("boom", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return RestTrackingStore(BASE_URL, client=client)


@pytest.mark.usefixtures("no_backoff")
def test_transport_errors_become_storeunavailable_and_reads_are_retried() -> None:
    calls: list[str] = []
    with pytest.raises(StoreUnavailable) as caught:
        _failing_store(httpx.ReadError, calls).get_run(uuid.uuid4().hex)
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert calls == ["GET"] * (rest_store.RETRIES + 1)


@pytest.mark.usefixtures("no_backoff")
def test_a_sent_post_is_never_retried_but_a_keyed_batch_is_resent_under_its_key() -> None:
    """The server may have applied a POST: sending it again could do it twice. A metric batch
    carries an idempotency key the server applies once, so it alone is resent."""
    calls: list[str] = []
    with pytest.raises(StoreUnavailable):
        _failing_store(httpx.ReadError, calls).create_experiment("e")
    assert calls == ["POST"]

    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        raise httpx.ReadError("boom", request=request)

    store = RestTrackingStore(BASE_URL, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(StoreUnavailable):
        store.log_batch(uuid.uuid4().hex, params={"a": "b"})
    assert len(keys) == rest_store.RETRIES + 1 and len(set(keys)) == 1 and keys[0]


@pytest.mark.usefixtures("no_backoff")
def test_a_batch_that_never_connected_is_retried() -> None:
    calls: list[str] = []
    with pytest.raises(StoreUnavailable):
        _failing_store(httpx.ConnectError, calls).log_batch(uuid.uuid4().hex, params={"a": "b"})
    assert calls == ["POST"] * (rest_store.RETRIES + 1)


def test_a_foreign_error_page_is_still_a_loopwright_error() -> None:
    """A proxy's HTML 502 has no loopwright body: it reads as StoreUnavailable."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    store = RestTrackingStore(BASE_URL, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(StoreUnavailable, match="502"):
        store.create_experiment("e")


def test_the_server_error_body_round_trips_details() -> None:
    body = {"error": {"code": "CONFLICT", "message": "m", "field": "f", "details": {"k": 1}}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, content=orjson.dumps(body))

    store = RestTrackingStore(BASE_URL, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(Exception) as caught:
        store.create_experiment("e")
    assert type(caught.value).__name__ == "Conflict"
    assert caught.value.to_dict() == body["error"]  # type: ignore[attr-defined]
