"""What the notebooks import: server processes, load generation, statistics, plots, results.

Sections, in order: paths, profiles and images; server processes; load generation;
statistics; ceilings; results on disk; plots. Importing it starts nothing and
registers nothing: the exit handlers that stop servers come with the first server.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import functools
import io
import itertools
import json
import multiprocessing
import os
import platform
import random
import shutil
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
        "grid_open_duration_s": 15,
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
    },
}
# Two readings of the same thing that differ by more than this are not the same reading.
STABILITY_TOLERANCE = 0.10


def profile() -> dict:
    """The measurement sizes for $BENCHMARK_PROFILE ("full" unless set), with its name."""
    name = os.environ.get("BENCHMARK_PROFILE", "full")
    return {"name": name, **PROFILES[name]}


def show_source(obj):
    """Display the source of a function, class or module, or a file, straight from its file."""
    import inspect

    from IPython.display import Code

    if isinstance(obj, (str, Path)):
        return Code(Path(obj).read_text(), language="python")
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
    "fastapi_executor": "demo_servers.fastapi_executor_server",
    "fastapi_batching": "demo_servers.fastapi_batching_server",
    "litserve": "demo_servers.litserve_server",
    "ray": "demo_servers.ray_server",
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
    label: str = ""  # what tables and plots call it (default: the name)
    cold_start_s: float | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self):
        self.label = self.label or self.name

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
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MODEL_CACHE_DIR": str(model_cache_dir())}
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
    label: str | None = None,
    log_dir: Path | str | None = None,
    timeout: float = 300.0,
    replace: bool = True,
    quiet: bool = False,
    start: bool = True,
    **options,
) -> Server:
    """Start a demo server ("fastapi", "litserve", "null", or a module) and wait until ready.

    `options` become command-line flags (`max_batch_size=16` -> `--max-batch-size 16`);
    `host` is the address to bind and to reach it at (127.0.0.1, localhost, ::1, ...);
    `label` names it in results, tables and plots (default: `name`). With `replace`, a
    server of the same label that this process started is stopped first, so re-running
    a notebook cell never leaves the old one behind. With `start=False` the server is
    only prepared: `server.start()` (or a `sweep`) starts it.
    """
    label = label or name
    if replace:
        for old in [s for s in _running.values() if s.label == label]:
            old.stop()
    port = port or free_port(host)
    log_dir = Path(log_dir) if log_dir else RESULTS_DIR / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = log_dir / f"{name}-{port}-{stamp}.log"
    server = Server(name, options, port, log_path, host, label)
    if not start:  # e.g. for a `sweep`, which starts each server on its turn
        return server
    server.start(timeout)
    if not quiet:
        print(
            f"{label} ready at {server.url} in {server.cold_start_s:.1f} s (log: {server.log_path})"
        )
    return server


def inference_workers(server: Server) -> list[int]:
    """The pids of a LitServe server's inference workers (spawned processes; Linux only)."""
    pids = []
    for pid in group_members(server.process.pid):
        with contextlib.suppress(OSError):
            if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


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
# The server's own timings (its Server-Timing header) become one column per stage.

STAGES = ["read", "parse", "decode", "preprocess", "queue", "forward", "encode"]
STAGE_COLUMNS = [f"{stage}_ms" for stage in STAGES]


@dataclass(frozen=True)
class Body:
    """One request body, encoded once and reused by every request of a run."""

    content: bytes
    content_type: str
    wire: str  # "hex" (the original), "base64", "raw", "multipart", or "json" as given

    def __len__(self) -> int:
        return len(self.content)


WIRE_FORMATS = ("hex", "base64", "raw", "multipart")


def request_body(payload: dict | None = None, wire: str = "hex", path=CAT_IMAGE) -> Body:
    """The body every request of a run sends: the image at `path`, re-encoded once as JPEG.

    wire: "hex" (the original benchmark's `{"image_bytes": "<hex>"}`), "base64"
    (`{"image_base64": ...}`), "raw" (the JPEG itself, `Content-Type: image/jpeg`) or
    "multipart" (a file upload). A `payload` dict is sent as JSON, as it is.
    """
    if payload is not None:
        return Body(json.dumps(payload).encode(), "application/json", "json")
    jpeg = encode_image(Image.open(path))
    if wire == "hex":
        return Body(json.dumps({"image_bytes": jpeg.hex()}).encode(), "application/json", wire)
    if wire == "base64":
        text = base64.b64encode(jpeg).decode()
        return Body(json.dumps({"image_base64": text}).encode(), "application/json", wire)
    if wire == "raw":
        return Body(jpeg, "image/jpeg", wire)
    if wire == "multipart":
        request = httpx.Request("POST", "http://x", files={"image": ("image.jpg", jpeg)})
        return Body(request.read(), request.headers["content-type"], wire)
    raise ValueError(f"wire must be one of {WIRE_FORMATS}, not {wire!r}")


