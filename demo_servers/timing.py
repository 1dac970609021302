"""Where a request's time goes, measured on the server and sent back in a `Server-Timing`
header (the W3C format browsers and tools read), so the JSON answer stays as it was:

    Server-Timing: read;dur=0.2, parse;dur=1.1, decode;dur=3.0, preprocess;dur=2.1,
                   queue;dur=40.3, forward;dur=181.0;desc="batch of 8", encode;dur=0.1,
                   total;dur=231.5

Stages (milliseconds): `read` the body, `parse` it (JSON, hex, base64, multipart),
`decode` and check the image, `preprocess` it (resize, crop), wait in a `queue` until
its forward pass starts, the `forward` pass (with its batch size), `encode` the answer.
`total` runs from the moment the server's HTTP layer got the request until it starts
answering; what total leaves over is hand-offs between processes. The client's latency
minus `total` is time outside the server's request handling: the client, the network,
and waiting to be read by a busy server. Measuring costs a few clock reads per request.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

from fastapi.responses import Response

from demo_servers.admission import Shed, expired

HEADER = "server-timing"
# The stages, in the order a request passes them: the one definition servers and clients use.
READ, PARSE, DECODE, PREPROCESS, QUEUE, FORWARD, ENCODE = STAGES = (
    "read", "parse", "decode", "preprocess", "queue", "forward", "encode",
)  # fmt: skip
TOTAL = "total"  # added by the `ServerTiming` middleware


class Stages(dict):
    """Stage name -> milliseconds, in the order measured."""

    @contextmanager
    def timing(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self[name] = 1000 * (time.monotonic() - started)

    def header(self, batch_size: int | None = None) -> str:
        parts = []
        for name, ms in self.items():
            desc = f';desc="batch of {batch_size}"' if name == FORWARD and batch_size else ""
            parts.append(f"{name};dur={ms:.3f}{desc}")
        return ", ".join(parts)


def timed_response(answer: dict, stages: Stages, batch_size: int = 1) -> Response:
    """The answer as JSON, with the stages (encoding included) in a Server-Timing header."""
    with stages.timing(ENCODE):
        body = json.dumps(answer).encode()
    return Response(
        body, media_type="application/json", headers={HEADER: stages.header(batch_size)}
    )


def parse_header(value: str) -> dict[str, float]:
    """`read;dur=0.2, forward;dur=181;desc="batch of 8"` -> {"read": 0.2, "forward": 181.0,
    "batch_size": 8}: what the load generator stores in each request row."""
    result: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, raw = param.partition("=")
            if key == "dur":
                result[name] = float(raw)
            elif key == "desc" and raw.strip('"').startswith("batch of "):
                result["batch_size"] = int(raw.strip('"').removeprefix("batch of "))
    return result


class ServerTiming:
    """ASGI middleware: appends `total` (request in -> answer out, in this process) to the
    Server-Timing header, or starts one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                total = f"{TOTAL};dur={1000 * (time.monotonic() - started):.3f}".encode()
                headers = list(message.get("headers", []))
                for i, (name, value) in enumerate(headers):
                    if name.lower() == HEADER.encode():
                        headers[i] = (name, value + b", " + total)
                        break
                else:
                    headers.append((HEADER.encode(), total))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def timed_forward(predict, inputs: list) -> list:
    """One forward pass for `inputs` (each an `ImageInput`; `predict` is the classifier's
    `predict_inputs`), recording in each one how long it waited since it was ready
    (`queue`), how long the pass took (`forward`), and its size. An input whose client has
    gone, or that waited past its deadline, is not computed: its answer is a `Shed`."""
    started = time.monotonic()
    dropped = {k: reason for k, i in enumerate(inputs) if (reason := expired(i, started))}
    live = [i for k, i in enumerate(inputs) if k not in dropped]
    answers = iter(predict(live) if live else [])
    forward_ms = 1000 * (time.monotonic() - started)
    for i in inputs:
        i.stages[QUEUE] = 1000 * (started - i.ready_at)
        i.stages[FORWARD] = forward_ms
        i.batch_size = len(live)
    return [Shed(dropped[k]) if k in dropped else next(answers) for k in range(len(inputs))]
