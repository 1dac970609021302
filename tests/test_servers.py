"""Both demo servers, for real: correct answers, batching, and every bad input refused cleanly."""

import asyncio
import json

import httpx
import pytest

import helpers
from demo_servers.limits import MAX_BODY_BYTES
from demo_servers.preprocessing import decode_image
from tests import images

TIMEOUT = httpx.Timeout(120.0)


def post_image(server, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json={"image_bytes": data.hex()}, timeout=TIMEOUT)


def assert_still_serving(server, classifier) -> None:
    response = post_image(server, images.good_images()["jpeg_rgb"])
    assert response.status_code == 200, response.text
    expected = classifier.predict([decode_image(images.good_images()["jpeg_rgb"])])[0]
    assert response.json()["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_health_and_info(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    model = server.info()["model"]
    assert model["weights"] == "random"  # HF_HUB_OFFLINE=1: the loud fallback
    assert "offline" in server.log_path.read_text().lower()


@pytest.mark.parametrize("name", list(images.good_images()))
def test_same_answer_as_the_model_in_process(server, classifier, name):
    data = images.good_images()[name]
    response = post_image(server, data)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = classifier.predict([decode_image(data)])[0]
    assert set(answer) == {"predicted_label", "predicted_class", "score"}
    assert answer["predicted_label"] == expected["predicted_label"]
    assert answer["predicted_class"] == expected["predicted_class"]
    assert answer["score"] == pytest.approx(expected["score"], abs=1e-4)


async def burst(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        return await asyncio.gather(*(client.post(f"{url}/predict", json=b) for b in bodies))


def test_litserve_batches_keep_each_answer_with_its_request(litserve_server, classifier):
    datas = images.distinct_images(16)
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in datas]
    # The check is only meaningful if a mix-up would change the numbers.
    assert min(abs(a - b) for i, a in enumerate(expected) for b in expected[i + 1 :]) > 1e-4
    one_at_a_time = [post_image(litserve_server, d).json()["score"] for d in datas]
    responses = asyncio.run(burst(litserve_server.url, [{"image_bytes": d.hex()} for d in datas]))
    assert [r.status_code for r in responses] == [200] * len(datas)
    concurrent = [r.json()["score"] for r in responses]
    assert concurrent == pytest.approx(one_at_a_time, abs=1e-4)
    assert concurrent == pytest.approx(expected, abs=1e-4)
    batch_sizes = helpers.batch_sizes_from_log(litserve_server)
    assert max(batch_sizes) > 1, "the burst should have been batched"


BAD_JSON_BODIES = {
    "not json": b"this is not json",
    "json but not an object": b'["image_bytes"]',
    "field missing": b"{}",
    "field not a string": b'{"image_bytes": 12345}',
    "not hex": b'{"image_bytes": "zz-not-hex"}',
    "empty": b'{"image_bytes": ""}',
}
BAD_IMAGES = {
    "not an image": b"%PDF-1.4 this is a PDF, not an image",
    "truncated image": images.truncated_jpeg(),
    "decompression bomb": images.png_bomb(),
}


@pytest.mark.parametrize("case", [*BAD_JSON_BODIES, *BAD_IMAGES])
def test_bad_input_gets_a_clear_422_and_the_server_keeps_serving(server, classifier, case):
    if case in BAD_JSON_BODIES:
        body = BAD_JSON_BODIES[case]
    else:
        body = json.dumps({"image_bytes": BAD_IMAGES[case].hex()}).encode()
    response = httpx.post(
        f"{server.url}/predict",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all("msg" in error and "input" not in error for error in detail)
    assert len(response.content) < 2_000  # says what is wrong without echoing the upload
    assert_still_serving(server, classifier)


def test_bad_input_messages_say_what_is_wrong(server):
    def message(body: bytes) -> str:
        response = httpx.post(
            f"{server.url}/predict", content=body, headers={"content-type": "application/json"}
        )
        return response.json()["detail"][0]["msg"]

    assert "not valid hex" in message(BAD_JSON_BODIES["not hex"])
    assert "empty" in message(BAD_JSON_BODIES["empty"])
    assert "must be a string" in message(BAD_JSON_BODIES["field not a string"])
    assert "not an image" in message(json.dumps({"image_bytes": b"hello".hex()}).encode())
    for width in (8_000, 100_000):  # over our limit; over PIL's own bomb limit too
        bomb = images.png_bomb(width, width)
        assert "over the limit" in message(json.dumps({"image_bytes": bomb.hex()}).encode())
    assert "could not be decoded" in message(
        json.dumps({"image_bytes": images.truncated_jpeg().hex()}).encode()
    )


def test_body_over_the_limit_is_refused_with_413(server, classifier):
    too_big = b'{"image_bytes": "' + b"00" * (MAX_BODY_BYTES // 2 + 1) + b'"}'
    response = httpx.post(
        f"{server.url}/predict",
        content=too_big,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    def chunks():  # streamed, so no Content-Length header to check up front
        yield b'{"image_bytes": "'
        for _ in range(MAX_BODY_BYTES // 2**20 + 1):
            yield b"00" * 2**19
        yield b'"}'

    response = httpx.post(
        f"{server.url}/predict",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert_still_serving(server, classifier)


def test_a_bad_request_does_not_fail_its_litserve_batch(litserve_server, classifier):
    good = images.distinct_images(7)
    bodies = [{"image_bytes": d.hex()} for d in good]
    bodies.insert(3, {"image_bytes": images.truncated_jpeg().hex()})
    responses = asyncio.run(burst(litserve_server.url, bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 200, 422, 200, 200, 200, 200]
    scores = [r.json()["score"] for i, r in enumerate(responses) if i != 3]
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in good]
    assert scores == pytest.approx(expected, abs=1e-4)
