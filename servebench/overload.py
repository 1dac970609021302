"""Notebook 06's overload section: offered load that ramps past a server's capacity and
back, with admission control on and off, and what each step served, shed and failed."""

from __future__ import annotations

import pandas as pd

from demo_servers.admission import MAX_QUEUE_WAIT_S
from servebench.bodies import Body
from servebench.load import closed_loop, ramp
from servebench.servers import start_server
from servebench.stats import summarize
from servebench.verdicts import Range, Target

__all__ = ["STEPS", "overload_run", "overload_targets", "step_table", "where_time_went"]

# (x capacity, name): unloaded, just under capacity, twice capacity, then half again
STEPS = [(0.5, "before"), (0.9, "0.9x"), (2.0, "2x"), (0.5, "after")]


async def overload_run(
    label: str,
    body: Body,
    step_s: list[float],
    server: str | None = None,
    capacity_repeats: int = 3,
    **options,
) -> pd.DataFrame:
    """Server `server` (default: `label`) offered the ramp of `STEPS`, each step `step_s`
    seconds long, twice: with admission control off, then on (its default bounds, or the
    `max_queue_wait` given), each on a fresh server. The capacity the ramp is scaled to is
    measured on the first, after a warm-up: `capacity_repeats` closed-loop readings (two
    batches in flight), whose median scales the ramp, so both are offered the same. One row
    per request, with `admission`, `step`, `server` (the label) and the capacity readings'
    median, lowest and highest (`capacity_rps`, `capacity_low`, `capacity_high`)."""
    runs, capacity = [], None
    wait = options.pop("max_queue_wait", MAX_QUEUE_WAIT_S)  # the bound when admission is on
    for admission in ("off", "on"):
        bounds = {"max_queue_wait": wait if admission == "on" else 0}
        name = server or label
        with start_server(name, label=label, quiet=True, **options, **bounds) as running:
            url = f"{running.url}/predict"
            users = 2 * options.get("max_batch_size", 8)
            await closed_loop(url, users, body, requests=4 * users)  # warm-up
            if capacity is None:
                capacity = await measure_capacity(url, users, body, capacity_repeats)
            steps = [(f * capacity.median, t) for (f, _), t in zip(STEPS, step_s, strict=True)]
            rows = pd.DataFrame(await ramp(url, steps, body))
        runs.append(
            rows.assign(
                server=label,
                admission=admission,
                capacity_rps=capacity.median,
                capacity_low=capacity.low,
                capacity_high=capacity.high,
            )
        )
    return pd.concat(runs, ignore_index=True)


async def measure_capacity(url: str, users: int, body: Body, repeats: int) -> Range:
    """Requests/s the server at `url` serves to `users` closed-loop users (8 requests
    each), `repeats` times: their median, lowest and highest. One reading of a few dozen
    requests moves by 10-30% on a shared 2-core machine."""
    readings = []
    for _ in range(repeats):
        closed = pd.DataFrame(await closed_loop(url, users, body, requests=8 * users))
        readings.append(summarize(closed.assign(run_id=0))["throughput_rps"].iloc[0])
    return Range.of(readings)


def where_time_went(rows: pd.DataFrame) -> pd.DataFrame:
    """Per server, admission and step, for the requests served: median latency, split into
    time outside the server's request handling (client, proxy, router: latency minus the
    server's `total`), waiting in the server's queue, and the rest in the server; and the
    mean batch size their forward passes had."""
    served = rows[rows["status"] == 200].assign(
        outside_s=lambda r: r["latency_s"] - r["server_ms"] / 1000,
        queue_s=lambda r: r["queue_ms"] / 1000,
        rest_s=lambda r: (r["server_ms"] - r["queue_ms"]) / 1000,
        step=lambda r: r["step"].map(dict(enumerate(name for _, name in STEPS))),
    )
    columns = {
        "latency_s": "median",
        "outside_s": "median",
        "queue_s": "median",
        "rest_s": "median",
        "batch_size": "mean",
    }
    grouped = served.groupby(["server", "admission", "step"], sort=False)
    return grouped.agg(columns).rename(columns={"batch_size": "mean_batch"}).round(2)


