"""The served path of notebook 09: uint8 crops normalised on the device, JPEGs decoded on the
device (`--preprocess gpu`), draft decoding, several HTTP processes, padded batches, and the
hardware-sized profile. What only a GPU can run is marked `gpu`; the same code on the CPU is
tested here."""

import io
import os
import socket

import httpx
import pandas as pd
import pytest
import torch
from PIL import Image

import helpers
from demo_servers import device_preprocessing, runtimes
from demo_servers.http_processes import SharedPort
from demo_servers.model import normalise, tensor
from demo_servers.preprocessing import Preprocessing, decode_image, is_device_jpeg, open_image
from demo_servers.schema import ImageInput
from servebench import climb, profiles
from servebench.gpu import GpuSampler
from servebench.notebook import run_sync
from tests import images
from tests.support import TIMEOUT, assert_a_bad_request_does_not_fail_its_batch


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def probabilities(classifier, inputs: list[ImageInput]) -> torch.Tensor:
    batch, errors = classifier.batch(inputs)
    assert errors == [None] * len(inputs)
    return classifier.probabilities(batch)


def test_a_queued_input_formats_in_a_few_characters():
    """LitServe logs every queued request's repr: 150 KB of pixels must not be formatted."""
    crop = ImageInput(bytes(224 * 224 * 3))
    assert repr(crop) == "ImageInput(pixels=150528 bytes)"
    assert repr(ImageInput(b"", jpeg=b"\xff\xd8" * 10)) == "ImageInput(jpeg=20 bytes)"


def test_crops_are_normalised_as_float_from_uint8_pixels(classifier):
    crops = [classifier.preprocessing.pixels(images.cat())] * 2
    batch = tensor(crops, classifier.preprocessing)
    raw = torch.frombuffer(bytearray(crops[0]), dtype=torch.uint8).view(224, 224, 3)
    mean = torch.tensor(classifier.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(classifier.preprocessing.std).view(3, 1, 1)
    expected = (raw.permute(2, 0, 1).float() / 255 - mean) / std
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 224, 224)
    assert torch.allclose(batch[1], expected, atol=1e-5)


def test_half_precision_input_is_normalised_in_half(classifier):
    pixels = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    half = normalise(pixels, classifier.preprocessing, torch.float16)
    full = normalise(pixels, classifier.preprocessing, torch.float32)
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), full, atol=1e-2)


def test_device_decoding_gives_the_pil_answers_within_the_stated_tolerance(classifier):
    cat = images.cat()
    datas = [jpeg(cat), jpeg(cat.resize((1200, 900))), jpeg(cat.convert("L"))]
    on_cpu = [ImageInput(classifier.preprocessing.pixels(decode_image(d))) for d in datas]
    on_device = [ImageInput(b"", jpeg=d) for d in datas]
    difference = (probabilities(classifier, on_cpu) - probabilities(classifier, on_device)).abs()
    assert float(difference.max()) <= device_preprocessing.TOLERANCE


def test_a_batch_may_mix_crops_and_jpegs_and_keeps_their_order(classifier):
    datas = images.distinct_images(3)
    crops = [ImageInput(classifier.preprocessing.pixels(decode_image(d))) for d in datas]
    mixed = [crops[0], ImageInput(b"", jpeg=datas[1]), crops[2]]
    expected = [a["score"] for a in classifier.predict_inputs(crops)]
    scores = [a["score"] for a in classifier.predict_inputs(mixed)]
    assert scores == pytest.approx(expected, abs=device_preprocessing.TOLERANCE)


def test_a_jpeg_found_broken_on_the_device_fails_alone(classifier):
    good = ImageInput(b"", jpeg=images.good_images()["jpeg_rgb"])
    broken = ImageInput(b"", jpeg=images.truncated_jpeg())
    answers = classifier.predict_inputs([good, broken, good])
    assert isinstance(answers[1], device_preprocessing.ImageError)
    assert "could not be decoded" in str(answers[1])
    assert answers[0]["score"] == pytest.approx(answers[2]["score"], abs=1e-6)


