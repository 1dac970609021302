"""ResNet-50: loading the weights, the tensor half of preprocessing, and inference.

`load_classifier()` gives a `Classifier` that turns images into
`{"predicted_label", "predicted_class", "score"}` answers. Without network access
it falls back, loudly, to the same architecture with deterministic random weights
(`weights.py`), so everything still runs (the answers are then meaningless).
Decoding and the resize-and-crop half of preprocessing are in `preprocessing.py`
(PIL only), so that an HTTP process can run them without importing torch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import ResNetConfig, ResNetForImageClassification

from demo_servers import device_preprocessing
from demo_servers.preprocessing import ImageError, Preprocessing, to_rgb
from demo_servers.runtimes import HALF_RUNTIMES, Forward, build_runtime
from demo_servers.weights import MODEL_ID, RANDOM, RANDOM_SEED, resolve_weights

log = logging.getLogger("demo_servers")

CPU = torch.device("cpu")

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


def tensor(
    crops: list[bytes],
    preprocessing: Preprocessing,
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stack RGB crops (`Preprocessing.pixels`) into a normalised (N, 3, H, W) batch on `device`.

    The crops travel as 8-bit pixels (a quarter of float32's bytes, from pinned memory
    on a GPU, without waiting) and are scaled and normalised on the device, in `dtype`."""
    size = preprocessing.size
    raw = torch.frombuffer(bytearray(b"".join(crops)), dtype=torch.uint8)
    if device.type == "cuda":
        raw = raw.pin_memory()
    images = raw.to(device, non_blocking=True).view(len(crops), size, size, 3)
    return normalise(images.permute(0, 3, 1, 2), preprocessing, dtype)


def normalise(images: torch.Tensor, preprocessing: Preprocessing, dtype: torch.dtype):
    """(N, 3, H, W) pixels in 0-255 (uint8 or float) -> the model's input, in `dtype`."""
    shape = (1, len(preprocessing.mean), 1, 1)
    mean = torch.tensor(preprocessing.mean, device=images.device).view(shape) * 255
    std = torch.tensor(preprocessing.std, device=images.device).view(shape) * 255
    return ((images.float() - mean) / std).to(dtype).contiguous()


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
    _per_thread: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def labels(self) -> dict[int, str]:
        return self.model.config.id2label

    @property
    def dtype(self) -> torch.dtype:
        """The input's dtype: float16 where the runtime computes in it on a GPU."""
        half = self.runtime in HALF_RUNTIMES and self.device.type == "cuda"
        return torch.float16 if half else torch.float32

    def tensor(self, crops: list[bytes]) -> torch.Tensor:
        """Stack RGB crops (`Preprocessing.pixels`) into a normalised (N, 3, H, W) batch."""
        return tensor(crops, self.preprocessing, self.device, self.dtype)

    def batch(self, inputs: list) -> tuple[torch.Tensor, list[ImageError | None]]:
        """The model's input for queued requests (`schema.ImageInput`): their crops, or their
        JPEGs decoded and cropped here (`--preprocess gpu`); and for each, None or the
        ImageError its client should get (a JPEG found broken only when decoded)."""
        jpegs = [k for k, item in enumerate(inputs) if item.jpeg]
        if not jpegs:
            return self.tensor([item.pixels for item in inputs]), [None] * len(inputs)
        crops, errors = device_preprocessing.crops(
            [inputs[k].jpeg for k in jpegs], self.preprocessing, self.device
        )
        batch = normalise(crops, self.preprocessing, self.dtype)
        if len(jpegs) == len(inputs):
            return batch, errors
        full = torch.empty((len(inputs), *batch.shape[1:]), dtype=batch.dtype, device=self.device)
        full[jpegs] = batch
        rest = sorted(set(range(len(inputs))) - set(jpegs))
        full[rest] = self.tensor([inputs[k].pixels for k in rest])
        answers: list[ImageError | None] = [None] * len(inputs)
        for k, error in zip(jpegs, errors, strict=True):
            answers[k] = error
        return full, answers

    def predict_inputs(self, inputs: list) -> list[dict | ImageError]:
        """Top-1 answer for each queued request (`schema.ImageInput`), or the ImageError of
        one whose JPEG could not be decoded. On a GPU each calling thread has a CUDA stream
        of its own, so that two threads' batches (`--inference-threads 2`) overlap their
        copies, decoding and passes instead of queueing on one stream."""
        with self._stream():
            pixel_values, errors = self.batch(inputs)
            answers = self.predict_tensor(pixel_values)
        return [error or answer for answer, error in zip(answers, errors, strict=True)]

    def _stream(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if not hasattr(self._per_thread, "stream"):
            self._per_thread.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._per_thread.stream)

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
            "device_decoder": device_preprocessing.decoder_name(self.device),
        }


def load_for_this_thread(
    weights: str, device: str | None, runtime: str, threads: int = 0, max_batch_size: int = 256
) -> Classifier:
    """`load_classifier`, called in the thread that will run the model, with `threads` torch
    threads (0: leave torch's setting). PyTorch's OpenMP keeps one pool of threads per
    calling thread: a model loaded in another thread leaves a second pool behind, and that
    made every forward pass about a fifth slower here."""
    if threads:
        torch.set_num_threads(threads)
    return load_classifier(weights, device, runtime, max_batch_size=max_batch_size)


def load_classifier(
    weights: str = "auto",
    device: str | torch.device | None = None,
    runtime: str = "eager",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    max_batch_size: int = 256,
) -> Classifier:
    """Load ResNet-50 (see `resolve_weights` for `weights`) in eval mode on `device`, and
    prepare `runtime` (see `runtimes.py`) with `threads` threads (default: torch's) for
    batches of up to `max_batch_size`."""
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
    forward, seconds = build_runtime(
        runtime, model, device, check, threads, cache_dir, max_batch_size
    )
    log.info(
        "ResNet-50 loaded: %s weights from %s on %s, runtime %s", kind, source, device, runtime
    )
    return Classifier(model, preprocessing, device, kind, source, forward, runtime, seconds)
