"""The serving HTTP app: the Open Inference Protocol (V2 REST) plus loopwright's own routes.

Plain Starlette routes and orjson (no per-request model validation layer: at 1,000+ requests/s
it costs more than the model). The lifespan starts and closes the
:class:`~loopwright.serving.runtime.DeploymentRuntime`.

V2 (KServe / Triton / MLServer clients work unchanged)::

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    200 when alive | when every route is loaded
    GET  /v2/models/{name}[/versions/{v}]      model metadata: one input per signature column
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

An infer request carries one input per column (shape ``[N]`` or ``[N, 1]``), or one input of
shape ``[N, k]`` whose columns are the signature's inputs in order. The answer has ``predict``
(``[N]``) and, for classifiers, ``predict_proba`` (``[N, C]``, row-major). V2 errors are
``{"error": "<message>"}``: 400 for a bad request, 404 for an unknown model or version.

Loopwright's own routes answer errors as ``{"error": {"code", "message", "field"}}`` with the
status of :func:`loopwright.errors.http_status`::

    POST /predict    {"records": [{column: value}, ...], "key"?: str, "id"?: str}
    POST /feedback   {"labels": [{"request_id", "label", "ts"?}]}  -> {"accepted": n}
    GET  /metrics    Prometheus text
    GET  /status     routes, versions, weights, state (canary / rolled_back / promoted) and why,
                     the SLO window, alerts, last swap, load errors
    POST /canary/rollback  {"reason": str}  -> stop routing to the canary (audit event, alert)
    POST /canary/promote   {"reason"?: str, "override"?: bool}  -> the champion alias moves to
                     the canary's version through the registry's gates (422 GATE_FAILED) and
                     approvals (409 APPROVAL_REQUIRED, ``details.request_id``)

The canary routes act as the user named by ``X-Loopwright-User`` (the CLI sends it), else as
the server's own user. With a steering token (:data:`TOKEN_ENV` in the server's environment)
they also need ``Authorization: Bearer <token>`` (else 401 ``UNAUTHENTICATED`` with a
``WWW-Authenticate`` header); without one, expose the port only where callers may steer the
deployment (the registry still enforces gates and approvals). Inference, ``/feedback``,
``/status``, health and ``/metrics`` never need it.

A body over the spec's ``max_body_bytes`` is refused with 413 ``PAYLOAD_TOO_LARGE`` (V2 paths:
``{"error": "..."}``), from its declared length or, for a chunked upload, as soon as the chunks
read so far exceed it.

A model that raises on some inputs answers those requests with **422** ``MODEL_ERROR`` (the
input was valid for the signature but the model refused it; the server keeps serving). The
request id comes from the body's ``id``, else the ``X-Request-Id`` header, else a new unique id, and
is returned in the ``X-Request-Id`` header of every answer.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import loopwright
from loopwright.errors import (
    InvalidInput,
    LoopwrightError,
    ModelError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    StoreUnavailable,
    Unauthenticated,
    http_status,
)
from loopwright.registry.signature import Signature
from loopwright.serving.batching import Arrivals
from loopwright.serving.predictor import (
    Rows,
    numeric_matrix,
    validate_columns,
    validate_records,
)
from loopwright.serving.runtime import DeploymentRuntime, new_request_id

__all__ = [
    "DEPLOYMENT_ENV",
    "TOKEN_ENV",
    "TRUSTED_ENV",
    "ServingApp",
    "app_from_env",
    "create_serving_app",
]

log = logging.getLogger("loopwright.serving")

DEPLOYMENT_ENV = "LOOPWRIGHT_DEPLOYMENT_YAML"
TRUSTED_ENV = "LOOPWRIGHT_DEPLOYMENT_TRUSTED"
#: The steering token: when set, ``/canary/*`` needs ``Authorization: Bearer <token>``.
TOKEN_ENV = "LOOPWRIGHT_SERVING_TOKEN"

#: Who acts on the canary routes (the registry's audit trail records it).
USER_HEADER = "x-loopwright-user"

Handler = Callable[[Request], Awaitable[Response]]


class _JSONResponse(Response):
    """A JSON answer with its three headers made directly (Starlette's generic header setup
    costs as much as the serialisation on a small answer)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int, rid: str | None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        if rid:
            self.raw_headers.append((b"x-request-id", rid.encode("latin-1")))


