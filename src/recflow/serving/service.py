"""A small JSON scoring service on the standard library (http.server), no extra dependencies.

    GET  /health  (/healthz)  -> {"status": "ok", "model": NAME}
    GET  /metadata            -> fields and their types, score names, provenance, limits
    POST /score               <- {"records": [{field: value, ...}, ...]}  (or a bare list)
                              -> {"model", "score_names", "scores": [{"ctr": p, ...}, ...], "stats"}

Bad requests get a 4xx answer with a JSON {"error": ...} that names the problem
(400 malformed JSON/body, 404 unknown path, 411 no Content-Length, 413 batch or
body too large, 422 missing field / wrong type, with "field" and "record"); the
server keeps serving. One thread per connection (ThreadingHTTPServer); the
onnxruntime session is shared, which onnxruntime supports.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import recflow
from recflow.serving.scorer import RecordError, Scorer

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_BODY_BYTES = 16 * 2**20


class ScoringServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to one Scorer, with request-size limits."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], scorer: Scorer, *,
                 max_batch: int = DEFAULT_MAX_BATCH,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.scorer, self.max_batch, self.max_body_bytes = scorer, max_batch, max_body_bytes
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ScoringServer
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    # headers and body go out in two writes: without TCP_NODELAY, Nagle + the client's
    # delayed ACK add ~40 ms to every keep-alive response
    disable_nagle_algorithm = True
    server_version = f"recflow-serving/{recflow.__version__}"

    # ---- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        scorer = self.server.scorer
        if path in ("/health", "/healthz"):
            self._send(HTTPStatus.OK, {"status": "ok", "model": scorer.name})
        elif path == "/metadata":
            self._send(HTTPStatus.OK, {**scorer.describe(), "max_batch": self.server.max_batch,
                                       "max_body_bytes": self.server.max_body_bytes})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path!r}; routes: GET /health, "
                        "GET /metadata, POST /score")

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        if path != "/score":
            self._error(HTTPStatus.NOT_FOUND, f"no route POST {path!r}; use POST /score")
            return
        status, answer = score_response(self.server.scorer, body, self.server.max_batch)
        self._send(status, answer)

    # ---- plumbing -------------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length!r}")
            return None
        if size > self.server.max_body_bytes:
            self.close_connection = True  # the unread body must not be parsed as a request
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"request body of {size} bytes exceeds the limit of "
                        f"{self.server.max_body_bytes}")
            return None
        return self.rfile.read(size)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, error_body(status, message))

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        blob = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(blob)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(blob)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base
        logger.debug("%s - %s", self.address_string(), format % args)


def error_body(status: HTTPStatus, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "status": int(status),
            **{k: v for k, v in extra.items() if v is not None}}


def score_response(scorer: Scorer, body: bytes, max_batch: int) -> tuple[HTTPStatus, dict]:
    """POST /score for any front end (stdlib or ASGI): status and JSON body, never raises."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return HTTPStatus.BAD_REQUEST, error_body(HTTPStatus.BAD_REQUEST,
                                                  f"request body is not valid JSON: {exc}")
    records = payload.get("records") if isinstance(payload, dict) else payload
    if not isinstance(records, list):
        return HTTPStatus.BAD_REQUEST, error_body(
            HTTPStatus.BAD_REQUEST, 'expected a JSON object {"records": [{field: value, ...}, ...]}')
    if len(records) > max_batch:
        status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        return status, error_body(status, f"batch of {len(records)} records exceeds the limit "
                                          f"of {max_batch}; split it into smaller requests")
    try:
        scores, stats = scorer.score_with_stats(records)
    except RecordError as exc:
        status = HTTPStatus.UNPROCESSABLE_ENTITY
        return status, error_body(status, str(exc), field=exc.field, record=exc.record)
    except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
        logger.exception("scoring failed")
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        return status, error_body(status, f"scoring failed: {exc}")
    names = scorer.score_names
    return HTTPStatus.OK, {
        "model": scorer.name,
        "score_names": names,
        "scores": [dict(zip(names, map(float, row), strict=True)) for row in scores],
        # unseen ids (-> OOV) and missing values (-> padding / fitted default), non-zero only
        "stats": {f: {k: n for k, n in c.items() if n} for f, c in stats.items()
                  if any(c.values())},
    }


def make_server(scorer: Scorer, host: str = "127.0.0.1", port: int = 8000, *,
                max_batch: int = DEFAULT_MAX_BATCH,
                max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> ScoringServer:
    """Bind (port 0 = any free port; see `.url`); call `.serve_forever()` to serve."""
    return ScoringServer((host, port), scorer, max_batch=max_batch,
                         max_body_bytes=max_body_bytes)
