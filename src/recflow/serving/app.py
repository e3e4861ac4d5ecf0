"""The scoring service as an ASGI app: Starlette routes behind one thin request middleware.

    GET  /health (/healthz)  liveness: the process answers     -> {"status": "ok", "model"}
    GET  /ready              readiness: 200 once the model is loaded and has scored its
                             self-check, 503 while the server drains on shutdown
    GET  /metadata           fields and their types, score names, provenance, limits
    POST /score              {"records": [{field: value, ...}, ...]} (or a bare list)
                             -> {"model", "score_names", "scores": [{"ctr": p}, ...], "stats"}

Every answer is JSON, errors included: `{"error", "status", "request_id"[, "field",
"record", "limit"]}`. The body of POST /score is read chunk by chunk against a size
limit and a deadline (413 / 408 as soon as either is passed, never buffering more),
then parsed by `recflow.serving.payload` (depth, non-finite numbers, batch size).
Limits that need the connection itself (header timeout, connection cap, malformed
HTTP) are enforced by `recflow.serving.protocol`; `recflow.serving.server` runs both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recflow.serving.payload import PayloadError, parse_records
from recflow.serving.scorer import RecordError, Scorer

logger = logging.getLogger("recflow.serving")

ROUTES = "GET /health, GET /ready, GET /metadata, POST /score"
ALLOWED_METHODS = "GET, HEAD, POST"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


@dataclass(frozen=True)
class Limits:
    """Per-request limits (each a CLI flag of `python -m recflow.serving`)."""

    max_body_bytes: int = 16 * 2**20
    max_batch: int = 1024
    max_json_depth: int = 32
    body_timeout: float = 30.0
    #: batches up to this size are scored on the event loop: the scorer's small-batch path
    #: takes less time than handing the work to a thread and back
    inline_max_records: int = 32
    #: threads scoring larger batches (onnxruntime releases the GIL while it runs)
    score_threads: int = 4

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_json_depth", "score_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.body_timeout <= 0:
            raise ValueError(f"body_timeout must be > 0, got {self.body_timeout}")


@dataclass
class Health:
    """Readiness, flipped by the server: ready after the self-check, not while draining."""

    ready: bool = False
    draining: bool = False


def error_body(status: int, message: str, request_id: str | None = None,
               **extra: Any) -> dict[str, Any]:
    return {"error": message, "status": status,
            **{k: v for k, v in extra.items() if v is not None}, "request_id": request_id}


def create_app(scorer: Scorer, limits: Limits | None = None,
               health: Health | None = None) -> RequestContext:
    """The ASGI app serving `scorer`; `health` is shared with the server that runs it."""
    limits = limits or Limits()
    health = health if health is not None else Health(ready=True)
    pool = ThreadPoolExecutor(max_workers=limits.score_threads, thread_name_prefix="score")

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": scorer.name})

    async def ready(request: Request) -> JSONResponse:
        if health.ready and not health.draining:
            return JSONResponse({"status": "ready", "model": scorer.name})
        why = "draining: the server is shutting down" if health.draining else \
            "starting: the model has not passed its self-check yet"
        return _error(request, 503, f"not ready ({why})")

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({**scorer.describe(), "limits": asdict(limits)})

    def score_records(records: Any) -> dict[str, Any]:
        try:
            scores, stats = scorer.score_with_stats(records)
        except RecordError as exc:
            raise PayloadError(422, str(exc), field=exc.field, record=exc.record) from None
        names = scorer.score_names
        return {
            "model": scorer.name,
            "score_names": names,
            "scores": [dict(zip(names, row, strict=True)) for row in scores.tolist()],
            # unseen ids (-> OOV) and missing values (-> padding / fitted default), non-zero only
            "stats": {f: {k: n for k, n in c.items() if n} for f, c in stats.items()
                      if any(c.values())},
        }

    async def score(request: Request) -> JSONResponse:
        body = await read_body(request.scope, request.receive, limits)
        records = parse_records(body, max_depth=limits.max_json_depth,
                                max_records=limits.max_batch)
        if len(records) <= limits.inline_max_records:
            answer = score_records(records)
        else:
            answer = await asyncio.get_running_loop().run_in_executor(pool, score_records,
                                                                      records)
        return JSONResponse(answer)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PayloadError)
        return _error(request, exc.status, str(exc), **exc.extra)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        status, method, path = exc.status_code, request.method, request.url.path
        if status == 404 and method not in ("GET", "HEAD", "POST"):
            status = 405  # no route takes PUT, DELETE, PATCH, ...: say so, whatever the path
        if status == 405:
            allow = (exc.headers or {}).get("Allow", ALLOWED_METHODS)
            return _error(request, 405, f"method {method} not allowed on {path!r} (allowed: "
                          f"{allow}); routes: {ROUTES}", headers={"allow": allow})
        if status == 404:
            return _error(request, 404, f"no route {method} {path!r}; routes: {ROUTES}")
        return _error(request, status, str(exc.detail), headers=exc.headers)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _error(request, 500, f"internal error: {type(exc).__name__}: {exc}")

    app = Starlette(routes=[
        Route("/health", live, methods=["GET"]), Route("/healthz", live, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]), Route("/metadata", metadata, methods=["GET"]),
        Route("/score", score, methods=["POST"]),
    ], exception_handlers={PayloadError: refused, HTTPException: http_error,
                           Exception: crashed})
    return RequestContext(app, health)


async def read_body(scope: Scope, receive: Receive, limits: Limits) -> bytes:
    """The request body, refused (PayloadError) the moment it passes the size or time limit."""
    limit = limits.max_body_bytes
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(413, f"request body of {int(declared)} bytes exceeds the limit of "
                                f"{limit} (--max-body-bytes)", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise PayloadError(499, "the client closed the connection mid-request")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadError(413, f"request body exceeds the limit of {limit} bytes "
                                            "(--max-body-bytes)", limit=limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise PayloadError(408, f"request body not received within {limits.body_timeout:g} s "
                                f"(--body-timeout); {size} bytes arrived",
                           limit=limits.body_timeout) from None
    scope["state"]["body_read"] = True
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RequestContext:
    """Outermost layer: request id, one log line per request, connection handling, last resort.

    * `X-Request-ID` is kept when the client sends a sane one, else generated; it is
      returned as a header and in every error body;
    * a response that leaves part of the request body unread closes the connection (the
      rest would otherwise be parsed as the next request, or trickle in without a timer);
      so does every response while the server drains, steering clients elsewhere;
    * an exception that escaped Starlette is logged and, if nothing was sent yet, answered
      with a JSON 500; uvicorn never sees it (it would answer text/plain).
    """

    def __init__(self, app: ASGIApp, health: Health) -> None:
        self.app, self.health = app, health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0
        has_body = _header(scope, b"content-length") not in (None, "0") or \
            _header(scope, b"transfer-encoding") is not None

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                if self.health.draining or (has_body and not state.get("body_read")):
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, respond)
        except Exception as exc:  # noqa: BLE001 - answer JSON and keep serving
            logger.exception("request %s failed", request_id)
            if not status:
                await send_json(respond, 500, error_body(
                    500, f"internal error: {type(exc).__name__}", request_id))
        finally:
            if logger.isEnabledFor(logging.INFO):
                logger.info("%s %s %d %.2f ms id=%s", scope["method"], scope["path"],
                            status or 499, (time.perf_counter() - started) * 1e3, request_id)

    async def busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """503 for a request over the connection cap (called by the protocol instead of the app)."""
        request_id = _request_id(scope)
        logger.warning("%s %s 503 over the connection cap id=%s", scope["method"], scope["path"],
                       request_id)
        await send_json(send, 503, error_body(
            503, "server busy: over the connection limit (--max-connections); retry",
            request_id), [(b"retry-after", b"1"), (b"x-request-id", request_id.encode())])


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A complete JSON response that closes the connection (for answers outside Starlette)."""
    blob = JSONResponse(body).body
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(blob)).encode()),
        (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": blob})


def new_request_id() -> str:
    return os.urandom(8).hex()


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    return given if given is not None and _SANE_REQUEST_ID.fullmatch(given) else new_request_id()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _error(request: Request, status: int, message: str,
           headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse(error_body(status, message, request_id, **extra), status,
                        headers=headers)