def _json(content: Any, status: int = 200, rid: str | None = None) -> Response:
    body = orjson.dumps(content, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
    return _JSONResponse(body, status, rid)


# -- the app -------------------------------------------------------------------------------


def create_serving_app(
    runtime: DeploymentRuntime, *, close_client: bool = False, token: str | None = None
) -> ServingApp:
    """The app over ``runtime``; its lifespan calls ``runtime.start()`` and ``runtime.close()``.

    Inference requests (``POST /predict`` and the V2 infer paths) are answered by
    :class:`ServingApp` in front of Starlette; every other request goes through Starlette.
    ``token``: the steering token the canary routes require (None: they require none).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()
            if close_client:
                runtime.client.close()

    api = _Api(runtime, token)
    v2 = "/v2/models/{name}"
    routes = [
        Route("/v2", api.v2(api.server_metadata)),
        Route("/v2/health/live", api.v2(api.live)),
        Route("/v2/health/ready", api.v2(api.ready)),
        Route(v2, api.v2(api.model_metadata)),
        Route(v2 + "/versions/{version}", api.v2(api.model_metadata)),
        Route(v2 + "/ready", api.v2(api.model_ready)),
        Route(v2 + "/versions/{version}/ready", api.v2(api.model_ready)),
        Route(v2 + "/infer", api.v2(api.infer), methods=["POST"]),
        Route(v2 + "/versions/{version}/infer", api.v2(api.infer), methods=["POST"]),
        Route("/predict", api.own(api.predict), methods=["POST"]),
        Route("/feedback", api.own(api.feedback), methods=["POST"]),
        Route("/status", api.own(api.status)),
        Route("/canary/rollback", api.own(api.rollback), methods=["POST"]),
        Route("/canary/promote", api.own(api.promote), methods=["POST"]),
        Route("/metrics", api.metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.state.runtime = runtime
    return ServingApp(app, api)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Unknown paths and wrong methods: JSON like every other answer."""
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if request.url.path.startswith("/v2"):
        return _json({"error": message}, exc.status_code)
    return _json({"error": {"code": "NOT_FOUND" if exc.status_code == 404 else "HTTP_ERROR",
                            "message": message}}, exc.status_code)  # fmt: skip


class _Api:
    """The route handlers; ``v2`` and ``own`` wrap them with each protocol's error shape."""

    def __init__(self, runtime: DeploymentRuntime, token: str | None = None) -> None:
        self.runtime = runtime
        self.token = token or None
        self.max_body = runtime.spec.max_body_bytes

    # -- error shapes ------------------------------------------------------------------------

    def v2(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except LoopwrightError as exc:
                return self._failed(request, exc, {"error": exc.message})
            except Exception as exc:
                log.exception("unhandled error in POST %s", request.scope["path"])
                return _json({"error": f"internal server error ({type(exc).__name__})"}, 500)

        return endpoint

    def own(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except LoopwrightError as exc:
                return self._failed(request, exc, {"error": exc.to_dict()})
            except Exception as exc:
                log.exception("unhandled error in %s", request.scope["path"])
                body = {
                    "code": "INTERNAL_ERROR",
                    "message": f"internal server error ({type(exc).__name__})",
                }
                return _json({"error": body}, 500)

        return endpoint

    def _failed(self, request: Request, exc: LoopwrightError, body: Any) -> Response:
        if not isinstance(exc, ModelError):  # model failures are counted per route already
            self.runtime.metrics.reject(exc.code)
        rid = request.headers.get("x-request-id")
        answer = _json(body, http_status(exc), rid)
        if isinstance(exc, Unauthenticated):
            answer.headers["WWW-Authenticate"] = 'Bearer realm="loopwright-serving"'
        retry = exc.details.get("retry_after_s")
        if isinstance(exc, Overloaded) and retry is not None:
            answer.headers["Retry-After"] = str(retry)
        return answer

    def _authorize(self, request: Request) -> None:
        """The steering token, when the server has one (compared in constant time)."""
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated(
                "this route needs the serving token: send Authorization: Bearer <token> "
                f"(the CLI reads --token or {TOKEN_ENV})",
                field="authorization",
            )
        if not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise Unauthenticated("the serving token is wrong", field="authorization")

    async def _body(self, request: Request) -> dict[str, Any]:
        return await _body(request, self.max_body)

    # -- V2 metadata and health ----------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "loopwright", "version": loopwright.__version__, "extensions": []})

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.runtime.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        self._route_for(request)
        ready = self.runtime.ready
        return _json({"name": request.path_params["name"], "ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        slot = self.runtime.slot(self._route_for(request))
        signature = slot.signature
        inputs = [] if signature is None else [
            {"name": c.name, "datatype": _V2_TYPE[c.type], "shape": [-1]} for c in signature.inputs
        ]  # fmt: skip
        outputs = [{"name": "predict", "datatype": _output_type(slot.classes), "shape": [-1]}]
        if slot.classes is not None:
            outputs.append({"name": "predict_proba", "datatype": "FP64",
                            "shape": [-1, len(slot.classes)]})  # fmt: skip
        body = {
            "name": slot.model_name,
            "versions": self._versions(),
            "platform": f"loopwright-{slot.model.flavor}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {"uri": slot.uri, "classes": slot.classes},
        }
        return _json(body)

    def _versions(self) -> list[str]:
        return sorted({str(r.lease.slot.version) for r in self.runtime.routes.values()}, key=int)

    def _route_for(self, request: Request) -> str:
        """The route a V2 path names: the model (or deployment) name, optionally a version."""
        self._require_ready()
        name = request.path_params["name"]
        spec = self.runtime.spec
        if name not in (spec.model, spec.name):
            raise NotFound(f"unknown model {name!r}; this server serves {spec.model!r}")
        version = request.path_params.get("version")
        if version is None:
            return "champion"
        for route_name, route in self.runtime.routes.items():
            if str(route.lease.slot.version) == version:
                return route_name
        raise NotFound(
            f"model {name!r} has no version {version!r} being served "
            f"(serving: {', '.join(self._versions())})"
        )

    def _require_ready(self) -> None:
        if not self.runtime.ready:
            raise StoreUnavailable("the deployment is not ready yet (models loading)")

    # -- V2 infer ------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        route = self._route_for(request)
        body = await self._body(request)
        rid = _request_id(request, body)
        slot = self.runtime.slot(route)
        frame = _v2_matrix(body, slot.signature)
        if frame is None:
            columns = v2_columns(body, slot.signature)
            frame = validate_columns(columns, slot.signature, field="inputs")
        pinned = request.path_params.get("version") is not None
        _arrived(request)
        result = await self.runtime.predict(frame, request_id=rid, route=route if pinned else None)
        outputs = [_tensor("predict", result["predictions"])]
        proba = result["probabilities"]
        if proba is not None:
            flat = [p for row in proba for p in row]
            width = len(proba[0]) if proba else 0
            outputs.append({"name": "predict_proba", "shape": [len(proba), width],
                            "datatype": "FP64", "data": flat})  # fmt: skip
        answer = {
            "model_name": result["model"],
            "model_version": str(result["version"]),
            "id": rid,
            "parameters": {"route": result["route"]},
            "outputs": outputs,
        }
        return _json(answer, 200, rid)

    # -- loopwright's own routes ---------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        self._require_ready()
        body = await self._body(request)
        rid = _request_id(request, body)
        key = body.get("key")
        if key is not None and not isinstance(key, str):
            raise InvalidInput("key must be a string (e.g. a user id)", field="key")
        signature = self.runtime.slot().signature
        frame = validate_records(body.get("records"), signature, field="records")
        _arrived(request)
        result = await self.runtime.predict(frame, key=key, request_id=rid)
        if result["probabilities"] is None:
            del result["probabilities"]
        return _json(result, 200, rid)

    async def feedback(self, request: Request) -> Response:
        body = await self._body(request)
        labels = body.get("labels")
        if not isinstance(labels, list) or not labels:
            raise InvalidInput("labels must be a non-empty list of objects", field="labels")
        return _json({"accepted": await self.runtime.add_labels(labels)})

    async def status(self, request: Request) -> Response:
        return _json(self.runtime.status())

    async def rollback(self, request: Request) -> Response:
        self._authorize(request)
        body = await self._body(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("reason must be a non-empty string", field="reason")
        result = await self.runtime.rollback(reason, user=_user(request))
        return _json({**result, "status": self.runtime.status()})

    async def promote(self, request: Request) -> Response:
        self._authorize(request)
        body = await self._body(request)
        reason, override = body.get("reason"), body.get("override", False)
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason must be a string", field="reason")
        if not isinstance(override, bool):
            raise InvalidInput("override must be true or false", field="override")
        result = await self.runtime.promote(reason, override=override, user=_user(request))
        return _json({**result, "status": self.runtime.status()})

    async def metrics(self, request: Request) -> Response:
        text = self.runtime.render_metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- the inference fast path ---------------------------------------------------------------


class ServingApp:
    """ASGI in front of the Starlette app: inference requests skip its middleware and router.

    Why: at thousands of single-row requests a second, Starlette's middleware stack, its
    route matching over every route, and its Request wrapper cost about as much as the rest of
    the request together. ``POST /predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
    are dispatched here to the same handlers (so answers, errors and headers are the same);
    every other request, and those paths with another method, go to Starlette.

    It also counts each inference request in the runtime's
    :class:`~loopwright.serving.batching.Arrivals` from here until it reaches its batcher.
    """

    def __init__(self, app: Starlette, api: _Api) -> None:
        self.app = app
        self.state = app.state
        self.routes = app.routes
        self.router = app.router  # (lifespan_context, for hosts that run the lifespan)
        self._predict = api.own(api.predict)
        self._infer = api.v2(api.infer)
        self._arrivals = api.runtime.arrivals

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            handler: Handler | None = None
            params: dict[str, str] = {}
            if path == "/predict":
                handler = self._predict
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                params = _infer_params(path)
                handler = self._infer if params else None
            if handler is not None:
                request = _RawRequest(scope, receive, params, self._arrivals)
                try:
                    response = await handler(request)  # type: ignore[arg-type]
                finally:
                    request.arrived()
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": response.raw_headers})  # fmt: skip
                await send({"type": "http.response.body", "body": response.body})
                return
        await self.app(scope, receive, send)


def _infer_params(path: str) -> dict[str, str]:
    """``{name}`` and ``{version}`` of a V2 infer path; empty when it is not one."""
    parts = path.split("/")  # '', 'v2', 'models', name, [versions, v,] infer
    if len(parts) == 5 and parts[3]:
        return {"name": parts[3]}
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return {"name": parts[3], "version": parts[5]}
    return {}


class _RawRequest:
    """What the handlers read of a request (a Starlette Request offers the same)."""

    __slots__ = ("_arrivals", "path_params", "receive", "scope")

    def __init__(
        self, scope: Any, receive: Any, params: dict[str, str], arrivals: Arrivals
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.path_params = params
        self._arrivals: Arrivals | None = arrivals
        arrivals.begin()

    @property
    def headers(self) -> _RawHeaders:
        return _RawHeaders(self.scope["headers"])

    async def body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def arrived(self) -> None:
        """The request reached its batcher (or failed before): no batch waits for it now."""
        if self._arrivals is not None:
            self._arrivals.end()
            self._arrivals = None


class _RawHeaders:
    """``get`` over the ASGI header list: a request reads two headers at most, so a scan beats
    decoding them all into a dict (ASGI servers send names in lower case)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default


def _arrived(request: Any) -> None:
    arrived = getattr(request, "arrived", None)
    if arrived is not None:
        arrived()


# -- request bodies ------------------------------------------------------------------------


async def _body(request: Request | _RawRequest, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length") or ""
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if isinstance(request, _RawRequest):
        raw = await request.body(limit)
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than this deployment's max_body_bytes ({limit:,} bytes); "
        "send fewer rows per request",
        field="body",
    )


def _user(request: Request) -> str | None:
    user = request.headers.get(USER_HEADER, "").strip()
    return user[:200] or None


def _request_id(request: Request, body: dict[str, Any]) -> str:
    rid = body.get("id") or request.headers.get("x-request-id") or new_request_id()
    if not isinstance(rid, str) or len(rid) > 200:
        raise InvalidInput("id must be a string of at most 200 characters", field="id")
    return rid


# -- V2 tensors ----------------------------------------------------------------------------

#: Signature type -> the V2 datatype its metadata advertises.
_V2_TYPE = {"int64": "INT64", "float64": "FP64", "bool": "BOOL", "string": "BYTES",
            "category": "BYTES", "datetime": "BYTES"}  # fmt: skip
_INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_FLOATS = {"FP16", "FP32", "FP64"}
#: Signature type -> the V2 datatypes a request may send for it.
_ACCEPTS = {
    "int64": _INTS | _FLOATS | {"BOOL"},
    "float64": _INTS | _FLOATS | {"BOOL"},
    "bool": {"BOOL"} | _INTS,
    "string": {"BYTES"},
    "category": {"BYTES"} | _INTS,
    "datetime": {"BYTES"},
}


def _v2_matrix(body: dict[str, Any], signature: Signature | None) -> Rows | None:
    """The common case at volume, without per-column work: one numeric ``[N, k]`` tensor for an
    all-float signature. None for anything else (then :func:`v2_columns` checks it all)."""
    inputs = body.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        return None
    tensor = inputs[0]
    shape = tensor.get("shape")
    if (
        type(shape) is not list
        or len(shape) != 2
        or not all(_is_int(d) for d in shape)
        or tensor.get("datatype") not in _INTS | _FLOATS
        or not isinstance(tensor.get("name"), str)
    ):
        return None
    return numeric_matrix(tensor.get("data"), shape[0], shape[1], signature)


def v2_columns(body: dict[str, Any], signature: Signature | None) -> dict[str, list[Any]]:
    """``{column: values}`` from a V2 request's ``inputs`` (see the module docstring)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors", field="inputs")
    tensors = [_tensor_input(i, t) for i, t in enumerate(inputs)]
    names = [] if signature is None else signature.input_names
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] != 1:
        return _matrix(*tensors[0], signature)
    columns: dict[str, list[Any]] = {}
    for name, shape, datatype, data in tensors:
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(
                f"input {name!r} has shape {shape}; send one column per input as [N] or [N, 1], "
                f"or a single [N, {len(names) or 'k'}] input",
                field=f"inputs.{name}",
            )
        _check_datatype(name, datatype, signature)
        columns[name] = data
    return columns


def _tensor_input(i: int, tensor: Any) -> tuple[str, list[int], str, list[Any]]:
    where = f"inputs[{i}]"
    if not isinstance(tensor, dict):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data",
                           field=where)  # fmt: skip
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string", field=f"{where}.name")
    where = f"inputs.{name}"
    if not isinstance(shape, list) or not shape or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers",
                           field=f"{where}.shape")  # fmt: skip
    if datatype not in _INTS | _FLOATS | {"BOOL", "BYTES"}:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}",
                           field=f"{where}.datatype")  # fmt: skip
    data = _flatten(tensor.get("data"), name)
    if math.prod(shape) != len(data):
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data has {len(data)}",
            field=f"{where}.shape",
        )
    _check_values(name, datatype, data)
    return name, shape, datatype, data


def _matrix(
    name: str, shape: list[int], datatype: str, data: list[Any], signature: Signature | None
) -> dict[str, list[Any]]:
    """One ``[N, k]`` tensor: its columns are the signature's inputs, in order."""
    if signature is None:
        raise InvalidInput(
            f"input {name!r} is [N, k] but the model has no signature to name its columns; "
            "send one input per column",
            field=f"inputs.{name}",
        )
    names = signature.input_names
    if len(shape) != 2 or shape[1] != len(names):
        raise InvalidInput(
            f"input {name!r} has shape {shape}; a single tensor must be [N, {len(names)}] "
            f"(columns {', '.join(names)})",
            field=f"inputs.{name}.shape",
        )
    for column in names:
        _check_datatype(column, datatype, signature)
    k = shape[1]
    return {column: data[j::k] for j, column in enumerate(names)}


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list", field=f"inputs.{name}.data")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _check_values(name: str, datatype: str, data: list[Any]) -> None:
    """Every value must be what ``datatype`` says (JSON has no tensor types of its own)."""
    if datatype == "BYTES":
        ok: Callable[[Any], bool] = lambda v: isinstance(v, str) or v is None  # noqa: E731
    elif datatype == "BOOL":
        ok = lambda v: isinstance(v, bool) or v is None  # noqa: E731
    elif datatype in _INTS:
        ok = lambda v: _is_int(v) or v is None  # noqa: E731
    else:
        ok = lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool))  # noqa: E731
    bad = next((v for v in data if not ok(v)), _NONE)
    if bad is not _NONE:
        raise InvalidInput(f"input {name!r} is {datatype} but holds {bad!r}",
                           field=f"inputs.{name}.datatype")  # fmt: skip


