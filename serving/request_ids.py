"""Request ids: generated ones are random, client-chosen ones are namespaced by the caller's key.

A generated id is 128 random bits (``secrets.token_hex``), so nobody can guess another caller's id and label its
prediction. A client-chosen id (``"request_id": "order-42"``) becomes ``order-42@<namespace>``: the namespace is a
keyed BLAKE2b hash of the caller's sticky key header (``X-Request-Key``), or ``anon`` without one, so two callers
who both pick ``order-42`` get two different ids. The answer of ``/predict`` carries the id to send to
``/feedback``.
"""

from __future__ import annotations

import hashlib
import secrets

ANONYMOUS = "anon"
SEPARATOR = "@"


def new_request_id() -> str:
    """32 hex digits of fresh randomness."""
    return secrets.token_hex(16)


def namespace_of(key: str | None) -> str:
    """The namespace of a caller: 16 hex digits of its key's hash, or ``anon`` for callers without a key."""
    if not key:
        return ANONYMOUS
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"nasops-request")
    return digest.hexdigest()


def effective_request_id(client_id: str | None, key: str | None) -> str:
    """The id a request is logged and answered under."""
    if client_id is None:
        return new_request_id()
    return f"{client_id}{SEPARATOR}{namespace_of(key)}"
