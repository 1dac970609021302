"""Notebook 09's climb: from LitServe as the original ran it to the fastest configuration the
machine allows, one change per rung, with the hand-batching FastAPI server beside it.

Sizes come from the hardware (`sized_for`): on a GPU the batch is where the model-alone
ceiling stops growing, the batch timeout about one forward pass, and enough requests in
flight to fill the batches of every model process. On a CPU they stay the original's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from demo_servers.batching import BATCH_TIMEOUT_S, MAX_BATCH_SIZE
from demo_servers.batching import ORIGINAL_BATCHING as ORIGINAL
from demo_servers.hardware import physical_cores
from servebench.bodies import Body
from servebench.runs import sweep
from servebench.servers import start_server, stop_all_servers
from servebench.stats import spread
from servebench.verdicts import Range, compare

__all__ = [
    "Rung",
    "answers_match",
    "climb",
    "cpu_ladder",
    "ladder",
    "litserve_verdict",
    "rung_table",
    "sized_for",
]

KNEE = 0.9  # the batch size that reaches this share of the best model-alone rate


def sized_for(ceiling: pd.DataFrame, profile: dict, cores: int | None = None) -> dict:
    """Batch size, batch timeout, HTTP/model processes, concurrency and request count for
    the device the ceiling was measured on."""
    cores = cores or physical_cores()
    device = str(ceiling["device"].iloc[0])
    if not device.startswith("cuda"):
        return {
            "device": device,
            "max_batch_size": MAX_BATCH_SIZE,
            "batch_timeout": BATCH_TIMEOUT_S,
            "processes": min(2, cores),  # HTTP processes: a second one where there is a core
            "concurrency": profile["ladder_concurrency"],
            "requests": profile["ladder_requests"],
        }
    medians = ceiling.groupby("batch_size")["images_per_s"].median()
    batch = int(min(b for b, rate in medians.items() if rate >= KNEE * medians.max()))
    pass_s = batch / medians[batch]
    processes = max(1, cores // 4)  # HTTP processes; the rest of the cores decode and send
    return {
        "device": device,
        "max_batch_size": batch,
        "batch_timeout": round(min(max(pass_s, 0.001), 0.02), 3),  # about one forward pass
        "processes": processes,
        "concurrency": 2 * batch * processes,  # two batches waiting per model process
        "requests": max(profile["ladder_requests"], int(5 * medians.max())),  # about 5 s
    }


@dataclass
class Rung:
    """One step of the climb: what changes, the options of LitServe and of the hand-batching
    FastAPI server at this step (None: not applicable), and whether it needs a GPU."""

    name: str
    change: str
    litserve: dict
    fastapi: dict | None = field(default=None)
    needs_gpu: bool = False


def ladder(sizes: dict) -> list[Rung]:
    """The GPU rungs, each adding one change to the one before. Equal processes on both
    sides: N LitServe workers with N HTTP processes against N FastAPI processes, each with
    its own model."""
    n = sizes["processes"]
    steps = [
        ("original", "LitServe as the original ran it (8, 50 ms)", {}, {}),
        (
            "sized",
            f"batch {sizes['max_batch_size']}, timeout {1000 * sizes['batch_timeout']:g} ms",
            {"max_batch_size": sizes["max_batch_size"], "batch_timeout": sizes["batch_timeout"]},
            {},
        ),
        (
            "processes",
            f"{n} HTTP processes and {n} model processes",
            {"workers_per_device": n, "api_servers": n},
            {"workers": n},
        ),
        ("gpu decode", "JPEGs decoded and resized on the GPU", {"preprocess": "gpu"}, {}),
        ("fp16", "the model in float16", {"runtime": "half"}, {}),
        ("graphs", "CUDA graphs: one launch per batch", {"runtime": "graphs"}, {}),
        (
            "overlap",
            "two batches in flight per model process",
            {"workers_per_device": 2 * n},
            {"inference_threads": 2},
        ),
    ]
    rungs, shared, litserve, fastapi = [], dict(ORIGINAL), {}, {}
    for name, change, both, fastapi_only in steps:
        if name == "overlap":  # LitServe's second worker; FastAPI's second inference thread
            litserve = {**litserve, **both}
            fastapi = {**fastapi, **fastapi_only}
        elif name == "processes":
            litserve, fastapi = {**litserve, **both}, {**fastapi, **fastapi_only}
        else:
            shared = {**shared, **both}
        rungs.append(
            Rung(name, change, {**shared, **litserve}, {**shared, **fastapi}, name != "original")
        )
    return rungs


def cpu_ladder(sizes: dict) -> list[Rung]:
    """The rungs that apply to a CPU: the original, then N HTTP and N model processes (the
    batch, timeout and runtime stay the original's: the forward pass already fills the
    cores, so a bigger batch only adds waiting)."""
    original = dict(ORIGINAL)
    n = sizes["processes"]
    return [
        Rung("original", "LitServe as the original ran it (8, 50 ms)", original, original),
        Rung(
            "processes",
            f"{n} HTTP processes and {n} model processes",
            {**original, "workers_per_device": n, "api_servers": n},
            {**original, "workers": n},
        ),
    ]


async def climb(
    rungs: list[Rung], sizes: dict, body: Body, repeats: int, processes: int = 1
) -> pd.DataFrame:
    """Every rung: LitServe and the hand-batching FastAPI server with the rung's options,
    closed loop at `sizes["concurrency"]` from a client in `processes` processes, in
    alternating rounds on fresh servers (`sweep`, restarts on); rows with a `rung` column."""
    frames = []
    for rung in rungs:
        servers = [start_server("litserve", start=False, quiet=True, **rung.litserve)]
        if rung.fastapi is not None:
            servers.append(
                start_server("fastapi_batching", start=False, quiet=True, **rung.fastapi)
            )
        frame = await sweep(
            servers, "closed", [sizes["concurrency"]], body=body, repeats=repeats,
            restarts=True, requests=sizes["requests"], processes=processes,
        )  # fmt: skip
        frames.append(frame.assign(rung=rung.name))
        stop_all_servers()
    return pd.concat(frames, ignore_index=True)


def rung_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per rung and server: throughput (median and range over runs), p50/p99 latency, the
    share of the answers that the busiest HTTP process gave, and how busy the GPU was
    (where there is one)."""
    rps = spread(summary, "throughput_rps", by=("rung", "server"))
    rows = rps.rename(columns={"median": "req/s", "min": "req/s min", "max": "req/s max"})
    latency = summary.groupby(["rung", "server"], sort=False)[["p50_ms", "p99_ms"]].median()
    table = rows.set_index(["rung", "server"])[["req/s", "req/s min", "req/s max", "runs"]]
    table = table.join(latency)
    if "busiest_process_share" in summary:  # 50% with 2 HTTP processes sharing alike
        busiest = summary.groupby(["rung", "server"], sort=False)["busiest_process_share"]
        table = table.join((100 * busiest.median()).rename("busiest process %"))
    if "gpu_busy_pct" in summary:
        busy = summary.groupby(["rung", "server"], sort=False)["gpu_busy_pct"].median()
        table = table.join(busy.rename("GPU busy %"))
    return table.round(1)


