"""From uploaded bytes to the model's input: decode, check, orient, convert to RGB, resize, crop.

PIL only, no torch: LitServe's HTTP process runs this for every request before the
request is queued, so a bad upload is refused there, alone, and never reaches a batch.
The work an upload can cause is bounded before any pixel is decoded: the header's
dimensions decide the cost of decoding and resizing, not the number of bytes sent
(a 100-byte PNG can declare 40,000 x 1 pixels). The tensor half of preprocessing
(scale, normalise, stack into a batch) is in `model.py`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# The formats a client may send. Restricting PIL to these keeps its rarer decoders
# (some call external programs, e.g. Ghostscript for EPS) away from untrusted bytes.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")  # JPEG covers MPO
# The largest image we agree to decode (about 6300 x 6300): decoding costs memory and
# time in proportion to the pixels, and a small file can declare gigapixels (a bomb).
MAX_IMAGE_PIXELS = 40_000_000
# Resizing scales the short side to 256 pixels, so the long side grows with the aspect
# ratio: a 5000 x 1 strip would become 1,280,000 x 256 pixels. 20:1 covers panoramas.
MAX_ASPECT_RATIO = 20
# microsoft/resnet-50's preprocessor_config.json, used when the weights bring none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(ValueError):
    """The uploaded bytes are not an image we can classify; the message is for the client."""


def open_image(data: bytes) -> Image.Image:
    """Open encoded image bytes (the header only: no pixel is decoded yet) and check the
    dimensions it declares, or raise ImageError."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(
            f"the bytes are not an image in a format this server reads ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image declares too many pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
        ) from None
    except Exception as exc:  # a header PIL recognised but could not parse
        raise _undecodable(exc) from None
    check_dimensions(*image.size)
    return image


def decode_image(data: bytes, short_side: int = 0) -> Image.Image:
    """Decode encoded image bytes into an upright RGB image, or raise ImageError.

    With `short_side`, a JPEG at least twice that size on its short side is decoded at a
    reduced scale (libjpeg's DCT scaling: 1/2, 1/4 or 1/8) that still leaves the short
    side at least `short_side`: a 12-megapixel phone photo decodes several times faster,
    and the resize to the model's size that follows barely changes."""
    image = open_image(data)
    try:
        if short_side and min(image.size) >= 2 * short_side and image.format == "JPEG":
            scale = short_side / min(image.size)
            image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
        image.load()  # header parsing is lazy: truncated or corrupt data fails only here
        ImageOps.exif_transpose(image, in_place=True)  # a phone photo's "rotated 90°" tag
        return to_rgb(image)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, RuntimeError, ...
        raise _undecodable(exc) from None


def is_device_jpeg(image: Image.Image) -> bool:
    """Whether an opened upload can be decoded on the model's device (`--preprocess gpu`):
    a JPEG in RGB or grayscale. Others (PNG, WebP, CMYK JPEGs, ...) are decoded here."""
    return image.format == "JPEG" and image.mode in ("RGB", "L")


def _undecodable(exc: Exception) -> ImageError:
    detail = f"{type(exc).__name__}: {exc}"[:200]
    return ImageError(f"the image could not be decoded ({detail})")


def check_dimensions(width: int, height: int) -> None:
    """Refuse images whose decoding or resizing would cost too much."""
    if width < 1 or height < 1:
        raise ImageError(f"the image declares {width}x{height} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"the image declares {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"the image is {width}x{height} pixels: its aspect ratio is over the limit of "
            f"{MAX_ASPECT_RATIO}:1"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, RGBA, CMYK, I;16, ...) to RGB; transparency becomes white."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocessing:
    """The model card's image steps: resize the short side to `size / crop_pct` (bicubic),
    centre-crop `size` x `size`, then scale to [0, 1] and normalise with `mean` and `std`.

    The first two steps (PIL, here) give the same pixels as transformers' ResNet image
    processor; the last two run on whole batches in `model.py`.
    """

    size: int = 224
    crop_pct: float = 0.875
    resample: int = Image.Resampling.BICUBIC
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def for_weights(cls, source: str) -> Preprocessing:
        """Read `preprocessor_config.json` from a weights directory; defaults otherwise."""
        path = Path(source) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        config = json.loads(path.read_text())
        size = config.get("size", cls.size)
        return cls(
            size=size["shortest_edge"] if isinstance(size, dict) else int(size),
            crop_pct=config.get("crop_pct", cls.crop_pct),
            resample=config.get("resample", cls.resample),
            mean=tuple(config.get("image_mean", cls.mean)),
            std=tuple(config.get("image_std", cls.std)),
        )

    @property
    def short_side(self) -> int:
        """The short side an image is resized to before the centre crop (256 for 224)."""
        return int(self.size / self.crop_pct)

    def crop(self, image: Image.Image) -> Image.Image:
        """An RGB image -> the `size` x `size` RGB crop the model sees."""
        width, height = image.size
        short = self.short_side
        if width <= height:
            resized = (short, int(short * height / width))
        else:
            resized = (int(short * width / height), short)
        image = image.resize(resized, resample=self.resample)
        left, top = (resized[0] - self.size) // 2, (resized[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def pixels(self, image: Image.Image) -> bytes:
        """The crop as raw RGB bytes (size x size x 3, 150 KB at 224): what is queued."""
        return self.crop(image).tobytes()
