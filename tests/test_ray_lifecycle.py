"""Ray's lifecycle: no cluster process and no port outlives a killed, interrupted or
stopped parent. A module of its own, so that its clusters never start beside test_ray's:
Ray gives a starting raylet a fixed 30 s to register, which two clusters on a busy
2-core machine missed (CI of 2026-12-05)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import helpers
from tests.support import processes_in_group

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# Ctrl+C reaches a kernel as KeyboardInterrupt. A child inherits an ignored SIGINT (a
# test run started in the background by a shell without job control has one), and Python
# then installs no handler: the children restore Python's own first.
RESTORE_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"


def start_in_a_child(extra: str) -> subprocess.Popen:
    """A Python process (a notebook kernel, say) that starts a Ray server, then `extra`."""
    script = f"""
        {RESTORE_SIGINT}
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
    (the helpers' exit handlers call `stop()`, as a notebook does when it is done). Either
    way no process of the cluster and no port is left."""
    parent = start_in_a_child("time.sleep(600)")
    pgid, port = map(int, parent.stdout.readline().split())
    members = processes_in_group(pgid)
    assert any("gcs_server" in p for p in members) and any("raylet" in p for p in members)
    os.kill(parent.pid, how)
    parent.wait(timeout=60)
    wait_until_gone(pgid, port)


def test_an_interrupted_ray_start_leaves_nothing():
    """Ctrl+C while start_server waits for Ray to be ready."""
    script = textwrap.dedent(
        f"""
        {RESTORE_SIGINT}
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