def test_only_rgb_and_grayscale_jpegs_are_left_for_the_device():
    formats = images.encoded_formats()
    assert is_device_jpeg(open_image(jpeg(images.cat())))
    assert is_device_jpeg(open_image(jpeg(images.cat().convert("L"))))
    assert not is_device_jpeg(open_image(jpeg(images.cat().convert("CMYK"))))
    assert not any(is_device_jpeg(open_image(d)) for f, d in formats.items() if f != "JPEG")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_with_nearly_the_same_answer(classifier):
    photo = jpeg(images.cat().resize((2400, 1800)))
    draft = decode_image(photo, classifier.preprocessing.short_side)
    whole = decode_image(photo)
    assert whole.size == (2400, 1800)
    assert min(draft.size) >= classifier.preprocessing.short_side and draft.size < whole.size
    p = classifier.preprocess
    difference = classifier.probabilities(p([draft])) - classifier.probabilities(p([whole]))
    assert float(difference.abs().max()) <= device_preprocessing.TOLERANCE
    small = jpeg(images.cat())  # 640 x 480: under twice 256 on its short side
    assert decode_image(small, classifier.preprocessing.short_side).size == (640, 480)


def test_device_resize_matches_pil_crop_in_shape_and_pixels():
    preprocessing = Preprocessing()
    cat = images.cat()
    pixels = torch.frombuffer(bytearray(cat.tobytes()), dtype=torch.uint8)
    image = pixels.view(cat.height, cat.width, 3).permute(2, 0, 1)
    crop = device_preprocessing.resize_crop(image, preprocessing)
    pil = torch.frombuffer(bytearray(preprocessing.pixels(cat)), dtype=torch.uint8)
    pil = pil.view(224, 224, 3).permute(2, 0, 1).float()
    assert crop.shape == (3, 224, 224)
    assert float((crop - pil).abs().mean()) < 1.0  # levels of 0-255, on average


def test_padding_to_buckets_keeps_each_answer(classifier):
    seen = []

    def forward(x):
        seen.append(len(x))
        return classifier.forward(x)

    padded = runtimes.bucketed(forward, buckets=(1, 2, 4, 8))
    batch = classifier.preprocess([images.cat().rotate(angle) for angle in (0, 30, 60)])
    assert torch.allclose(padded(batch), classifier.forward(batch), atol=1e-4)
    assert seen == [4]
    padded(batch[:1].expand(9, -1, -1, -1))  # larger than the last bucket: not padded
    assert seen[-1] == 9


def test_cuda_graphs_are_refused_without_a_gpu_with_the_alternatives(classifier):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(runtimes.RuntimeRefused, match="needs a CUDA GPU"):
        runtimes.graphs(classifier.model, torch.device("cpu"), runtimes.CACHE_DIR, 8)


@pytest.mark.gpu
def test_nvjpeg_decodes_a_batch_on_the_gpu_like_pil():
    assert device_preprocessing.DECODE_JPEG is not None, "install torchvision (the gpu extra)"
    cuda = torch.device("cuda")
    data = images.good_images()["jpeg_rgb"]
    crops, errors = device_preprocessing.crops([data, data], Preprocessing(), cuda)
    assert errors == [None, None] and crops.device.type == "cuda"
    pil = torch.frombuffer(bytearray(Preprocessing().pixels(decode_image(data))), dtype=torch.uint8)
    pil = pil.view(224, 224, 3).permute(2, 0, 1).float()
    assert float((crops[0].cpu() - pil).abs().mean()) < 2.0


@pytest.mark.gpu
def test_cuda_graphs_give_the_eager_answers():
    from demo_servers.model import load_classifier

    graphs = load_classifier("random", "cuda", runtime="graphs", max_batch_size=8)
    eager = load_classifier("random", "cuda")
    batch = eager.preprocess([images.cat()] * 3)
    difference = graphs.probabilities(batch) - eager.probabilities(batch)
    assert float(difference.abs().max()) <= runtimes.TOLERANCE


@pytest.fixture(params=["fastapi_batching", "litserve"])
def device_decoding_server(request):
    """Used by one test: stopped right after it (an idle LitServe polls its queues, taking
    about a quarter of a core from the tests after it)."""
    with helpers.start_server(
        request.param, replace=False, quiet=True, preprocess="gpu", max_batch_size=8,
        batch_timeout=0.2,
    ) as server:  # fmt: skip
        yield server


def test_a_server_decoding_on_the_device_answers_and_refuses_like_the_others(
    device_decoding_server, classifier
):
    info = device_decoding_server.info()
    assert (
        info["model" if device_decoding_server.name == "litserve" else "server"]["preprocess"]
        == "gpu"
    )
    assert_a_bad_request_does_not_fail_its_batch(
        device_decoding_server, classifier, tolerance=device_preprocessing.TOLERANCE
    )
    bomb = httpx.post(
        f"{device_decoding_server.url}/predict", content=images.png_bomb(),
        headers={"content-type": "image/png"}, timeout=TIMEOUT,
    )  # fmt: skip
    assert bomb.status_code == 422 and "too many pixels" in bomb.text


