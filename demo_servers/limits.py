"""HTTP limits: what every server puts in front of its endpoints.

A server that accepts uploads from anyone must bound what one client can make it do:
- headers: at most `MAX_HEADER_BYTES` while they arrive (uvicorn's h11 parser answers 400
  and closes; a header block that arrives whole in one read, up to 256 KiB, still passes);
  its faster httptools parser has no such limit, and a 128 MiB header stalls its loop;
- body: at most `MAX_BODY_BYTES` (413), arriving within `BODY_TIMEOUT_S` (408), so a
  client that declares a long body and stops sending cannot hold a request open forever;
- connections: at most `MAX_CONNECTIONS` at once (503 beyond), idle ones closed after
  `KEEP_ALIVE_S`.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import HTTPException

# The hex encoding doubles the size, so this allows images of up to 8 MiB as hex.
MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_TIMEOUT_S = 30.0
MAX_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS = 1024
KEEP_ALIVE_S = 5


def uvicorn_options(max_connections: int = MAX_CONNECTIONS) -> dict:
    """The uvicorn settings that bound headers and connections (LitServe passes them on)."""
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": max_connections,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }


class BodyLimits:
    """ASGI middleware: 413 for a body over `max_bytes` (declared or streamed), 408 for one
    that has not fully arrived `timeout_s` seconds after the request started."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, timeout_s: float = BODY_TIMEOUT_S):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.too_big = f"request body is over the {max_bytes:,}-byte limit"
        self.too_slow = f"the request body did not arrive within {timeout_s:g} s"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        deadline = time.monotonic() + self.timeout_s
        received, complete = 0, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # after the body: e.g. waiting for a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                raise HTTPException(408, self.too_slow) from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > self.max_bytes:  # a chunked body, or more than it declared
                raise HTTPException(413, self.too_big)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send):
        body = json.dumps({"detail": self.too_big}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
