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

from demo_servers.preprocessing import Preprocessing
from demo_servers.weights import MODEL_ID, RANDOM, RANDOM_SEED, resolve_weights

log = logging.getLogger("demo_servers")

IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")


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


@dataclass
class Classifier:
    """A ResNet-50 with its preprocessing, ready for inference on one device."""

    model: ResNetForImageClassification
    preprocessing: Preprocessing
    device: torch.device
    weights: str  # "pretrained" or "random"
    source: str  # where the weights came from

    def __post_init__(self):
        shape = (1, len(self.preprocessing.mean), 1, 1)
        self._mean = torch.tensor(self.preprocessing.mean).view(shape)
        self._std = torch.tensor(self.preprocessing.std).view(shape)

    @property
    def labels(self) -> dict[int, str]:
        return self.model.config.id2label

    def tensor(self, crops: list[bytes]) -> torch.Tensor:
        """Stack RGB crops (`Preprocessing.pixels`) into a normalised (N, 3, H, W) batch."""
        size = self.preprocessing.size
        raw = torch.frombuffer(bytearray(b"".join(crops)), dtype=torch.uint8)
        images = raw.view(len(crops), size, size, 3).permute(0, 3, 1, 2).float()
        return ((images * (1 / 255) - self._mean) / self._std).contiguous()

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise RGB images into a (N, 3, 224, 224) float tensor."""
        return self.tensor([self.preprocessing.pixels(image) for image in images])

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
            "torch_threads": torch.get_num_threads(),
        }


def load_classifier(weights: str = "auto", device: str | torch.device | None = None) -> Classifier:
    """Load ResNet-50 (see `resolve_weights` for `weights`) in eval mode on `device`."""
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
    log.info("ResNet-50 loaded: %s weights from %s on %s", kind, source, device)
    return Classifier(model, preprocessing, device, weights=kind, source=source)
