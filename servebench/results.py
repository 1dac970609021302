"""Results on disk: every run's rows in results/runs/<run_id>.csv, with the machine."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
import uuid
from pathlib import Path

import pandas as pd

from servebench import paths

__all__ = [
    "cpu_model",
    "environment",
    "load_finding",
    "load_results",
    "run_metadata",
    "save_finding",
    "save_run",
]


def environment() -> dict:
    """Where the numbers come from: date, hardware and versions, stored with every run."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), **_machine()}


@functools.cache
def _machine() -> dict:
    """Hardware and package versions: fixed for the life of this process, so read once."""
    import importlib.metadata as md

    import torch

    def version(package):
        try:
            return md.version(package)
        except md.PackageNotFoundError:
            return None

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpus": ", ".join(gpus) or "none",
        **{f"{p}_version": version(p) for p in ("torch", "transformers", "litserve", "fastapi")},
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_metadata(server, mode: str, level: float, repeat: int, wire: str) -> dict:
    info = server.info()
    model = info.get("model") or {}
    return {
        "run_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{server.name}-{mode}-{level}-"
        f"{repeat}-{uuid.uuid4().hex[:6]}",
        "server": server.label,
        "options": json.dumps(server.options, sort_keys=True),
        **{k: server.options.get(k) for k in ("max_batch_size", "batch_timeout")},
        "wire": wire,
        "mode": mode,
        "level": level,
        "repeat": repeat,
        "weights": model.get("weights"),
        **environment(),
    }


def save_run(frame: pd.DataFrame, results_dir: Path | None = None) -> Path:
    """Write one run's rows to results/runs/<run_id>.csv (a crash loses only the run in flight)."""
    folder = Path(results_dir or paths.RESULTS_DIR) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{frame['run_id'].iloc[0]}.csv"
    frame.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").rename(path)
    return path


def load_results(results_dir: Path | None = None, **filters) -> pd.DataFrame:
    """Every saved run as one DataFrame; `filters` keep rows where column == value."""
    files = sorted((Path(results_dir or paths.RESULTS_DIR) / "runs").glob("*.csv"))
    if not files:
        return pd.DataFrame()
    # Only empty cells are missing: "null" is a server's name, not NaN.
    read = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in files]
    frame = pd.concat(read, ignore_index=True)
    for column, value in filters.items():
        frame = frame[frame[column] == value]
    return frame.reset_index(drop=True)


def save_finding(name: str, finding: dict) -> Path:
    """Keep what a notebook found (e.g. 07's best runtime) for a later notebook to read,
    with the machine and date it was found on: results/findings/<name>.json."""
    folder = paths.RESULTS_DIR / "findings"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"finding": finding, **environment()}, indent=2))
    return path


def load_finding(name: str) -> dict | None:
    """What `save_finding` kept under `name` (the finding, with `date` and `cpu`), or None."""
    path = paths.RESULTS_DIR / "findings" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
