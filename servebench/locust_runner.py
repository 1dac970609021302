"""Locust as a load mode: headless, with worker processes, its rows in the asyncio client's
columns (see locustfile.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from servebench.bodies import Body
from servebench.load import server_timings
from servebench.paths import LOCUSTFILE

__all__ = ["locust_loop", "run_locust"]


def run_locust(
    url: str, users: int, body: Body, duration_s: float, processes: int = 1
) -> tuple[list[dict], float]:
    """Locust, headless: `users` closed-loop users for `duration_s` seconds, spread over
    `processes` worker processes (see locustfile.py). Returns one row per request, in the
    asyncio client's columns, and the CPU seconds Locust's processes used."""
    url = url.removesuffix("/predict")
    folder = Path(tempfile.mkdtemp(prefix="locust-"))
    (folder / "body").write_bytes(body.content)
    env = {**os.environ, "LOCUST_BODY": str(folder / "body"), "LOCUST_ROWS_DIR": str(folder)}
    env["LOCUST_CONTENT_TYPE"] = body.content_type
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{duration_s}s",
        "--processes", str(processes), "--stop-timeout", "30", "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    before = _children_cpu_s()
    with open(folder / "locust.log", "wb") as log:
        locust = subprocess.Popen(
            command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            locust.wait(timeout=duration_s + 120)
        finally:  # a timeout, or Ctrl+C: leave no Locust process behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(locust.pid, signal.SIGKILL)
            locust.wait()
    cpu_s = _children_cpu_s() - before
    requests = [row for csv in sorted(folder.glob("[0-9]*.csv")) for row in _locust_rows(csv)]
    log_tail = (folder / "locust.log").read_text(errors="replace")[-2000:]
    shutil.rmtree(folder, ignore_errors=True)
    if not requests:
        raise RuntimeError(f"Locust sent no request; the end of its log:\n{log_tail}")
    t0 = min(row["start_s"] for row in requests)
    for row in requests:
        for column in ("scheduled_s", "start_s", "end_s"):
            row[column] -= t0
    return requests, cpu_s


def _locust_rows(path: Path) -> list[dict]:
    rows = []
    for record in pd.read_csv(path, keep_default_na=False).to_dict("records"):
        start, latency = record["start_epoch_s"], record["latency_ms"] / 1000
        status = int(record["status"]) if record["status"] != "" else None
        rows.append(
            {
                "scheduled_s": start, "start_s": start, "status": status,
                "error": record["error"] or None, "predicted_label": None,
                "predicted_class": None, "score": None,
                **server_timings(record["server_timing"] or None),
                "end_s": start + latency, "latency_s": latency, "send_lag_s": 0.0,
            }
        )  # fmt: skip
    return rows


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def locust_loop(
    url: str, users: int, body: Body, duration_s: float, processes: int = 1
) -> list[dict]:
    """Load mode "locust": `run_locust` as a closed loop of `users`, for `measure`/`sweep`."""
    requests, _ = await asyncio.to_thread(run_locust, url, users, body, duration_s, processes)
    return requests
