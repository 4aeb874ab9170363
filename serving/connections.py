"""Connection-level limits of the gateway's HTTP server: slow clients cannot hold connections forever.

Why: uvicorn times out an idle kept-alive connection, but not a request whose head or body trickles in: 450 slow
connections against a file limit of 400 made 75 of 78 normal requests fail. :class:`GuardedHttpToolsProtocol` gives
every request a deadline for its request line and headers (:data:`HEADER_TIMEOUT_S` from its first byte, or from
the connection for the first request) and one for its body (:data:`BODY_TIMEOUT_S` from the end of its headers);
past either, the gateway answers ``408`` and closes the connection. The application's own time is bounded
elsewhere (``champion_timeout_s``). :func:`uvicorn_options` is the one set of server options every way of starting
the gateway uses (a thread, ``nasops serve``, worker processes).
"""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = float(os.environ.get("NASOPS_GATEWAY_HEADER_TIMEOUT_S", "10"))
BODY_TIMEOUT_S = float(os.environ.get("NASOPS_GATEWAY_BODY_TIMEOUT_S", "30"))
KEEP_ALIVE_S = 5
LIMIT_CONCURRENCY = int(os.environ.get("NASOPS_GATEWAY_LIMIT_CONCURRENCY", "2048"))
"""Connections plus requests in flight per worker beyond which new requests get 503 instead of queueing."""

_BODY = json.dumps({"error": "the request was not received in time (slow client)",
                    "detail": f"send the request line and headers within {HEADER_TIMEOUT_S:g} s and the body within "
                              f"{BODY_TIMEOUT_S:g} s"}).encode()
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request (head, then body)."""

    _deadline: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(HEADER_TIMEOUT_S)  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(BODY_TIMEOUT_S)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # read whole: what follows is the application's time

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._overdue)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def raise_file_limit() -> None:
    """Raise this process's open-file limit to its hard limit (connections are files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def uvicorn_options() -> dict[str, Any]:
    """The server options every start of the gateway passes to uvicorn."""
    return {"http": GuardedHttpToolsProtocol, "timeout_keep_alive": KEEP_ALIVE_S,
            "limit_concurrency": LIMIT_CONCURRENCY, "access_log": False}
