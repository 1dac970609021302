"""The HTTP skeleton every server shares: the limits, served-by and Server-Timing middleware,
`/health` and `/info`. Each server adds its `/predict` (and says what ready means and what
`/info` shows). No model stack is imported here: the null server uses it too."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from demo_servers.admission import Bounds, add_admission
from demo_servers.http_processes import AllListening, ServedBy
from demo_servers.limits import BODY_TIMEOUT_S, BodyLimits
from demo_servers.timing import ServerTiming


def create_skeleton(
    title: str,
    info: Callable[[Request], dict],
    not_ready: Callable[[Request], str | None] = lambda request: None,
    body_timeout: float = BODY_TIMEOUT_S,
    timing: bool = True,
    lifespan=None,
    bounds: Bounds | None = None,
) -> FastAPI:
    """A FastAPI app with the HTTP limits, `x-served-by`, `Server-Timing` (unless `timing`
    is False), admission control within `bounds` (see admission.py; `GET /admission`
    reports it), `GET /health` (503 with the reason `not_ready` gives, else 200 "ok") and
    `GET /info` (what `info` returns, as JSON). `/health` says 503 too while some of the
    server's HTTP processes do not listen yet (`AllListening`)."""
    app = FastAPI(title=title, lifespan=lifespan)
    app.add_middleware(BodyLimits, timeout_s=body_timeout)
    app.add_middleware(ServedBy)
    app.add_middleware(AllListening)
    if timing:
        app.add_middleware(ServerTiming)
    add_admission(app, bounds or Bounds())

    @app.get("/health")
    async def health(request: Request):
        reason = not_ready(request)
        return PlainTextResponse(reason, 503) if reason else PlainTextResponse("ok")

    @app.get("/info")
    async def describe(request: Request):
        return JSONResponse(info(request))

    return app
