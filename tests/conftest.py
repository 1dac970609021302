"""Shared fixtures: real servers on free loopback ports, offline weights, results in a tmp dir."""

import inspect
import os
import re
import tempfile

# Before helpers is imported: nothing may wait on the network or write into the repo.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RESULTS_DIR"] = tempfile.mkdtemp(prefix="serving-resnet50-tests-")
# An empty Hugging Face cache of the tests' own: a machine that holds the real
# microsoft/resnet-50 (after an online `make lab`) tests the same offline fallback.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="serving-resnet50-hf-")
# Converted models (ONNX, OpenVINO, torch.compile's cache) outlive one test session.
os.environ.setdefault(
    "MODEL_CACHE_DIR", os.path.join(tempfile.gettempdir(), "serving-resnet50-model-cache")
)

import pytest  # noqa: E402

import helpers  # noqa: E402
from demo_servers.model import load_classifier  # noqa: E402
from tests.support import BODY_TIMEOUT_S  # noqa: E402


@pytest.fixture(scope="session")
def classifier():
    """The model in-process, on the CPU, as the servers load it."""
    return load_classifier("auto", "cpu")


@pytest.fixture(scope="session")
def fastapi_server():
    with helpers.start_server("fastapi", replace=False, body_timeout=BODY_TIMEOUT_S) as server:
        yield server


@pytest.fixture(scope="session")
def litserve_server():
    with helpers.start_server(
        "litserve",
        replace=False,
        max_batch_size=8,
        batch_timeout=0.2,
        log_batch_sizes=True,
        body_timeout=BODY_TIMEOUT_S,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def fastapi_executor_server():
    with helpers.start_server(
        "fastapi_executor", replace=False, body_timeout=BODY_TIMEOUT_S
    ) as server:
        yield server


@pytest.fixture(scope="session")
def fastapi_batching_server():
    with helpers.start_server(
        "fastapi_batching",
        replace=False,
        max_batch_size=8,
        batch_timeout=0.2,
        body_timeout=BODY_TIMEOUT_S,
    ) as server:
        yield server


SERVERS = ["fastapi", "fastapi_executor", "fastapi_batching", "litserve"]


@pytest.fixture(params=SERVERS)
def server(request):
    """Each test that takes `server` runs against every demo server."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(params=["fastapi_batching", "litserve"])
def batching_server(request):
    """The servers that batch: the hand-made one and LitServe."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def null_server():
    """No model: answers at once (the load generators' yardstick). Its own label, so that
    a test starting "null" with `replace` does not stop it under later tests."""
    with helpers.start_server("null", label="shared null", quiet=True, replace=False) as server:
        yield server


@pytest.fixture(scope="session")
def serial_server():
    """Serves one request at a time, 50 ms each (like a blocking endpoint)."""
    with helpers.start_server(
        "null", label="shared serial", quiet=True, replace=False, block=0.05
    ) as server:
        yield server


@pytest.fixture
def patch(monkeypatch):
    """`monkeypatch.setattr`, only on the module that defines the name: a patch of a name
    re-exported elsewhere (e.g. `helpers.RESULTS_DIR`) would silently miss the code that
    reads the defining module's, so it fails instead."""

    def setattr(module, name: str, value) -> None:
        current = getattr(module, name)
        if inspect.isfunction(current) or inspect.isclass(current):
            defined_here = current.__module__ == module.__name__
        else:  # a value: assigned at the top level of the module's own source
            defined_here = re.search(rf"^{name}\b.*=", inspect.getsource(module), re.MULTILINE)
        if not defined_here:
            pytest.fail(f"{module.__name__}.{name} is defined elsewhere: patch it there")
        monkeypatch.setattr(module, name, value)

    return setattr


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where torch sees a CUDA device, and are skipped, saying so,
    elsewhere (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch sees none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
