"""Pure ASGI middleware that runs before any parsing: the credentials of protected routes, the body size limit."""

from __future__ import annotations

from collections.abc import Callable

from serving.errors import HTTP_HINTS, SCHEMA_HINT, error_response


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything parses them (``on_reject(path)`` counts it)."""

    def __init__(self, app, max_bytes: int, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._reject(scope, receive, send, int(length))
            return await self.app(scope, receive, send)
        # No length (chunked): read up to the limit here, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._reject(scope, receive, send, size)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send, size: int):
        self.on_reject(scope.get("path", ""))
        response = error_response(413, f"request body is {size} bytes, over the limit",
                                  f"at most {self.max_bytes} bytes; split the batch into smaller requests")
        await response(scope, receive, send)


class BearerGuard:
    """Check the bearer token of ``/admin/*`` and ``/feedback`` before the body is read or parsed: a caller without
    the right token learns nothing about the body's format (bad JSON without a token was a 400, not a 401), and an
    unauthenticated body costs no parsing. ``tokens(path)`` gives ``(expected token, what)`` or None (open route)."""

    def __init__(self, app, tokens: Callable[[str], tuple[str | None, str] | None]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (guarded := self.tokens(scope.get("path", ""))) is not None:
            from serving.deps import bearer_problem

            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            problem = bearer_problem(header, *guarded)
            if problem is not None:
                response = error_response(problem[0], problem[1], HTTP_HINTS.get(problem[0], SCHEMA_HINT))
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)
