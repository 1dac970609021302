"""Both demo servers, for real: correct answers, batching, and every bad input refused cleanly."""

import asyncio
import base64
import json

import httpx
import pytest
from PIL import Image

import helpers
from demo_servers.limits import MAX_BODY_BYTES
from demo_servers.preprocessing import decode_image
from servebench import load
from tests import images
from tests.support import (
    TIMEOUT,
    assert_a_bad_request_does_not_fail_its_batch,
    assert_still_serving,
    burst,
    post_image,
)


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
    # decoded as the servers decode: a large JPEG at a reduced scale (draft)
    expected = classifier.predict([decode_image(data, classifier.preprocessing.short_side)])[0]
    assert set(answer) == {"predicted_label", "predicted_class", "score"}
    assert answer["predicted_label"] == expected["predicted_label"]
    assert answer["predicted_class"] == expected["predicted_class"]
    assert answer["score"] == pytest.approx(expected["score"], abs=1e-4)


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
    assert_a_bad_request_does_not_fail_its_batch(litserve_server, classifier)


def send(server, wire: str, data: bytes) -> httpx.Response:
    """Post one image in one of the wire formats."""
    url = f"{server.url}/predict"
    if wire == "hex":
        return httpx.post(url, json={"image_bytes": data.hex()}, timeout=TIMEOUT)
    if wire == "base64":
        return httpx.post(
            url, json={"image_base64": base64.b64encode(data).decode()}, timeout=TIMEOUT
        )
    if wire == "raw":
        return httpx.post(url, content=data, headers={"content-type": "image/png"}, timeout=TIMEOUT)
    return httpx.post(url, files={"image": ("cat.png", data)}, timeout=TIMEOUT)


@pytest.mark.parametrize("wire", helpers.WIRE_FORMATS)
def test_every_wire_format_gives_the_same_answer(server, classifier, wire):
    data = images.good_images()["png_rgb"]
    response = send(server, wire, data)
    assert response.status_code == 200, response.text
    expected = classifier.predict([decode_image(data)])[0]
    assert response.json() == {**expected, "score": pytest.approx(expected["score"], abs=1e-4)}


@pytest.mark.parametrize("wire", helpers.WIRE_FORMATS)
def test_every_wire_format_refuses_bad_images_the_same_way(server, wire):
    response = send(server, wire, images.truncated_jpeg())
    assert response.status_code == 422
    assert "could not be decoded" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("wire", ["raw", "multipart"])
def test_every_wire_format_has_the_same_size_limit(server, classifier, wire):
    response = send(server, wire, b"\xff" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert_still_serving(server, classifier)


def test_wrong_content_type_and_bad_encoding_say_so(server):
    def reply(body: bytes, content_type: str | None) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return httpx.post(f"{server.url}/predict", content=body, headers=headers)

    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        response = reply(b"image_bytes=00", content_type)
        assert response.status_code == 415, response.text
        message = response.json()["detail"][0]["msg"]
        assert "Content-Type" in message and "application/json" in message, message
    latin1 = reply('{"image_bytes": "caf\xe9"}'.encode("latin-1"), "application/json")
    assert latin1.status_code == 422
    assert "not UTF-8" in latin1.json()["detail"][0]["msg"]
    broken = reply(b'{"image_bytes": ', "application/json")
    assert "not valid JSON" in broken.json()["detail"][0]["msg"]
    for body in (b'{"image_base64": "@@@"}', b'{"image_bytes": "00", "image_base64": "AA=="}'):
        assert reply(body, "application/json").status_code == 422


def test_a_sideways_phone_photo_is_classified_upright(server, classifier):
    data, upright = images.sideways_jpeg()
    response = post_image(server, data)
    assert response.status_code == 200
    expected = classifier.predict([upright])[0]["score"]
    sideways = classifier.predict([upright.transpose(Image.Transpose.ROTATE_90)])[0]
    assert abs(expected - sideways["score"]) > 1e-3  # the check means something
    assert response.json()["score"] == pytest.approx(expected, abs=2e-3)  # JPEG re-encoding


def test_server_timing_reports_every_stage(server):
    """The stages happen one after another inside `total`, which is inside the client's wait."""
    rows = asyncio.run(helpers.burst(f"{server.url}/predict", 4, helpers.request_body()))
    for row in rows:
        assert row["status"] == 200
        stages = [row[column] for column in load.STAGE_COLUMNS if row[column] is not None]
        assert all(ms >= 0 for ms in stages)
        assert row["forward_ms"] > 0 and row["decode_ms"] > 0 and row["batch_size"] >= 1
        assert sum(stages) <= row["server_ms"] + 0.01  # the header rounds to 0.001 ms
        assert row["server_ms"] <= row["latency_s"] * 1000
    if server.name == "litserve":
        assert all(row["queue_ms"] is not None for row in rows)


def test_clients_that_ignore_server_timing_see_the_original_answer(server):
    response = post_image(server, images.good_images()["jpeg_rgb"])
    assert set(response.json()) == {"predicted_label", "predicted_class", "score"}
    assert "forward;dur=" in response.headers["server-timing"]


@pytest.mark.parametrize("host", ["localhost", "::1"])
@pytest.mark.parametrize("name", ["fastapi", "litserve"])
def test_any_loopback_address_can_be_bound(name, host):
    with helpers.start_server(name, host=host, quiet=True, replace=False) as server:
        assert server.host == host
        response = httpx.post(
            f"{server.url}/predict", json=helpers.image_payload(), timeout=TIMEOUT
        )
        assert response.status_code == 200