_NONE = object()


def _check_datatype(column: str, datatype: str, signature: Signature | None) -> None:
    if signature is None:
        return
    spec = next((c for c in signature.inputs if c.name == column), None)
    if spec is not None and datatype not in _ACCEPTS[spec.type]:
        raise InvalidInput(
            f"input {column!r} is {spec.type} in the model's signature "
            f"(V2 {_V2_TYPE[spec.type]}); got datatype {datatype}",
            field=f"inputs.{column}.datatype",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(name: str, values: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": _datatype_of(values), "data": values}


def _datatype_of(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(_is_int(v) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _output_type(classes: list[Any] | None) -> str:
    return "FP64" if classes is None else _datatype_of(classes)


# -- the uvicorn factory -------------------------------------------------------------------


def app_from_env() -> ServingApp:
    """Each worker's app: ``Settings`` from ``LOOPWRIGHT_*``, the spec from ``DEPLOYMENT_ENV``."""
    from loopwright.client import Client
    from loopwright.config import Settings
    from loopwright.serving.deployment import DeploymentSpec

    text = os.environ.get(DEPLOYMENT_ENV)
    if not text:
        raise InvalidInput(f"{DEPLOYMENT_ENV} is not set (start with loopwright serve/deploy)",
                           field=DEPLOYMENT_ENV)  # fmt: skip
    spec = DeploymentSpec.from_yaml(text)
    trusted = os.environ.get(TRUSTED_ENV, "").lower() in {"1", "true", "yes"}
    client = Client(settings=Settings.from_env())
    runtime = DeploymentRuntime(client, spec, trusted=trusted)
    runtime.freeze_gc = True
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    return create_serving_app(runtime, close_client=True, token=token)


# -- TCP_NODELAY ---------------------------------------------------------------------------


def _nodelay_protocol() -> type[Any]:
    """uvicorn's httptools protocol, setting TCP_NODELAY on every accepted connection.

    asyncio sets it on the sockets it accepts, but a listening socket handed to ``--workers``
    processes is not guaranteed to (and Nagle plus delayed ACKs cost ~40 ms per kept-alive
    request). Setting it again is harmless.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    return NoDelayHttpToolsProtocol


try:
    NoDelayHttpToolsProtocol: type[Any] | None = _nodelay_protocol()
except ImportError:  # no httptools: uvicorn's h11 protocol and asyncio's own default
    NoDelayHttpToolsProtocol = None

#: What ``loopwright serve`` passes to uvicorn as ``http=``.
HTTP_PROTOCOL = (
    "loopwright.serving.app:NoDelayHttpToolsProtocol" if NoDelayHttpToolsProtocol else "auto"
)
