"""What the notebooks import: server processes, load generation, statistics, plots, results.

Sections, in order: paths, profiles and images; server processes; load generation;
statistics; ceilings; results on disk; plots.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import io
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm, trange

# ---------------------------------------------------------------- paths, profiles, images

ROOT = Path(__file__).resolve().parent
CAT_IMAGE = ROOT / "cats-image.png"
RESULTS_DIR = Path(os.environ.get("RESULTS_DIR", ROOT / "results"))

# How much each notebook measures. "full" (the default) uses the original
# benchmark's sizes; "quick" runs the same code paths with tiny loads, for
# `pytest --nbmake notebooks` (notebooks/conftest.py selects it).
PROFILES = {
    "full": {
        "bursts": [10, 50, 100, 200],
        "repeats": 3,
        "warmup": 10,
        "ceiling_batch_sizes": [1, 2, 4, 8, 16, 32, 64],
        "ceiling_repeats": 5,
        "client_ceiling_requests": 2000,
        "grid_batch_sizes": [1, 4, 8, 16],
        "grid_timeouts": [0.01, 0.05, 0.1],
        "grid_concurrency": 64,
        "closed_concurrency": [1, 4, 16, 32],
        "closed_requests": 100,
        "open_load": [0.25, 0.5, 0.7, 0.85, 1.0, 1.15],  # x the best closed-loop throughput
        "open_duration_s": 20,
        "stall_s": 2.0,  # coordinated-omission demo: one freeze of the null server
        "stall_requests": 600,
    },
    "quick": {
        "bursts": [2, 4],
        "repeats": 1,
        "warmup": 1,
        "ceiling_batch_sizes": [1, 2, 4],
        "ceiling_repeats": 2,
        "client_ceiling_requests": 200,
        "grid_batch_sizes": [1, 4],
        "grid_timeouts": [0.05],
        "grid_concurrency": 4,
        "closed_concurrency": [1, 4],
        "closed_requests": 8,
        "open_load": [0.5, 1.2],
        "open_duration_s": 2,
        "stall_s": 0.5,
        "stall_requests": 100,
    },
}


def profile() -> dict:
    """The measurement sizes for $BENCHMARK_PROFILE ("full" unless set), with its name."""
    name = os.environ.get("BENCHMARK_PROFILE", "full")
    return {"name": name, **PROFILES[name]}


def show_source(obj):
    """Display the source of a function, class or module, straight from its file."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def image_payload(path: Path | str = CAT_IMAGE, fmt: str = "JPEG") -> dict:
    """The original benchmark's request body: the image re-encoded once, as hex in JSON."""
    return {"image_bytes": encode_image(Image.open(path), fmt).hex()}


