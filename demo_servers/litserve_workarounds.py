"""Workarounds for LitServe 0.2.19, kept apart from the LitAPI that the notebooks teach.

Each is a small fix of a LitServe behaviour that gets in a tutorial's way; drop one when
LitServe fixes it upstream.
"""

from contextlib import asynccontextmanager

import litserve as ls
import uvicorn

from demo_servers.http_processes import SharedPort

LITSERVE_HOSTS = ("0.0.0.0", "127.0.0.1", "::")  # the only hosts LitServe 0.2.19's run() takes


class ResNetServer(ls.LitServer):
    """LitServer with three small fixes for LitServe 0.2.19.

    - Any bind address: `run()` accepts only 0.0.0.0, 127.0.0.1 and :: and exits on
      others (localhost, ::1, one interface's address); we bind the socket uvicorn uses.
    - HTTP processes that share the load: with `num_api_servers` > 1 its processes share
      one listening socket, and one of them takes a burst of new connections; each gets
      its own socket on the port instead (`SharedPort`).
    - A quick stop: on shutdown its HTTP process waits up to 1 s in a blocking read of the
      response queue; closing the queues first lets it exit at once.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        litserve_lifespan = self.app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app):
            async with litserve_lifespan(app) as state:
                yield state
                self._transport.close()  # wakes the response reader, which then sees "closed"

        self.app.router.lifespan_context = lifespan

    def run(self, host: str = "127.0.0.1", **kwargs) -> None:
        self._host = host
        super().run(host=host if host in LITSERVE_HOSTS else "127.0.0.1", **kwargs)

    def _start_server(self, port, num_uvicorn_servers, log_level, sockets, *args, **kwargs):
        if self._host not in LITSERVE_HOSTS or num_uvicorn_servers > 1:
            for sock in sockets:  # replace the placeholder socket
                sock.close()
            if num_uvicorn_servers > 1:  # a socket per HTTP process (see http_processes.py)
                sockets = SharedPort(self._host, port, num_uvicorn_servers)
            else:
                sockets = [uvicorn.Config(self.app, host=self._host, port=port).bind_socket()]
        return super()._start_server(port, num_uvicorn_servers, log_level, sockets, *args, **kwargs)
