"""What the FastAPI servers share: the model loaded at startup, `/health`, `/info`, the HTTP
limits, Server-Timing and the command line. Each server file adds only its `/predict`.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from demo_servers.admission import MAX_QUEUE_WAIT_S, Bounds
from demo_servers.cli import (
    add_common_arguments,
    add_model_arguments,
    add_workers_argument,
    prepare_process,
    serve,
)
from demo_servers.hardware import cpu_threads_per_worker
from demo_servers.limits import BODY_TIMEOUT_S
from demo_servers.model import load_for_this_thread
from demo_servers.skeleton import create_skeleton


def create_base_app(
    server: dict,
    weights: str = "auto",
    device: str | None = None,
    runtime: str = "eager",
    threads: int = 0,
    body_timeout: float = BODY_TIMEOUT_S,
    inference: Executor | None = None,
    preprocess: str = "cpu",
    workers: int = 1,
    max_queue: int = 0,
    max_queue_wait: float = MAX_QUEUE_WAIT_S,
) -> FastAPI:
    """A FastAPI app without `/predict`; `server` is what `/info` says about the server.

    `inference`: the executor whose thread will run the model, if not the event loop's; the
    model is loaded in that same thread (`load_for_this_thread`). `preprocess`: "gpu"
    decodes JPEGs on the model's device. `workers`: how many processes serve this app
    (each builds its own), which divide the CPU threads among them. `max_queue`,
    `max_queue_wait`: the admission bounds (admission.py)."""
    server = {**server, "preprocess": preprocess, "http_processes": workers}
    threads = threads or cpu_threads_per_worker(workers)
    max_batch_size = server.get("max_batch_size", 1)
    in_service = max_batch_size * server.get("inference_threads", 1)  # computed at once

    def load():
        return load_for_this_thread(weights, device, runtime, threads, max_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if inference is None:
            app.state.classifier = load()
        else:
            app.state.classifier = await asyncio.get_running_loop().run_in_executor(inference, load)
        app.state.preprocessing = app.state.classifier.preprocessing
        app.state.device_decoding = preprocess == "gpu"
        yield

    def not_ready(request: Request) -> str | None:
        return None if getattr(request.app.state, "classifier", None) else "not ready"

    def info(request: Request) -> dict:
        return {"model": request.app.state.classifier.info(), "server": server}

    return create_skeleton(
        f"ResNet-50 ({server['name']})", info, not_ready, body_timeout, lifespan=lifespan,
        bounds=Bounds(max_queue, max_queue_wait, in_service),
    )  # fmt: skip


def main(create_app, description: str, add_arguments=None) -> None:
    """Parse the command line, then serve `create_app(**options)` with uvicorn, in
    `--workers` processes."""
    parser = argparse.ArgumentParser(description=description)
    add_common_arguments(parser, default_port=8000)
    add_model_arguments(parser)
    add_workers_argument(parser)
    parser.add_argument("--device", help="cuda | cuda:1 | mps | cpu (default: the best there is)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    prepare_process(args)
    shared = ("host", "port", "access_log", "log_level", "max_connections", "parent_pid")
    options = {k: v for k, v in vars(args).items() if k not in shared}
    serve(create_app, options, args)
