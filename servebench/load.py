"""Load generation: one row per request, sent by asyncio coroutines in this process.

Times are seconds from the start of the run: `scheduled_s` is when the request was due,
`start_s` when it was sent, `end_s` when its answer (or error) came back. Latency counts
from the schedule, so a client that could not send on time, or a server that stalls, is
charged the wait (no coordinated omission); `send_lag_s` shows how late the client was.
The server's own timings (its Server-Timing header) become one column per stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import httpx
import pandas as pd

from demo_servers.timing import STAGES, TOTAL, ServerTiming, Stages, parse_header
from servebench.bodies import Body
from servebench.notebook import run_sync

__all__ = [
    "STAGE_COLUMNS",
    "arrival_times",
    "burst",
    "closed_loop",
    "make_client",
    "open_loop",
    "poll",
    "probe",
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