def encode_image(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ---------------------------------------------------------------- server processes

SERVER_MODULES = {
    "fastapi": "demo_servers.fastapi_server",
    "litserve": "demo_servers.litserve_server",
    "null": "demo_servers.null_server",
}
_running: dict[int, Server] = {}  # pid -> server, for cleanup at exit


class ServerError(RuntimeError):
    """A demo server failed to start or to stop; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def option_flags(options: dict) -> list[str]:
    """{"max_batch_size": 8, "log_batch_sizes": True} -> --max-batch-size 8 --log-batch-sizes."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags += [flag, str(value)]
    return flags


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; [] once it is gone."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():  # macOS: trust killpg
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state, ppid, pgrp. Zombies wait for a reaper we do not control.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass(eq=False)
class Server:
    """A demo server running in the background, in its own process group.

    Use `start_server()` to make one. `stop()` (or leaving a `with` block, or the
    interpreter exiting) stops the whole group: LitServe's workers included.
    """

    name: str
    options: dict
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    cold_start_s: float | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", SERVER_MODULES.get(self.name, self.name),
            "--host", self.host, "--port", str(self.port), "--parent-pid", str(os.getpid()),
            *option_flags(self.options),
        ]  # fmt: skip

    def start(self, timeout: float = 300.0) -> Server:
        """Launch, then wait until /health answers 200. Records `cold_start_s`."""
        if port_in_use(self.port, self.host):
            raise ServerError(
                f"port {self.port} is already in use: stop what holds it or pick another"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _stop_servers_at_exit()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=tempfile.gettempdir(),
            )  # fmt: skip
        _running[self.process.pid] = self
        try:
            self._wait_until_healthy(timeout)
        except BaseException:  # a failed start, or Ctrl+C while waiting
            self.stop()
            raise
        self.cold_start_s = time.perf_counter() - started
        return self

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"{self.name} exited with code {self.process.returncode} while starting"
                        f"\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        raise ServerError(f"{self.name} was not healthy after {timeout:.0f} s\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT to the group, `grace` seconds to shut down, then SIGKILL. Idempotent."""
        if self.process is None:
            return
        pgid = self.process.pid  # leader of its own session, so pid == pgid
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            # Reap the leader first: an unreaped zombie keeps the group looking alive.
            while (self.process.poll() is None or group_members(pgid)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            if self.process.poll() is not None and not group_members(pgid):
                break
        else:
            raise ServerError(f"could not stop process group {pgid}: {group_members(pgid)}")
        _running.pop(pgid, None)
        self.process = None

    def restart(self, **options) -> Server:
        """Stop, then start again on the same port with `options` changed."""
        self.stop()
        self.options = {**self.options, **options}
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def info(self) -> dict:
        return httpx.get(f"{self.url}/info", timeout=10).json()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_server(
    name: str,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    log_dir: Path | str | None = None,
    timeout: float = 300.0,
    replace: bool = True,
    quiet: bool = False,
    **options,
) -> Server:
    """Start a demo server ("fastapi", "litserve", "null", or a module) and wait until ready.

    `options` become command-line flags (`max_batch_size=16` -> `--max-batch-size 16`);
    `host` is the address to bind and to reach it at (127.0.0.1, localhost, ::1, ...).
    With `replace`, a server of the same name that this process started is stopped
    first, so re-running a notebook cell never leaves the old one behind.
    """
    if replace:
        for old in [s for s in _running.values() if s.name == name]:
            old.stop()
    port = port or free_port(host)
    log_dir = Path(log_dir) if log_dir else RESULTS_DIR / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    server = Server(name, options, port, log_dir / f"{name}-{port}-{stamp}.log", host)
    server.start(timeout)
    if not quiet:
        print(
            f"{name} ready at {server.url} in {server.cold_start_s:.1f} s (log: {server.log_path})"
        )
    return server


def stop_all_servers() -> None:
    """Stop every server this process started (also runs at interpreter exit)."""
    for server in list(_running.values()):
        server.stop()


def _stop_servers_on_sigterm(signum, frame) -> None:
    stop_all_servers()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@functools.cache
def _stop_servers_at_exit() -> None:
    """Once, when the first server starts: stop every server when this process exits.

    A kernel or test runner that is terminated runs no atexit handlers by default, hence
    the SIGTERM handler. (A kernel killed with SIGKILL runs nothing: the servers' parent
    watchdog covers that.)"""
    atexit.register(stop_all_servers)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, _stop_servers_on_sigterm)


# ---------------------------------------------------------------- load generation
# Every request becomes one row. Times are seconds from the start of the run:
# `scheduled_s` is when the request was due, `start_s` when it was sent, `end_s`
# when its answer (or error) came back. Latency counts from the schedule, so a
# client that could not send on time, or a server that stalls, is charged the
# wait (no coordinated omission); `send_lag_s` shows how late the client was.


def request_body(payload: dict | None = None) -> bytes:
    """Serialize the JSON payload once; every request of a run reuses the bytes."""
    return json.dumps(payload or image_payload()).encode()


def make_client(connections: int, timeout: float = 300.0) -> httpx.AsyncClient:
    """An httpx client sized for the load: httpx's defaults (5 s timeout, a pool of
    100 connections) would fail or queue a 200-request burst on a slow machine."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        headers={"content-type": "application/json"},
    )


async def timed_request(
    client: httpx.AsyncClient, url: str, body: bytes, t0: float, scheduled_s: float
) -> dict:
    """Send one request and describe it as a row; failures are rows too, never exceptions."""
    start = time.perf_counter()
    row = {"scheduled_s": scheduled_s, "start_s": start - t0, "status": None, "error": None}
    row.update(predicted_label=None, predicted_class=None, score=None)
    try:
        response = await client.post(url, content=body)
        row["status"] = response.status_code
        if response.status_code == 200:
            answer = response.json()
            row.update({k: answer.get(k) for k in ("predicted_label", "predicted_class", "score")})
        else:
            row["error"] = response.text[:200]
    except httpx.HTTPError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["end_s"] = time.perf_counter() - t0
    row["latency_s"] = row["end_s"] - scheduled_s
    row["send_lag_s"] = row["start_s"] - scheduled_s
    return row


