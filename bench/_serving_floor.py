"""The HTTP floor of ``bench/serving.py``: a bare Starlette app that reads the body and answers
a constant, run under uvicorn exactly as the model servers are (httptools, uvloop, one worker).

No model, no validation, no JSON parsing: whatever a model server costs above this is its own.

    python -m uvicorn --app-dir bench _serving_floor:app --port 8000
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"predictions":[1],"version":1}'


async def constant(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/predict", constant, methods=["POST"]),
        Route("/v2/health/ready", ready),
    ]
)
