"""Measured runs: one load against one server, repeated until stable, and sweeps over
servers and levels in alternating rounds."""

from __future__ import annotations

import json

import pandas as pd
from tqdm.auto import tqdm, trange

from servebench import stats
from servebench.bodies import Body, request_body
from servebench.gpu import GpuSampler
from servebench.load import burst, closed_loop, open_loop
from servebench.locust_runner import locust_loop
from servebench.results import run_metadata, save_run
from servebench.servers import Server

__all__ = ["LOAD_MODES", "measure", "point_key", "run_once", "sweep"]

LOAD_MODES = {"burst": burst, "closed": closed_loop, "open": open_loop, "locust": locust_loop}


def point_key(server: Server, body: Body, level: float) -> tuple:
    """What identifies a measured point: the server's label and options, the wire, the level."""
    return (server.label, json.dumps(server.options, sort_keys=True), body.wire, level)


async def run_once(
    server: Server,
    mode: str,
    level: float,
    *,
    body: Body | None = None,
    repeat: int = 0,
    warmup: int = 5,
    save: bool = True,
    **load_options,
) -> pd.DataFrame:
    """One run: a warm-up burst (not recorded), then the load; one row per request.

    mode: "burst" (level = requests fired at once), "closed" (level = concurrency;
    pass requests= or duration_s=) or "open" (level = requests/s; pass requests= or
    duration_s=, arrivals=); pass processes=N to send from N processes. On a GPU machine
    the GPU's utilisation during the run is added (`gpu.GpuSampler`). The run is saved to
    results/runs/ as soon as it ends.
    """
    body = body or request_body()
    url = f"{server.url}/predict"
    if warmup:
        await burst(url, warmup, body)
    args = (url, int(level), body) if mode != "open" else (url, level, body)
    with GpuSampler() as gpu:  # on a GPU machine: how busy the GPU was during the run
        frame = pd.DataFrame(await LOAD_MODES[mode](*args, **load_options))
    frame.insert(0, "request_id", range(len(frame)))
    frame = frame.assign(**run_metadata(server, mode, level, repeat, body.wire), **gpu.summary())
    if save:
        save_run(frame)
    return frame


async def measure(
    server: Server,
    mode: str,
    level: float,
    *,
    repeats: int = 1,
    max_repeats: int | None = None,
    tolerance: float = stats.STABILITY_TOLERANCE,
    progress: bool = False,
    **run_options,
) -> pd.DataFrame:
    """`run_once` at least `repeats` times, and on (up to `max_repeats`) until the last
    three runs agree within `tolerance` in throughput and median latency (`is_stable`)."""
    max_repeats = max(repeats, max_repeats or repeats)
    frames = []
    for repeat in trange(max_repeats, desc=f"{server.name} {mode} {level}", disable=not progress):
        frames.append(await run_once(server, mode, level, repeat=repeat, **run_options))
        if repeat + 1 >= repeats and stats.stability(pd.concat(frames), tolerance)["stable"].all():
            break
    return pd.concat(frames, ignore_index=True)


async def sweep(
    servers: list,
    mode: str,
    levels: list[float],
    *,
    body: Body | None = None,
    repeats: int = 1,
    max_repeats: int | None = None,
    tolerance: float = stats.STABILITY_TOLERANCE,
    isolate: bool = True,
    restarts: bool = False,
    **run_options,
) -> pd.DataFrame:
    """Measure every server at every level, in rounds, until the points are stable.

    `servers`: Server objects, or (server, body) pairs to send one server several bodies.
    Each round runs every level on one server, then on the next, the order reversed
    every other round (A B, B A, ...) so that a machine that speeds up or slows down
    affects all servers alike. With `isolate`, only the server being measured runs
    (the others are stopped and restarted on their turn): an idle LitServe server
    with batching polls its queue and takes CPU from the one being measured. With
    `restarts`, each server is started afresh on every turn, so its repeated runs span
    restarts: configurations compared across restarts differ more than runs of one
    process do (15% here), and a comparison must see that spread. After
    `repeats` rounds, points whose last three runs agree within `tolerance` in
    throughput and median latency are done; the others go on, up to `max_repeats`.
    """
    body = body or request_body()
    entries = [entry if isinstance(entry, tuple) else (entry, body) for entry in servers]
    max_repeats = max(repeats, max_repeats or repeats)
    frames: list[pd.DataFrame] = []
    unstable = {point_key(s, b, level) for s, b in entries for level in levels}
    with tqdm(total=len(unstable) * max_repeats, desc=f"{mode} sweep") as bar:
        for round_ in range(max_repeats):
            for server, server_body in entries if round_ % 2 == 0 else entries[::-1]:
                todo = [lv for lv in levels if point_key(server, server_body, lv) in unstable]
                if not todo:
                    continue
                if isolate:
                    for other, _ in entries:
                        if other is not server:
                            other.stop()
                if restarts:
                    server.stop()
                if not server.running:
                    server.start()
                for level in todo:
                    bar.set_postfix_str(f"round {round_ + 1}: {server.label} @ {level}")
                    frames.append(
                        await run_once(
                            server, mode, level, body=server_body, repeat=round_, **run_options
                        )
                    )
                    bar.update()
            if round_ + 1 >= repeats:
                points = stats.stability(pd.concat(frames), tolerance)
                unstable = {
                    (p.server, p.options, p.wire, p.level)
                    for p in points[~points["stable"]].itertuples()
                }
                if not unstable:
                    break
        bar.total = bar.n
        bar.refresh()
    return pd.concat(frames, ignore_index=True)
