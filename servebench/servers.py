"""Demo servers as background processes, each in its own process group.

`start_server` launches one on a free port and waits until `/health` says 200; `stop`
stops the whole group (LitServe's workers, Ray's processes). The first server started
registers the exit handlers that stop every server when this process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from servebench import paths

__all__ = [
    "SERVER_MODULES",
    "Server",
    "ServerError",
    "batch_sizes_from_log",
    "free_port",
    "group_members",
    "inference_workers",
    "option_flags",
    "port_in_use",
    "wait_until_computing",
    "start_server",
    "stop_all_servers",
]

SERVER_MODULES = {
    "fastapi": "demo_servers.fastapi_server",
    "fastapi_executor": "demo_servers.fastapi_executor_server",
    "fastapi_batching": "demo_servers.fastapi_batching_server",
    "litserve": "demo_servers.litserve_server",
    "ray": "demo_servers.ray_server",
    "null": "demo_servers.null_server",
}


_running: dict[int, Server] = {}  # pid -> server, for cleanup at exit


# Servers started here queue every request, as LitServe and FastAPI do by default: the
# benchmarks of notebooks 02-08 measure how long a whole burst takes to be served. Pass
# max_queue_wait=... (and max_queue=...) to turn admission control on (notebook 06).
UNBOUNDED = {"max_queue_wait": 0}


class ServerError(RuntimeError):
    """A demo server failed to start or to stop; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def option_flags(options: dict) -> list[str]:
    """{"max_batch_size": 8, "log_batch_sizes": True} -> --max-batch-size 8 --log-batch-sizes."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:  # 0 is a value (`0 == False`)
            flags += [flag, str(value)]
    return flags


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; [] once it is gone."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():  # macOS: trust killpg
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state, ppid, pgrp. Zombies wait for a reaper we do not control.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass(eq=False)
class Server:
    """A demo server running in the background, in its own process group.

    Use `start_server()` to make one. `stop()` (or leaving a `with` block, or the
    interpreter exiting) stops the whole group: LitServe's workers included.
    """

    name: str
    options: dict
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    label: str = ""  # what tables and plots call it (default: the name)
    cold_start_s: float | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self):
        self.label = self.label or self.name

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        # admission control only where asked for; a module of your own gets only its options
        options = {**UNBOUNDED, **self.options} if self.name in SERVER_MODULES else self.options
        return [
            sys.executable, "-m", SERVER_MODULES.get(self.name, self.name),
            "--host", self.host, "--port", str(self.port), "--parent-pid", str(os.getpid()),
            *option_flags(options),
        ]  # fmt: skip

    def start(self, timeout: float = 300.0) -> Server:
        """Launch, then wait until /health answers 200. Records `cold_start_s`."""
        if port_in_use(self.port, self.host):
            raise ServerError(
                f"port {self.port} is already in use: stop what holds it or pick another"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _stop_servers_at_exit()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MODEL_CACHE_DIR": str(paths.model_cache_dir()),
        }
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=tempfile.gettempdir(),
            )  # fmt: skip
        _running[self.process.pid] = self
        try:
            self._wait_until_healthy(timeout)
        except BaseException:  # a failed start, or Ctrl+C while waiting
            self.stop()
            raise
        self.cold_start_s = time.perf_counter() - started
        return self

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"{self.name} exited with code {self.process.returncode} while starting"
                        f"\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        raise ServerError(f"{self.name} was not healthy after {timeout:.0f} s\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT to the group, `grace` seconds to shut down, then SIGKILL. Idempotent."""
        if self.process is None:
            return
        pgid = self.process.pid  # leader of its own session, so pid == pgid
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            # Reap the leader first: an unreaped zombie keeps the group looking alive.
            while (self.process.poll() is None or group_members(pgid)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            if self.process.poll() is not None and not group_members(pgid):
                break
        else:
            raise ServerError(f"could not stop process group {pgid}: {group_members(pgid)}")
        _running.pop(pgid, None)
        self.process = None

    def restart(self, **options) -> Server:
        """Stop, then start again on the same port with `options` changed."""
        self.stop()
        self.options = {**self.options, **options}
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def info(self) -> dict:
        return httpx.get(f"{self.url}/info", timeout=10).json()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_server(
    name: str,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    label: str | None = None,
    log_dir: Path | str | None = None,
    timeout: float = 300.0,
    replace: bool = True,
    quiet: bool = False,
    start: bool = True,
    **options,
) -> Server:
    """Start a demo server ("fastapi", "litserve", "null", or a module) and wait until ready.

    `options` become command-line flags (`max_batch_size=16` -> `--max-batch-size 16`);
    `host` is the address to bind and to reach it at (127.0.0.1, localhost, ::1, ...);
    `label` names it in results, tables and plots (default: `name`). With `replace`, a
    server of the same label that this process started is stopped first, so re-running
    a notebook cell never leaves the old one behind. With `start=False` the server is
    only prepared: `server.start()` (or a `sweep`) starts it.
    """
    label = label or name
    if replace:
        for old in [s for s in _running.values() if s.label == label]:
            old.stop()
    port = port or free_port(host)
    log_dir = Path(log_dir) if log_dir else paths.RESULTS_DIR / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = log_dir / f"{name}-{port}-{stamp}.log"
    server = Server(name, options, port, log_path, host, label)
    if not start:  # e.g. for a `sweep`, which starts each server on its turn
        return server
    server.start(timeout)
    if not quiet:
        print(
            f"{label} ready at {server.url} in {server.cold_start_s:.1f} s (log: {server.log_path})"
        )
    return server


def inference_workers(server: Server) -> list[int]:
    """The pids of a LitServe server's inference workers (spawned processes; Linux only)."""
    pids = []
    for pid in group_members(server.process.pid):
        with contextlib.suppress(OSError):
            if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


def batch_sizes_from_log(server: Server) -> list[int]:
    """The batch sizes a LitServe server formed (started with log_batch_sizes=True)."""
    lines = server.log_path.read_text().splitlines()
    return [int(line.rsplit("batch_size=", 1)[1]) for line in lines if "batch_size=" in line]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until_computing(pid: int, timeout: float = 60.0) -> None:
    """Return once `pid` uses more than half a core over 50 ms: e.g. a LitServe worker
    running a forward pass (an idle one polls its queue with a few percent of a core)."""
    deadline = time.monotonic() + timeout
    while True:
        cpu, wall = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(0.05)
        if (cpu_seconds(pid) - cpu) / (time.monotonic() - wall) > 0.5:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not start computing within {timeout:g} s")


def stop_all_servers() -> None:
    """Stop every server this process started (also runs at interpreter exit)."""
    for server in list(_running.values()):
        server.stop()


def _stop_servers_on_sigterm(signum, frame) -> None:
    stop_all_servers()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@functools.cache
def _stop_servers_at_exit() -> None:
    """Once, when the first server starts: stop every server when this process exits.

    A kernel or test runner that is terminated runs no atexit handlers by default, hence
    the SIGTERM handler. (A kernel killed with SIGKILL runs nothing: the servers' parent
    watchdog covers that.)"""
    atexit.register(stop_all_servers)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, _stop_servers_on_sigterm)
