"""Was the GPU busy? NVML's utilisation and memory, sampled while a served run goes on.

`nvidia-ml-py` (NVIDIA's own bindings to the driver's management library, the numbers
`nvidia-smi` shows) reads, every `every_s`, the share of the last sample period in which
a kernel was running on each GPU, and the memory in use. Where there is no NVIDIA GPU,
driver or package, the sampler says so and reads nothing: a CPU run has no GPU columns.
"""

from __future__ import annotations

import threading
from contextlib import suppress

__all__ = ["GPU_COLUMNS", "GpuSampler", "gpu_names"]

GPU_COLUMNS = ["gpu_busy_pct", "gpu_busy_max_pct", "gpu_memory_gib"]


def _nvml():
    """The initialised pynvml module, or None where NVML cannot be used here."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package (ImportError), no driver or no GPU (NVMLError)
        return None
    return pynvml


def gpu_names() -> list[str]:
    """The NVIDIA GPUs NVML sees (empty without one)."""
    nvml = _nvml()
    if nvml is None:
        return []
    count = nvml.nvmlDeviceGetCount()
    return [nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]


class GpuSampler:
    """A context manager that samples every GPU's utilisation while its block runs.

    `summary()` gives the mean and highest utilisation (%, averaged over the GPUs) and
    the most memory in use (GiB, summed over them); empty where there is no GPU."""

    def __init__(self, every_s: float = 0.1):
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (busy %, memory GiB)
        self._stop = threading.Event()
        self._nvml = _nvml()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def _sample(self) -> None:
        nvml = self._nvml
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        while not self._stop.wait(self.every_s):
            with suppress(nvml.NVMLError):
                busy = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                memory = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in handles)
                self.samples.append((sum(busy) / len(busy), memory / 2**30))

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._sample, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        busy = [b for b, _ in self.samples]
        return {
            "gpu_busy_pct": sum(busy) / len(busy),
            "gpu_busy_max_pct": max(busy),
            "gpu_memory_gib": max(m for _, m in self.samples),
        }
