"""Admission control: a bounded queue, and a fast 503 with Retry-After above it.

A server that queues every request it cannot serve yet makes every client wait longer
for as long as an overload lasts, and computes answers for clients that gave up long
ago. The bound follows from Little's law: the requests in a server = the rate it serves
them x the time each spends there. To keep that time under `--max-queue-wait` seconds,
admit at most `rate x max_queue_wait` requests at once, with the rate measured as the
server runs (completions per second, smoothed). The wait is never taken below two
batches' time at that rate (`in_service`: a batch per model worker): a request may wait
for the batch being computed, then for its own. `--max-queue` caps the number (it is
also the bound until the first answers give a rate). Above the bound a request
is answered at once, before its body is read, with 503, a `Retry-After` header and a
JSON body that says why; it never joins a queue.

Two more requests are never computed: one whose client disconnected while it waited,
and one that waited longer than `--max-queue-wait` anyway (e.g. after a slow batch).
The model process drops them just before the forward pass (`expired`) and counts them.
In LitServe the HTTP processes and the model processes are different processes, so the
flags and counters live in shared memory (`Flags(shared=True)`), created before
LitServe starts its processes.

`--max-queue-wait 0` turns admission control off: every request waits its turn, as
LitServe and FastAPI do by default.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import time
from dataclasses import dataclass

MAX_QUEUE_WAIT_S = 1.0  # a latency decision, like a p99 budget: set your own
MIN_QUEUE = 8  # the bound never goes below this
COLD_QUEUE = 64  # the bound before the first answer gives a rate (unless --max-queue)
SLOTS = 2**20  # requests that can be in flight at once, per server
RATE_WINDOW_S = 5.0  # the served rate is smoothed over about this long
GONE, STALE = "client disconnected", "waited longer than the queue-wait bound"
COUNTERS = ("shed_queue_full", "dropped_client_gone", "dropped_waited_too_long")


@dataclass(frozen=True)
class Bounds:
    """`max_queue`: requests in the server at most (0: only the Little's-law bound);
    `max_queue_wait`: seconds a request may wait (0: no admission control at all);
    `in_service`: requests this HTTP process's share of the model computes at once."""

    max_queue: int = 0
    max_queue_wait: float = MAX_QUEUE_WAIT_S
    in_service: int = 1

    @property
    def on(self) -> bool:
        return self.max_queue_wait > 0


class Flags:
    """Per-request "client gone" flags and the drop counters, in this process or (shared)
    in memory that LitServe's forked HTTP and spawned model processes all see."""

    def __init__(self, shared: bool = False):
        if shared:  # the spawn context's: LitServe's workers are spawned (its HTTP processes
            # are forked, which shares anything)
            context = multiprocessing.get_context("spawn")
            self.gone = context.RawArray("b", SLOTS)
            self.counts = context.RawArray("q", len(COUNTERS))
            self._next = context.Value("q", 0)
        else:
            self.gone, self.counts, self._next = bytearray(SLOTS), [0] * len(COUNTERS), None
            self._local = 0

    def allocate(self) -> int:
        """A slot for a new request, its flag cleared."""
        if self._next is None:
            self._local += 1
            slot = self._local % SLOTS
        else:
            with self._next.get_lock():
                self._next.value += 1
                slot = self._next.value % SLOTS
        self.gone[slot] = 0
        return slot

    def count(self, counter: str) -> None:
        self.counts[COUNTERS.index(counter)] += 1  # a lost increment between processes is
        # possible without a lock; these are statistics, not accounting

    def counters(self) -> dict[str, int]:
        return dict(zip(COUNTERS, list(self.counts), strict=True))


FLAGS = Flags()  # this process's; a LitServe worker installs the shared ones (`install`)
CURRENT: Admission | None = None  # this HTTP process's middleware, once it has started


def install(flags: Flags) -> None:
    """Use `flags` in this process (a LitServe worker, with the server's shared flags)."""
    global FLAGS
    FLAGS = flags


def expired(item, now: float) -> str | None:
    """Why a queued request (`schema.ImageInput`) must not be computed, or None."""
    if item.slot >= 0 and FLAGS.gone[item.slot]:
        FLAGS.count("dropped_client_gone")
        return GONE
    if item.deadline and now > item.deadline:
        FLAGS.count("dropped_waited_too_long")
        return STALE
    return None


class Shed:
    """The answer for a request dropped before its forward pass: a 503 with Retry-After."""

    def __init__(self, reason: str, retry_after_s: float = 1.0):
        self.reason = reason
        self.retry_after_s = retry_after_s

    def response(self):
        from fastapi.responses import JSONResponse

        ((name, value),) = retry_after(self.retry_after_s)
        detail = {"detail": f"not computed: {self.reason}; retry after the Retry-After delay"}
        return JSONResponse(detail, 503, headers={name.decode(): value.decode()})


def retry_after(seconds: float) -> list[tuple[bytes, bytes]]:
    """The Retry-After header: whole seconds, at least 1 (RFC 9110)."""
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


class RateMeter:
    """Answers per second, smoothed exponentially over about RATE_WINDOW_S."""

    def __init__(self):
        self.rate = 0.0
        self._last = None
        self._pending = 0

    def record(self, now: float) -> None:
        if self._last is None:  # the first answer starts the clock
            self._last = now
            return
        self._pending += 1
        elapsed = now - self._last
        if elapsed < 0.05:  # batch answers come together: fold them into one reading
            return
        reading = self._pending / elapsed
        weight = 1 - math.exp(-elapsed / RATE_WINDOW_S)
        self.rate = reading if self.rate == 0 else self.rate + weight * (reading - self.rate)
        self._last, self._pending = now, 0


class Admission:
    """ASGI middleware on `POST /predict`: admits up to the bound (`Bounds`), answers above
    it with 503 + Retry-After at once, stamps each admitted request with its slot and its
    deadline (for `expired`), and flags it when its client disconnects before the answer."""

    def __init__(self, app, bounds: Bounds = Bounds(), flags: Flags | None = None):
        global CURRENT
        self.app = app
        self.bounds = bounds
        self.flags = flags or FLAGS
        self.in_flight = 0
        self.meter = RateMeter()
        CURRENT = self  # one per HTTP process: what `/admission` reports

    def wait_s(self) -> float:
        """The wait bound now: `max_queue_wait`, but never less than two batches' time at
        the measured rate (the batch being computed, then the request's own). A shorter
        promise could only be kept by dropping requests after they had waited."""
        rate = self.meter.rate
        two_batches = 2 * self.bounds.in_service / rate if rate else 0.0
        return max(self.bounds.max_queue_wait, two_batches)

    def bound(self) -> int | None:
        """How many requests may be in this process now (None: no admission control)."""
        if not self.bounds.on:
            return None
        derived = max(MIN_QUEUE, math.ceil(self.meter.rate * self.wait_s()))  # Little's law
        if self.meter.rate == 0:  # no answer yet, so no rate: the cap, or a cold-start bound
            derived = self.bounds.max_queue or COLD_QUEUE
        return min(derived, self.bounds.max_queue) if self.bounds.max_queue else derived

    def stats(self) -> dict:
        """What /admission reports for this HTTP process (the counters for the server)."""
        return {
            "max_queue": self.bounds.max_queue,
            "max_queue_wait_s": self.bounds.max_queue_wait,
            "wait_bound_now_s": round(self.wait_s(), 3),
            "bound_now": self.bound(),
            "in_flight": self.in_flight,
            "served_rps": round(self.meter.rate, 2),
            **self.flags.counters(),
        }

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await self.app(scope, receive, send)
        bound = self.bound()
        if bound is not None and self.in_flight >= bound:
            return await self._shed(send, bound)
        slot = self.flags.allocate()
        arrived = time.monotonic()
        state = scope.setdefault("state", {})
        state["admission_slot"] = slot
        state["admission_deadline"] = arrived + self.wait_s() if bound else 0.0
        answered, watcher = False, None

        async def watch_for_disconnect():
            # Once the body is read, the next message is http.disconnect: the client left,
            # or (after the answer) the exchange is over. Ray Serve raises instead (its
            # TaskCancelledError) when it cancels a request whose client left.
            try:
                message = await receive()
            except Exception:
                message = {"type": "http.disconnect"}
            if message["type"] == "http.disconnect" and not answered:
                self.flags.gone[slot] = 1

        async def body_receive():
            nonlocal watcher
            message = await receive()
            if message["type"] == "http.disconnect" and not answered:
                self.flags.gone[slot] = 1
            elif not message.get("more_body") and watcher is None:
                watcher = asyncio.create_task(watch_for_disconnect())
            return message

        async def counted_send(message):
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                if message["status"] == 200:
                    self.meter.record(time.monotonic())
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, body_receive, counted_send)
        finally:
            self.in_flight -= 1
            if not answered:  # the app gave up on it (e.g. cancelled): never compute it
                self.flags.gone[slot] = 1
            if watcher is not None and not watcher.done():
                watcher.cancel()

    async def _shed(self, send, bound: int) -> None:
        self.flags.count("shed_queue_full")
        rate = self.meter.rate
        wait = self.in_flight / rate if rate else self.wait_s()
        serving = (
            f"serving {rate:.1f}/s, so a new one would wait about {wait:.1f} s"
            if rate
            else ("no answer yet to measure the rate")
        )
        detail = (
            f"the server is at its queue bound ({self.in_flight} of {bound} requests in flight; "
            f"{serving}; wait bound {self.wait_s():.2g} s): retry after the "
            "Retry-After delay"
        )
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), *retry_after(wait)]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def add_admission(app, bounds: Bounds, flags: Flags | None = None) -> None:
    """Put `Admission` in front of a FastAPI app (outermost: it answers before anything
    reads the body) and add `GET /admission`, what it has admitted, shed and dropped."""
    from fastapi.responses import JSONResponse

    app.add_middleware(Admission, bounds=bounds, flags=flags)

    @app.get("/admission")
    async def admission_stats():
        return JSONResponse(CURRENT.stats())  # set: this request passed the middleware