def step_table(rows: pd.DataFrame, step_s: list[float]) -> pd.DataFrame:
    """Per server, admission and step: requests/s offered (arrivals in the step), served
    (answers with 200 that completed within the step: what the server delivered) and shed
    (503s to the step's arrivals); the share of the step's arrivals served (whenever their
    answer came); failures (no HTTP answer, e.g. the client's 30 s timeout, or another
    status); p99 of the step's arrivals that were served, and the median time to a 503
    in milliseconds (a fast one takes a few, which 2 decimals of a second would round to 0).
    `served` counts the step's arrivals answered with 200; `capacity_*` are the
    closed-loop readings the ramp was scaled to (median, lowest, highest)."""
    names = dict(enumerate(name for _, name in STEPS))
    edges = [sum(step_s[:k]) for k in range(len(step_s) + 1)]

    def one(run: pd.DataFrame, k: int) -> dict:
        arrived = run[run["step"] == k]
        ok = run["status"] == 200
        done = run[ok & (run["end_s"] >= edges[k]) & (run["end_s"] < edges[k + 1])]
        served = arrived[arrived["status"] == 200]
        shed = arrived[arrived["shed"].astype(bool)]
        return {
            "step": names[k],
            "requests": len(arrived),
            "served": len(served),
            "offered_rps": len(arrived) / step_s[k],
            "served_rps": len(done) / step_s[k],
            "shed_rps": len(shed) / step_s[k],
            "served_share": len(served) / len(arrived) if len(arrived) else float("nan"),
            "failed": len(arrived) - len(served) - len(shed),
            "p99_served_s": served["latency_s"].quantile(0.99),
            "median_to_503_ms": 1000 * shed["latency_s"].median(),
            "capacity_rps": run["capacity_rps"].iloc[0],
            "capacity_low": run["capacity_low"].iloc[0],
            "capacity_high": run["capacity_high"].iloc[0],
        }

    table = [
        {"server": server, "admission": admission, **one(run, k)}
        for (server, admission), run in rows.groupby(["server", "admission"], sort=False)
        for k in range(len(step_s))
    ]
    return pd.DataFrame(table).round(2)


def overload_targets(table: pd.DataFrame) -> pd.DataFrame:
    """The overload targets for every server with admission control on (its default
    bounds), and Ray Serve's at 0.9x capacity (the share of that step's arrivals it
    served, with its 95% interval: a share of a few dozen requests moves by several
    points by chance); each a ratio of this run's readings."""
    targets = []
    for server, runs in table[table["admission"] == "on"].groupby("server", sort=False):
        at = runs.set_index("step")
        over, before, after = at.loc["2x"], at.loc["before"], at.loc["after"]
        capacity = Range(over["capacity_rps"], over["capacity_low"], over["capacity_high"])
        answered = 1 - over["failed"] / over["requests"]
        targets += [
            Target(f"{server}: 2x, answered (200 or 503)", Range.of([answered]), at_least=1.0),
            Target(
                f"{server}: 2x, 0.5 s / median time to a 503",
                Range.of([500 / over["median_to_503_ms"]]) if over["shed_rps"] else Range.of([0]),
                at_least=1.0,
                unjudged=None if over["shed_rps"] else "nothing was shed",
            ),
            Target(
                f"{server}: 2x, served / capacity",
                Range.of([over["served_rps"]]) / capacity,
                at_least=0.8,
            ),
            Target(
                f"{server}: 2x, 5 s / p99 served", Range.of([5 / over["p99_served_s"]]), at_least=1
            ),
            Target(
                f"{server}: after, 3 x p99 before / p99 after",
                Range.of([3 * before["p99_served_s"] / after["p99_served_s"]]),
                at_least=1.0,
            ),
        ]
    for admission, runs in table[table["server"] == "ray"].groupby("admission", sort=False):
        near = runs.set_index("step").loc["0.9x"]
        targets.append(
            Target(
                f"ray (admission {admission}): 0.9x, served / offered",
                Range.share(int(near["served"]), int(near["requests"])),
                at_least=0.85,
            )
        )
    return Target.table(targets)
