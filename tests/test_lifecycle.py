"""Starting and stopping servers never leaves a process or a busy port behind."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import httpx
import pytest

import helpers

ROOT = helpers.ROOT


def processes_in_group(pgid: int) -> list[str]:
    """Live members of a process group, as `ps` sees them (independent of helpers)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True)
    rows = [line.split(None, 3) for line in out.stdout.splitlines()]
    return [r[3] for r in rows if int(r[1]) == pgid and not r[2].startswith("Z")]


def assert_gone(server, pgid: int) -> None:
    assert processes_in_group(pgid) == []
    assert not helpers.port_in_use(server.port)
    assert not server.running


def test_start_and_stop_many_times():
    for _ in range(4):
        server = helpers.start_server("null", quiet=True)
        pgid = server.process.pid
        assert httpx.get(f"{server.url}/health").status_code == 200
        server.stop()
        assert_gone(server, pgid)
        server.stop()  # stopping twice is harmless


def test_exception_inside_with_block_stops_the_server():
    with pytest.raises(RuntimeError, match="boom"):
        with helpers.start_server("null", quiet=True) as server:
            pgid = server.process.pid
            raise RuntimeError("boom")
    assert_gone(server, pgid)


def test_litserve_workers_are_stopped_with_the_group(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the servers' working directory
    with helpers.start_server("litserve", quiet=True, workers_per_device=2) as server:
        pgid = server.process.pid
        members = processes_in_group(pgid)
        assert len(members) >= 3, members  # main, 2 inference workers, the HTTP process(es)
        assert server.cold_start_s > 0
        assert server.info()["model"]["cpu_threads_per_worker"] >= 1
    assert_gone(server, pgid)
    assert list(tmp_path.iterdir()) == []  # no client.py, nothing else written


def test_restart_with_new_options_is_one_call():
    server = helpers.start_server("null", quiet=True)
    first_pgid, port = server.process.pid, server.port
    server.restart(delay=0.3)
    assert server.port == port and server.options == {"delay": 0.3}
    assert processes_in_group(first_pgid) == []
    start = time.perf_counter()
    assert httpx.post(f"{server.url}/predict", content=b"{}").status_code == 200
    assert time.perf_counter() - start >= 0.3
    server.stop()
    assert_gone(server, first_pgid)


def test_starting_the_same_server_again_replaces_the_old_one():
    old = helpers.start_server("null", quiet=True)
    old_pgid = old.process.pid
    new = helpers.start_server("null", quiet=True)
    assert processes_in_group(old_pgid) == [] and not old.running
    new.stop()


def test_a_port_in_use_is_a_clear_error():
    with helpers.start_server("null", quiet=True) as server:
        with pytest.raises(helpers.ServerError, match="in use"):
            helpers.start_server("null", port=server.port, replace=False)


def test_a_server_that_dies_at_start_shows_its_log():
    with pytest.raises(helpers.ServerError, match="exited with code") as error:
        helpers.start_server("fastapi", quiet=True, weights="/no/such/directory")
    assert "does not exist" in str(error.value)


def test_a_server_that_ignores_sigint_is_killed(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    server = helpers.start_server("tests.stubborn_server", quiet=True)
    pgid = server.process.pid
    start = time.perf_counter()
    server.stop(grace=1.0)
    assert time.perf_counter() - start < 5
    assert_gone(server, pgid)


SCRIPT = """
    import helpers, time
    server = helpers.start_server("null", quiet=True)
    print(server.process.pid, server.port, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_servers_die_with_their_parent(how):
    """A kernel killed outright (watchdog) or terminated (SIGTERM handler) leaves nothing."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], stdout=subprocess.PIPE, text=True
    )
    pgid, port = map(int, parent.stdout.readline().split())
    assert processes_in_group(pgid)
    os.kill(parent.pid, how)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while processes_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in_group(pgid) == []
    assert not helpers.port_in_use(port)
