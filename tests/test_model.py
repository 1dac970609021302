"""The shared model module: the offline fallback, decoding and preprocessing."""

import json
import logging

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
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
    # offline, with the tests' empty Hugging Face cache (conftest): nothing to fall back on
    with pytest.raises(LocalEntryNotFoundError):
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


@pytest.mark.parametrize(
    "error",
    [OSError, SyntaxError, ValueError, RuntimeError, NotImplementedError, MemoryError, KeyError],
)
@pytest.mark.parametrize("where", ["open", "load"])
def test_every_decoder_failure_is_an_image_error(monkeypatch, error, where):
    """PIL raises many exception types on bad files; each must become a 422, never a 500."""

    def fail(*args, **kwargs):
        raise error("the decoder gave up")

    data = images.good_images()["png_rgb"]
    target = (preprocessing.Image, "open") if where == "open" else (Image.Image, "load")
    monkeypatch.setattr(*target, fail)
    with pytest.raises(preprocessing.ImageError, match="could not be decoded"):
        preprocessing.decode_image(data)


def test_limits_are_checked_from_the_header_before_decoding(monkeypatch):
    refused = (images.png_bomb(8_000, 8_000), images.strip(40_000, 1))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a refused image"))
    for data in refused:
        with pytest.raises(preprocessing.ImageError, match="over the limit"):
            preprocessing.decode_image(data)


def test_exif_orientation_is_applied():
    data, upright = images.sideways_jpeg()
    decoded = preprocessing.decode_image(data)
    assert decoded.size == upright.size


def test_preprocessing_gives_the_pixels_of_transformers_resnet_processor(classifier):
    """Our resize-and-crop (PIL, in the HTTP process) + normalise (torch, in the worker)
    equals transformers' image processor for microsoft/resnet-50's configuration."""
    from transformers import ConvNextImageProcessorPil

    settings = preprocessing.Preprocessing()
    reference = ConvNextImageProcessorPil(
        size={"shortest_edge": settings.size},
        crop_pct=settings.crop_pct,
        resample=settings.resample,
        image_mean=list(settings.mean),
        image_std=list(settings.std),
    )
    cat = images.cat()
    for image in (
        cat,
        cat.resize((1920, 1440)),
        cat.crop((100, 0, 300, 480)),
        cat.resize((50, 900)),
    ):
        ours = classifier.preprocess([image])
        theirs = reference(images=[image], return_tensors="pt")["pixel_values"]
        assert (ours - theirs).abs().max() < 1e-5


def test_preprocessing_reads_the_weights_configuration(tmp_path):
    config = {
        "size": 200,
        "crop_pct": 0.8,
        "resample": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.25] * 3,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    settings = preprocessing.Preprocessing.for_weights(str(tmp_path))
    assert (settings.size, settings.crop_pct, settings.resample) == (200, 0.8, 2)
    assert settings.crop(images.cat()).size == (200, 200)
    assert preprocessing.Preprocessing.for_weights("random") == preprocessing.Preprocessing()


def test_the_offline_banner_is_whole_and_says_how_to_get_real_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    banner = weights.offline_banner(weights.MODEL_ID, OSError("a" * 500))
    assert all(len(line) <= 80 for line in banner.splitlines())
    text = " ".join(banner.split())
    assert "HF_HUB_OFFLINE is set" in text and "a" * 10 not in text
    assert "--weights DIR" in text and "load_classifier(weights=DIR)" in text
    assert "Serving" not in text
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = weights.offline_banner(weights.MODEL_ID, OSError("Network unreachable. Retry later."))
    assert "(OSError: Network unreachable)" in " ".join(online.split())
