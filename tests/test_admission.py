"""Admission control: a bounded queue, 503 + Retry-After at once above it, and no forward
pass for a client that has gone or a request that waited too long. Every server."""

import asyncio
import time

import httpx
import pandas as pd
import pytest

import helpers
from demo_servers import admission
from servebench.load import is_shed
from servebench.notebook import run_sync
from tests import images
from tests.support import TIMEOUT, assert_still_serving

JPEG = {"content-type": "image/jpeg"}


async def burst(url: str, n: int, timeout: float = 120.0) -> list:
    """n raw-JPEG requests at once; a client timeout is returned, not raised."""
    data = images.good_images()["jpeg_rgb"]
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/predict", content=data, headers=JPEG) for _ in range(n)),
            return_exceptions=True,
        )


def admission_stats(server) -> dict:
    return httpx.get(f"{server.url}/admission", timeout=TIMEOUT).json()


def assert_shed_properly(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "retry" in response.json()["detail"]


def test_the_queue_bound_answers_503_with_retry_after_at_once():
    with helpers.start_server("null", quiet=True, block=0.1, max_queue=5, max_queue_wait=30) as s:
        started = time.perf_counter()
        responses = run_sync(burst(s.url, 20))
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 5 and codes.count(503) == 15
        for response in responses:
            if response.status_code == 503:
                assert_shed_properly(response)
                assert response.elapsed.total_seconds() < 0.5 * (time.perf_counter() - started)
        assert admission_stats(s)["shed_queue_full"] == 15


def test_a_request_that_waited_past_the_wait_bound_is_not_served():
    with helpers.start_server(
        "null", quiet=True, block=0.1, max_queue=100, max_queue_wait=0.3
    ) as server:
        responses = run_sync(burst(server.url, 20))
        codes = [r.status_code for r in responses]
        assert codes.count(200) >= 1 and codes.count(503) >= 10, codes
        for response in responses:
            if response.status_code == 503:
                assert_shed_properly(response)
        assert admission_stats(server)["dropped_waited_too_long"] == codes.count(503)


def test_a_receive_that_raises_after_the_body_means_the_client_left():
    """Ray Serve cancels a request whose client left: `receive` raises, not disconnects."""
    flags = admission.Flags()
    seen = {}

    async def app(scope, receive, send):
        await receive()  # the body
        await asyncio.sleep(0.05)  # meanwhile the watcher hears the news
        seen["gone"] = flags.gone[scope["state"]["admission_slot"]]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = iter([{"type": "http.request", "body": b"x", "more_body": False}])

    async def receive():
        message = next(messages, None)
        if message is None:
            raise RuntimeError("cancelled")  # as Ray's TaskCancelledError
        return message

    async def send(message):
        pass

    gate = admission.Admission(app, admission.Bounds(0, 1.0), flags)
    asyncio.run(gate({"type": "http", "path": "/predict"}, receive, send))
    assert seen["gone"] == 1


def test_the_bound_follows_the_served_rate():
    bounds = admission.Bounds(max_queue=0, max_queue_wait=2.0)
    gate = admission.Admission(app=None, bounds=bounds)
    assert gate.bound() == admission.COLD_QUEUE  # no answer yet: no rate
    for k in range(40):
        gate.meter.record(k * 0.1)  # 10 answers per second
    assert gate.bound() == pytest.approx(20, abs=2)  # Little's law: 10/s x 2 s
    batches = admission.Admission(None, admission.Bounds(0, 0.1, in_service=8))
    for k in range(40):
        batches.meter.record(k * 0.1)
    assert batches.wait_s() == pytest.approx(1.6, abs=0.2)  # two batches of 8 at 10/s
    assert batches.bound() == pytest.approx(16, abs=2)
    assert admission.Admission(None, admission.Bounds(5, 2.0)).bound() == 5
    assert admission.Admission(None, admission.Bounds(0, 0)).bound() is None  # off


RAY = pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])  # its cluster starts slowly


@pytest.mark.parametrize(
    "name", ["fastapi", "fastapi_executor", "fastapi_batching", "litserve", RAY]
)
def test_every_server_sheds_above_its_bound_and_keeps_serving(name, classifier):
    with helpers.start_server(name, quiet=True, max_queue=3, max_queue_wait=60) as server:
        responses = run_sync(burst(server.url, 16))
        codes = [r.status_code for r in responses]
        assert 3 <= codes.count(200) and codes.count(503) >= 8, codes
        for response in responses:
            if response.status_code == 503:
                assert_shed_properly(response)
        assert_still_serving(server, classifier)


@pytest.mark.parametrize("name", ["fastapi_batching", "litserve"])
def test_a_client_that_has_gone_gets_no_forward_pass(name, classifier):
    with helpers.start_server(
        name, quiet=True, max_batch_size=1, batch_timeout=0.01, max_queue_wait=0
    ) as server:  # admission off: the queue is unbounded, yet gone clients are dropped
        responses = run_sync(burst(server.url, 24, timeout=0.5))
        gave_up = sum(isinstance(r, httpx.TimeoutException) for r in responses)
        assert gave_up >= 12  # one forward pass takes more than 0.05 s on any machine
        deadline = time.monotonic() + 60
        while admission_stats(server)["in_flight"] > 1 and time.monotonic() < deadline:
            time.sleep(0.2)  # the queue drains: the dropped ones at once
        dropped = admission_stats(server)["dropped_client_gone"]
        assert dropped >= gave_up // 2, (dropped, gave_up)
        assert_still_serving(server, classifier)


def test_the_client_counts_shed_apart_from_errors():
    rows = pd.DataFrame(
        {
            "run_id": 1, "scheduled_s": [0.0, 0.1, 0.2, 0.3], "end_s": [0.5, 0.2, 0.3, 0.4],
            "latency_s": [0.5, 0.1, 0.1, 0.1], "send_lag_s": 0.0,
            "status": [200, 503, 503, 500], "shed": [False, True, True, False],
        }
    )  # fmt: skip
    summary = helpers.summarize(rows).iloc[0]
    assert (summary["shed"], summary["errors"], summary["requests"]) == (2, 1, 4)
    assert summary["shed_p50_ms"] == pytest.approx(100)


def test_the_load_generator_marks_503_with_retry_after_as_shed():
    assert is_shed(503, {"retry-after": "1"}) and is_shed(429, {"retry-after": "5"})
    assert not is_shed(503, {}) and not is_shed(500, {"retry-after": "1"})