def litserve_verdict(summary: pd.DataFrame, device: str) -> str:
    """The run's one-line answer to "when is LitServe worth it over a reasonable FastAPI?",
    from the rungs where both servers ran: faster where its range of runs lies above the
    hand-batching FastAPI's, not where it lies below, inconclusive where they overlap."""
    worth, not_worth, unclear = [], [], []
    for rung, runs in summary.groupby("rung", sort=False):
        by_server = dict(list(runs.groupby("server")["throughput_rps"]))
        if set(by_server) != {"litserve", "fastapi_batching"}:
            continue
        lit, fast = Range.of(by_server["litserve"]), Range.of(by_server["fastapi_batching"])
        ratio = f"{rung} ({lit.median / fast.median:.2f}x)"
        if min(len(v) for v in by_server.values()) < 2:
            unclear.append(f"{rung} (one run each, {lit.median / fast.median:.2f}x)")
        elif (verdict := compare(lit, fast)) == "inconclusive":
            unclear.append(ratio)
        else:
            (worth if verdict == "a" else not_worth).append(ratio)
    parts = [
        f"LitServe faster than the hand-batching FastAPI at: {', '.join(worth) or 'no rung'}",
        f"slower at: {', '.join(not_worth) or 'no rung'}",
        f"not told apart (ranges overlap, or a single run) at: {', '.join(unclear) or 'no rung'}",
    ]
    return f"On {device}, with equal processes: " + "; ".join(parts) + "."


def answers_match(frame: pd.DataFrame, expected_score: float, tolerance: float) -> dict:
    """Whether every answered request's score is within `tolerance` of the in-process
    model's score for the same image."""
    ok = frame[frame["status"] == 200]
    worst = float((ok["score"] - expected_score).abs().max()) if len(ok) else float("nan")
    return {"answered": len(ok), "of": len(frame), "worst_diff": worst, "equal": worst <= tolerance}
