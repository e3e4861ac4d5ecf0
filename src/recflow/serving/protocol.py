"""uvicorn's httptools protocol plus the limits that need the connection itself.

uvicorn times out an idle keep-alive connection, but not a request whose headers never
finish, nor a connection that never sends a byte: one byte a minute holds a connection
(and its memory) forever. `ScoringProtocol` arms a header deadline when a connection
opens and when a request's first byte arrives, and disarms it when the headers are
complete; past it, a partial request gets a JSON 408 and the connection is closed
(the request body has its own deadline, enforced by the app while it reads). Nor does
uvicorn bound the size of a request line and headers, which it accumulates in memory:
past `max_header_bytes` (counted per read, so at most one read over) the answer is 431.

When the app refuses a request before its body has arrived (413 over the size limit,
408), closing at once would make the kernel reset the connection while the client is
still sending, and a client that reads only after sending (most do) would see the reset,
not the answer. So the connection lingers instead, as nginx's does: the server
half-closes, discards whatever still arrives for at most `LINGER_SECONDS`, then closes.

It also answers in JSON where uvicorn would answer text/plain: 503 over the connection
cap (uvicorn's `limit_concurrency` rule, checked here so the app's `busy` answer is
used) and 400 for malformed HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from recflow.serving.app import error_body, new_request_id

logger = logging.getLogger("recflow.serving")

#: after refusing an unfinished request body: discard input this long, then close
LINGER_SECONDS = 5.0


class ScoringProtocol(HttpToolsProtocol):
    """HttpToolsProtocol + header deadline and size limit, JSON cap and 400s, lingering close.

    Configure with `ScoringProtocol.configured(...)`, which returns a subclass for
    `uvicorn.Config(http=...)` (uvicorn instantiates the class once per connection).
    """

    header_timeout: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 64 * 1024
    max_connections: ClassVar[int | None] = None
    busy_app: ClassVar[ASGIApp | None] = None

    @classmethod
    def configured(cls, *, header_timeout: float, max_header_bytes: int,
                   max_connections: int | None, busy_app: ASGIApp) -> type[ScoringProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout,
                                           "max_header_bytes": max_header_bytes,
                                           "max_connections": max_connections,
                                           "busy_app": staticmethod(busy_app)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # the cap is checked in on_headers_complete below
        self._header_timer: asyncio.TimerHandle | None = None
        self._mid_request = False  # bytes of a request arrived, its headers did not finish
        self._header_bytes = 0  # read while `_mid_request`
        self._discarding = False  # answered and half-closed: input is dropped until close
        self._linger_timer: asyncio.TimerHandle | None = None

    # ---- the header deadline and size -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._mid_request = True
        self._header_bytes = 0
        if self._header_timer is None:  # a new connection keeps the deadline it opened with
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._mid_request = False
        if self._over_cap() and self.busy_app is not None:
            app, self.app = self.app, self.busy_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _ResponseTransport(self)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        super().data_received(data)
        if self._mid_request and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._disarm_header_timer()
                if self.cycle is not None and not self.cycle.response_complete:
                    self.transport.close()  # pipelined behind a request in flight: no room
                    return
                self._reply_and_close(431, f"request line and headers exceed "
                                           f"{self.max_header_bytes} bytes (--max-header-bytes)")

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # pipelined: finish the response in flight, then close
            return
        if self._mid_request:
            self._reply_and_close(408, f"request headers not received within "
                                       f"{self.header_timeout:g} s (--header-timeout)")
        else:
            self.transport.close()  # opened and never sent a byte: nothing to answer

    def _over_cap(self) -> bool:
        cap = self.max_connections
        return cap is not None and (len(self.connections) > cap or len(self.tasks) >= cap)

    # ---- lingering close ------------------------------------------------------------------
    def on_response_complete(self) -> None:
        if not self._discarding:
            super().on_response_complete()

    def close_after_response(self) -> None:
        """Close, or linger first if the client may still be sending the request body."""
        unfinished = self.cycle is not None and self.cycle.more_body
        if not unfinished or self.transport.is_closing() or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._discarding = True
        self.flow.resume_reading()
        self.transport.write_eof()  # the client reads the answer, then end of stream
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # ---- JSON instead of text/plain ----------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the app is answering: do not interleave a second one
                self.transport.close()
                return
            cycle.disconnected = True  # the app reading this body sees a disconnect
            cycle.message_event.set()
        self._reply_and_close(400, f"malformed HTTP request: {msg}")

    def _reply_and_close(self, status: int, message: str) -> None:
        request_id = new_request_id()
        logger.info("- - %d %s id=%s", status, message, request_id)
        blob = json.dumps(error_body(status, message, request_id)).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], *(b"%s: %s\r\n" % h for h in self.server_state.default_headers),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(blob),
            b"x-request-id: %s\r\nconnection: close\r\n\r\n" % request_id.encode(), blob]))
        self.transport.close()


class _ResponseTransport:
    """The transport as uvicorn's response cycle sees it: `close` may linger (see above)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: ScoringProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_response()
