"""The two yardsticks: the model alone (the hardware ceiling) and the client alone."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from servebench.bodies import Body, request_body
from servebench.load import burst, closed_loop, run_in_processes
from servebench.paths import CAT_IMAGE, model_cache_dir
from servebench.servers import cpu_seconds, group_members, start_server
from servebench.stats import STABILITY_TOLERANCE
from servebench.verdicts import Range, Target

__all__ = [
    "CeilingCheck",
    "best_images_per_s",
    "ceiling_check",
    "ceiling_fractions",
    "client_ceiling",
    "client_headroom",
    "client_scaling",
    "model_ceiling",
    "time_forward_passes",
]


def model_ceiling(
    batch_sizes=(1, 2, 4, 8, 16, 32, 64),
    repeats: int = 5,
    *,
    runtime: str = "eager",
    workers: int = 1,
    threads: int | None = None,
    device: str | None = None,
    classifier=None,
) -> pd.DataFrame:
    """Images/s of the model alone (no HTTP, no decoding) per batch size: the hardware ceiling.

    `runtime` as the servers' `--runtime`. Measured in the servers' arrangement:
    `workers` processes with `threads` threads each (default: the cores divided among
    them, as LitServe's CPU workers get them), all running at once; images/s is their
    sum. One worker runs in this process (on the CPU its torch thread count stays set).
    The `conversion_s` column is what preparing the runtime cost (0: nothing, or cached).
    """
    from demo_servers.hardware import cpu_threads_per_worker

    threads = threads or cpu_threads_per_worker(workers)
    args = (batch_sizes, repeats, threads, runtime, device)
    if workers == 1:
        rows = time_forward_passes(*args, classifier=classifier)
    else:
        context = multiprocessing.get_context("spawn")
        with (
            context.Manager() as manager,
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool,
        ):
            barrier = manager.Barrier(workers)  # every pass starts in all workers at once
            futures = [
                pool.submit(time_forward_passes, *args, barrier=barrier) for _ in range(workers)
            ]
            rows = [row for future in futures for row in future.result()]
    keys = ["batch_size", "repeat", "device", "runtime"]
    frame = pd.DataFrame(rows).groupby(keys, as_index=False)
    frame = frame.agg(
        seconds=("seconds", "max"),
        images_per_s=("images_per_s", "sum"),
        conversion_s=("conversion_s", "max"),
    )
    return frame.assign(torch_threads=threads, workers=workers)


def time_forward_passes(
    batch_sizes, repeats, threads, runtime="eager", device=None, classifier=None, barrier=None
):
    """Time `repeats` forward passes per batch size (after a warm-up) in this process."""
    import torch

    from demo_servers.model import load_classifier

    torch.set_num_threads(threads)  # before the runtime is built: it takes the thread count
    classifier = classifier or load_classifier(
        device=device, runtime=runtime, cache_dir=model_cache_dir()
    )
    pixels = classifier.preprocess([Image.open(CAT_IMAGE).convert("RGB")])
    cuda = classifier.device.type == "cuda"
    rows = []
    desc = f"model ceiling ({classifier.runtime})"
    for batch_size in tqdm(batch_sizes, desc=desc, disable=barrier is not None):
        batch = pixels.expand(batch_size, -1, -1, -1).contiguous().to(classifier.device)
        # Warm-up: a fresh model's first passes at a new shape are slow (allocations,
        # kernel choices, clock ramp-up): at least one pass, and half a second (two on a
        # GPU, whose clocks rise under load).
        warm_until = time.perf_counter() + (2.0 if cuda else 0.5)
        classifier.probabilities(batch)
        while time.perf_counter() < warm_until:
            classifier.probabilities(batch)
        for repeat in range(repeats):
            if barrier is not None:
                barrier.wait()
            passes, seconds = timed_passes(classifier, batch, cuda)
            rows.append(
                {
                    "batch_size": batch_size,
                    "repeat": repeat,
                    "device": str(classifier.device),
                    "runtime": classifier.runtime,
                    "passes": passes,
                    "seconds": seconds,
                    "images_per_s": passes * batch_size / seconds,
                    "conversion_s": classifier.conversion_s,
                }
            )
    return rows


MIN_READING_S = 0.1  # one reading times passes for at least this long


def timed_passes(classifier, batch, cuda: bool) -> tuple[int, float]:
    """Forward passes of `batch` for at least MIN_READING_S: how many, and how long.

    A GPU pass at a small batch takes a few milliseconds, and one pass timed alone
    reads launch jitter more than speed; on a GPU the time comes from CUDA events
    around the passes, so it counts the device's work, not the host's."""
    import torch

    passes, started = 0, time.perf_counter()
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    while True:
        classifier.probabilities(batch)
        passes += 1
        if time.perf_counter() - started >= MIN_READING_S:
            break
    if cuda:
        end.record()
        end.synchronize()
        return passes, start.elapsed_time(end) / 1000
    return passes, time.perf_counter() - started


def best_images_per_s(ceiling: pd.DataFrame) -> float:
    """The highest median images/s over batch sizes."""
    return ceiling.groupby("batch_size")["images_per_s"].median().max()


@dataclass
class CeilingCheck:
    """The model-alone ceiling read before and after the served runs, against what was served.

    A server can never beat the model alone on the same machine. If one seems to, or
    the two readings disagree, the machine did other work during the run and the
    comparison cannot be trusted."""

    before: float  # best images/s (median over repeats) before the served runs
    after: float  # ... and after them
    batch_size: int  # where the best was reached
    one_image: float  # batch-1 images/s (both readings)
    served: float  # the best requests/s any server sustained
    served_one_image: float = float("nan")  # ... of a server running one image per pass
    tolerance: float = STABILITY_TOLERANCE

    @property
    def ceiling(self) -> float:
        return (self.before + self.after) / 2

    @property
    def drift(self) -> float:
        return abs(self.before - self.after) / max(self.before, self.after)

    @property
    def above_best(self) -> bool:
        """A server served more than the model alone at its best."""
        return self.served > max(self.before, self.after)

    @property
    def above_batch_1(self) -> bool:
        """A server running one image per forward pass served more than the model alone at
        batch 1 (NaN compares False: nothing to check)."""
        return self.served_one_image > self.one_image

    @property
    def exceeded(self) -> bool:
        return self.above_best or self.above_batch_1

    @property
    def trustworthy(self) -> bool:
        return self.drift <= self.tolerance and not self.exceeded

    def __str__(self) -> str:
        shown = self.batch_size != 1 and pd.notna(self.one_image)  # NaN: batch 1 not read
        one = f" (batch 1: {self.one_image:.1f})" if shown else ""
        text = (
            f"Model alone, batch {self.batch_size}: {self.before:.1f} images/s before the served "
            f"runs and {self.after:.1f} after{one}; the best server served {self.served:.1f} "
            "requests/s."
        )
        if self.trustworthy:
            return text + (
                f" The readings agree within {self.tolerance:.0%} and no server went above "
                "them: the fractions of the ceiling below can be trusted."
            )
        observed = []
        if self.drift > self.tolerance:
            direction = "rose" if self.after > self.before else "fell"
            observed.append(
                f"the model-alone rate {direction} from {self.before:.1f} to {self.after:.1f} "
                f"images/s during the run: the readings differ by {self.drift:.0%}, more than "
                f"{self.tolerance:.0%}"
            )
        if self.above_best:
            observed.append(
                f"a server served more than the model alone at its best ({self.served:.1f} > "
                f"{max(self.before, self.after):.1f})"
            )
        elif self.above_batch_1:
            observed.append(
                f"a server running one image per forward pass served {self.served_one_image:.1f}"
                f" requests/s, more than the model alone at batch 1 ({self.one_image:.1f})"
            )
        return text + (
            f"\nNOT TRUSTWORTHY: {'; and '.join(observed)}. The machine's speed was not the same "
            "while the ceiling was read as while the servers ran, so no fraction of the ceiling "
            "is shown. Run the notebook again; if it repeats, look for what else runs."
        )


def ceiling_check(
    before: pd.DataFrame,
    after: pd.DataFrame,
    summary: pd.DataFrame,
    tolerance: float = STABILITY_TOLERANCE,
) -> CeilingCheck:
    """Compare two `model_ceiling` readings with each other and with the served throughput."""
    medians = pd.concat([before, after]).groupby("batch_size")["images_per_s"].median()
    # batch 1 averaged over the two readings, as the best is: the same figure when batch 1
    # is the best (a reading without batch 1 is skipped)
    one_image = pd.Series(
        [r.loc[r["batch_size"] == 1, "images_per_s"].median() for r in (before, after)]
    )
    served = summary.groupby(["server", "level"])["throughput_rps"].median()
    if "mean_batch_size" in summary:  # from Server-Timing: which servers ran batch 1
        one = summary[summary["mean_batch_size"] <= 1]
        served_one = one.groupby(["server", "level"])["throughput_rps"].median().max()
    else:
        served_one = float("nan")
    return CeilingCheck(
        before=best_images_per_s(before),
        after=best_images_per_s(after),
        batch_size=int(medians.idxmax()),
        one_image=float(one_image.mean()),
        served=served.max(),
        served_one_image=float(served_one),
        tolerance=tolerance,
    )


def ceiling_fractions(summary: pd.DataFrame, check: CeilingCheck) -> pd.DataFrame:
    """Served requests/s per level, and as a share of the best and of the batch-1 ceiling
    (FastAPI always runs batch 1); the shares only where `check` says they can be trusted."""
    served = summary.pivot_table("throughput_rps", "level", "server", aggfunc="median")
    table = served.round(1).add_suffix(" req/s")
    if not check.trustworthy:
        return table
    shares = [
        (served / check.ceiling).map("{:.0%}".format).add_suffix(f" / batch {check.batch_size}")
    ]
    if check.batch_size != 1:
        shares.append((served / check.one_image).map("{:.0%}".format).add_suffix(" / batch 1"))
    return pd.concat([table, *shares], axis=1)


async def client_ceiling(
    concurrency: int = 32,
    requests: int = 2000,
    body: Body | None = None,
    processes: int = 1,
    server_processes: int | None = None,
) -> dict:
    """What the load generator alone can drive: closed loop against the null server.

    Returns requests/s and the client's CPU time per request. If a served
    benchmark gets near these numbers, the client, not the server, is measured. With
    `processes`, the client runs in that many processes, against a null server in
    `server_processes` (default: as many), so that the yardstick is not the limit.
    """
    body = body or request_body()
    server_processes = server_processes or processes
    options = {"workers": server_processes} if server_processes > 1 else {}
    # replace=False: leave others' null servers running
    with start_server("null", quiet=True, replace=False, **options) as server:
        url = f"{server.url}/predict"
        await burst(url, concurrency, body)  # warm-up
        server_cpu = _group_cpu_s(server.process.pid)
        cpu, wall = time.process_time(), time.perf_counter()
        if processes == 1:
            rows = await closed_loop(url, concurrency, body, requests=requests)
            cpu = time.process_time() - cpu
        else:
            rows, cpu = await run_in_processes(
                "closed", processes, url, concurrency, body, requests=requests
            )
        wall = time.perf_counter() - wall
        server_cpu = _group_cpu_s(server.process.pid) - server_cpu
    ok = [r for r in rows if r["status"] == 200]
    # the rate while all were sending: from the first send to the last answer
    span = max(r["end_s"] for r in ok) - min(r["start_s"] for r in ok) if ok else wall
    return {
        "wire": body.wire,
        "processes": processes,
        "server_processes": server_processes,
        "concurrency": concurrency,
        "requests": len(rows),
        "errors": len(rows) - len(ok),
        "requests_per_s": len(ok) / span,
        "client_cpu_ms_per_request": 1000 * cpu / len(rows),
        "server_cpu_ms_per_request": 1000 * server_cpu / len(rows),
        "payload_kib": len(body) / 1024,
    }


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds the live processes of a server's group have used."""
    total = 0.0
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def client_scaling(one: dict, many: dict, needed: float = 1.5) -> Target:
    """The target "a client in several processes drives `needed` x one process" (two
    `client_ceiling` results), with the run's own bound: client and null server share this
    machine's cores, so no client can exceed cores / (client + server CPU per request)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu_ms = many["client_cpu_ms_per_request"] + many["server_cpu_ms_per_request"]
    return Target(
        f"{many['processes']} client processes vs one, against the null server",
        Range.of([many["requests_per_s"] / one["requests_per_s"]]),
        at_least=needed,
        bound=1000 * cores / cpu_ms / one["requests_per_s"],
    )


def client_headroom(client: dict, served: float, needed: float = 3.0) -> str:
    """Whether the load generator could have sent much more than the best served rate: a
    served rate means something only if the client was not what limited it."""
    ratio = client["requests_per_s"] / served
    text = (
        f"the client alone drove {client['requests_per_s']:.0f} requests/s, {ratio:.1f}x the "
        f"best served rate ({served:.1f})"
    )
    if ratio >= needed:
        return f"{text}: it was not the limit"
    return f"{text}: under {needed:g}x, so the client may have limited what was served"
