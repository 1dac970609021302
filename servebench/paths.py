"""Where things are: the project root, the sample image, and where runs write.

Every path other modules need is read from here at call time (`paths.RESULTS_DIR`), so a
test or a reader that points `RESULTS_DIR` elsewhere changes it for the whole toolkit.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CAT_IMAGE", "LOCUSTFILE", "REFERENCE_CSV", "RESULTS_DIR", "ROOT", "model_cache_dir"]

ROOT = Path(__file__).resolve().parent.parent
CAT_IMAGE = ROOT / "cats-image.png"
LOCUSTFILE = ROOT / "locustfile.py"
REFERENCE_CSV = ROOT / "reference" / "original_benchmark.csv"
RESULTS_DIR = Path(os.environ.get("RESULTS_DIR", ROOT / "results"))


def model_cache_dir() -> Path:
    """Where converted models are kept: $MODEL_CACHE_DIR, else results/cache."""
    return Path(os.environ.get("MODEL_CACHE_DIR") or RESULTS_DIR / "cache")
