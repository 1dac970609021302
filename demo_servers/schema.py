"""The wire format: what a client sends to `/predict`, and what it gets back.

One image per request, in any of these bodies (same checks, same answers):

- `application/json`: `{"image_bytes": "<hex>"}`, the original benchmark's format, or
  `{"image_base64": "<base64>"}` (a third smaller on the wire);
- `image/jpeg`, `image/png`, ... or `application/octet-stream`: the encoded image itself;
- `multipart/form-data`: a file field named `image` (what an HTML form or `curl -F` sends).

`read_image` is a FastAPI dependency: in the HTTP process it reads the body, decodes
and checks the image and makes the model's crop, timing each stage. Anything wrong is
answered with a 4xx that says what to fix, before the request reaches a model or a
batch. The answer is `{"predicted_label", "predicted_class", "score"}`.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from demo_servers.admission import Shed
from demo_servers.preprocessing import ImageError, decode_image, is_device_jpeg, open_image
from demo_servers.timing import DECODE, PARSE, PREPROCESS, READ, Stages, timed_response

JSON_FIELDS = {"image_bytes": "hex", "image_base64": "base64"}
TEXT = {"hex": "hex digits", "base64": "base64 text"}
MULTIPART_FIELD = "image"
JSON_SHAPE = '{"image_bytes": "<hex>"} or {"image_base64": "<base64>"}'
ACCEPTED = (
    'application/json ({"image_bytes": "<hex>"} or {"image_base64": "<base64>"}), '
    "the image itself as image/jpeg, image/png, ... or application/octet-stream, "
    f'or multipart/form-data with a file field "{MULTIPART_FIELD}"'
)


class PredictResponse(BaseModel):
    predicted_label: int
    predicted_class: str
    score: float = Field(description="softmax probability of the predicted class")


@dataclass
class ImageInput:
    """A checked upload, ready for the model: what LitServe queues for its workers.

    Either `pixels` (the crop, made in the HTTP process) or `jpeg` (the encoded upload, to
    be decoded and cropped on the model's device: `--preprocess gpu`)."""

    pixels: bytes  # the RGB crop, Preprocessing.pixels(); b"" when `jpeg` is set
    stages: Stages = field(default_factory=Stages)  # what the HTTP layer measured so far
    ready_at: float = 0.0  # time.monotonic() when it was ready: the queue wait starts here
    batch_size: int = 1  # how many inputs its forward pass had
    jpeg: bytes = b""
    slot: int = -1  # its "client gone" flag (admission.py); -1: none
    deadline: float = 0.0  # time.monotonic() after which it is not computed; 0: none

    def __repr__(self) -> str:
        # Short on purpose: LitServe 0.2.19 logs f"Handling request: {request}" for every
        # request, and the default repr would format 150 KB of pixels each time.
        kind, data = ("jpeg", self.jpeg) if self.jpeg else ("pixels", self.pixels)
        return f"ImageInput({kind}={len(data)} bytes)"


def respond(answer, image: ImageInput) -> Response:
    """The model's answer with its Server-Timing header, or a 422 for an image that could
    not be decoded on the device (found only there, after the request was queued)."""
    if isinstance(answer, ImageError):
        detail = [{"loc": ["body"], "msg": str(answer), "type": "value_error"}]
        return JSONResponse({"detail": detail}, 422)
    if isinstance(answer, Shed):  # dropped before its forward pass (admission.py)
        return answer.response()
    return timed_response(answer, image.stages, image.batch_size)


def invalid(status: int, loc: list[str], msg: str, kind: str = "value_error") -> HTTPException:
    """A 4xx in the same shape as FastAPI's validation errors: {"detail": [{loc, msg, type}]}."""
    return HTTPException(status, detail=[{"loc": loc, "msg": msg, "type": kind}])


async def read_image(request: Request) -> ImageInput:
    """FastAPI dependency: the request's image, decoded, checked and cropped, or a 4xx."""
    item = await _read_image(request)
    item.slot = getattr(request.state, "admission_slot", -1)
    item.deadline = getattr(request.state, "admission_deadline", 0.0)
    return item


async def _read_image(request: Request) -> ImageInput:
    stages = Stages()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        with stages.timing(READ):  # starlette reads and parses a multipart body in one go
            loc, data = ["body", MULTIPART_FIELD], await _multipart_file(request)
    else:
        with stages.timing("read"):
            body = await request.body()
        with stages.timing(PARSE):
            loc, data = _image_bytes(media_type, body)
    preprocessing = request.app.state.preprocessing
    with stages.timing(DECODE):
        try:
            if getattr(request.app.state, "device_decoding", False):
                image = open_image(data)  # the header's checks; pixels decoded on the device
                if is_device_jpeg(image):
                    return ImageInput(b"", stages, ready_at=time.monotonic(), jpeg=data)
            image = decode_image(data, preprocessing.short_side)
        except ImageError as exc:
            raise invalid(422, loc, str(exc)) from None
    with stages.timing(PREPROCESS):
        pixels = preprocessing.pixels(image)
    return ImageInput(pixels, stages, ready_at=time.monotonic())


def _image_bytes(media_type: str, body: bytes) -> tuple[list[str], bytes]:
    """Where the encoded image is in a non-multipart body, by Content-Type, or a 4xx."""
    if media_type == "application/json" or media_type.endswith("+json"):
        return _json_image(body)
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return ["body"], body
    raise invalid(
        415,
        ["header", "content-type"],
        f"Content-Type {media_type or '(none)'!r} is not accepted: send {ACCEPTED}",
        "unsupported_media_type",
    )


def _json_image(body: bytes) -> tuple[list[str], bytes]:
    """The encoded image inside a JSON body, or a 422 that says what is wrong."""
    try:  # bounded: the body's size by BodyLimits, its depth by the parser's recursion guard
        payload = json.loads(body)
    except UnicodeDecodeError as exc:
        raise invalid(
            422, ["body"], f"the body is not UTF-8 JSON text ({exc})", "json_invalid"
        ) from None
    except json.JSONDecodeError as exc:
        raise invalid(
            422, ["body"], f"the body is not valid JSON ({exc})", "json_invalid"
        ) from None
    except RecursionError:
        msg = f"the JSON body nests arrays or objects too deeply to read: send {JSON_SHAPE}"
        raise invalid(422, ["body"], msg, "json_invalid") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        msg = f"the JSON body has a value that cannot be read ({exc}): send {JSON_SHAPE}"
        raise invalid(422, ["body"], msg[:300], "json_invalid") from None
    if not isinstance(payload, dict):
        raise invalid(
            422,
            ["body"],
            f'the JSON body must be an object like {{"image_bytes": "<hex>"}}, '
            f"not {type(payload).__name__}",
            "model_attributes_type",
        )
    present = [name for name in JSON_FIELDS if name in payload]
    if not present:
        msg = 'field required: the JSON body needs "image_bytes" (hex) or "image_base64"'
        raise invalid(422, ["body", "image_bytes"], msg, "missing")
    if len(present) > 1:
        msg = 'the JSON body has both "image_bytes" and "image_base64": send one'
        raise invalid(422, ["body"], msg)
    name = present[0]
    value, encoding = payload[name], JSON_FIELDS[name]
    loc = ["body", name]
    if not isinstance(value, str):
        kind = type(value).__name__
        raise invalid(422, loc, f"{name} must be a string of {TEXT[encoding]}, not {kind}")
    if not value:
        raise invalid(422, loc, f"{name} is empty")
    try:
        if encoding == "hex":
            return loc, bytes.fromhex(value)
        return loc, base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        expected = "pairs of 0-9a-f digits" if encoding == "hex" else "A-Z a-z 0-9 + / and ="
        raise invalid(422, loc, f"{name} is not valid {encoding} (expected {expected})") from None


async def _multipart_file(request: Request) -> bytes:
    """The bytes of the multipart upload's `image` file, or a 422."""
    loc = ["body", MULTIPART_FIELD]
    try:
        form = await request.form(max_files=1, max_fields=10)
    except HTTPException as exc:  # starlette's own parse errors, e.g. a missing boundary
        raise invalid(
            422, ["body"], f"the multipart body could not be parsed ({exc.detail})"
        ) from None
    upload = form.get(MULTIPART_FIELD)
    if upload is None:
        raise invalid(422, loc, f'the multipart body has no file field named "{MULTIPART_FIELD}"')
    if isinstance(upload, str):
        return upload.encode()
    return await upload.read()
