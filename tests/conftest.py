"""Shared fixtures: real servers on free loopback ports, offline weights, results in a tmp dir."""

import os
import tempfile

# Before helpers is imported: nothing may wait on the network or write into the repo.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RESULTS_DIR"] = tempfile.mkdtemp(prefix="serving-resnet50-tests-")
# Converted models (ONNX, OpenVINO, torch.compile's cache) outlive one test session.
os.environ.setdefault(
    "MODEL_CACHE_DIR", os.path.join(tempfile.gettempdir(), "serving-resnet50-model-cache")
)

import pytest  # noqa: E402

import helpers  # noqa: E402
from demo_servers.model import load_classifier  # noqa: E402


@pytest.fixture(scope="session")
def classifier():
    """The model in-process, on the CPU, as the servers load it."""
    return load_classifier("auto", "cpu")


BODY_TIMEOUT_S = 2.0  # short, so the slow-body tests finish quickly


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