def make_client(connections: int, timeout: float = 300.0) -> httpx.AsyncClient:
    """An httpx client sized for the load: httpx's defaults (5 s timeout, a pool of
    100 connections) would fail or queue a 200-request burst on a slow machine."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def server_timings(header: str | None) -> dict:
    """A response's Server-Timing header as row columns: read_ms, ..., server_ms, batch_size."""
    from demo_servers.timing import parse_header

    parsed = parse_header(header) if header else {}
    row = {column: parsed.get(stage) for stage, column in zip(STAGES, STAGE_COLUMNS, strict=True)}
    row.update(server_ms=parsed.get("total"), batch_size=parsed.get("batch_size"))
    return row


async def timed_request(
    client: httpx.AsyncClient, url: str, body: Body, t0: float, scheduled_s: float
) -> dict:
    """Send one request and describe it as a row; failures are rows too, never exceptions."""
    start = time.perf_counter()
    row = {"scheduled_s": scheduled_s, "start_s": start - t0, "status": None, "error": None}
    row.update(predicted_label=None, predicted_class=None, score=None, served_by=None)
    headers = {"content-type": body.content_type}
    try:
        response = await client.post(url, content=body.content, headers=headers)
        row["status"] = response.status_code
        if response.status_code == 200:
            answer = response.json()
            row.update({k: answer.get(k) for k in ("predicted_label", "predicted_class", "score")})
        else:
            row["error"] = response.text[:200]
        row.update(server_timings(response.headers.get("server-timing")))
        row["served_by"] = response.headers.get("x-served-by")  # Ray Serve: node and replica
    except httpx.HTTPError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["end_s"] = time.perf_counter() - t0
    row["latency_s"] = row["end_s"] - scheduled_s
    row["send_lag_s"] = row["start_s"] - scheduled_s
    return row


async def burst(url: str, n: int, body: Body, timeout: float = 300.0) -> list[dict]:
    """n identical requests fired at once (`asyncio.gather`), as the original did."""
    async with make_client(n, timeout) as client:
        t0 = time.perf_counter()
        return list(
            await asyncio.gather(*(timed_request(client, url, body, t0, 0.0) for _ in range(n)))
        )


