"""ResNet-50 loading, image decoding and preprocessing: the one copy both servers use.

`load_classifier()` gives a `Classifier` that turns PIL images into
`{"predicted_label", "predicted_class", "score"}` answers. Without network
access it falls back, loudly, to the same architecture with deterministic
random weights, so everything still runs (the answers are then meaningless).
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from transformers import (
    AutoImageProcessor,
    ConvNextImageProcessorPil,
    ResNetConfig,
    ResNetForImageClassification,
)

log = logging.getLogger("demo_servers")

MODEL_ID = "microsoft/resnet-50"
# Largest image we agree to decode (about 6300 x 6300): a small PNG can declare
# gigapixel dimensions and exhaust memory when decoded (a decompression bomb).
MAX_IMAGE_PIXELS = 40_000_000
RANDOM_SEED = 0
# What microsoft/resnet-50's preprocessor_config.json says, for the offline fallback:
# resize the short side to 256 (224 / crop_pct), centre-crop 224, ImageNet mean/std.
RESNET50_PREPROCESSING = {
    "size": {"shortest_edge": 224},
    "crop_pct": 0.875,
    "resample": Image.Resampling.BICUBIC,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")
RANDOM = "random"


class ImageError(ValueError):
    """The uploaded bytes are not an image we can classify."""


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (any format PIL reads) into an RGB image.

    Raises ImageError with a message meant for the client.
    """
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("the bytes are not an image format PIL can read") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image declares too many pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
        ) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"the image declares {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
        )
    try:
        image.load()  # header parsing is lazy: truncated or corrupt data fails only here
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image could not be decoded ({exc})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, RGBA, CMYK, I;16, ...) to RGB; transparency becomes white."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def best_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# torch's default: one thread per physical core (read at import, before anyone changes it).
CPU_THREADS = torch.get_num_threads()


def cpu_threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` CPU processes so that together they fill, not
    oversubscribe, the cores (oversubscribed BLAS threads spin and slow everyone down).
    One worker gets torch's default, as the single FastAPI process does."""
    return max(1, CPU_THREADS // max(1, workers))


@functools.cache
def resolve_weights(weights: str = "auto", model_id: str = MODEL_ID) -> str:
    """Turn a weights choice into a local directory with the weights, or "random".

    weights: "auto" (download, fall back to random weights when that fails),
    "pretrained" (download or fail), "random", or a local directory holding a
    `save_pretrained()` copy of the model (for readers behind a firewall).
    Resolving once, before any worker starts, gives every worker the same model;
    the answer is cached, so the offline warning is printed once per process.
    """
    if weights == RANDOM:
        return RANDOM
    if weights not in ("auto", "pretrained"):
        if not Path(weights).is_dir():
            raise FileNotFoundError(f"weights directory {weights!r} does not exist")
        return weights
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as exc:  # no network, offline mode, hub down: all mean the same here
        if weights == "pretrained":
            raise
        log.warning(
            "\n%s\nOFFLINE FALLBACK: could not get the %s weights (%s: %s).\n"
            "Serving the same ResNet-50 architecture with RANDOM weights (seed %d):\n"
            "timings are real, predictions are meaningless. Connect to the internet, or pass\n"
            "a local directory with the weights, to get real answers.\n%s",
            "!" * 78,
            model_id,
            type(exc).__name__,
            str(exc).splitlines()[0][:200],
            RANDOM_SEED,
            "!" * 78,
        )
        return RANDOM


def random_resnet50() -> ResNetForImageClassification:
    """ResNet-50 (the transformers default ResNetConfig) with seeded random weights.

    The classifier head is drawn with a small std so that softmax scores stay
    image-dependent (around 0.1-0.2) instead of saturating at 1.0, which keeps
    score comparisons between servers meaningful.
    """
    labels = IMAGENET_CLASSES.read_text().splitlines()
    config = ResNetConfig(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = ResNetForImageClassification(config)
        head = model.classifier[-1]
        torch.nn.init.normal_(head.weight, std=0.002)
        torch.nn.init.zeros_(head.bias)
    return model


@dataclass
class Classifier:
    """A ResNet-50 with its preprocessing, ready for inference on one device."""

    model: ResNetForImageClassification
    processor: ConvNextImageProcessorPil
    device: torch.device
    weights: str  # "pretrained" or "random"
    source: str  # where the weights came from

    @property
    def labels(self) -> dict[int, str]:
        return self.model.config.id2label

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise RGB images into a (N, 3, 224, 224) float tensor."""
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Softmax over the 1000 classes for a preprocessed batch, on the CPU."""
        logits = self.model(pixel_values.to(self.device)).logits
        return logits.float().softmax(dim=-1).cpu()

    def predict_tensor(self, pixel_values: torch.Tensor) -> list[dict]:
        """Top-1 answer for every image of a preprocessed batch."""
        scores, indices = self.probabilities(pixel_values).max(dim=-1)
        return [
            {"predicted_label": i, "predicted_class": self.labels[i], "score": s}
            for i, s in zip(indices.tolist(), scores.tolist(), strict=True)
        ]

    def predict(self, images: list[Image.Image]) -> list[dict]:
        """Top-1 answer for each RGB image."""
        return self.predict_tensor(self.preprocess(images))

    def top_k(self, image: Image.Image, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely classes for one image, with their probabilities."""
        scores, indices = self.probabilities(self.preprocess([image]))[0].topk(k)
        return [(self.labels[i], s) for i, s in zip(indices.tolist(), scores.tolist(), strict=True)]

    def info(self) -> dict:
        return {
            "name": MODEL_ID,
            "weights": self.weights,
            "weights_source": self.source,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
        }


def load_classifier(weights: str = "auto", device: str | torch.device | None = None) -> Classifier:
    """Load ResNet-50 (see `resolve_weights` for `weights`) in eval mode on `device`."""
    device = torch.device(device) if device else best_device()
    source = resolve_weights(weights)
    if source == RANDOM:
        model = random_resnet50()
        processor = ConvNextImageProcessorPil(**RESNET50_PREPROCESSING)
        kind, source = RANDOM, f"ResNetConfig() with seed {RANDOM_SEED} (offline fallback)"
    else:
        model = ResNetForImageClassification.from_pretrained(source)
        processor = AutoImageProcessor.from_pretrained(source, backend="pil")
        kind = "pretrained"
    model.eval().to(device)
    log.info("ResNet-50 loaded: %s weights from %s on %s", kind, source, device)
    return Classifier(model=model, processor=processor, device=device, weights=kind, source=source)
