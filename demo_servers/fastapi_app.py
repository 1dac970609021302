"""What the FastAPI servers share: the model loaded at startup, `/health`, `/info`, the HTTP
limits, Server-Timing and the command line. Each server file adds only its `/predict`.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import Executor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from demo_servers.cli import (
    add_common_arguments,
    add_model_arguments,
    prepare_process,
    run_uvicorn,
)
from demo_servers.hardware import cpu_threads_per_worker
from demo_servers.limits import BODY_TIMEOUT_S, BodyLimits
from demo_servers.model import load_classifier
from demo_servers.timing import ServerTiming


def create_base_app(
    server: dict,
    weights: str = "auto",
    device: str | None = None,
    runtime: str = "eager",
    threads: int = 0,
    body_timeout: float = BODY_TIMEOUT_S,
    inference: Executor | None = None,
) -> FastAPI:
    """A FastAPI app without `/predict`; `server` is what `/info` says about the server.

    `inference`: the executor whose thread will run the model, if not the event loop's. The
    model is loaded in that same thread: PyTorch's OpenMP keeps one pool of threads per
    calling thread, and a second pool (from loading elsewhere) makes both slower."""

    def load():
        torch.set_num_threads(threads or cpu_threads_per_worker(1))
        return load_classifier(weights, device, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if inference is None:
            app.state.classifier = load()
        else:
            app.state.classifier = await asyncio.get_running_loop().run_in_executor(inference, load)
        app.state.preprocessing = app.state.classifier.preprocessing
        yield

    app = FastAPI(title=f"ResNet-50 ({server['name']})", lifespan=lifespan)
    app.add_middleware(BodyLimits, timeout_s=body_timeout)
    app.add_middleware(ServerTiming)

    @app.get("/health")
    async def health(request: Request):
        if getattr(request.app.state, "classifier", None) is None:
            return PlainTextResponse("not ready", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/info")
    async def info(request: Request):
        return JSONResponse({"model": request.app.state.classifier.info(), "server": server})

    return app


def main(create_app, description: str, add_arguments=None) -> None:
    """Parse the command line, then serve `create_app(**options)` with uvicorn."""
    parser = argparse.ArgumentParser(description=description)
    add_common_arguments(parser, default_port=8000)
    add_model_arguments(parser)
    parser.add_argument("--device", help="cuda | cuda:1 | mps | cpu (default: the best there is)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    prepare_process(args)
    shared = ("host", "port", "access_log", "log_level", "max_connections", "parent_pid")
    options = {k: v for k, v in vars(args).items() if k not in shared}
    run_uvicorn(create_app(**options), args)