async def closed_loop(
    url: str,
    concurrency: int,
    body: Body,
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
    body: Body,
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


async def poll(url: str, during, every_s: float = 1.0) -> tuple:
    """Await `during` (a coroutine) while GETting `url` every `every_s` seconds.

    Returns its result and one row per GET: when it was sent (`t_s` from the start, and
    `at`, the wall-clock time), how long it took, its status and its answer (JSON if it
    is JSON). E.g. `/health`'s latency while a burst is served, or `/info`'s replica count
    during a ramp. The GET still in flight when `during` ends is waited for: it is the one
    that shows a server too busy to answer."""
    rows: list[dict] = []
    stop = asyncio.Event()

    async def get(client, t0):
        while not stop.is_set():
            start = time.perf_counter()
            row = {"t_s": start - t0, "at": time.time(), "latency_s": None, "status": None}
            row["answer"] = None
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url)
                row.update(status=response.status_code, latency_s=time.perf_counter() - start)
                try:
                    row["answer"] = response.json()
                except ValueError:
                    row["answer"] = response.text
            rows.append(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async with httpx.AsyncClient(timeout=300.0) as client:
        poller = asyncio.create_task(get(client, time.perf_counter()))
        try:
            result = await during
        except BaseException:
            poller.cancel()
            raise
        stop.set()
        await poller
    return result, pd.DataFrame(rows)


async def probe(url: str, during, every_s: float = 0.05) -> tuple:
    """`poll` for latency alone: the result of `during`, and how long each GET of `url`
    took (s). E.g. how long `/health` took to answer while a burst was being served."""
    result, rows = await poll(url, during, every_s)
    return result, rows["latency_s"].dropna().tolist()


LOCUSTFILE = ROOT / "locustfile.py"


def run_locust(
    url: str, users: int, body: Body, duration_s: float, processes: int = 1
) -> tuple[list[dict], float]:
    """Locust, headless: `users` closed-loop users for `duration_s` seconds, spread over
    `processes` worker processes (see locustfile.py). Returns one row per request, in the
    asyncio client's columns, and the CPU seconds Locust's processes used."""
    url = url.removesuffix("/predict")
    folder = Path(tempfile.mkdtemp(prefix="locust-"))
    (folder / "body").write_bytes(body.content)
    env = {**os.environ, "LOCUST_BODY": str(folder / "body"), "LOCUST_ROWS_DIR": str(folder)}
    env["LOCUST_CONTENT_TYPE"] = body.content_type
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{duration_s}s",
        "--processes", str(processes), "--stop-timeout", "30", "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    before = _children_cpu_s()
    with open(folder / "locust.log", "wb") as log:
        locust = subprocess.Popen(
            command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            locust.wait(timeout=duration_s + 120)
        finally:  # a timeout, or Ctrl+C: leave no Locust process behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(locust.pid, signal.SIGKILL)
            locust.wait()
    cpu_s = _children_cpu_s() - before
    requests = [row for csv in sorted(folder.glob("[0-9]*.csv")) for row in _locust_rows(csv)]
    log_tail = (folder / "locust.log").read_text(errors="replace")[-2000:]
    shutil.rmtree(folder, ignore_errors=True)
    if not requests:
        raise RuntimeError(f"Locust sent no request; the end of its log:\n{log_tail}")
    t0 = min(row["start_s"] for row in requests)
    for row in requests:
        for column in ("scheduled_s", "start_s", "end_s"):
            row[column] -= t0
    return requests, cpu_s


def _locust_rows(path: Path) -> list[dict]:
    rows = []
    for record in pd.read_csv(path, keep_default_na=False).to_dict("records"):
        start, latency = record["start_epoch_s"], record["latency_ms"] / 1000
        status = int(record["status"]) if record["status"] != "" else None
        rows.append(
            {
                "scheduled_s": start, "start_s": start, "status": status,
                "error": record["error"] or None, "predicted_label": None,
                "predicted_class": None, "score": None,
                **server_timings(record["server_timing"] or None),
                "end_s": start + latency, "latency_s": latency, "send_lag_s": 0.0,
            }
        )  # fmt: skip
    return rows


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def locust_loop(
    url: str, users: int, body: Body, duration_s: float, processes: int = 1
) -> list[dict]:
    """Load mode "locust": `run_locust` as a closed loop of `users`, for `measure`/`sweep`."""
    requests, _ = await asyncio.to_thread(run_locust, url, users, body, duration_s, processes)
    return requests


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
    duration_s=, arrivals=). The run is saved to results/runs/ as soon as it ends.
    """
    body = body or request_body()
    url = f"{server.url}/predict"
    if warmup:
        await burst(url, warmup, body)
    args = (url, int(level), body) if mode != "open" else (url, level, body)
    frame = pd.DataFrame(await LOAD_MODES[mode](*args, **load_options))
    frame.insert(0, "request_id", range(len(frame)))
    frame = frame.assign(**run_metadata(server, mode, level, repeat, body.wire))
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
    tolerance: float = STABILITY_TOLERANCE,
    progress: bool = False,
    **run_options,
) -> pd.DataFrame:
    """`run_once` at least `repeats` times, and on (up to `max_repeats`) until the last
    three runs agree within `tolerance` in throughput and median latency (`is_stable`)."""
    max_repeats = max(repeats, max_repeats or repeats)
    frames = []
    for repeat in trange(max_repeats, desc=f"{server.name} {mode} {level}", disable=not progress):
        frames.append(await run_once(server, mode, level, repeat=repeat, **run_options))
        if repeat + 1 >= repeats and stability(pd.concat(frames), tolerance)["stable"].all():
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
    tolerance: float = STABILITY_TOLERANCE,
    isolate: bool = True,
    **run_options,
) -> pd.DataFrame:
    """Measure every server at every level, in rounds, until the points are stable.

    `servers`: Server objects, or (server, body) pairs to send one server several bodies.
    Each round runs every level on one server, then on the next, the order reversed
    every other round (A B, B A, ...) so that a machine that speeds up or slows down
    affects all servers alike. With `isolate`, only the server being measured runs
    (the others are stopped and restarted on their turn): an idle LitServe server
    with batching polls its queue and takes CPU from the one being measured. After
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
                points = stability(pd.concat(frames), tolerance)
                unstable = {
                    (p.server, p.options, p.wire, p.level)
                    for p in points[~points["stable"]].itertuples()
                }
                if not unstable:
                    break
        bar.total = bar.n
        bar.refresh()
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
    "wire",
    "mode",
    "level",
    "repeat",
]
POINT_KEYS = ["server", "options", "wire", "mode", "level"]  # a point: runs repeated
PERCENTILES = [50, 90, 95, 99]


