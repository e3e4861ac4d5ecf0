"""The same scoring service as an ASGI app (Starlette), for uvicorn/gunicorn deployments.

Optional extra: `pip install recflow[serve]`. Routes, limits and answers are those
of `recflow.serving.service` (both call `score_response`), so the two front ends
cannot drift.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from recflow.serving.scorer import Scorer
from recflow.serving.service import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    error_body,
    score_response,
)


def create_app(scorer: Scorer, *, max_batch: int = DEFAULT_MAX_BATCH,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    """A Starlette app with GET /healthz, GET /metadata and POST /score."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "the ASGI service needs the serve extra: pip install 'recflow[serve]' "
            "(or run the dependency-free `python -m recflow.serving --stdlib`)"
        ) from exc

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": scorer.name})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({**scorer.describe(), "max_batch": max_batch,
                             "max_body_bytes": max_body_bytes})

    async def score(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            return JSONResponse(error_body(status, f"request body of {length} bytes exceeds "
                                                   f"the limit of {max_body_bytes}"), int(status))
        body = await request.body()
        # onnxruntime releases the GIL; keep the event loop free while it scores
        status, answer = await run_in_threadpool(score_response, scorer, body, max_batch)
        return JSONResponse(answer, int(status))

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(error_body(HTTPStatus(status), f"no route {request.method} "
                                       f"{request.url.path!r}; routes: GET /health, "
                                       "GET /metadata, POST /score"), status)

    return Starlette(exception_handlers={404: not_found, 405: not_found}, routes=[
        Route("/health", health), Route("/healthz", health),
        Route("/metadata", metadata), Route("/score", score, methods=["POST"]),
    ])
