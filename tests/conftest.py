"""Shared fixtures: real servers on free loopback ports, offline weights, results in a tmp dir."""

import os
import tempfile

# Before helpers is imported: nothing may wait on the network or write into the repo.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RESULTS_DIR"] = tempfile.mkdtemp(prefix="serving-resnet50-tests-")

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


@pytest.fixture(params=["fastapi", "litserve"])
def server(request):
    """Each test that takes `server` runs against both demo servers."""
    return request.getfixturevalue(f"{request.param}_server")
