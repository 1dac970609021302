"""Ray Serve on a local multi-node cluster, on loopback, for real."""

import asyncio
import collections

import httpx
import pytest

import helpers
from demo_servers.preprocessing import decode_image
from servebench import load
from tests import images
from tests.support import (
    BODY_TIMEOUT_S,
    TIMEOUT,
    assert_a_bad_request_does_not_fail_its_batch,
    burst,
    post_image,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray cluster takes half a minute


@pytest.fixture(scope="module")
def ray_server():
    """Two replicas on two worker nodes of a local Ray cluster."""
    with helpers.start_server(
        "ray",
        replace=False,
        replicas=2,
        nodes=2,
        max_batch_size=8,
        batch_timeout=0.2,
        body_timeout=BODY_TIMEOUT_S,
    ) as server:
        yield server


def test_ray_answers_like_the_model_in_process(ray_server, classifier):
    datas = images.distinct_images(4)
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in datas]
    assert [post_image(ray_server, d).json()["score"] for d in datas] == pytest.approx(
        expected, abs=1e-4
    )


def test_ray_batches_and_keeps_each_answer_with_its_request(ray_server, classifier):
    datas = images.distinct_images(12)
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in datas]
    responses = asyncio.run(burst(ray_server.url, [{"image_bytes": d.hex()} for d in datas]))
    assert [r.json()["score"] for r in responses] == pytest.approx(expected, abs=1e-4)
    sizes = [load.server_timings(r.headers["server-timing"])["batch_size"] for r in responses]
    assert max(sizes) > 1


def test_ray_replicas_serve_from_more_than_one_node(ray_server):
    info = ray_server.info()["server"]
    assert info["replicas"] == {"RUNNING": 2} and info["nodes"] == 2
    body = helpers.request_body(wire="raw")
    responses = [
        httpx.post(
            f"{ray_server.url}/predict",
            content=body.content,
            headers={"content-type": body.content_type},
            timeout=TIMEOUT,
        )
        for _ in range(12)
    ]
    nodes = collections.Counter(r.headers["x-served-by"].split()[0] for r in responses)
    assert len(nodes) == 2, nodes


@pytest.mark.parametrize(
    "data, message",
    [
        (images.truncated_jpeg(), "could not be decoded"),
        (images.strip(5000, 1), "aspect ratio"),
        (images.other_format("TGA"), "not an image"),
        (images.png_bomb(), "over the limit"),
    ],
    ids=["truncated", "strip", "tga", "bomb"],
)
def test_ray_refuses_bad_input_with_a_422(ray_server, classifier, data, message):
    response = post_image(ray_server, data)
    assert response.status_code == 422 and message in response.json()["detail"][0]["msg"]
    ok = post_image(ray_server, images.good_images()["jpeg_rgb"])
    assert ok.status_code == 200


def test_ray_refuses_wrong_bodies(ray_server):
    response = httpx.post(f"{ray_server.url}/predict", content=b"x", timeout=TIMEOUT)
    assert response.status_code == 415
    big = b"\xff" * (16 * 2**20 + 1)
    response = httpx.post(
        f"{ray_server.url}/predict",
        content=big,
        headers={"content-type": "image/jpeg"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413


def test_a_bad_request_does_not_fail_its_ray_batch(ray_server, classifier):
    assert_a_bad_request_does_not_fail_its_batch(ray_server, classifier)


def test_serve_tools_can_build_the_app_from_its_import_path():
    """`serve run demo_servers.ray_deployment:app key=value` and a RayService's `args:`
    hand the builder strings; it takes exactly one argument, which Serve validates."""
    import inspect

    from ray import serve

    from demo_servers import ray_deployment

    assert len(inspect.signature(ray_deployment.app).parameters) == 1
    settings = ray_deployment.Settings.model_validate(
        {"runtime": "openvino", "max_batch_size": "16", "batch_timeout": "0.01"}
    )
    assert (settings.max_batch_size, settings.batch_timeout) == (16, 0.01)
    assert isinstance(ray_deployment.app(settings), serve.Application)
