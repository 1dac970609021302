"""Ray Serve (a local multi-node cluster, on loopback) and Locust, for real."""

import asyncio
import collections
import os
import signal
import subprocess
import sys
import textwrap
import time

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
    assert_gone,
    burst,
    post_image,
    processes_in_group,
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


def ray_processes_of(pgid: int) -> list[str]:
    return [p for p in processes_in_group(pgid) if "ray" in p or "gcs_server" in p]


def test_stopping_ray_leaves_no_process_and_no_port():
    server = helpers.start_server("ray", quiet=True, replace=False)
    pgid = server.process.pid
    members = processes_in_group(pgid)
    assert any("gcs_server" in p for p in members) and any("raylet" in p for p in members)
    server.stop()
    assert_gone(server, pgid)


def start_in_a_child(extra: str) -> subprocess.Popen:
    """A Python process (a notebook kernel, say) that starts a Ray server, then `extra`."""
    script = f"""
        import helpers, time
        server = helpers.start_server("ray", quiet=True)
        print(server.process.pid, server.port, flush=True)
        {extra}
    """
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )


def wait_until_gone(pgid: int, port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while (processes_in_group(pgid) or helpers.port_in_use(port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in_group(pgid) == [] and not helpers.port_in_use(port)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_ray_dies_with_a_killed_or_interrupted_parent(how):
    """SIGKILL: a kernel killed outright (the watchdog stops Ray). SIGINT: Ctrl+C in a cell
    (the helpers' exit handlers stop it)."""
    parent = start_in_a_child("time.sleep(600)")
    pgid, port = map(int, parent.stdout.readline().split())
    assert ray_processes_of(pgid)
    os.kill(parent.pid, how)
    parent.wait(timeout=60)
    wait_until_gone(pgid, port)


def test_an_interrupted_ray_start_leaves_nothing():
    """Ctrl+C while start_server waits for Ray to be ready."""
    script = textwrap.dedent(
        """
        import helpers
        helpers.start_server("ray", quiet=True)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    leader = None
    while leader is None and time.monotonic() < deadline:
        out = subprocess.run(
            ["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True
        )
        for line in out.stdout.splitlines():
            pid, ppid, args = line.split(None, 2)
            if int(ppid) == parent.pid and "demo_servers.ray_server" in args:
                leader = int(pid)
        time.sleep(0.2)
    assert leader, "the Ray server never started"
    time.sleep(5)  # Ray is starting its nodes
    os.kill(parent.pid, signal.SIGINT)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 60
    while processes_in_group(leader) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in_group(leader) == []
