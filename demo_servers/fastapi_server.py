"""The baseline: ResNet-50 behind plain FastAPI, built the way the original benchmark built it.

    python -m demo_servers.fastapi_server --host 127.0.0.1 --port 8000

One uvicorn process, one model, one image per forward pass, no batching.
It is deliberately faithful to the original, including its main flaw: the model
runs *inside* an `async def` endpoint, so each forward pass blocks the event
loop. While one request is in the model, the server cannot even answer
`/health`; concurrent requests are served strictly one after another, and the
GPU (or CPU) never sees a batch. Notebook 02 measures what that costs. On a CPU
the model uses torch's default thread count (one per physical core), like a
single LitServe worker, so the two servers get the same hardware.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from demo_servers.cli import (
    add_common_arguments,
    add_model_arguments,
    prepare_process,
    run_uvicorn,
)
from demo_servers.limits import BODY_TIMEOUT_S, BodyLimits
from demo_servers.model import load_classifier
from demo_servers.schema import ImageInput, PredictResponse, read_image
from demo_servers.timing import ServerTiming, timed_response

log = logging.getLogger("demo_servers")


def create_app(
    weights: str = "auto", device: str | None = None, body_timeout: float = BODY_TIMEOUT_S
) -> FastAPI:
    """The FastAPI app; the model is loaded at startup, before the port answers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.classifier = load_classifier(weights, device)
        app.state.preprocessing = app.state.classifier.preprocessing
        yield

    app = FastAPI(title="ResNet-50 (plain FastAPI)", lifespan=lifespan)
    app.add_middleware(BodyLimits, timeout_s=body_timeout)
    app.add_middleware(ServerTiming)

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
    async def predict(image: Annotated[ImageInput, Depends(read_image)], request: Request):
        # Blocking call in an async endpoint: the event loop stalls for the whole
        # forward pass (see the module docstring). Kept on purpose as the baseline.
        with image.stages.timing("forward"):
            answer = request.app.state.classifier.predict_crops([image.pixels])[0]
        return timed_response(answer, image.stages)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8000)
    add_model_arguments(parser)
    parser.add_argument("--device", help="cuda | cuda:1 | mps | cpu (default: the best there is)")
    args = parser.parse_args()
    prepare_process(args)
    run_uvicorn(create_app(args.weights, args.device, args.body_timeout), args)


if __name__ == "__main__":
    main()
