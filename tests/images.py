"""Test images: several sizes, modes and formats, plus the bad uploads of the issue list."""

import struct
import zlib

from PIL import Image

import helpers


def cat() -> Image.Image:
    return Image.open(helpers.CAT_IMAGE).convert("RGB")


def good_images() -> dict[str, bytes]:
    """Encoded images that every server must classify exactly as the model in-process does."""
    image = cat()
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE)
    rgba = image.convert("RGBA")
    rgba.putalpha(128)
    return {
        "png_rgb": helpers.CAT_IMAGE.read_bytes(),
        "jpeg_rgb": helpers.encode_image(image, "JPEG"),
        "png_grayscale": helpers.encode_image(image.convert("L"), "PNG"),
        "png_rgba": helpers.encode_image(rgba, "PNG"),
        "gif_palette": helpers.encode_image(palette, "GIF"),
        "jpeg_cmyk": helpers.encode_image(image.convert("CMYK"), "JPEG"),
        "webp": helpers.encode_image(image, "WEBP"),
        "png_tiny_32x24": helpers.encode_image(image.resize((32, 24)), "PNG"),
        "jpeg_large_1920x1440": helpers.encode_image(image.resize((1920, 1440)), "JPEG"),
        "png_tall_crop": helpers.encode_image(image.crop((100, 0, 300, 480)), "PNG"),
    }


def distinct_images(n: int) -> list[bytes]:
    """n different JPEGs of the cat (crops and rotations), for batch-order checks."""
    image = cat()
    return [
        helpers.encode_image(image.rotate(7 * i).crop((4 * i, 2 * i, 640 - 3 * i, 480)), "JPEG")
        for i in range(n)
    ]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header that declares an enormous image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = helpers.encode_image(cat(), "JPEG")
    return data[: len(data) // 2]
