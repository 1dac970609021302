"""The baseline: ResNet-50 behind plain FastAPI, built the way the original benchmark built it.

    python -m demo_servers.fastapi_server --host 127.0.0.1 --port 8000

One uvicorn process, one model, one image per forward pass, no batching.
It is deliberately faithful to the original, including its main flaw: the model
runs *inside* an `async def` endpoint, so each forward pass blocks the event
loop. While one request is in the model, the server cannot even accept the
next one; concurrent requests are served strictly one after another, and the
GPU (or CPU) never sees a batch. Notebook 02 measures this. On a CPU the model
uses torch's default thread count (one per physical core), like a single LitServe
worker, so the two servers get the same hardware.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from demo_servers.common import (
    BodySizeLimit,
    PredictRequest,
    PredictResponse,
    add_common_arguments,
    add_error_handlers,
    prepare_process,
)
from demo_servers.model import load_classifier

log = logging.getLogger("demo_servers")


def create_app(weights: str = "auto", device: str | None = None) -> FastAPI:
    """The FastAPI app; the model is loaded at startup, before the port answers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.classifier = load_classifier(weights, device)
        yield

    app = FastAPI(title="ResNet-50 (plain FastAPI)", lifespan=lifespan)
    app.add_middleware(BodySizeLimit)
    add_error_handlers(app)

    @app.get("/health")
    async def health(request: Request):
        if getattr(request.app.state, "classifier", None) is None:
            return PlainTextResponse("not ready", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/info")
    async def info(request: Request):
        return JSONResponse(
            {
                "model": request.app.state.classifier.info(),
                "server": {"name": "fastapi", "batching": False},
            }
        )

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, request: Request):
        # Blocking call in an async endpoint: the event loop stalls for the whole
        # forward pass (see the module docstring). Kept on purpose as the baseline.
        return request.app.state.classifier.predict([body.image])[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8000)
    parser.add_argument("--device", help="cuda | cuda:1 | mps | cpu (default: the best there is)")
    args = parser.parse_args()
    prepare_process(args)
    uvicorn.run(
        create_app(args.weights, args.device),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
