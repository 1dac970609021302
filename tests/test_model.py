"""The shared model module: the offline fallback, decoding and preprocessing."""

import logging

import pytest
import torch
from PIL import Image

from demo_servers import hardware, model, preprocessing, weights
from tests import images


def test_offline_fallback_is_resnet50_with_the_same_weights_every_time(classifier):
    assert classifier.weights == "random"
    assert sum(p.numel() for p in classifier.model.parameters()) == 25_557_032  # ResNet-50
    again = model.random_resnet50()
    expected = again.state_dict()
    for name, tensor in classifier.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert classifier.labels[281] == "tabby" and len(classifier.labels) == 1000


def test_offline_fallback_is_announced_loudly_once(caplog):
    weights.resolve_weights.cache_clear()
    with caplog.at_level(logging.WARNING, logger="demo_servers"):
        assert weights.resolve_weights("auto") == weights.RANDOM
        assert weights.resolve_weights("auto") == weights.RANDOM
    warnings = [r for r in caplog.records if "OFFLINE FALLBACK" in r.message]
    assert len(warnings) == 1 and "RANDOM weights" in warnings[0].message


def test_pretrained_without_network_fails_instead_of_falling_back():
    with pytest.raises(Exception):  # noqa: B017 - whatever the hub raises offline
        weights.resolve_weights("pretrained")


def test_scores_depend_on_the_image(classifier):
    answers = classifier.predict([images.cat(), images.cat().rotate(90)])
    assert 0 < answers[0]["score"] < 1
    assert abs(answers[0]["score"] - answers[1]["score"]) > 1e-4


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    image = images.cat().convert(mode)
    assert preprocessing.to_rgb(image).mode == "RGB"


def test_transparent_pixels_become_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert preprocessing.to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)


def test_preprocessing_matches_resnet50(classifier):
    pixels = classifier.preprocess([images.cat(), images.cat().resize((50, 900))])
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == torch.float32


def test_cpu_threads_are_shared_between_workers(monkeypatch):
    monkeypatch.setattr(hardware, "physical_cores", lambda: 8)
    assert [hardware.cpu_threads_per_worker(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
