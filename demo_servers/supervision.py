"""Keeping a LitServe server honest when one of its inference workers dies.

With `restart_workers=True`, LitServe 0.2.19 notices a dead worker (its monitor looks
every 2 s) and starts a new one. Two gaps remain, both closed here:

- `/health` says 200 until the monitor notices. `WorkerPids` is a small table in shared
  memory in which each worker writes its pid at setup, so the LitAPI's `health()` (run
  in the HTTP process) can answer 503 as soon as a worker is gone, and until its
  replacement has loaded the model.
- Requests the dead worker had taken are never answered: LitServe's monitor marks them
  failed in the main process, but they wait in the HTTP process, a forked copy.
  `FailOrphanedRequests` is a LitServe callback that runs a small task in each HTTP
  process and answers those requests 503 at once, so clients can retry.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path

from fastapi import HTTPException
from litserve.callbacks import Callback
from litserve.utils import LitAPIStatus

ORPHANED = (
    "the inference worker running this request died; the server is starting a new one "
    "(GET /health says 200 again when it is ready): retry"
)


def alive(pid: int) -> bool:
    """Whether `pid` runs; a dead process its parent has not reaped yet (a zombie) does not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): trust kill
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class WorkerPids:
    """One slot per inference worker, in shared memory: 0 until the worker has set up."""

    def __init__(self, workers: int):
        self._pids = multiprocessing.get_context("spawn").RawArray("i", workers)

    def register(self) -> None:
        """Called by a worker at the end of its setup (LitServe sets LITSERVE_WORKER_ID)."""
        self._pids[int(os.environ["LITSERVE_WORKER_ID"])] = os.getpid()

    def all_alive(self) -> bool:
        return all(alive(pid) for pid in self._pids)

    def dead(self) -> set[int]:
        """Worker ids whose process has died and not been replaced yet."""
        return {worker for worker, pid in enumerate(self._pids) if pid and not alive(pid)}


class FailOrphanedRequests(Callback):
    """Answers 503 to the requests of a dead worker instead of letting them hang."""

    def __init__(self, every_s: float = 0.25):
        self.pids: WorkerPids | None = None  # set once the server knows how many workers
        self.every_s = every_s
        self._watching_pid = None  # the HTTP process whose watch task is running

    def on_request(self, *args, litserver=None, **kwargs) -> None:
        if self._watching_pid != os.getpid():  # first request in this HTTP process
            self._watching_pid = os.getpid()
            self._task = asyncio.get_running_loop().create_task(self._watch(litserver))

    async def _watch(self, litserver) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            dead = self.pids.dead()
            if not dead:
                continue
            for item in list(litserver.response_buffer.values()):
                if item.worker_id in dead and not item.event.is_set():
                    item.response = (HTTPException(503, ORPHANED), LitAPIStatus.ERROR)
                    item.event.set()
