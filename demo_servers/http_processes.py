"""Several HTTP processes on one port, each with its own share of the connections.

uvicorn's `--workers` and LitServe's `num_api_servers` hand one listening socket to every
process. A client that opens its keep-alive connections at once (every load generator,
every proxy) then lands them all in whichever process woke first: asyncio accepts up to
the whole backlog per wake-up. Measured on 2 cores: two FastAPI processes, 16
connections, one process did all the work and served half the rate of a single process
with both cores. `SharedPort` gives each process a listening socket of its own on the same
port (`SO_REUSEPORT`, Linux), and the kernel spreads new connections among them by a hash
of the client's address and port (elsewhere the option exists but may not spread them).
`AllListening` keeps `/health` at 503 until every process listens, and `ServedBy` says in
every answer which process served it (`x-served-by`), so a client can check the spread.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket

from starlette.responses import PlainTextResponse

__all__ = ["SERVED_BY", "AllListening", "ServedBy", "SharedPort"]

SERVED_BY = "x-served-by"
_SERVED_BY_NAME = SERVED_BY.encode()  # as ASGI headers carry it


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _listened_on(host: str, port: int) -> bool:
    """Whether some process already accepts connections at host:port."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=1.0):
        return True
    return False


class SharedPort:
    """The listening sockets of a server's `processes` HTTP processes: iterated in a process
    (as uvicorn iterates the `sockets` it is given), it yields that process's own socket,
    bound on first use, and counts it as listening. Made in the parent, it holds the port
    (bound, not listening) and refuses one that another server already listens on: sockets
    with `SO_REUSEPORT` would otherwise join that server's and share its connections. Sent
    to a spawned process it travels as its address and its shared count."""

    def __init__(self, host: str, port: int, processes: int, *, listening=None):
        self.host, self.port, self.processes = host, port, processes
        self._own: dict[int, socket.socket] = {}  # pid -> its listening socket
        if listening is None:  # in the parent
            if _listened_on(host, port):
                raise OSError(
                    f"port {port} is already served by another process: stop it or pick "
                    "another port (--port)"
                )
            self._own[os.getpid()] = _bind(host, port)  # the parent's, never listened on
            listening = multiprocessing.get_context("spawn").Value("i", 0)
        self.listening = listening  # processes that have started listening, in shared memory

    def __iter__(self):
        global _JOINED
        pid = os.getpid()
        if pid not in self._own:
            self._own[pid] = _bind(self.host, self.port)
            with self.listening.get_lock():
                self.listening.value += 1
            _JOINED = self
        return iter([self._own[pid]])

    def __reduce__(self):
        return (_in_child, (self.host, self.port, self.processes, self.listening))

    def waiting_for(self) -> str | None:
        """Why the server is not ready yet, while some of its processes are not listening."""
        if (listening := self.listening.value) < self.processes:
            return f"{listening} of {self.processes} HTTP processes listening"
        return None


def _in_child(host: str, port: int, processes: int, listening) -> SharedPort:
    return SharedPort(host, port, processes, listening=listening)


_JOINED: SharedPort | None = None  # the shared port this process listens on, if any


class AllListening:
    """ASGI middleware: `GET /health` answers 503 until every HTTP process of the server
    listens, so that a client that starts right after cannot find one process taking all
    its connections while the others still load their models."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if _JOINED and scope["type"] == "http" and scope["path"] == "/health":
            if reason := _JOINED.waiting_for():
                return await PlainTextResponse(reason, 503)(scope, receive, send)
        await self.app(scope, receive, send)


class ServedBy:
    """ASGI middleware: an `x-served-by: pid=N` header naming the process that answered,
    unless the app named it already (Ray Serve's replicas add their node)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_pid(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == _SERVED_BY_NAME for name, _ in headers):
                    pid = f"pid={os.getpid()}".encode()  # now: a forked process has its own
                    message = {**message, "headers": [*headers, (_SERVED_BY_NAME, pid)]}
            await send(message)

        await self.app(scope, receive, send_with_pid)
