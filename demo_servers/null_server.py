"""A server with no model: the yardstick for the load generator, and a test double.

    python -m demo_servers.null_server --port 8002 [--delay S] [--block S]
        [--fail-every N] [--stall-at N --stall-s S] [--workers N]

`/predict` accepts any body and answers at once with a fixed prediction, so
load against it measures the client and HTTP stack alone (the client ceiling).
It imports no model stack (no torch, no transformers, no PIL) and starts in well
under a second. The options make it misbehave on purpose, for the tests and for
notebook 06: `--delay` waits without blocking (requests overlap), `--block`
blocks the event loop (requests are served one at a time, like the FastAPI
baseline), `--fail-every` answers 500 to every Nth request, `--stall-at` freezes
the whole server for `--stall-s` seconds at the Nth request. `--workers N` runs N
processes on the port, so that the yardstick keeps up with a client in several processes.
"""

import argparse
import asyncio
import itertools
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from demo_servers import admission
from demo_servers.admission import Bounds
from demo_servers.cli import add_common_arguments, add_workers_argument, prepare_process, serve
from demo_servers.limits import BODY_TIMEOUT_S
from demo_servers.skeleton import create_skeleton

ANSWER = {"predicted_label": 0, "predicted_class": "null", "score": 1.0}


def create_app(
    delay: float = 0.0,
    block: float = 0.0,
    fail_every: int = 0,
    stall_at: int = 0,
    stall_s: float = 0.0,
    body_timeout: float = BODY_TIMEOUT_S,
    max_queue: int = 0,
    max_queue_wait: float = 0.0,
) -> FastAPI:
    server = {"name": "null", "delay": delay, "block": block}  # per process (--workers)
    app = create_skeleton(
        "null server", lambda request: {"model": None, "server": server}, timing=False,
        body_timeout=body_timeout, bounds=Bounds(max_queue, max_queue_wait),
    )  # fmt: skip
    counter = itertools.count(1)

    @app.post("/predict")
    async def predict(request: Request):
        await request.body()
        deadline = getattr(request.state, "admission_deadline", 0.0)
        if deadline and time.monotonic() > deadline:  # waited too long, as in a model server
            admission.FLAGS.count("dropped_waited_too_long")
            return admission.Shed(admission.STALE).response()
        n = next(counter)
        if n == stall_at:
            time.sleep(stall_s)
        if block:
            time.sleep(block)
        if delay:
            await asyncio.sleep(delay)
        if fail_every and n % fail_every == 0:
            return JSONResponse({"detail": f"failure on request {n}, as asked"}, 500)
        return ANSWER

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8002)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--block", type=float, default=0.0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--stall-at", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=0.0)
    add_workers_argument(parser)
    args = parser.parse_args()
    prepare_process(args)
    names = ("delay", "block", "fail_every", "stall_at", "stall_s", "body_timeout", "max_queue")
    names += ("max_queue_wait",)
    serve(create_app, {name: getattr(args, name) for name in names}, args)


if __name__ == "__main__":
    main()
