"""How much each notebook measures: the "full" and "quick" profiles."""

from __future__ import annotations

import copy
import os

from demo_servers.batching import ORIGINAL_BATCHING

__all__ = ["GPU_SIZES", "P99_BUDGET_MS", "PROFILES", "has_cuda_gpu", "profile"]

# The p99 latency notebooks 05 and 06 hold servers to. A budget is a product decision (what
# users of an interactive page tolerate), not a property of the hardware: set your own.
P99_BUDGET_MS = 500.0

# The batching of notebook 06's overload section. The admission bound is never shorter
# than two batches' time, and the backlog an overload leaves is about that long: on a
# 2-core CPU a batch of 8 takes about 2 s, so the original batching keeps a served p99
# near 5 s under overload, while batches of 4 serve as many requests per second (the
# forward pass costs about the same per image) with half the wait. Measured on
# 2026-12-05 on a 2-core AMD EPYC; not measured on a GPU.
OVERLOAD_BATCHING = {**ORIGINAL_BATCHING, "max_batch_size": 4}

# How much each notebook measures. "full" (the default) uses the original
# benchmark's sizes; "quick" runs the same code paths with tiny loads, for
# `pytest --nbmake notebooks` (notebooks/conftest.py selects it).
PROFILES = {
    "full": {
        "bursts": [10, 50, 100, 200],
        "repeats": 3,  # runs per point at least; more until the last 3 agree within 10%
        "max_repeats": 6,
        "warmup": 10,
        "ceiling_batch_sizes": [1, 2, 4, 8, 16, 32, 64],
        "ceiling_repeats": 5,
        "served_ceiling_batch_sizes": [1, 2, 4, 8],  # up to the servers' max_batch_size
        "client_ceiling_requests": 2000,
        "grid_batch_sizes": [1, 4, 8, 16],
        "grid_timeouts": [0.01, 0.05, 0.1],
        "grid_concurrency": 64,
        "grid_open_load": 0.5,  # x the best closed-loop throughput: a realistic, steady rate
        "grid_open_duration_s": 10,
        "grid_open_repeats": 2,  # each on a fresh server: the spread between restarts
        "closed_concurrency": [1, 4, 16, 32],
        "closed_requests": 100,
        "open_load": [0.25, 0.5, 0.7, 0.85, 1.0, 1.15],  # x the best closed-loop throughput
        "open_duration_s": 20,
        "stall_s": 2.0,  # coordinated-omission demo: one freeze of the null server
        "stall_requests": 600,
        "runtimes": ["eager", "channels_last", "compile", "onnxruntime", "openvino"],
        "runtime_batch_sizes": [1, 2, 4, 8, 16],
        "ladder_concurrency": 16,  # twice the batch size: enough to keep batches full
        "ladder_requests": 160,
        "ladder_repeats": 3,
        "ladder_max_repeats": 5,
        "scale_replicas": [1, 2, 4],  # Ray Serve replicas beside LitServe
        "scale_nodes": 2,
        "scale_concurrency": 16,
        "scale_requests": 160,
        "scale_open_load": [0.5, 0.9],  # x LitServe's closed-loop throughput
        "scale_open_duration_s": 20,
        "isolate": True,  # one server running at a time
        "autoscale_max": 4,
        "autoscale_load": [0.2, 0.6, 1.0, 1.4],  # the ramp, x LitServe's throughput
        "autoscale_step_s": 20,
        "locust_users": 16,
        "locust_duration_s": 30,
        "locust_processes": 2,
        "client_processes": 1,  # load generator processes (notebook 09; more on a GPU)
        "climb_repeats": 3,
        # seconds at 0.5x, 0.9x, 2x, 0.5x capacity; 0.9x is judged by the share of its
        # arrivals served, so it runs long enough for about a hundred of them
        "overload_step_s": [10, 30, 20, 10],
        "overload_capacity_repeats": 3,  # closed-loop readings of each server's capacity
        "overload_servers": {  # label -> options (`server`: which server, if not the label)
            "litserve": OVERLOAD_BATCHING,
            "fastapi_batching": OVERLOAD_BATCHING,
            "ray": {"replicas": 1, **OVERLOAD_BATCHING},
            # Ray Serve as this series configured it before: a replica held 16 requests
            "ray, 16 ongoing": {
                "server": "ray",
                "replicas": 1,
                "max_ongoing": 16,
                **OVERLOAD_BATCHING,
            },
        },
    },
    "quick": {
        "bursts": [2, 4],
        "repeats": 2,
        "max_repeats": 2,
        "warmup": 1,
        "ceiling_batch_sizes": [1, 2, 4],
        "ceiling_repeats": 2,
        "served_ceiling_batch_sizes": [1, 2],
        "client_ceiling_requests": 200,
        "grid_batch_sizes": [1, 4],
        "grid_timeouts": [0.05],
        "grid_concurrency": 4,
        "grid_open_load": 0.5,
        "grid_open_duration_s": 2,
        "grid_open_repeats": 1,
        "closed_concurrency": [1, 4],
        "closed_requests": 8,
        "open_load": [0.5, 1.2],
        "open_duration_s": 2,
        "stall_s": 0.5,
        "stall_requests": 100,
        "runtimes": ["eager", "channels_last", "onnxruntime", "openvino"],  # compile: full only
        "runtime_batch_sizes": [1, 4],
        "ladder_concurrency": 4,
        "ladder_requests": 8,
        "ladder_repeats": 1,
        "ladder_max_repeats": 1,
        "scale_replicas": [2],  # the server of section 2
        "scale_nodes": 2,
        "scale_concurrency": 4,
        "scale_requests": 8,
        "scale_open_load": [0.5],
        "scale_open_duration_s": 2,
        "isolate": False,  # no restarts: a Ray cluster takes half a minute to start
        "autoscale_max": 2,
        "autoscale_load": [0.5, 1.5],
        "autoscale_step_s": 6,
        "locust_users": 4,
        "locust_duration_s": 3,
        "locust_processes": 1,
        "client_processes": 1,
        "climb_repeats": 1,
        "overload_step_s": [2, 2, 3, 2],
        "overload_capacity_repeats": 1,
        "overload_servers": {  # Ray Serve in the full profile: its cluster starts slowly
            "litserve": OVERLOAD_BATCHING,
            "fastapi_batching": OVERLOAD_BATCHING,
        },
    },
}

