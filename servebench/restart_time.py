"""How long the tweak loop takes: restarting LitServe with new batch settings until it is ready.

    python -m servebench.restart_time [--rounds 5] [--baseline REV]

Measures, side by side in one run on this machine, the servers of this checkout and
those of an earlier revision (default: 2de0d59, before the HTTP process stopped
importing the model stack): `server.restart()` (stop + start until /health says 200),
alternating the two every round so drift of the machine affects both alike. Then it
shows where start-up goes: the imports of the process that runs the HTTP side, the
imports a worker needs, building the model. Writes results/benchmarks/restart_time.csv.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from demo_servers.batching import ORIGINAL_BATCHING
from servebench import paths
from servebench.results import cpu_model, environment
from servebench.servers import Server, start_server


def checkout(revision: str) -> Path:
    """The demo_servers package of `revision`, unpacked into a temporary directory."""
    folder = Path(tempfile.mkdtemp(prefix=f"servers-{revision}-"))
    archive = subprocess.run(
        ["git", "archive", revision, "demo_servers"], cwd=paths.ROOT, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def seconds(statement: str, pythonpath: str) -> float:
    """Wall time of `statement` in a fresh interpreter (median of three)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env,
                cwd=tempfile.gettempdir(), check=True,
            ).stdout
        )
        for _ in range(3)
    ]  # fmt: skip
    return statistics.median(runs)


def timed_restarts(server: Server, pythonpath: str) -> dict:
    """One restart of `server` with the code on `pythonpath`: stop, start, total (s)."""
    os.environ["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    server.stop()
    stopped = time.perf_counter()
    server.start()
    ready = time.perf_counter()
    return {"stop_s": stopped - started, "start_s": ready - stopped, "restart_s": ready - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default="2de0d59")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trees = {f"before ({args.baseline})": str(checkout(args.baseline)), "now": str(paths.ROOT)}
    servers = {}
    for label, tree in trees.items():
        os.environ["PYTHONPATH"] = tree
        servers[label] = start_server("litserve", quiet=True, replace=False, **ORIGINAL_BATCHING)
    rows = []
    try:
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
            for label in order:
                timing = timed_restarts(servers[label], trees[label])
                rows.append({"code": label, "round": round_, **timing})
                print(f"round {round_}: {label:22} restart {timing['restart_s']:.2f} s")
    finally:
        for server in servers.values():
            server.stop()
    frame = pd.DataFrame(rows)
    folder = paths.RESULTS_DIR / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    frame.assign(**environment()).to_csv(folder / "restart_time.csv", index=False)
    table = frame.groupby("code", sort=False)[["stop_s", "start_s", "restart_s"]].median()
    print(f"\nMedian of {args.rounds} restarts each, {cpu_model()}:\n{table.round(2)}")
    before, now = table["restart_s"].iloc[0], table["restart_s"].iloc[1]
    print(f"restart-to-ready now / before: {now / before:.2f}")
    print("\nWhere start-up goes (fresh interpreter, median of 3):")
    for label, tree in trees.items():
        main_side = seconds("import demo_servers.litserve_server", tree)
        print(f"  {label:22} main and HTTP processes import the server module: {main_side:.2f} s")
    now = str(paths.ROOT)
    worker = seconds("import demo_servers.model", now)
    print(f"  a worker imports the model stack (torch, transformers): {worker:.2f} s")
    build = "from demo_servers.model import load_classifier; load_classifier('random', 'cpu')"
    print(f"  and builds the model (random weights): {seconds(build, now) - worker:.2f} s")


if __name__ == "__main__":
    main()
