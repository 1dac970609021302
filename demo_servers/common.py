"""What both servers share: the wire format, input validation, limits, logging, shutdown."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from demo_servers.model import ImageError, decode_image

log = logging.getLogger("demo_servers")

# A request body larger than this is refused with 413 before it is parsed.
# The hex encoding doubles the size, so this allows images of up to 8 MiB.
MAX_BODY_BYTES = 16 * 1024 * 1024


def image_from_hex(value: Any) -> Image.Image:
    """Validate `image_bytes` (hex text of an encoded image) into a decoded RGB image."""
    if not isinstance(value, str):
        raise ValueError(f"image_bytes must be a string of hex digits, not {type(value).__name__}")
    if not value:
        raise ValueError("image_bytes is empty")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ValueError("image_bytes is not valid hex (expected pairs of 0-9a-f digits)") from None
    try:
        return decode_image(data)
    except ImageError as exc:
        raise ValueError(str(exc)) from None


HexImage = Annotated[
    Image.Image,
    BeforeValidator(image_from_hex),
    WithJsonSchema({"type": "string", "description": "hex digits of an encoded image"}),
]


class PredictRequest(BaseModel):
    """The original benchmark's wire format: `{"image_bytes": "<hex of an encoded image>"}`.

    Validation decodes the image, so a bad upload is refused with 422 in the
    HTTP layer, before it reaches the model (or a LitServe batch).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)
    image: HexImage = Field(alias="image_bytes")


class PredictResponse(BaseModel):
    predicted_label: int
    predicted_class: str
    score: float = Field(description="softmax probability of the predicted class")


class BodySizeLimit:
    """ASGI middleware: answer 413 to bodies over `max_bytes`, declared or streamed."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"request body is over the {max_bytes:,}-byte limit"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body with no Content-Length
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send):
        body = json.dumps({"detail": self.message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """422 that says what is wrong without echoing the (possibly megabytes of) input back."""
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)


def configure_logging(level: str = "info") -> None:
    """Timestamped lines from this project's logger on stderr (the helpers send them to a
    log file). Only our logger: configuring the root one would make every library chatty."""
    logger = logging.getLogger("demo_servers")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def add_common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument(
        "--weights",
        default=os.environ.get("RESNET_WEIGHTS", "auto"),
        help="auto | pretrained | random | a local directory (default: $RESNET_WEIGHTS or auto)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="shut down when this process dies (the helpers pass the notebook kernel's pid)",
    )


def exit_with_parent(parent_pid: int | None, grace_s: float = 10.0) -> None:
    """Stop this server's process group when `parent_pid` goes away.

    A notebook kernel that is killed outright runs no cleanup code; without this
    watchdog its servers would keep serving (and holding memory and ports) forever.
    """
    if not parent_pid:
        return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.warning("parent process %d is gone: shutting down", parent_pid)
        os.killpg(os.getpgrp(), signal.SIGINT)
        time.sleep(grace_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def prepare_process(args: argparse.Namespace) -> None:
    """Logging, a working Ctrl+C (even when started with SIGINT ignored, as nohup does),
    and the parent watchdog: what every server's main() does first."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    configure_logging(args.log_level)
    exit_with_parent(args.parent_pid)