async def burst(url: str, n: int, body: bytes, timeout: float = 300.0) -> list[dict]:
    """n identical requests fired at once (`asyncio.gather`), as the original did."""
    async with make_client(n, timeout) as client:
        t0 = time.perf_counter()
        return list(
            await asyncio.gather(*(timed_request(client, url, body, t0, 0.0) for _ in range(n)))
        )


async def closed_loop(
    url: str,
    concurrency: int,
    body: bytes,
    requests: int | None = None,
    duration_s: float | None = None,
    timeout: float = 300.0,
) -> list[dict]:
    """`concurrency` users, each sending its next request when the last one returns,
    until `requests` have been sent or `duration_s` has passed."""
    if requests is None and duration_s is None:
        raise ValueError("give requests or duration_s")
    rows: list[dict] = []
    sent = 0

    async def user(client, t0):
        nonlocal sent
        while (requests is None or sent < requests) and (
            duration_s is None or time.perf_counter() - t0 < duration_s
        ):
            sent += 1
            now = time.perf_counter() - t0
            rows.append(await timed_request(client, url, body, t0, now))

    async with make_client(concurrency, timeout) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(user(client, t0) for _ in range(concurrency)))
    return rows


def arrival_times(rate: float, n: int, arrivals: str = "poisson", seed: int = 0) -> list[float]:
    """Send times (s) of n requests at `rate` per second: "constant" or "poisson"."""
    if arrivals == "constant":
        return [i / rate for i in range(n)]
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be 'constant' or 'poisson', not {arrivals!r}")
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(rate)
    return times


async def open_loop(
    url: str,
    rate: float,
    body: bytes,
    requests: int | None = None,
    duration_s: float | None = None,
    arrivals: str = "poisson",
    seed: int = 0,
    timeout: float = 300.0,
    max_connections: int = 1000,
) -> list[dict]:
    """Requests sent on a schedule at `rate` per second, whether or not earlier ones
    have returned: how real traffic arrives. Latency counts from the schedule."""
    n = requests if requests is not None else int(rate * duration_s)
    schedule = arrival_times(rate, n, arrivals, seed)
    async with make_client(max_connections, timeout) as client:
        t0 = time.perf_counter()
        tasks = []
        for due in schedule:
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed_request(client, url, body, t0, due)))
        return list(await asyncio.gather(*tasks))


LOAD_MODES = {"burst": burst, "closed": closed_loop, "open": open_loop}


async def measure(
    server: Server,
    mode: str,
    level: float,
    *,
    body: bytes | None = None,
    warmup: int = 5,
    repeats: int = 1,
    save: bool = True,
    progress: bool = False,
    **load_options,
) -> pd.DataFrame:
    """Warm up, then run one load `repeats` times against a server; one row per request.

    mode: "burst" (level = requests fired at once), "closed" (level = concurrency;
    pass requests= or duration_s=) or "open" (level = requests/s; pass requests= or
    duration_s=, arrivals=). Each repeat is saved to results/ as soon as it ends.
    """
    body = body or request_body()
    url = f"{server.url}/predict"
    frames = []
    for repeat in trange(repeats, desc=f"{server.name} {mode} {level}", disable=not progress):
        if warmup:
            await burst(url, warmup, body)
        args = (url, int(level), body) if mode != "open" else (url, level, body)
        rows = await LOAD_MODES[mode](*args, **load_options)
        frame = pd.DataFrame(rows)
        frame.insert(0, "request_id", range(len(frame)))
        frame = frame.assign(**run_metadata(server, mode, level, repeat))
        if save:
            save_run(frame)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


async def sweep(
    servers: list[Server], mode: str, levels: list[float], repeats: int = 1, **options
) -> pd.DataFrame:
    """`measure` every server at every level, `repeats` times each, with a progress bar."""
    frames = []
    with tqdm(total=len(servers) * len(levels), desc=f"{mode} sweep") as bar:
        for server in servers:
            for level in levels:
                bar.set_postfix_str(f"{server.name} @ {level}")
                frames.append(await measure(server, mode, level, repeats=repeats, **options))
                bar.update()
    return pd.concat(frames, ignore_index=True)


