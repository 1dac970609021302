"""ResNet-50: loading the weights, the tensor half of preprocessing, and inference.

`load_classifier()` gives a `Classifier` that turns images into
`{"predicted_label", "predicted_class", "score"}` answers. Without network access
it falls back, loudly, to the same architecture with deterministic random weights
(`weights.py`), so everything still runs (the answers are then meaningless).
Decoding and the resize-and-crop half of preprocessing are in `preprocessing.py`
(PIL only), so that an HTTP process can run them without importing torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import ResNetConfig, ResNetForImageClassification

from demo_servers.preprocessing import Preprocessing, to_rgb
from demo_servers.runtimes import Forward, build_runtime
from demo_servers.weights import MODEL_ID, RANDOM, RANDOM_SEED, resolve_weights

log = logging.getLogger("demo_servers")

IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")
CHECK_IMAGE = Path(__file__).resolve().parent.parent / "cats-image.png"


def best_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def check_images(preprocessing: Preprocessing) -> torch.Tensor:
    """Four views of the project's cat photo: what every runtime is checked against eager on."""
    cat = to_rgb(Image.open(CHECK_IMAGE))
    views = [cat, cat.rotate(90, expand=True), cat.crop((200, 100, 500, 400)), cat.convert("L")]
    return tensor([preprocessing.pixels(to_rgb(view)) for view in views], preprocessing)


def tensor(crops: list[bytes], preprocessing: Preprocessing) -> torch.Tensor:
    """Stack RGB crops (`Preprocessing.pixels`) into a normalised (N, 3, H, W) batch."""
    size = preprocessing.size
    shape = (1, len(preprocessing.mean), 1, 1)
    mean = torch.tensor(preprocessing.mean).view(shape)
    std = torch.tensor(preprocessing.std).view(shape)
    raw = torch.frombuffer(bytearray(b"".join(crops)), dtype=torch.uint8)
    images = raw.view(len(crops), size, size, 3).permute(0, 3, 1, 2).float()
    return ((images * (1 / 255) - mean) / std).contiguous()


@dataclass
class Classifier:
    """A ResNet-50 with its preprocessing and runtime, ready for inference on one device."""

    model: ResNetForImageClassification
    preprocessing: Preprocessing
    device: torch.device
    weights: str  # "pretrained" or "random"
    source: str  # where the weights came from
    forward: Forward  # pixel values -> logits, as the runtime computes them
    runtime: str = "eager"
    conversion_s: float = 0.0  # spent converting for the runtime (0: eager, or cached)

    @property
    def labels(self) -> dict[int, str]:
        return self.model.config.id2label

    def tensor(self, crops: list[bytes]) -> torch.Tensor:
        """Stack RGB crops (`Preprocessing.pixels`) into a normalised (N, 3, H, W) batch."""
        return tensor(crops, self.preprocessing)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise RGB images into a (N, 3, 224, 224) float tensor."""
        return self.tensor([self.preprocessing.pixels(image) for image in images])

    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Softmax over the 1000 classes for a preprocessed batch, on the CPU."""
        return self.forward(pixel_values).float().softmax(dim=-1).cpu()

    def predict_tensor(self, pixel_values: torch.Tensor) -> list[dict]:
        """Top-1 answer for every image of a preprocessed batch."""
        scores, indices = self.probabilities(pixel_values).max(dim=-1)
        return [
            {"predicted_label": i, "predicted_class": self.labels[i], "score": s}
            for i, s in zip(indices.tolist(), scores.tolist(), strict=True)
        ]

    def predict_crops(self, crops: list[bytes]) -> list[dict]:
        """Top-1 answer for each crop made by `Preprocessing.pixels`."""
        return self.predict_tensor(self.tensor(crops))

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
            "runtime": self.runtime,
            "conversion_s": round(self.conversion_s, 1),
            "torch_threads": torch.get_num_threads(),
        }


def load_for_this_thread(
    weights: str, device: str | None, runtime: str, threads: int = 0
) -> Classifier:
    """`load_classifier`, called in the thread that will run the model, with `threads` torch
    threads (0: leave torch's setting). PyTorch's OpenMP keeps one pool of threads per
    calling thread: a model loaded in another thread leaves a second pool behind, and that
    made every forward pass about a fifth slower here."""
    if threads:
        torch.set_num_threads(threads)
    return load_classifier(weights, device, runtime)


def load_classifier(
    weights: str = "auto",
    device: str | torch.device | None = None,
    runtime: str = "eager",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Classifier:
    """Load ResNet-50 (see `resolve_weights` for `weights`) in eval mode on `device`, and
    prepare `runtime` (see `runtimes.py`) with `threads` threads (default: torch's)."""
    device = torch.device(device) if device else best_device()
    source = resolve_weights(weights)
    preprocessing = Preprocessing.for_weights(source)
    if source == RANDOM:
        model = random_resnet50()
        kind, source = RANDOM, f"ResNetConfig() with seed {RANDOM_SEED} (offline fallback)"
    else:
        model = ResNetForImageClassification.from_pretrained(source)
        kind = "pretrained"
    model.eval().to(device)
    check = check_images(preprocessing)
    forward, seconds = build_runtime(runtime, model, device, check, threads, cache_dir)
    log.info(
        "ResNet-50 loaded: %s weights from %s on %s, runtime %s", kind, source, device, runtime
    )
    return Classifier(model, preprocessing, device, kind, source, forward, runtime, seconds)
