"""Hostile and unlucky uploads: every one gets a clear 4xx (or, if PIL can still read it, an
answer), never a 500 or a hang, and the server keeps serving. Both servers."""

import asyncio
import socket
import time

import httpx
import pytest

from demo_servers.preprocessing import MAX_ASPECT_RATIO, decode_image
from tests import images
from tests.support import BODY_TIMEOUT_S, TIMEOUT, assert_still_serving, burst, post_image

DAMAGED = {**images.truncations(), **images.bit_flips()}


def assert_answered_or_refused(response: httpx.Response) -> None:
    assert response.status_code in (200, 422), (response.status_code, response.text)
    if response.status_code == 422:
        message = response.json()["detail"][0]["msg"]
        assert "could not be decoded" in message or "not an image" in message, message


def test_damaged_files_in_every_format(server, classifier):
    """Every accepted format cut short at several points, and files with flipped bits."""
    codes = {}
    for name, data in DAMAGED.items():
        response = post_image(server, data)
        assert_answered_or_refused(response)
        codes[name] = response.status_code
    assert sum(code == 422 for code in codes.values()) >= len(images.truncations()) - 8
    assert_still_serving(server, classifier)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX", "SGI"])
def test_formats_the_server_does_not_read_get_a_422(server, fmt):
    response = post_image(server, images.other_format(fmt))
    assert response.status_code == 422
    assert "not an image in a format this server reads" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000), (40_000, 1), (21, 1), (2100, 100)])
def test_strips_are_refused_before_they_cost_anything(server, classifier, size):
    """A ~100-byte PNG of 40,000 x 1 pixels would become 10,240,000 x 256 when resized."""
    data = images.strip(*size)
    assert len(data) < 2_000
    response = post_image(server, data)
    assert response.status_code == 422, response.text
    assert f"over the limit of {MAX_ASPECT_RATIO}:1" in response.json()["detail"][0]["msg"]
    assert_still_serving(server, classifier)


def test_the_widest_accepted_strip_is_classified(server, classifier):
    data = images.strip(MAX_ASPECT_RATIO * 10, 10)
    response = post_image(server, data)
    assert response.status_code == 200, response.text
    expected = classifier.predict([decode_image(data)])[0]
    assert response.json()["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_a_poisoned_litserve_batch_keeps_its_good_requests(litserve_server, classifier):
    """Bad uploads of every kind inside one burst: each is refused alone, never its batch."""
    good = images.distinct_images(6)
    bad = [
        images.strip(5000, 1),
        images.truncations()["WEBP cut at 0.5"],
        images.truncations()["JPEG cut at 8"],
        images.other_format("TGA"),
        images.png_bomb(),
    ]
    datas = [d for pair in zip(good, bad + [b""], strict=True) for d in pair][:-1]
    responses = asyncio.run(burst(litserve_server.url, [{"image_bytes": d.hex()} for d in datas]))
    codes = [r.status_code for r in responses]
    assert codes == [200, 422] * 5 + [200], codes
    scores = [r.json()["score"] for r in responses if r.status_code == 200]
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in good]
    assert scores == pytest.approx(expected, abs=1e-4)


def raw_exchange(server, request: bytes, wait_s: float = 30.0) -> tuple[bytes, float]:
    """Send raw bytes on a fresh connection; return the first bytes of the answer and when."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        started = time.perf_counter()
        try:
            sock.sendall(request)
            answer = sock.recv(200)
        except (ConnectionResetError, BrokenPipeError):  # closed while we were still sending
            answer = b"(connection closed)"
        return answer, time.perf_counter() - started


def test_a_stalled_body_gets_a_408(server, classifier):
    """Content-Length promises 1,000 bytes, 10 arrive, then nothing: no request waits forever."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer, seconds = raw_exchange(server, head + b'Content-Length: 1000\r\n\r\n{"image_by')
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert BODY_TIMEOUT_S - 0.5 < seconds < BODY_TIMEOUT_S + 20  # margin for a busy machine
    assert_still_serving(server, classifier)


def test_a_body_sent_slowly_gets_a_408(server):
    """A body trickling in (a byte every 0.5 s) is cut off at the same deadline."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        started = time.perf_counter()
        answer = b""
        for byte in b'{"image_bytes": "ffd8ffe0' * 4:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                answer = sock.recv(200)
                break
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.1 408"), answer
    # cut off at the deadline, not when the 100 bytes (50 s of trickle) were all sent
    assert time.perf_counter() - started < BODY_TIMEOUT_S + 20


@pytest.mark.parametrize("size", [2**20, 16 * 2**20])
def test_huge_headers_are_refused_at_once(server, classifier, size):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    answer, seconds = raw_exchange(server, request)
    # a 400, or the connection closed while the header was still being sent (a refusal too)
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"(connection closed)", answer
    assert seconds < 25  # refused as it arrives, well before the client's 30 s would run out
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200
    assert_still_serving(server, classifier)


def test_headers_within_the_limit_are_fine(server):
    response = httpx.get(f"{server.url}/health", headers={"x-fine": "a" * 30_000}, timeout=TIMEOUT)
    assert response.status_code == 200


HOSTILE_JSON = {
    "array nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "image_bytes nested 100,000 deep": b'{"image_bytes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "image_bytes a number of 1,000,000 digits": b'{"image_bytes": ' + b"7" * 1_000_000 + b"}",
}


@pytest.mark.parametrize("case", HOSTILE_JSON)
def test_json_too_deep_or_too_long_to_read_gets_a_422(server, classifier, case):
    response = httpx.post(
        f"{server.url}/predict", content=HOSTILE_JSON[case],
        headers={"content-type": "application/json"}, timeout=TIMEOUT,
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert "image_bytes" in response.json()["detail"][0]["msg"]  # says what to send
    assert_still_serving(server, classifier)