def run_sync(coroutine):
    """Run a coroutine from plain code. (In a notebook, just `await` it.)"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # already inside an event loop
        return pool.submit(asyncio.run, coroutine).result()


def batch_sizes_from_log(server: Server) -> list[int]:
    """The batch sizes a LitServe server formed (started with log_batch_sizes=True)."""
    lines = server.log_path.read_text().splitlines()
    return [int(line.rsplit("batch_size=", 1)[1]) for line in lines if "batch_size=" in line]


# ---------------------------------------------------------------- statistics

RUN_KEYS = [
    "run_id",
    "server",
    "options",
    "max_batch_size",
    "batch_timeout",
    "mode",
    "level",
    "repeat",
]
PERCENTILES = [50, 90, 95, 99]


def summarize(requests: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per run: counts, total runtime, throughput and latency statistics (ms)."""
    by = by or [k for k in RUN_KEYS if k in requests]

    def one_run(run: pd.DataFrame) -> pd.Series:
        ok = run[run["status"] == 200]
        latency_ms = ok["latency_s"] * 1000
        runtime = run["end_s"].max() - run["scheduled_s"].min()
        schedule_span = run["scheduled_s"].max() - run["scheduled_s"].min()
        stats = {
            "requests": len(run),
            # the rate the schedule really offered (open loop; Poisson gaps vary)
            "offered_rps": len(run) / schedule_span if schedule_span > 0 else float("nan"),
            "errors": len(run) - len(ok),
            "total_runtime_s": runtime,
            "throughput_rps": len(ok) / runtime if runtime > 0 else float("nan"),
            "mean_ms": latency_ms.mean(),
            "std_ms": latency_ms.std(),
        }
        stats.update({f"p{p}_ms": latency_ms.quantile(p / 100) for p in PERCENTILES})
        stats["max_ms"] = latency_ms.max()
        stats["max_send_lag_ms"] = run["send_lag_s"].max() * 1000
        return pd.Series(stats)

    grouped = requests.groupby(by, sort=False, dropna=False)  # FastAPI has no batch options
    return grouped.apply(one_run, include_groups=False).reset_index()


def spread(summary: pd.DataFrame, value: str, by=("server", "mode", "level")) -> pd.DataFrame:
    """Median, min and max of `value` over repeated runs: a range, not one point."""
    by = [k for k in by if k in summary]
    table = summary.groupby(by, sort=False)[value].agg(["median", "min", "max", "count"])
    return table.rename(columns={"count": "runs"}).reset_index()


def load_reference() -> pd.DataFrame:
    """The original benchmark's published figures (2x RTX 3080 Ti)."""
    return pd.read_csv(ROOT / "reference" / "original_benchmark.csv")


def original_tables(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original README's two tables, this run beside the published figures.

    1. total runtime per burst (s); 2. mean response time per request, printed as
    the original did: mean ± 2 standard deviations (ms). Medians over repeats.
    """
    bursts = summary[summary["mode"] == "burst"].rename(columns={"level": "concurrency"})
    reference = load_reference()
    runtime = bursts.pivot_table("total_runtime_s", "concurrency", "server", aggfunc="median")
    runtime = runtime.join(
        reference.pivot(index="concurrency", columns="server", values="total_runtime_s").add_suffix(
            " (original)"
        ),
        how="left",
    )
    mean = bursts.pivot_table("mean_ms", "concurrency", "server", aggfunc="median")
    std = bursts.pivot_table("std_ms", "concurrency", "server", aggfunc="median")
    latency = mean.round(1).astype(str) + " ± " + (2 * std).round(1).astype(str)
    ref = reference.assign(
        text=reference["mean_latency_ms"].round(1).astype(str)
        + " ± "
        + reference["latency_spread_ms"].round(1).astype(str)
    )
    latency = latency.join(
        ref.pivot(index="concurrency", columns="server", values="text").add_suffix(" (original)"),
        how="left",
    )
    return runtime, latency


def percentile_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Latency percentiles (ms, median over repeats) per server and level."""
    cols = [f"p{p}_ms" for p in PERCENTILES] + ["max_ms"]
    return summary.groupby(["server", "mode", "level"], sort=False)[cols].median().round(1)


def max_sustained_rate(summary: pd.DataFrame, p99_budget_ms: float) -> pd.Series:
    """Per server, the highest open-loop rate it kept up with (no errors, throughput within
    10% of the rate the schedule offered) with p99 latency inside the budget; NaN if none."""
    runs = summary[summary["mode"] == "open"]
    ok = runs[
        (runs["p99_ms"] <= p99_budget_ms)
        & (runs["errors"] == 0)
        & (runs["throughput_rps"] >= 0.9 * runs["offered_rps"])
    ]
    return ok.groupby("server")["level"].max().reindex(runs["server"].unique())


def speedup(summary: pd.DataFrame, value: str = "total_runtime_s") -> pd.Series:
    """fastapi / litserve of `value` per burst size: how many times faster LitServe was."""
    table = summary[summary["mode"] == "burst"].pivot_table(value, "level", "server", "median")
    return table["fastapi"] / table["litserve"]


# ---------------------------------------------------------------- ceilings


def model_ceiling(
    batch_sizes=(1, 2, 4, 8, 16, 32, 64),
    repeats: int = 5,
    device: str | None = None,
    threads: int | None = None,
    classifier=None,
) -> pd.DataFrame:
    """Images/s of the model alone (no HTTP, no decoding) per batch size: the hardware ceiling.

    Uses the servers' device and thread settings: on the CPU, all cores for one
    process (FastAPI, or LitServe with one worker).
    """
    import torch

    from demo_servers.hardware import cpu_threads_per_worker
    from demo_servers.model import load_classifier

    classifier = classifier or load_classifier(device=device)
    if classifier.device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads_per_worker(1))
    pixels = classifier.preprocess([Image.open(CAT_IMAGE).convert("RGB")])
    sync = torch.cuda.synchronize if classifier.device.type == "cuda" else (lambda: None)
    rows = []
    for batch_size in tqdm(batch_sizes, desc="model ceiling"):
        batch = pixels.expand(batch_size, -1, -1, -1).contiguous()
        classifier.probabilities(batch)  # warm-up
        for repeat in range(repeats):
            sync()
            start = time.perf_counter()
            classifier.probabilities(batch)
            sync()
            seconds = time.perf_counter() - start
            rows.append({"batch_size": batch_size, "repeat": repeat, "seconds": seconds})
    frame = pd.DataFrame(rows).assign(images_per_s=lambda d: d["batch_size"] / d["seconds"])
    return frame.assign(device=str(classifier.device), torch_threads=torch.get_num_threads())