def answering_processes(server, connections: int = 32) -> set[str]:
    """The processes (`x-served-by`) that answered `connections` requests sent at once, each
    on a connection of its own, as a load generator opens them."""
    body = helpers.request_body(wire="raw")
    rows = run_sync(helpers.burst(f"{server.url}/predict", connections, body, timeout=120.0))
    assert [row["status"] for row in rows] == [200] * connections
    return {row["served_by"] for row in rows}


@pytest.mark.parametrize("name", ["fastapi_batching", "null"])
def test_several_http_processes_share_one_port_and_its_connections(name):
    with helpers.start_server(name, replace=False, quiet=True, workers=2) as server:
        assert len(helpers.inference_workers(server)) == 2  # uvicorn's spawned workers
        # one shared socket let the first process to wake accept all 32 (measured: all)
        assert len(answering_processes(server)) == 2
        if name != "null":
            assert server.info()["server"]["http_processes"] == 2


def test_litserve_http_processes_are_an_option_reported_and_share_the_connections():
    with helpers.start_server("litserve", replace=False, quiet=True, api_servers=2) as server:
        assert server.info()["model"]["http_processes"] == 2
        assert len(answering_processes(server)) == 2


def test_a_shared_port_refuses_one_another_server_listens_on():
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} is already served by another process"):
            SharedPort("127.0.0.1", port, processes=2)


def test_two_inference_threads_keep_two_batches_in_flight_with_the_same_answers(classifier):
    with helpers.start_server(
        "fastapi_batching", replace=False, quiet=True, inference_threads=2, max_batch_size=4,
        batch_timeout=0.05,
    ) as server:  # fmt: skip
        assert server.info()["server"]["inference_threads"] == 2
        assert_a_bad_request_does_not_fail_its_batch(server, classifier)


def test_the_model_ceiling_reads_each_point_over_at_least_a_tenth_of_a_second(classifier):
    from servebench.ceilings import MIN_READING_S

    ceiling = helpers.model_ceiling([1], repeats=2, classifier=classifier)
    assert (ceiling["seconds"] >= MIN_READING_S).all()


def test_without_a_gpu_the_sampler_reads_nothing_and_runs_get_no_gpu_columns(null_server):
    with GpuSampler(every_s=0.01) as sampler:
        pass
    if sampler.available:
        pytest.skip("this machine has an NVIDIA GPU")
    assert sampler.summary() == {}
    frame = run_sync(helpers.run_once(null_server, "closed", 2, requests=4, warmup=0, save=False))
    assert len(frame) == 4 and "gpu_busy_pct" not in frame


def test_the_sampler_summarises_what_it_read():
    sampler = GpuSampler()
    sampler.samples = [(10.0, 1.0), (30.0, 2.0)]
    assert sampler.summary() == {
        "gpu_busy_pct": 20.0, "gpu_busy_max_pct": 30.0, "gpu_memory_gib": 2.0
    }  # fmt: skip


def ceiling_frame(device: str, rates: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"batch_size": b, "images_per_s": r, "device": device} for b, r in rates.items()]
    )


def test_sizes_on_a_cpu_stay_the_originals():
    sizes = climb.sized_for(ceiling_frame("cpu", {1: 15, 8: 20}), profiles.PROFILES["full"], 2)
    assert (sizes["max_batch_size"], sizes["batch_timeout"]) == (8, 0.05)
    assert sizes["processes"] == 2


def test_sizes_on_a_gpu_come_from_its_ceiling():
    rates = {1: 180, 8: 1700, 32: 4000, 64: 4800, 128: 5200, 256: 5300}
    sizes = climb.sized_for(ceiling_frame("cuda:0", rates), profiles.PROFILES["full"], 16)
    assert sizes["max_batch_size"] == 64  # the first to reach 90% of the best (5,300)
    assert sizes["batch_timeout"] == round(64 / 4800, 3)  # about one pass
    assert sizes["processes"] == 4
    assert sizes["concurrency"] == 2 * 64 * 4
    assert sizes["requests"] >= 5 * 5300


def test_each_rung_changes_one_thing():
    sizes = {"max_batch_size": 64, "batch_timeout": 0.004, "processes": 4}
    rungs = climb.ladder(sizes)
    for before, after in zip(rungs, rungs[1:], strict=False):
        changed = {k for k in after.litserve if after.litserve[k] != before.litserve.get(k)}
        assert changed, after.name
        assert len(changed - {"max_batch_size", "batch_timeout", "api_servers"}) <= 1, changed
    assert not rungs[0].needs_gpu and all(r.needs_gpu for r in rungs[1:])
    processes = next(r for r in rungs if r.name == "processes")
    assert processes.litserve["workers_per_device"] == processes.fastapi["workers"] == 4
    assert [r.name for r in climb.cpu_ladder(sizes)] == ["original", "processes"]


