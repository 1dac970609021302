"""How many CPU threads a model process gets, decided without importing torch.

A LitServe main process never loads the model, so it must not pay for importing torch
(a second or more) just to divide the cores among its workers.
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores (hyper-threads not counted): the default number of torch threads."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cores, physical = set(), "0"
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                cores.add((physical, value.strip()))
        if cores:
            return len(cores)
    return os.cpu_count() or 1


def cpu_threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` CPU processes so that together they fill, not
    oversubscribe, the cores (oversubscribed BLAS threads spin and slow everyone down).
    One worker gets torch's default, as the single FastAPI process does."""
    return max(1, physical_cores() // max(1, workers))
