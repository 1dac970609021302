"""Request bodies: the image, encoded once per run, in each wire format the servers take."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from servebench.paths import CAT_IMAGE

__all__ = ["WIRE_FORMATS", "Body", "encode_image", "image_payload", "request_body"]


def image_payload(path: Path | str = CAT_IMAGE, fmt: str = "JPEG") -> dict:
    """The original benchmark's request body: the image re-encoded once, as hex in JSON."""
    return {"image_bytes": encode_image(Image.open(path), fmt).hex()}


def encode_image(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass(frozen=True)
class Body:
    """One request body, encoded once and reused by every request of a run."""

    content: bytes
    content_type: str
    wire: str  # "hex" (the original), "base64", "raw", "multipart", or "json" as given

    def __len__(self) -> int:
        return len(self.content)


WIRE_FORMATS = ("hex", "base64", "raw", "multipart")


def request_body(payload: dict | None = None, wire: str = "hex", path=CAT_IMAGE) -> Body:
    """The body every request of a run sends: the image at `path`, re-encoded once as JPEG.

    wire: "hex" (the original benchmark's `{"image_bytes": "<hex>"}`), "base64"
    (`{"image_base64": ...}`), "raw" (the JPEG itself, `Content-Type: image/jpeg`) or
    "multipart" (a file upload). A `payload` dict is sent as JSON, as it is.
    """
    if payload is not None:
        return Body(json.dumps(payload).encode(), "application/json", "json")
    jpeg = encode_image(Image.open(path))
    if wire == "hex":
        return Body(json.dumps({"image_bytes": jpeg.hex()}).encode(), "application/json", wire)
    if wire == "base64":
        text = base64.b64encode(jpeg).decode()
        return Body(json.dumps({"image_base64": text}).encode(), "application/json", wire)
    if wire == "raw":
        return Body(jpeg, "image/jpeg", wire)
    if wire == "multipart":
        request = httpx.Request("POST", "http://x", files={"image": ("image.jpg", jpeg)})
        return Body(request.read(), request.headers["content-type"], wire)
    raise ValueError(f"wire must be one of {WIRE_FORMATS}, not {wire!r}")
