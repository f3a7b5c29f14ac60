"""A pure ASGI middleware that bounds request bodies.

Why not in the routes: FastAPI reads a JSON body before any route code runs, so a limit there comes
too late to protect memory. Here the declared ``Content-Length`` is checked before the app is
called, and streamed chunks are counted as they arrive (a chunked upload declares nothing).

Why the answer is sent from here: once the limit is crossed, ``receive`` raises a private error to
stop the app reading. Whatever the app then does with that error (FastAPI turns a failed body read
into a 400) is dropped, and this middleware answers 413 in the API's error shape.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwright.errors import PayloadTooLarge
from loopwright.server.responses import error_response


class _BodyTooLarge(Exception):
    """Raised from ``receive`` to abort the app's read; never escapes the middleware."""


class BodySizeLimit:
    """Reject bodies over ``max_bytes`` (``max_blob_bytes`` for ``PUT`` under ``blob_prefix``)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_blob_bytes: int, blob_prefix: str
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_blob_bytes = max_blob_bytes
        self.blob_prefix = blob_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        if _declared_length(scope) > limit:
            await _reject(scope, receive, send, limit)
            return
        guard = _Guard(limit, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.exceeded:
                raise
        if guard.exceeded and not guard.started:
            await _reject(scope, receive, send, limit)

    def _limit_for(self, scope: Scope) -> int:
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if scope["method"] == "PUT" and path.startswith(self.blob_prefix):
            return self.max_blob_bytes
        return self.max_bytes


class _Guard:
    """Counts body bytes on the way in and silences the app once the limit has been crossed."""

    def __init__(self, limit: int, receive: Receive, send: Send) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.total = 0
        self.exceeded = False
        self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.limit:
                self.exceeded = True
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.started:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _declared_length(scope: Scope) -> int:
    try:
        return int(Headers(scope=scope).get("content-length", "0"))
    except ValueError:
        return 0


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    exc = PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", limit=limit)
    await error_response(exc)(scope, receive, send)
