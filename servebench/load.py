"""Load generation: one row per request, sent by asyncio coroutines, in this process or,
with `processes=N`, in N processes that share the load and one clock.

Times are seconds from the start of the run: `scheduled_s` is when the request was due,
`start_s` when it was sent, `end_s` when its answer (or error) came back. Latency counts
from the schedule, so a client that could not send on time, or a server that stalls, is
charged the wait (no coordinated omission); `send_lag_s` shows how late the client was.
The server's own timings (its Server-Timing header) become one column per stage.

One Python process sends a few hundred to a few thousand requests/s, depending on the
body and the machine (`ceilings.client_ceiling` measures it); a server that is faster
needs a client in several processes. They start together at an agreed instant of the
machine's monotonic clock (shared by all processes on Linux), so their rows merge
into one run with one time axis.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import random
import time

import httpx
import pandas as pd

from demo_servers.http_processes import SERVED_BY
from demo_servers.timing import STAGES, TOTAL, ServerTiming, Stages, parse_header
from servebench.bodies import Body
from servebench.notebook import run_sync

__all__ = [
    "STAGE_COLUMNS",
    "arrival_times",
    "burst",
    "closed_loop",
    "is_shed",
    "make_client",
    "open_loop",
    "poll",
    "probe",
    "ramp",
    "run_in_processes",
    "send_on_schedule",
    "server_timings",
    "timed_request",
    "timing_cost_us",
]

STAGE_COLUMNS = [f"{stage}_ms" for stage in STAGES]


def make_client(connections: int, timeout: float = 300.0) -> httpx.AsyncClient:
    """An httpx client sized for the load: httpx's defaults (5 s timeout, a pool of
    100 connections) would fail or queue a 200-request burst on a slow machine."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def server_timings(header: str | None) -> dict:
    """A response's Server-Timing header as row columns: read_ms, ..., server_ms, batch_size."""
    parsed = parse_header(header) if header else {}
    row = {column: parsed.get(stage) for stage, column in zip(STAGES, STAGE_COLUMNS, strict=True)}
    row.update(server_ms=parsed.get(TOTAL), batch_size=parsed.get("batch_size"))
    return row


def is_shed(status: int, headers) -> bool:
    """A server's "not now, retry later": 503 (or 429) with a Retry-After header."""
    return status in (429, 503) and "retry-after" in headers


async def timed_request(
    client: httpx.AsyncClient, url: str, body: Body, t0: float, scheduled_s: float
) -> dict:
    """Send one request and describe it as a row; failures are rows too, never exceptions."""
    start = time.perf_counter()
    row = {"scheduled_s": scheduled_s, "start_s": start - t0, "status": None, "error": None}
    row.update(predicted_label=None, predicted_class=None, score=None, served_by=None)
    row["shed"] = False  # a 503 with Retry-After: load the server refused, not a failure
    headers = {"content-type": body.content_type}
    try:
        response = await client.post(url, content=body.content, headers=headers)
        row["status"] = response.status_code
        if response.status_code == 200:
            answer = response.json()
            row.update({k: answer.get(k) for k in ("predicted_label", "predicted_class", "score")})
        else:
            row["error"] = response.text[:200]
            row["shed"] = is_shed(response.status_code, response.headers)
        row.update(server_timings(response.headers.get("server-timing")))
        row["served_by"] = response.headers.get(SERVED_BY)  # the process (Ray: and its node)
    except httpx.HTTPError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["end_s"] = time.perf_counter() - t0
    row["latency_s"] = row["end_s"] - scheduled_s
    row["send_lag_s"] = row["start_s"] - scheduled_s
    return row


async def start_clock(start_at: float | None) -> float:
    """The run's time zero: now, or the agreed `start_at` (time.perf_counter) of a run in
    several processes, waited for."""
    if start_at is None:
        return time.perf_counter()
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    return start_at


async def burst(
    url: str,
    n: int,
    body: Body,
    timeout: float = 300.0,
    processes: int = 1,
    start_at: float | None = None,
) -> list[dict]:
    """n identical requests fired at once (`asyncio.gather`), as the original did."""
    if processes > 1:
        return (await run_in_processes("burst", processes, url, n, body, timeout=timeout))[0]
    async with make_client(n, timeout) as client:
        t0 = await start_clock(start_at)
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
    processes: int = 1,
    start_at: float | None = None,
) -> list[dict]:
    """`concurrency` users, each sending its next request when the last one returns,
    until `requests` have been sent or `duration_s` has passed."""
    if requests is None and duration_s is None:
        raise ValueError("give requests or duration_s")
    if processes > 1:
        options = {"requests": requests, "duration_s": duration_s, "timeout": timeout}
        return (await run_in_processes("closed", processes, url, concurrency, body, **options))[0]
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
        t0 = await start_clock(start_at)
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
    processes: int = 1,
    start_at: float | None = None,
) -> list[dict]:
    """Requests sent on a schedule at `rate` per second, whether or not earlier ones
    have returned: how real traffic arrives. Latency counts from the schedule. In several
    processes each sends its share of the rate (Poisson arrivals from several independent
    sources are still Poisson arrivals at the total rate)."""
    n = requests if requests is not None else int(rate * duration_s)
    if processes > 1:
        options = {"arrivals": arrivals, "seed": seed, "timeout": timeout}
        options["max_connections"] = max_connections
        return (await run_in_processes("open", processes, url, rate, body, n, **options))[0]
    schedule = arrival_times(rate, n, arrivals, seed)
    return await send_on_schedule(url, schedule, body, timeout, max_connections, start_at)


