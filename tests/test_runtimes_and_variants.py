"""The runtimes (one option for every server and the ceiling) and the two FastAPI variants."""

import asyncio
import statistics

import httpx
import pytest
import torch

import helpers
from demo_servers import runtimes
from demo_servers.model import load_classifier
from demo_servers.preprocessing import decode_image
from servebench import load, servers
from tests import images
from tests.support import (
    TIMEOUT,
    assert_a_bad_request_does_not_fail_its_batch,
    burst,
    post_image,
)

EXACT_RUNTIMES = ["channels_last", "compile", "onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def test_images():
    datas = [*images.good_images().values(), *images.distinct_images(6)]
    return [decode_image(d) for d in datas]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", EXACT_RUNTIMES)
def test_every_runtime_gives_the_answers_of_eager(classifier, test_images, runtime):
    other = load_classifier("auto", "cpu", runtime=runtime)
    batch = classifier.preprocess(test_images)
    expected = classifier.probabilities(batch)
    for size in (1, len(test_images)):  # a lone request, a full batch (each size recompiles)
        assert_same_answers(other.probabilities(batch[:size]), expected[:size])
    assert other.info()["runtime"] == runtime


def assert_same_answers(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Every probability within the tolerance, and the same top-1 wherever the reference's
    top-1 leads by more than the tolerance (random weights give near-ties, which may swap)."""
    assert (got - expected).abs().max() < runtimes.TOLERANCE
    top2 = expected.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > runtimes.TOLERANCE
    assert torch.equal(got.argmax(-1)[clear], expected.argmax(-1)[clear])


def test_reduced_precision_keeps_the_answers_or_is_refused(classifier, test_images):
    try:
        half = load_classifier("auto", "cpu", runtime="half")
    except runtimes.RuntimeRefused as refused:
        assert "changes the answers" in str(refused) and "Use another runtime" in str(refused)
        return
    # accepted: it must give eager's answers on other images than those it was checked on
    assert half.info()["runtime"] == "half"
    batch = classifier.preprocess(test_images)
    assert_same_answers(half.probabilities(batch).float(), classifier.probabilities(batch))


def test_a_refused_runtime_says_why():
    reference = torch.tensor([[0.6, 0.4], [0.2, 0.8]])
    runtimes.verify("exact", reference.clone(), reference)
    with pytest.raises(runtimes.RuntimeRefused, match="1 of the 2 check images"):
        runtimes.verify("flipped", torch.tensor([[0.4, 0.6], [0.2, 0.8]]), reference)
    # a near-tie (top-1 ahead by 0.0004) that swaps within the tolerance is rounding
    tie = torch.tensor([[0.5002, 0.4998], [0.2, 0.8]])
    runtimes.verify("rounding", torch.tensor([[0.4998, 0.5002], [0.2, 0.8]]), tie)
    with pytest.raises(runtimes.RuntimeRefused, match="off by up to 2.0e-03"):
        runtimes.verify("drifting", reference + torch.tensor([[0.002, -0.002], [0, 0]]), reference)
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_classifier("auto", "cpu", runtime="tensorrt")


@pytest.mark.slow
def test_converted_models_are_cached_on_disk(tmp_path):
    first = load_classifier("auto", "cpu", runtime="onnxruntime", cache_dir=tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert first.conversion_s > 0 and (folder / "model.onnx").is_file()
    again = load_classifier("auto", "cpu", runtime="onnxruntime", cache_dir=tmp_path)
    assert again.conversion_s == 0
    assert sorted(tmp_path.iterdir()) == [folder]  # nothing half-written left behind


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fastapi_batching", "litserve"])
def test_a_server_on_another_runtime_answers_like_eager(classifier, name):
    datas = images.distinct_images(4)
    with helpers.start_server(name, quiet=True, replace=False, runtime="openvino") as server:
        assert server.info()["model"]["runtime"] == "openvino"
        scores = [post_image(server, d).json()["score"] for d in datas]
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in datas]
    assert scores == pytest.approx(expected, abs=runtimes.TOLERANCE)


@pytest.mark.slow
def test_a_server_starts_with_a_runtime_only_if_it_keeps_the_answers():
    try:
        load_classifier("auto", "cpu", runtime="half")
    except runtimes.RuntimeRefused:
        with pytest.raises(servers.ServerError, match="changes the answers"):
            helpers.start_server("fastapi", quiet=True, replace=False, runtime="half")
        return
    with helpers.start_server("fastapi", quiet=True, replace=False, runtime="half") as server:
        assert server.info()["model"]["runtime"] == "half"


def test_hand_made_batches_keep_each_answer_with_its_request(fastapi_batching_server, classifier):
    datas = images.distinct_images(16)
    expected = [classifier.predict([decode_image(d)])[0]["score"] for d in datas]
    url = fastapi_batching_server.url
    responses = asyncio.run(burst(url, [{"image_bytes": d.hex()} for d in datas]))
    assert [r.status_code for r in responses] == [200] * len(datas)
    assert [r.json()["score"] for r in responses] == pytest.approx(expected, abs=1e-4)
    sizes = [load.server_timings(r.headers["server-timing"])["batch_size"] for r in responses]
    assert max(sizes) > 1 and max(sizes) <= 8


def test_a_bad_request_never_joins_a_hand_made_batch(fastapi_batching_server, classifier):
    assert_a_bad_request_does_not_fail_its_batch(fastapi_batching_server, classifier)


def test_a_lone_request_waits_for_the_batch_timeout(fastapi_batching_server):
    """The fixture's batch_timeout is 0.2 s: alone, a request waits that long for company."""
    response = post_image(fastapi_batching_server, images.good_images()["jpeg_rgb"])
    timings = load.server_timings(response.headers["server-timing"])
    assert timings["batch_size"] == 1 and 180 <= timings["queue_ms"] < 1000


@pytest.mark.parametrize("name", ["fastapi_executor", "fastapi_batching"])
def test_off_the_loop_health_answers_during_a_burst(request, name):
    """The baseline cannot answer /health while it computes; these servers can."""
    server = request.getfixturevalue(f"{name}_server")
    url = f"{server.url}/predict"
    body = helpers.request_body()
    asyncio.run(helpers.burst(url, 2, body))  # warm-up
    rows, probes = asyncio.run(helpers.probe(f"{server.url}/health", helpers.burst(url, 8, body)))
    burst_s = max(row["end_s"] for row in rows)
    assert len(probes) >= 3 and statistics.median(probes) < 0.25 * burst_s, (probes, burst_s)


def test_variants_report_what_they_are(fastapi_executor_server, fastapi_batching_server):
    assert fastapi_executor_server.info()["server"] == {
        "name": "fastapi_executor",
        "batching": False,
        "preprocess": "cpu",
        "http_processes": 1,
    }
    info = fastapi_batching_server.info()["server"]
    assert info["batching"] and info["max_batch_size"] == 8 and info["batch_timeout"] == 0.2
    health = httpx.get(f"{fastapi_batching_server.url}/health", timeout=TIMEOUT)
    assert health.status_code == 200
