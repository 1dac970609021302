"""Starting and stopping servers never leaves a process or a busy port behind."""

import asyncio
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
from servebench import paths, servers
from tests.support import assert_gone, processes_in_group

ROOT = paths.ROOT


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
    with helpers.start_server(
        "litserve", quiet=True, replace=False, workers_per_device=2
    ) as server:
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
        with pytest.raises(servers.ServerError, match="in use"):
            helpers.start_server("null", port=server.port, replace=False)


def test_a_server_that_dies_at_start_shows_its_log():
    with pytest.raises(servers.ServerError, match="exited with code") as error:
        helpers.start_server("fastapi", quiet=True, replace=False, weights="/no/such/directory")
    assert "does not exist" in str(error.value)


def test_a_server_that_ignores_sigint_is_killed(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    server = helpers.start_server("tests.stubborn_server", quiet=True)
    pgid = server.process.pid
    start = time.perf_counter()
    server.stop(grace=1.0)
    assert time.perf_counter() - start < 9  # killed after its 1 s grace, not the default 10 s
    assert_gone(server, pgid)


SCRIPT = """
    import helpers, time
    server = helpers.start_server("null", quiet=True)
    print(server.process.pid, server.port, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
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


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_helpers_starts_and_registers_nothing():
    """The exit and SIGTERM handlers that stop servers come with the first server."""
    out = run_python(
        """
        import atexit, signal
        ours = []
        register = atexit.register
        atexit.register = lambda f: ours.append(f.__module__ == "servebench.servers") or register(f)
        import helpers
        print(sum(ours), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, end=" ")
        helpers.start_server("null", quiet=True).stop()
        print(sum(ours), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
    )
    assert out == "0 True 1 False"


def test_the_null_server_and_litservers_http_side_import_no_model_stack():
    out = run_python(
        """
        import sys
        import demo_servers.null_server, demo_servers.litserve_server
        print(sorted(m for m in ("torch", "transformers", "numpy") if m in sys.modules))
        """
    )
    assert out == "[]"


def litserve_workers(server) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,args="], capture_output=True, text=True)
    rows = [line.split(None, 2) for line in out.stdout.splitlines()]
    return [int(r[0]) for r in rows if int(r[1]) == server.process.pid and "spawn_main" in r[2]]


async def first_status_other_than_200(client, url: str, timeout: float = 30.0) -> int:
    """GET `url` until it answers something other than 200 (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while (status := (await client.get(url)).status_code) == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return status


@pytest.mark.slow
def test_a_killed_litserve_worker_is_replaced_and_health_tells_the_truth():
    body = helpers.request_body()
    with helpers.start_server(
        "litserve", quiet=True, replace=False, max_batch_size=4, batch_timeout=0.05
    ) as server:
        (worker,) = litserve_workers(server)

        async def kill_during_a_burst():
            async with helpers.make_client(12) as client:
                t0 = time.perf_counter()
                burst = [
                    asyncio.create_task(
                        helpers.timed_request(client, f"{server.url}/predict", body, t0, 0)
                    )
                    for _ in range(12)
                ]
                await servers.wait_until_computing(worker)  # a batch is in the worker
                os.kill(worker, signal.SIGKILL)
                health = await first_status_other_than_200(client, f"{server.url}/health")
                return await asyncio.gather(*burst), health

        rows, health_after_kill = asyncio.run(kill_during_a_burst())
        assert health_after_kill == 503
        statuses = {row["status"] for row in rows}
        assert statuses <= {200, 503}, statuses
        assert 503 in statuses  # the requests the dead worker held are answered, not left hanging
        orphaned = [row for row in rows if row["status"] == 503]
        # answered when the worker died, not after LitServe's 120 s queue timeout
        assert all("retry" in row["error"] and row["latency_s"] < 60 for row in orphaned)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/health").status_code != 200:
            assert time.monotonic() < deadline, "no new worker"
            time.sleep(0.2)
        (new_worker,) = litserve_workers(server)
        assert new_worker != worker
        answer = httpx.post(
            f"{server.url}/predict",
            content=body.content,
            headers={"content-type": body.content_type},
            timeout=60,
        )
        assert answer.status_code == 200
        pgid = server.process.pid
    assert_gone(server, pgid)


def test_connections_over_the_limit_get_a_503():
    """uvicorn counts open connections: past the limit, newcomers get 503 at once."""
    body = helpers.request_body({"image_bytes": "00"})
    with helpers.start_server(
        "null", quiet=True, replace=False, delay=6.0, max_connections=3
    ) as server:
        url = f"{server.url}/predict"

        async def two_then_four():
            first = asyncio.create_task(helpers.burst(url, 2, body))
            await asyncio.sleep(2.0)  # both connected (each is held 6 s), even on a busy machine
            second = await helpers.burst(url, 4, body)  # while the first two are in flight
            return await first, second

        admitted, refused = asyncio.run(two_then_four())
        assert [row["status"] for row in admitted] == [200, 200]
        assert [row["status"] for row in refused] == [503] * 4
        assert all(row["latency_s"] < 3 for row in refused)  # not queued behind the 6 s ones
        assert httpx.get(f"{server.url}/health").status_code == 200