async def send_on_schedule(
    url: str,
    schedule: list[float],
    body: Body,
    timeout: float = 300.0,
    max_connections: int = 1000,
    start_at: float | None = None,
) -> list[dict]:
    """One request at each time of `schedule` (s from the start), answered or not."""
    async with make_client(max_connections, timeout) as client:
        t0 = await start_clock(start_at)
        tasks = []
        for due in schedule:
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed_request(client, url, body, t0, due)))
        return list(await asyncio.gather(*tasks))


async def ramp(
    url: str,
    steps: list[tuple[float, float]],
    body: Body,
    seed: int = 0,
    timeout: float = 30.0,
    max_connections: int = 2000,
) -> list[dict]:
    """Open-loop Poisson arrivals whose rate changes in steps: `steps` is a list of
    (requests/s, seconds), e.g. capacity x 0.5, then x 2 for 20 s, then x 0.5 again. Each
    row says its `step` (0, 1, ...). The client gives up after `timeout` seconds (a real
    client does): a server that queues without bound shows it as errors."""
    schedule, step_of, start = [], [], 0.0
    for k, (rate, seconds) in enumerate(steps):
        times = arrival_times(rate, max(1, round(rate * seconds)), "poisson", seed + k)
        schedule += [start + t for t in times if t < seconds]
        step_of += [k] * sum(t < seconds for t in times)
        start += seconds
    rows = await send_on_schedule(url, schedule, body, timeout, max_connections)
    return [{**row, "step": step} for row, step in zip(rows, step_of, strict=True)]


LOADS = {"burst": burst, "closed": closed_loop, "open": open_loop}


def _share(total: int | float | None, part: int, parts: int, whole: bool) -> int | float | None:
    """Part `part` of `parts` of `total`: integers split as evenly as they go."""
    if total is None:
        return None
    if not whole:
        return total / parts
    return total // parts + (1 if part < total % parts else 0)


def _child_load(kind: str, args: tuple, options: dict) -> tuple[list[dict], float]:
    """In a child process: the rows of this share of the load, and the CPU time it took."""
    cpu = time.process_time()
    rows = asyncio.run(LOADS[kind](*args, **options))
    return rows, time.process_time() - cpu


def _ready(barrier) -> None:
    barrier.wait()  # returns once every process of the pool has started and imported this


async def run_in_processes(
    kind: str, processes: int, url: str, level: float, body: Body, requests=None, **options
) -> tuple[list[dict], float]:
    """One load ("burst", "closed" or "open") shared by `processes` processes: the level
    (requests, users or rate) and `requests` divided among them, all starting at the same
    instant. Returns every row, on one time axis, and the client CPU seconds they used."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    whole = kind != "open"  # users and burst sizes are whole; a rate divides freely
    if whole:
        processes = max(1, min(processes, int(level)))  # none left without a share
    shares = []
    for part in range(processes):
        share = dict(options)
        if kind == "open":
            share["seed"] = options.get("seed", 0) * processes + part
        if kind != "burst":
            share["requests"] = _share(requests, part, processes, True)
        shares.append(((url, _share(level, part, processes, whole), body), share))
    context = multiprocessing.get_context("spawn")  # a notebook kernel must not be forked
    barrier = context.Barrier(processes)
    with concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=context, initializer=_ready, initargs=(barrier,)
    ) as pool:
        # Start every process (each waits at the barrier until all have started), then
        # agree on the instant they all begin.
        started = [asyncio.wrap_future(pool.submit(time.perf_counter)) for _ in range(processes)]
        await asyncio.gather(*started)
        start_at = time.perf_counter() + 0.2
        results = await asyncio.gather(
            *(
                asyncio.wrap_future(
                    pool.submit(_child_load, kind, args, {**share, "start_at": start_at})
                )
                for args, share in shares
            )
        )
    rows = sorted((row for part, _ in results for row in part), key=lambda r: r["scheduled_s"])
    return rows, sum(cpu for _, cpu in results)


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


def timing_cost_us(requests: int = 20_000) -> float:
    """Microseconds per request that measuring the stages costs: the server's clocks and
    header, its Server-Timing middleware, and the load generator reading the header."""

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
