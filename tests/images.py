"""Test images: several sizes, modes and formats, plus the bad uploads of the issue list."""

import io
import random
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


def encoded_formats() -> dict[str, bytes]:
    """The cat in every format a server accepts (JPEG covers MPO)."""
    image = cat()
    return {
        fmt: helpers.encode_image(image, fmt)
        for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
    }


TRUNCATION_POINTS = (8, 0.05, 0.5, 0.9, -1)  # header only, ..., all but the last byte


def truncations() -> dict[str, bytes]:
    """Every accepted format cut short at several points."""
    cuts = {}
    for fmt, data in encoded_formats().items():
        for point in TRUNCATION_POINTS:
            end = point if isinstance(point, int) else int(len(data) * point)
            cuts[f"{fmt} cut at {point}"] = data[:end]
    return cuts


def bit_flips(count: int = 6, seed: int = 0) -> dict[str, bytes]:
    """JPEGs and PNGs with a few random bits flipped in the middle of their data."""
    rng = random.Random(seed)
    corrupted = {}
    for fmt in ("JPEG", "PNG"):
        data = encoded_formats()[fmt]
        for i in range(count):
            damaged = bytearray(data)
            for _ in range(8):
                position = rng.randrange(len(damaged) // 10, len(damaged))
                damaged[position] ^= 1 << rng.randrange(8)
            corrupted[f"{fmt} flipped {i}"] = bytes(damaged)
    return corrupted


def strip(width: int, height: int) -> bytes:
    """A tiny PNG of extreme aspect ratio: cheap to send, costly to resize (short side to 256)."""
    return helpers.encode_image(Image.new("RGB", (width, height), (200, 30, 30)), "PNG")


def other_format(fmt: str) -> bytes:
    """An image in a format PIL reads but the servers do not accept."""
    image = cat().resize((64, 48))
    return helpers.encode_image(image.convert("RGB") if fmt != "ICO" else image, fmt)


def sideways_jpeg() -> tuple[bytes, Image.Image]:
    """A phone photo: pixels stored sideways, with an EXIF tag saying "rotate 90° clockwise".
    Returns the JPEG and the upright image it shows."""
    upright = cat()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the 0th row is the visual right-hand side
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue(), upright
