"""What several test modules use: posting images, checking a server still serves, and
checking a process group is gone. Fixtures live in conftest.py."""

import asyncio
import subprocess

import httpx
import pytest

from demo_servers.preprocessing import decode_image
from servebench.servers import port_in_use
from tests import images

BODY_TIMEOUT_S = 2.0  # the servers' --body-timeout in tests: short, so slow-body tests end soon
# Generous: a 2-core machine running the whole suite can take seconds per forward pass.
TIMEOUT = httpx.Timeout(120.0)


def post_image(server, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json={"image_bytes": data.hex()}, timeout=TIMEOUT)


def assert_still_serving(server, classifier) -> None:
    response = post_image(server, images.good_images()["jpeg_rgb"])
    assert response.status_code == 200, response.text
    expected = classifier.predict([decode_image(images.good_images()["jpeg_rgb"])])[0]
    assert response.json()["score"] == pytest.approx(expected["score"], abs=1e-4)


async def burst(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        return await asyncio.gather(*(client.post(f"{url}/predict", json=b) for b in bodies))


def assert_a_bad_request_does_not_fail_its_batch(server, classifier, tolerance=1e-4) -> None:
    """A truncated upload in the middle of a burst of 8: refused alone, its neighbours
    answered as the model in-process answers them (any server that batches), within
    `tolerance`."""
    good = images.distinct_images(7)
    bodies = [{"image_bytes": d.hex()} for d in good]
    bodies.insert(3, {"image_bytes": images.truncated_jpeg().hex()})
    responses = asyncio.run(burst(server.url, bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 200, 422, 200, 200, 200, 200]
    scores = [r.json()["score"] for i, r in enumerate(responses) if i != 3]
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in good]
    assert scores == pytest.approx(expected, abs=tolerance)


def processes_in_group(pgid: int) -> list[str]:
    """Live members of a process group, as `ps` sees them (independent of helpers)."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True
    )
    rows = [line.split(None, 3) for line in out.stdout.splitlines()]
    return [r[3] for r in rows if int(r[1]) == pgid and not r[2].startswith("Z")]


def assert_gone(server, pgid: int) -> None:
    assert processes_in_group(pgid) == []
    assert not port_in_use(server.port)
    assert not server.running