def best_images_per_s(ceiling: pd.DataFrame) -> float:
    """The highest median images/s over batch sizes."""
    return ceiling.groupby("batch_size")["images_per_s"].median().max()


async def client_ceiling(concurrency: int = 32, requests: int = 2000) -> dict:
    """What the load generator alone can drive: closed loop against the null server.

    Returns requests/s and the client's CPU time per request. If a served
    benchmark gets near these numbers, the client, not the server, is measured.
    """
    with start_server("null", quiet=True) as server:
        body = request_body()
        await burst(f"{server.url}/predict", concurrency, body)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        rows = await closed_loop(f"{server.url}/predict", concurrency, body, requests=requests)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ok = sum(r["status"] == 200 for r in rows)
    return {
        "concurrency": concurrency,
        "requests": len(rows),
        "errors": len(rows) - ok,
        "requests_per_s": ok / wall,
        "client_cpu_ms_per_request": 1000 * cpu / len(rows),
        "payload_kib": len(body) / 1024,
    }


# ---------------------------------------------------------------- results on disk


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


def run_metadata(server: Server, mode: str, level: float, repeat: int) -> dict:
    info = server.info()
    model = info.get("model") or {}
    return {
        "run_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{server.name}-{mode}-{level}-"
        f"{repeat}-{uuid.uuid4().hex[:6]}",
        "server": server.name,
        "options": json.dumps(server.options, sort_keys=True),
        **{k: server.options.get(k) for k in ("max_batch_size", "batch_timeout")},
        "mode": mode,
        "level": level,
        "repeat": repeat,
        "weights": model.get("weights"),
        **environment(),
    }


def save_run(frame: pd.DataFrame, results_dir: Path | None = None) -> Path:
    """Write one run's rows to results/runs/<run_id>.csv (a crash loses only the run in flight)."""
    folder = Path(results_dir or RESULTS_DIR) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{frame['run_id'].iloc[0]}.csv"
    frame.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").rename(path)
    return path


def load_results(results_dir: Path | None = None, **filters) -> pd.DataFrame:
    """Every saved run as one DataFrame; `filters` keep rows where column == value."""
    paths = sorted((Path(results_dir or RESULTS_DIR) / "runs").glob("*.csv"))
    if not paths:
        return pd.DataFrame()
    # Only empty cells are missing: "null" is a server's name, not NaN.
    read = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    frame = pd.concat(read, ignore_index=True)
    for column, value in filters.items():
        frame = frame[frame[column] == value]
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------- plots

