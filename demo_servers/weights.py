"""Which ResNet-50 weights: downloaded, a local copy, or (offline) a loud random fallback.

Torch-free, so a LitServe main process can resolve the weights once, before any worker
starts, without importing the model stack.
"""

from __future__ import annotations

import functools
import logging
import os
import textwrap
from pathlib import Path

log = logging.getLogger("demo_servers")

MODEL_ID = "microsoft/resnet-50"
RANDOM = "random"
RANDOM_SEED = 0


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
        log.warning(offline_banner(model_id, exc))
        return RANDOM


def offline_banner(model_id: str, exc: Exception) -> str:
    """The warning printed once per process that falls back: under the notebook cell that
    loads the model, or in a server's log (`server.log_tail()`)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        first_sentence = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc) else ""
        reason = f"{type(exc).__name__}: {first_sentence}"
    text = (
        f"OFFLINE FALLBACK: no {model_id} weights ({reason}). Using the same ResNet-50 with "
        f"RANDOM weights (seed {RANDOM_SEED}): timings are real, predictions meaningless. "
        "For real ones, go online (and unset HF_HUB_OFFLINE) or point at a local "
        "save_pretrained() copy: --weights DIR or RESNET_WEIGHTS=DIR for a server, "
        "load_classifier(weights=DIR) in Python."
    )
    rule = "!" * 78
    return f"\n{rule}\n{textwrap.fill(text, 78, break_long_words=False)}\n{rule}"
