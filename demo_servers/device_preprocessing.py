"""`--preprocess gpu`: JPEGs decoded, resized and cropped on the model's device, in batches.

On a GPU the CPU work of a request (PIL's decode and bicubic resize: most of a served
request's CPU time) moves to the device: the HTTP process only reads the JPEG header and
checks its dimensions, queues the encoded bytes (a tenth of the crop's 150 KB), and the
worker decodes a whole batch at once with nvJPEG (`torchvision.io.decode_jpeg` on
CUDA), then resizes (bicubic, antialiased, as PIL) and crops each image there.

Where torchvision cannot be imported (the CPU-only install: its wheels are CUDA builds),
the worker decodes with PIL instead; resizing and cropping are the same torch code on
any device. Answers match the CPU path within `TOLERANCE` (the resize is computed in
float, not PIL's fixed point).
"""

from __future__ import annotations

import torch

from demo_servers.preprocessing import ImageError, Preprocessing, decode_image

TOLERANCE = 0.02  # largest difference of any softmax probability from the PIL path


def _torchvision_decoder():
    """torchvision.io.decode_jpeg, or None where torchvision is absent or does not match
    torch (importing a CUDA build beside a CPU-only torch raises RuntimeError)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError):
        return None

    def decode(jpegs: list[bytes], device: torch.device) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
        return decode_jpeg(data, ImageReadMode.RGB, device, apply_exif_orientation=True)

    return decode


DECODE_JPEG = _torchvision_decoder()


def decoder_name(device: torch.device) -> str:
    """What decodes the JPEGs on `device`: what `/info` reports."""
    if DECODE_JPEG is None:
        return "PIL (torchvision not importable)"
    return "nvJPEG (torchvision)" if device.type == "cuda" else "libjpeg (torchvision)"


def _pil_decode(data: bytes, device: torch.device) -> torch.Tensor:
    image = decode_image(data)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, 3).permute(2, 0, 1).to(device)


def decode(jpegs: list[bytes], device: torch.device) -> list[torch.Tensor | ImageError]:
    """Each JPEG as a (3, H, W) uint8 tensor on `device`, upright; an ImageError in its place
    for one that fails (the others of the batch are still decoded)."""
    if DECODE_JPEG is not None:
        try:
            return list(DECODE_JPEG(jpegs, device))
        except RuntimeError:  # one bad image fails the batch: decode them one by one
            results = []
            for jpeg in jpegs:
                try:
                    results.append(DECODE_JPEG([jpeg], device)[0])
                except RuntimeError as exc:  # "decode_jpeg, <source file>, <what is wrong>"
                    reason = str(exc).rsplit(", ", 1)[-1]
                    results.append(ImageError(f"the image could not be decoded ({reason})"[:200]))
            return results
    results = []
    for jpeg in jpegs:
        try:
            results.append(_pil_decode(jpeg, device))
        except ImageError as exc:
            results.append(exc)
    return results


def resize_crop(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """A (3, H, W) uint8 image -> its (3, size, size) crop in float 0-255, as `Preprocessing.crop`
    makes it: short side to size / crop_pct (bicubic, antialiased), then the centre."""
    _, height, width = image.shape
    short = preprocessing.short_side
    if width <= height:
        resized = (int(short * height / width), short)
    else:
        resized = (short, int(short * width / height))
    scaled = torch.nn.functional.interpolate(
        image[None].float(), size=resized, mode="bicubic", antialias=True, align_corners=False
    )[0]
    top, left = (resized[0] - preprocessing.size) // 2, (resized[1] - preprocessing.size) // 2
    crop = scaled[:, top : top + preprocessing.size, left : left + preprocessing.size]
    return crop.round().clamp(0, 255)  # PIL rounds and clips to 8 bits


def crops(
    jpegs: list[bytes], preprocessing: Preprocessing, device: torch.device
) -> tuple[torch.Tensor, list[ImageError | None]]:
    """(N, 3, size, size) float crops on `device` (zeros where an image failed), and for
    each JPEG None or the ImageError that its client should get."""
    size = preprocessing.size
    batch = torch.zeros((len(jpegs), 3, size, size), device=device)
    errors: list[ImageError | None] = []
    for k, image in enumerate(decode(jpegs, device)):
        if isinstance(image, ImageError):
            errors.append(image)
        else:
            batch[k] = resize_crop(image, preprocessing)
            errors.append(None)
    return batch, errors