SERVER_COLORS = {"fastapi": "tab:blue", "litserve": "tab:orange", "null": "tab:gray"}


def _axes(ncols: int = 1, width: float = 6.0):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4), squeeze=False)
    return figure, axes[0]


def _median_with_range(data: pd.DataFrame, y: str, ax) -> None:
    """One line per server over `level`: the median, with a min-max band over repeats."""
    import seaborn as sns

    sns.lineplot(
        data, x="level", y=y, hue="server", marker="o", ax=ax,
        estimator="median", errorbar=("pi", 100), palette=SERVER_COLORS,
    )  # fmt: skip


def plot_runtime(summary: pd.DataFrame):
    """Total runtime of each burst vs its size (the original's first table as a chart)."""
    figure, (ax,) = _axes()
    _median_with_range(summary[summary["mode"] == "burst"], "total_runtime_s", ax)
    ax.set(xlabel="concurrent requests in the burst", ylabel="total runtime (s)")
    ax.set_title("Time to answer a whole burst (median, band = min-max over repeats)")
    return figure


def plot_throughput(summary: pd.DataFrame, ceiling_images_per_s: float | None = None):
    """Throughput vs concurrency, with the model-alone ceiling as a dashed line."""
    figure, (ax,) = _axes()
    _median_with_range(summary, "throughput_rps", ax)
    if ceiling_images_per_s:
        ax.axhline(ceiling_images_per_s, color="black", linestyle="--", label="model alone")
        ax.legend()
    ax.set(xlabel="concurrency (requests in flight)", ylabel="throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Served throughput vs the hardware ceiling")
    return figure


def plot_latency(requests: pd.DataFrame):
    """Latency distribution per level and server: violins, and ECDFs with p50/p99 marked."""
    import seaborn as sns

    ok = requests[requests["status"] == 200].assign(latency_ms=lambda d: d["latency_s"] * 1000)
    figure, (box, ecdf) = _axes(2)
    sns.violinplot(
        ok,
        x="level",
        y="latency_ms",
        hue="server",
        ax=box,
        palette=SERVER_COLORS,
        cut=0,
        inner="quartile",
        density_norm="width",
    )
    box.set(xlabel="concurrency", ylabel="latency (ms)", title="Latency per request (quartiles)")
    sns.ecdfplot(ok, x="latency_ms", hue="server", ax=ecdf, palette=SERVER_COLORS)
    for server, group in ok.groupby("server"):
        for p, style in ((50, ":"), (99, "--")):
            value = group["latency_ms"].quantile(p / 100)
            ecdf.axvline(value, color=SERVER_COLORS.get(server), linestyle=style, linewidth=1)
    ecdf.set(
        xlabel="latency (ms)",
        ylabel="fraction of requests",
        title="ECDF, all levels (dotted p50, dashed p99)",
    )
    figure.tight_layout()
    return figure


def plot_latency_vs_throughput(summary: pd.DataFrame, percentile: int = 99):
    """The serving trade-off: achieved throughput vs latency, one point per offered rate."""
    import seaborn as sns

    figure, (ax,) = _axes()
    data = summary.sort_values("level")
    for column, style in (("p50_ms", ":"), (f"p{percentile}_ms", "-")):
        sns.lineplot(
            data,
            x="throughput_rps",
            y=column,
            hue="server",
            marker="o",
            linestyle=style,
            ax=ax,
            palette=SERVER_COLORS,
            sort=False,
            estimator=None,
            legend=column == "p50_ms",
        )
    ax.set(
        xlabel="achieved throughput (requests/s)",
        ylabel="latency (ms), log scale",
        yscale="log",
        title=f"Latency vs throughput (dotted p50, solid p{percentile})",
    )
    return figure


def plot_grid(summary: pd.DataFrame):
    """Heatmaps over max_batch_size x batch_timeout: throughput and p95 latency."""
    import seaborn as sns

    figure, axes = _axes(2, width=5.5)
    for ax, (value, title, cmap) in zip(
        axes,
        [
            ("throughput_rps", "throughput (requests/s)", "viridis"),
            ("p95_ms", "p95 latency (ms)", "viridis_r"),
        ],
        strict=True,
    ):
        table = summary.pivot_table(value, "max_batch_size", "batch_timeout", aggfunc="median")
        sns.heatmap(table, annot=True, fmt=".0f", cmap=cmap, ax=ax)
        ax.set(title=title, xlabel="batch_timeout (s)", ylabel="max_batch_size")
    figure.tight_layout()
    return figure