@pytest.mark.parametrize("gpu", [True, False])
def test_the_full_profile_takes_gpu_sizes_on_a_gpu_only(patch, monkeypatch, gpu):
    monkeypatch.setenv("BENCHMARK_PROFILE", "full")
    patch(profiles, "has_cuda_gpu", lambda: gpu)
    sizes = profiles.profile()
    if gpu:
        assert sizes["device"] == "cuda" and max(sizes["ceiling_batch_sizes"]) == 256
        assert max(sizes["grid_timeouts"]) <= 0.01 and sizes["client_processes"] > 1
    else:
        assert sizes == {"name": "full", "device": "cpu", **profiles.PROFILES["full"]}


def test_the_litserve_verdict_follows_the_ranges():
    summary = pd.DataFrame(
        {
            "rung": ["a"] * 4 + ["b"] * 4 + ["c"] * 2,
            "server": ["litserve", "litserve", "fastapi_batching", "fastapi_batching"] * 2
            + ["litserve", "fastapi_batching"],
            "throughput_rps": [10, 11, 5, 6, 10, 11, 10.5, 12, 3, 4],
        }
    )
    verdict = climb.litserve_verdict(summary, "cpu")
    assert "faster than the hand-batching FastAPI at: a (1.91x)" in verdict
    assert "slower at: no rung" in verdict
    assert "b (0.93x)" in verdict and "c (one run each, 0.75x)" in verdict


def test_the_rung_table_shows_how_the_http_processes_shared_the_answers():
    summary = pd.DataFrame(
        {
            "rung": ["processes"] * 2, "server": ["litserve", "fastapi_batching"],
            "throughput_rps": [10.0, 9.0], "p50_ms": 100.0, "p99_ms": 200.0,
            "busiest_process_share": [0.5, 1.0],
        }
    )  # fmt: skip
    table = climb.rung_table(summary)
    assert list(table["busiest process %"]) == [50.0, 100.0]


def test_a_load_in_several_processes_is_one_run_on_one_clock(null_server):
    url, body = f"{null_server.url}/predict", helpers.request_body(wire="raw")
    rows = run_sync(helpers.closed_loop(url, 4, body, requests=40, processes=2))
    assert len(rows) == 40 and {r["status"] for r in rows} == {200}
    starts = [r["start_s"] for r in rows]
    assert min(starts) >= 0 and max(starts) < 60  # one time axis, from the agreed start
    assert [r["scheduled_s"] for r in rows] == sorted(r["scheduled_s"] for r in rows)
    opened = run_sync(helpers.open_loop(url, 40, body, requests=40, processes=2))
    assert len(opened) == 40 and {r["status"] for r in opened} == {200}
    assert 0.5 < max(r["scheduled_s"] for r in opened) < 2.0  # 40 requests at 40/s
    assert len(run_sync(helpers.burst(url, 5, body, processes=2))) == 5


def test_more_processes_than_users_leaves_none_without_a_share(null_server):
    url, body = f"{null_server.url}/predict", helpers.request_body(wire="raw")
    rows, cpu_s = run_sync(helpers.run_in_processes("closed", 3, url, 1, body, requests=6))
    assert len(rows) == 6 and cpu_s > 0


def test_the_client_ceiling_in_several_processes_says_how_many():
    client = run_sync(helpers.client_ceiling(concurrency=8, requests=200, processes=2))
    assert (client["processes"], client["server_processes"], client["errors"]) == (2, 2, 0)
    assert client["requests"] == 200 and client["requests_per_s"] > 0
    assert client["server_cpu_ms_per_request"] > 0  # the null server's group, measured


def test_client_scaling_is_unreachable_when_the_shared_cores_rule_it_out():
    one = {"processes": 1, "requests_per_s": 100.0}
    costly = {"processes": 2, "requests_per_s": 110.0, "client_cpu_ms_per_request": 9.0}
    bound = len(os.sched_getaffinity(0)) * 1000 / 19.0 / 100.0
    scaling = helpers.client_scaling(one, {**costly, "server_cpu_ms_per_request": 10.0})
    assert scaling.bound == pytest.approx(bound)
    assert scaling.verdict == ("UNREACHABLE" if bound < 1.5 else "MISSED")
    cheap = {**costly, "requests_per_s": 200.0, "client_cpu_ms_per_request": 0.1}
    assert helpers.client_scaling(one, {**cheap, "server_cpu_ms_per_request": 0.1}).verdict == "MET"