# The full profile on a CUDA GPU: a forward pass takes milliseconds and batches of
# hundreds pay, so batch sizes go up to 256, batch timeouts are milliseconds, and the
# load fills those batches from a client in several processes.
GPU_SIZES = {
    "ceiling_batch_sizes": [1, 8, 32, 64, 128, 256],
    "served_ceiling_batch_sizes": [1, 8, 64],
    "grid_batch_sizes": [8, 32, 64, 128, 256],
    "grid_timeouts": [0.002, 0.005, 0.01],
    "grid_concurrency": 512,
    "closed_concurrency": [1, 16, 64, 256],
    "closed_requests": 2000,
    "runtimes": ["eager", "channels_last", "compile", "onnxruntime", "half", "graphs"],
    "runtime_batch_sizes": [1, 8, 64, 256],
    "ladder_concurrency": 256,
    "ladder_requests": 4000,
    "client_processes": 4,
}


def has_cuda_gpu() -> bool:
    """Whether an NVIDIA GPU is visible, asked of nvidia-smi (without importing torch)."""
    from litserve.connector import check_cuda_with_nvidia_smi

    return check_cuda_with_nvidia_smi() > 0


def profile() -> dict:
    """The measurement sizes for $BENCHMARK_PROFILE ("full" unless set), with its name; the
    full profile on a CUDA GPU takes the GPU's sizes (`GPU_SIZES`). A deep copy: a
    notebook cell may change its sizes without changing the shared ones."""
    name = os.environ.get("BENCHMARK_PROFILE", "full")
    sizes = {"name": name, "device": "cpu", **PROFILES[name]}
    if has_cuda_gpu():
        sizes["device"] = "cuda"
        if name == "full":
            sizes.update(GPU_SIZES)
    return copy.deepcopy(sizes)