def summarize(requests: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per run: counts, total runtime, throughput, latency statistics (ms) and,
    where the server sent a Server-Timing header, the median time of each stage (ms)."""
    by = by or [k for k in RUN_KEYS if k in requests]
    timed = [
        c for c in [*STAGE_COLUMNS, "server_ms"] if c in requests and requests[c].notna().any()
    ]

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
        stats.update({column: ok[column].median() for column in timed})
        if "server_ms" in timed:  # the client, the network, waiting to be read
            stats["outside_ms"] = (latency_ms - ok["server_ms"]).median()
            stats["mean_batch_size"] = ok["batch_size"].mean()
        return pd.Series(stats)

    grouped = requests.groupby(by, sort=False, dropna=False)  # FastAPI has no batch options
    table = grouped.apply(one_run, include_groups=False).reset_index()
    return table.astype({"requests": int, "errors": int})


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """For reading: milliseconds to 0.1, seconds to 0.001, rates to 0.1; counts stay integers."""
    decimals = {}
    for column in table.select_dtypes("float").columns:
        name = str(column)
        if name.endswith("_ms"):
            decimals[column] = 1
        elif name.endswith("_s"):
            decimals[column] = 3
        elif name.endswith("_rps") or name.endswith("images_per_s"):
            decimals[column] = 1
    return table.round(decimals)


STABILITY_WINDOW = 3  # as perf_analyzer: the last three readings must agree


def is_stable(values, tolerance: float = STABILITY_TOLERANCE, window: int = STABILITY_WINDOW):
    """Whether the last `window` readings (at least two) all lie within `tolerance`
    (0.10 = 10%) of their mean: the stability rule of NVIDIA's perf_analyzer."""
    last = list(values)[-window:]
    if len(last) < 2:
        return False  # one reading cannot show that a measurement repeats
    mean = sum(last) / len(last)
    return all(abs(value - mean) <= tolerance * abs(mean) for value in last)


def stability(
    requests: pd.DataFrame,
    tolerance: float = STABILITY_TOLERANCE,
    window: int = STABILITY_WINDOW,
    values=("throughput_rps", "p50_ms"),
) -> pd.DataFrame:
    """Per measured point: its runs, and whether each of `values` is stable over them."""
    summary = summarize(requests).sort_values("repeat", kind="stable")
    keys = [k for k in POINT_KEYS if k in summary]
    rows = []
    for key, point in summary.groupby(keys, sort=False, dropna=False):
        stable = all(is_stable(point[v], tolerance, window) for v in values)
        rows.append({**dict(zip(keys, key, strict=True)), "runs": len(point), "stable": stable})
    return pd.DataFrame(rows)


def windowed(requests: pd.DataFrame, windows: int = 3) -> pd.DataFrame:
    """Each run cut into `windows` consecutive windows (by scheduled time), each counted as a
    repeat: perf_analyzer's way to check that one long run is stable."""

    def cut(run: pd.DataFrame) -> pd.DataFrame:
        start, span = run["scheduled_s"].min(), run["scheduled_s"].max() - run["scheduled_s"].min()
        index = ((run["scheduled_s"] - start) / (span or 1) * windows).astype(int)
        index = index.clip(upper=windows - 1)
        return run.assign(repeat=index, run_id=run["run_id"] + "-window" + index.astype(str))

    return pd.concat([cut(run) for _, run in requests.groupby("run_id")], ignore_index=True)


def keeps_up(
    requests: pd.DataFrame,
    windows: int = 3,
    tolerance: float = STABILITY_TOLERANCE,
    growth: float = 2.0,
) -> pd.DataFrame:
    """Per open-loop point: whether the server kept up with its schedule (`stable`).

    Each run is cut into `windows` consecutive windows. Poisson arrivals make a window's
    rate differ from the next by more than 10%, so the 10% rule applies to the share of
    each window's offered requests that were served; and a server falling behind has a
    growing queue, which shows as its median latency growing `growth`-fold from the first
    window to the last."""
    summary = summarize(windowed(requests, windows)).sort_values("repeat", kind="stable")
    keys = [k for k in POINT_KEYS if k in summary]
    rows = []
    for key, point in summary.groupby(keys, sort=False, dropna=False):
        served = point["throughput_rps"] / point["offered_rps"]
        growing = point["p50_ms"].iloc[-1] > growth * point["p50_ms"].iloc[0]
        stable = is_stable(served, tolerance, windows) and not growing
        rows.append({**dict(zip(keys, key, strict=True)), "windows": len(point), "stable": stable})
    return pd.DataFrame(rows)


def spread(
    summary: pd.DataFrame,
    value: str,
    by=("server", "mode", "level"),
    tolerance: float = STABILITY_TOLERANCE,
    window: int = STABILITY_WINDOW,
) -> pd.DataFrame:
    """Median, min and max of `value` over repeated runs (a range, not one point), and
    whether its last `window` runs agree within `tolerance` (`is_stable`)."""
    by = [k for k in by if k in summary]
    ordered = summary.sort_values("repeat", kind="stable") if "repeat" in summary else summary
    grouped = ordered.groupby(by, sort=False)[value]
    table = grouped.agg(["median", "min", "max", "count"]).rename(columns={"count": "runs"})
    table["stable"] = grouped.apply(lambda v: is_stable(v, tolerance, window))
    return table.reset_index()


def load_reference() -> pd.DataFrame:
    """The original benchmark's published figures (2x RTX 3080 Ti)."""
    return pd.read_csv(ROOT / "reference" / "original_benchmark.csv")


def original_tables(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original README's two tables, this run beside the published figures.

    1. total runtime per burst (s); 2. mean response time per request, printed as
    the original did: mean ± 2 standard deviations (ms). Medians over repeats. Every
    published burst size is shown, whatever sizes this run measured (NaN: not measured).
    """
    bursts = summary[summary["mode"] == "burst"].rename(columns={"level": "concurrency"})
    reference = load_reference()

    def published(column):
        table = reference.pivot(index="concurrency", columns="server", values=column)
        return table.add_suffix(" (original)")

    runtime = bursts.pivot_table("total_runtime_s", "concurrency", "server", aggfunc="median")
    runtime = runtime.join(published("total_runtime_s"), how="outer")
    mean = bursts.pivot_table("mean_ms", "concurrency", "server", aggfunc="median")
    two_std = 2 * bursts.pivot_table("std_ms", "concurrency", "server", aggfunc="median")
    latency = mean.round(1).astype(str) + " ± " + two_std.round(1).astype(str)
    ref_text = (
        published("mean_latency_ms").round(1).astype(str)
        + " ± "
        + published("latency_spread_ms").round(1).astype(str)
    )
    return runtime, latency.join(ref_text, how="outer")


def below_zero(summary: pd.DataFrame) -> dict:
    """How many rows of the mean ± 2 std table reach below zero, this run and published."""
    bursts = summary[summary["mode"] == "burst"]
    ours = bursts.groupby(["server", "level"])[["mean_ms", "std_ms"]].median()
    reference = load_reference()
    return {
        "this run": int((ours["mean_ms"] - 2 * ours["std_ms"] < 0).sum()),
        "this run rows": len(ours),
        "published": int((reference["mean_latency_ms"] < reference["latency_spread_ms"]).sum()),
        "published rows": len(reference),
    }


def first_answers(requests: pd.DataFrame) -> pd.DataFrame:
    """When the first, the median and the last answer of each burst came back (ms, median
    over repeats): batching makes the first answers wait for a batch to fill."""
    ok = requests[(requests["status"] == 200) & (requests["mode"] == "burst")]
    per_run = ok.groupby(["server", "level", "run_id"])["latency_s"].agg(
        first_ms="min", median_ms="median", last_ms="max"
    )
    return (per_run * 1000).groupby(["server", "level"]).median().round(1)


def stage_table(summary: pd.DataFrame, by: str = "server") -> pd.DataFrame:
    """Where a request's time went (ms, medians over requests and runs): the server's stages,
    the `handoffs` its total leaves over (between processes or threads), and the time
    `outside` the server's request handling (the client, the network, waiting to be read)."""
    stages = [c for c in STAGE_COLUMNS if c in summary]
    table = summary.groupby(by, sort=False)[[*stages, "server_ms", "outside_ms"]].median()
    table["handoffs_ms"] = (table["server_ms"] - table[stages].fillna(0).sum(axis=1)).clip(0)
    return table[[*stages, "handoffs_ms", "outside_ms"]]


def timing_cost_us(requests: int = 20_000) -> float:
    """Microseconds per request that measuring the stages costs: the server's clocks and
    header, its Server-Timing middleware, and the load generator reading the header."""
    from demo_servers.timing import ServerTiming, Stages

    async def app(scope, receive, send):
        headers = [(b"server-timing", b"read;dur=0.1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def send(message):
        pass

    async def seconds(asgi) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            await asgi({"type": "http"}, None, send)
        return time.perf_counter() - start

    middleware = run_sync(seconds(ServerTiming(app))) - run_sync(seconds(app))
    start = time.perf_counter()
    for _ in range(requests):
        stages = Stages()
        for stage in STAGES:
            with stages.timing(stage):
                pass
        server_timings(stages.header(8))
    return 1e6 * (middleware + time.perf_counter() - start) / requests


def percentile_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Latency percentiles (ms, median over repeats) per server and level."""
    cols = [f"p{p}_ms" for p in PERCENTILES] + ["max_ms"]
    return summary.groupby(["server", "mode", "level"], sort=False)[cols].median().round(1)


def latency_budget_ms(ceiling: pd.DataFrame, passes: int = 10) -> float:
    """The latency budget both tuning notebooks use: `passes` forward passes of one image
    through the model alone, as measured in this run (so it scales with the hardware)."""
    one_image = ceiling[ceiling["batch_size"] == 1]
    return passes * 1000 / one_image["images_per_s"].median()


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


def model_cache_dir() -> Path:
    """Where converted models are kept: $MODEL_CACHE_DIR, else results/cache."""
    return Path(os.environ.get("MODEL_CACHE_DIR") or RESULTS_DIR / "cache")


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
    sync = torch.cuda.synchronize if classifier.device.type == "cuda" else (lambda: None)
    rows = []
    desc = f"model ceiling ({classifier.runtime})"
    for batch_size in tqdm(batch_sizes, desc=desc, disable=barrier is not None):
        batch = pixels.expand(batch_size, -1, -1, -1).contiguous()
        # Warm-up: a fresh model's first passes at a new shape are slow (allocations,
        # kernel choices, clock ramp-up): at least one pass, and half a second.
        warm_until = time.perf_counter() + 0.5
        classifier.probabilities(batch)
        while time.perf_counter() < warm_until:
            classifier.probabilities(batch)
        for repeat in range(repeats):
            if barrier is not None:
                barrier.wait()
            sync()
            start = time.perf_counter()
            classifier.probabilities(batch)
            sync()
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "batch_size": batch_size,
                    "repeat": repeat,
                    "device": str(classifier.device),
                    "runtime": classifier.runtime,
                    "seconds": seconds,
                    "images_per_s": batch_size / seconds,
                    "conversion_s": classifier.conversion_s,
                }
            )
    return rows


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
        if self.above_best:
            why = (
                f"a server served more than the model alone can do ({self.served:.1f} > "
                f"{max(self.before, self.after):.1f}), so the ceiling was read on a busier "
                "machine than the servers ran on"
            )
        elif self.above_batch_1:
            why = (
                f"a server running one image per forward pass served {self.served_one_image:.1f}"
                f" requests/s, more than the model alone at batch 1 ({self.one_image:.1f}), so "
                "the ceiling was read on a busier machine than the servers ran on"
            )
        else:
            why = (
                f"the two readings differ by {self.drift:.0%}, more than {self.tolerance:.0%}, "
                "so the machine's speed changed during the run"
            )
        return text + (
            f"\nNOT TRUSTWORTHY: {why}. The machine was busy with other work (a browser, "
            "another kernel, a build). No fraction of the ceiling is shown: close other work "
            "and run the notebook again."
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
    concurrency: int = 32, requests: int = 2000, body: Body | None = None
) -> dict:
    """What the load generator alone can drive: closed loop against the null server.

    Returns requests/s and the client's CPU time per request. If a served
    benchmark gets near these numbers, the client, not the server, is measured.
    """
    body = body or request_body()
    with start_server("null", quiet=True, replace=False) as server:  # leave others' null servers
        await burst(f"{server.url}/predict", concurrency, body)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        rows = await closed_loop(f"{server.url}/predict", concurrency, body, requests=requests)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ok = sum(r["status"] == 200 for r in rows)
    return {
        "wire": body.wire,
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


def run_metadata(server: Server, mode: str, level: float, repeat: int, wire: str) -> dict:
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


def _palette(names) -> dict:
    """A color per server: the usual ones for fastapi and litserve, then tab10 in order."""
    import matplotlib

    others = itertools.cycle(matplotlib.colormaps["tab10"].colors[2:])  # after blue, orange
    return {name: SERVER_COLORS.get(name) or next(others) for name in dict.fromkeys(names)}


UNSTABLE = {"marker": "x", "color": "red", "s": 80, "zorder": 5}
MARKER_UNSTABLE = {"marker": "x", "color": "red", "markersize": 9}


def _axes(ncols: int = 1, width: float = 6.0):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4), squeeze=False)
    return figure, axes[0]


def _plain_numbers(axis) -> None:
    """Tick labels as plain numbers (1, 10, 100, 1,000), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


def level_axis(ax, levels, label: str) -> None:
    """An x axis for load levels or batch sizes: log-scaled when they span more than 5x (so
    a burst of 10 stays readable beside one of 200), ticks at the levels, as integers."""
    from matplotlib.ticker import NullLocator

    levels = sorted({float(v) for v in levels})
    if levels and levels[-1] > 5 * levels[0]:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        label += " (log scale)"
    ax.set_xticks(levels)
    _plain_numbers(ax.xaxis)
    ax.set_xlabel(label)


def _median_with_range(data: pd.DataFrame, y: str, ax) -> None:
    """One line per server over `level`: the median, a min-max band over repeats, and a red x
    on every point whose repeats disagree by more than 10% (see `is_stable`)."""
    import seaborn as sns

    palette = _palette(data["server"])
    sns.lineplot(
        data, x="level", y=y, hue="server", marker="o", ax=ax,
        estimator="median", errorbar=("pi", 100), palette=palette,
    )  # fmt: skip
    points = spread(data, y)
    unstable = points[~points["stable"]]
    if len(unstable):
        ax.scatter(unstable["level"], unstable["median"], label="unstable", **UNSTABLE)
    ax.legend()


def plot_runtime(summary: pd.DataFrame, published: bool = True):
    """Total runtime of each burst vs its size (the original's first table as a chart),
    log-log so that small bursts stay readable, with the published curves dashed."""
    figure, (ax,) = _axes()
    bursts = summary[summary["mode"] == "burst"]
    levels = set(bursts["level"])
    if published:
        reference = load_reference()
        levels |= set(reference["concurrency"])
        for server, rows in reference.groupby("server"):
            ax.plot(
                rows["concurrency"], rows["total_runtime_s"], linestyle="--", marker="s",
                color=SERVER_COLORS.get(server), alpha=0.6, label=f"{server}, published (2 GPUs)",
            )  # fmt: skip
    _median_with_range(bursts, "total_runtime_s", ax)
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    level_axis(ax, levels, "concurrent requests in the burst")
    ax.set(ylabel="total runtime (s, log scale)")
    ax.set_title("Time to answer a whole burst (median, band = min-max over repeats)")
    return figure


def plot_throughput(
    summary: pd.DataFrame,
    ceiling_images_per_s: float | None = None,
    check: CeilingCheck | None = None,
):
    """Throughput vs load level, with the model-alone ceiling as dashed lines: one number,
    or both readings of a `ceiling_check` (its best batch size, and batch 1)."""
    figure, (ax,) = _axes()
    if check is not None:
        label = f"model alone, batch {check.batch_size}: {check.ceiling:.1f}/s"
        ax.axhline(check.ceiling, color="black", linestyle="--", label=label)
        label = f"model alone, batch 1: {check.one_image:.1f}/s"
        ax.axhline(check.one_image, color="gray", linestyle=":", label=label)
    elif ceiling_images_per_s:
        label = f"model alone: {ceiling_images_per_s:.1f}/s"
        ax.axhline(ceiling_images_per_s, color="black", linestyle="--", label=label)
    _median_with_range(summary, "throughput_rps", ax)
    level_axis(ax, summary["level"], "concurrency (requests in flight)")
    ax.set(ylabel="throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Served throughput vs the hardware ceiling")
    return figure


def plot_latency(requests: pd.DataFrame):
    """Latency per request: violins per level (log scale), and one ECDF per level with
    each server's p50 (dotted) and p99 (dashed) marked."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    ok = requests[requests["status"] == 200].assign(latency_ms=lambda d: d["latency_s"] * 1000)
    levels = sorted(ok["level"].unique())
    palette = _palette(ok["server"])
    figure = plt.figure(figsize=(max(12, 3.2 * len(levels)), 8))
    grid = figure.add_gridspec(2, len(levels))
    box = figure.add_subplot(grid[0, :])
    sns.violinplot(
        ok, x="level", y="latency_ms", hue="server", ax=box, palette=palette, cut=0,
        inner="quartile", density_norm="width", log_scale=True,
    )  # fmt: skip
    _plain_numbers(box.yaxis)
    box.set(xlabel="concurrency", ylabel="latency (ms, log scale)")
    box.set_title("Latency per request (lines: quartiles)")
    for i, level in enumerate(levels):
        ax = figure.add_subplot(grid[1, i])
        at_level = ok[ok["level"] == level]
        sns.ecdfplot(at_level, x="latency_ms", hue="server", ax=ax, palette=palette, legend=False)
        for server, group in at_level.groupby("server"):
            for p, style in ((50, ":"), (99, "--")):
                value = group["latency_ms"].quantile(p / 100)
                ax.axvline(value, color=palette[server], linestyle=style, linewidth=1)
        ax.set(xlabel="latency (ms)", ylabel="fraction of requests" if i == 0 else "")
        ax.set_title(f"ECDF at {level:g}")
    handles = [Line2D([], [], color=c, label=s) for s, c in palette.items()]
    handles += [Line2D([], [], color="black", linestyle=":", label="p50")]
    handles += [Line2D([], [], color="black", linestyle="--", label="p99")]
    figure.legend(handles=handles, loc="lower center", ncols=len(handles))
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def plot_latency_vs_throughput(summary: pd.DataFrame, percentile: int = 99):
    """The serving trade-off: achieved throughput vs latency, one point per offered rate; a red
    x marks points whose summary says `stable` is False."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    figure, (ax,) = _axes()
    data = summary.sort_values("level")
    palette = _palette(data["server"])
    for column, style in (("p50_ms", ":"), (f"p{percentile}_ms", "-")):
        sns.lineplot(
            data, x="throughput_rps", y=column, hue="server", marker="o", linestyle=style,
            ax=ax, palette=palette, sort=False, estimator=None, legend=False,
        )  # fmt: skip
    handles = [Line2D([], [], color=c, marker="o", label=s) for s, c in palette.items()]
    handles += [Line2D([], [], color="black", linestyle=":", label="p50")]
    handles += [Line2D([], [], color="black", label=f"p{percentile}")]
    if "stable" in data and not data["stable"].all():
        unstable = data[~data["stable"].astype(bool)]
        ax.scatter(unstable["throughput_rps"], unstable[f"p{percentile}_ms"], **UNSTABLE)
        handles.append(Line2D([], [], linestyle="", label="unstable", **MARKER_UNSTABLE))
    ax.legend(handles=handles)
    ax.set(
        xlabel="achieved throughput (requests/s)",
        ylabel="latency (ms), log scale",
        yscale="log",
        title=f"Latency vs throughput (dotted p50, solid p{percentile})",
    )
    _plain_numbers(ax.yaxis)
    return figure


def plot_stages(summary: pd.DataFrame, by: str = "server"):
    """Stacked bars of `stage_table`: where each server's request time went."""
    table = stage_table(summary, by).rename(columns=lambda c: c.removesuffix("_ms"))
    figure, (ax,) = _axes(width=9)
    table.plot.barh(stacked=True, ax=ax, colormap="tab20", width=0.7)
    ax.invert_yaxis()
    ax.set(xlabel="median time per request (ms)", ylabel="", title="Where a request's time goes")
    ax.legend(ncols=3, fontsize="small")
    figure.tight_layout()
    return figure


def plot_autoscaling(samples: pd.DataFrame, steps: list[tuple[float, float]]):
    """Replicas over time during an open-loop ramp: `samples` from `poll` of a Ray server's
    /info, `steps` the (wall-clock start, offered requests/s) of each step of the ramp."""
    figure, (ax,) = _axes(width=9)
    start = steps[0][0]
    states = pd.DataFrame(
        [answer["server"]["replicas"] for answer in samples["answer"]], index=samples["at"] - start
    ).fillna(0)
    for state in [s for s in ("RUNNING", "STARTING", "STOPPING") if s in states]:
        ax.step(states.index, states[state], where="post", label=state.lower())
    top = states.to_numpy().max() + 1
    ax.set_ylim(0, top)
    for at, rate in steps:
        ax.axvline(at - start, color="gray", linestyle=":")
        ax.annotate(f"{rate:g} req/s", (at - start, top), va="top", fontsize="small")
    ax.set(xlabel="seconds since the ramp started", ylabel="replicas")
    ax.set_title("Ray Serve's autoscaler under rising open-loop load")
    ax.legend(loc="center left")
    return figure


def plot_grid(summary: pd.DataFrame, latency: str = "p95_ms"):
    """Heatmaps over max_batch_size x batch_timeout: throughput and a latency percentile."""
    import seaborn as sns

    figure, axes = _axes(2, width=5.5)
    for ax, (value, title, cmap) in zip(
        axes,
        [
            ("throughput_rps", "throughput (requests/s)", "viridis"),
            (latency, f"{latency.removesuffix('_ms')} latency (ms)", "viridis_r"),
        ],
        strict=True,
    ):
        table = summary.pivot_table(value, "max_batch_size", "batch_timeout", aggfunc="median")
        sns.heatmap(table, annot=True, fmt=".0f", cmap=cmap, ax=ax)
        ax.set(title=title, xlabel="batch_timeout (s)", ylabel="max_batch_size")
    figure.tight_layout()
    return figure
