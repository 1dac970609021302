"""Statistics over request rows: one summary row per run, stability over repeated runs,
ranges, percentiles, where the time went."""

from __future__ import annotations

import pandas as pd

from servebench.gpu import GPU_COLUMNS
from servebench.load import STAGE_COLUMNS

__all__ = [
    "PERCENTILES",
    "POINT_KEYS",
    "RUN_KEYS",
    "STABILITY_TOLERANCE",
    "STABILITY_WINDOW",
    "is_stable",
    "keeps_up",
    "max_sustained_rate",
    "percentile_table",
    "rounded",
    "spread",
    "stability",
    "stage_table",
    "summarize",
    "windowed",
]

# Two readings of the same thing that differ by more than this are not the same reading.
STABILITY_TOLERANCE = 0.10


RUN_KEYS = [
    "run_id",
    "server",
    "options",
    "max_batch_size",
    "batch_timeout",
    "wire",
    "mode",
    "level",
    "repeat",
]


POINT_KEYS = ["server", "options", "wire", "mode", "level"]  # a point: runs repeated


PERCENTILES = [50, 90, 95, 99]


def summarize(requests: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per run: counts, total runtime, throughput, latency statistics (ms) and,
    where the server sent a Server-Timing header, the median time of each stage (ms)."""
    by = by or [k for k in RUN_KEYS if k in requests]
    timed = [
        c for c in [*STAGE_COLUMNS, "server_ms"] if c in requests and requests[c].notna().any()
    ]
    # the same columns for every run, or apply() stacks them into one long Series
    by_process = "served_by" in requests and requests["served_by"].notna().any()

    def one_run(run: pd.DataFrame) -> pd.Series:
        ok = run[run["status"] == 200]
        latency_ms = ok["latency_s"] * 1000
        runtime = run["end_s"].max() - run["scheduled_s"].min()
        schedule_span = run["scheduled_s"].max() - run["scheduled_s"].min()
        shed = run[run["shed"].fillna(False).astype(bool)] if "shed" in run else run.iloc[:0]
        stats = {
            "requests": len(run),
            # the rate the schedule really offered (open loop; Poisson gaps vary)
            "offered_rps": len(run) / schedule_span if schedule_span > 0 else float("nan"),
            # refused with 503 + Retry-After (admission control), apart from failures
            "shed": len(shed),
            "errors": len(run) - len(ok) - len(shed),
            "total_runtime_s": runtime,
            "throughput_rps": len(ok) / runtime if runtime > 0 else float("nan"),
            "shed_rps": len(shed) / runtime if runtime > 0 else float("nan"),
            "shed_p50_ms": (shed["latency_s"] * 1000).median(),
            "mean_ms": latency_ms.mean(),
            "std_ms": latency_ms.std(),
        }
        stats.update({f"p{p}_ms": latency_ms.quantile(p / 100) for p in PERCENTILES})
        stats["max_ms"] = latency_ms.max()
        stats["max_send_lag_ms"] = run["send_lag_s"].max() * 1000
        stats.update({column: ok[column].median() for column in timed})
        stats.update({column: run[column].iloc[0] for column in GPU_COLUMNS if column in run})
        if by_process:  # 1/N where N processes (HTTP processes, replicas) answered alike
            shares = ok["served_by"].value_counts(normalize=True)  # Locust's rows name none
            stats["busiest_process_share"] = shares.max() if len(shares) else float("nan")
        if "server_ms" in timed:  # the client, the network, waiting to be read
            stats["outside_ms"] = (latency_ms - ok["server_ms"]).median()
            stats["mean_batch_size"] = ok["batch_size"].mean()
            # per request, then the median: medians of stages do not add up to one of totals
            stages = ok[[c for c in STAGE_COLUMNS if c in ok]].fillna(0).sum(axis=1)
            stats["handoffs_ms"] = (ok["server_ms"] - stages).median()
        return pd.Series(stats)

    grouped = requests.groupby(by, sort=False, dropna=False)  # FastAPI has no batch options
    table = grouped.apply(one_run, include_groups=False).reset_index()
    return table.astype({"requests": int, "shed": int, "errors": int})


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """For reading: milliseconds to 0.1, seconds to 0.001, rates to 0.1; counts stay integers."""
    decimals = {}
    for column in table.select_dtypes("float").columns:
        name = str(column)
        if name.endswith("_ms"):
            decimals[column] = 1
        elif name.endswith("_s"):
            decimals[column] = 3
        elif name.endswith("_rps") or name.endswith("images_per_s"):
            decimals[column] = 1
    return table.round(decimals)


STABILITY_WINDOW = 3  # as perf_analyzer: the last three readings must agree


def is_stable(values, tolerance: float = STABILITY_TOLERANCE, window: int = STABILITY_WINDOW):
    """Whether the last `window` readings (at least two) all lie within `tolerance`
    (0.10 = 10%) of their mean: the stability rule of NVIDIA's perf_analyzer."""
    last = list(values)[-window:]
    if len(last) < 2:
        return False  # one reading cannot show that a measurement repeats
    mean = sum(last) / len(last)
    return all(abs(value - mean) <= tolerance * abs(mean) for value in last)


def stability(
    requests: pd.DataFrame,
    tolerance: float = STABILITY_TOLERANCE,
    window: int = STABILITY_WINDOW,
    values=("throughput_rps", "p50_ms"),
) -> pd.DataFrame:
    """Per measured point: its runs, and whether each of `values` is stable over them."""
    summary = summarize(requests).sort_values("repeat", kind="stable")
    keys = [k for k in POINT_KEYS if k in summary]
    rows = []
    for key, point in summary.groupby(keys, sort=False, dropna=False):
        stable = all(is_stable(point[v], tolerance, window) for v in values)
        rows.append({**dict(zip(keys, key, strict=True)), "runs": len(point), "stable": stable})
    return pd.DataFrame(rows)


def windowed(requests: pd.DataFrame, windows: int = 3) -> pd.DataFrame:
    """Each run cut into `windows` consecutive windows (by scheduled time), each counted as a
    repeat: perf_analyzer's way to check that one long run is stable."""

    def cut(run: pd.DataFrame) -> pd.DataFrame:
        start, span = run["scheduled_s"].min(), run["scheduled_s"].max() - run["scheduled_s"].min()
        index = ((run["scheduled_s"] - start) / (span or 1) * windows).astype(int)
        index = index.clip(upper=windows - 1)
        return run.assign(repeat=index, run_id=run["run_id"] + "-window" + index.astype(str))

    return pd.concat([cut(run) for _, run in requests.groupby("run_id")], ignore_index=True)


def keeps_up(
    requests: pd.DataFrame,
    windows: int = 3,
    tolerance: float = STABILITY_TOLERANCE,
    growth: float = 2.0,
) -> pd.DataFrame:
    """Per open-loop point: whether the server kept up with its schedule (`stable`).

    Each run is cut into `windows` consecutive windows. Poisson arrivals make a window's
    rate differ from the next by more than 10%, so the 10% rule applies to the share of
    each window's offered requests that were served; and a server falling behind has a
    growing queue, which shows as its median latency growing `growth`-fold from the first
    window to the last. A point measured in several runs kept up only if every run did."""
    summary = summarize(windowed(requests, windows)).sort_values("repeat", kind="stable")
    summary["run"] = summary["run_id"].str.rsplit("-window", n=1).str[0]
    keys = [k for k in POINT_KEYS if k in summary]
    rows = []
    for key, point in summary.groupby(keys, sort=False, dropna=False):
        kept = []
        for _, run in point.groupby("run", sort=False):
            served = run["throughput_rps"] / run["offered_rps"]
            growing = run["p50_ms"].iloc[-1] > growth * run["p50_ms"].iloc[0]
            kept.append(is_stable(served, tolerance, windows) and not growing)
        point_keys = dict(zip(keys, key, strict=True))
        rows.append({**point_keys, "runs": len(kept), "windows": len(point), "stable": all(kept)})
    return pd.DataFrame(rows)


def spread(
    summary: pd.DataFrame,
    value: str,
    by=("server", "mode", "level"),
    tolerance: float = STABILITY_TOLERANCE,
    window: int = STABILITY_WINDOW,
) -> pd.DataFrame:
    """Median, min and max of `value` over repeated runs (a range, not one point), and
    whether its last `window` runs agree within `tolerance` (`is_stable`)."""
    by = [k for k in by if k in summary]
    ordered = summary.sort_values("repeat", kind="stable") if "repeat" in summary else summary
    grouped = ordered.groupby(by, sort=False)[value]
    table = grouped.agg(["median", "min", "max", "count"]).rename(columns={"count": "runs"})
    table["stable"] = grouped.apply(lambda v: is_stable(v, tolerance, window))
    return table.reset_index()


def stage_table(
    summary: pd.DataFrame, by: str = "server", blocked_loop: tuple = ()
) -> pd.DataFrame:
    """Where a request's time went (ms, medians over requests and runs): the server's stages,
    the `handoffs` its total leaves over (between processes or threads), and the time
    `outside` the server's request handling (the client, the network, waiting to be read).

    `forward` is the whole batch's pass; `forward_per_image` divides it by the batch size,
    comparable between servers that batch and servers that do not. For the servers named in
    `blocked_loop` (a model run inside `async def`), `read` is mostly waiting for the event
    loop that the model blocks, so it is shown as `waiting_on_blocked_loop`. A negative
    `handoffs` is shown as measured: the stages overlapped, or their clocks (in different
    processes) disagree by that much."""
    stages = [c for c in STAGE_COLUMNS if c in summary]
    columns = [*stages, "handoffs_ms", "outside_ms", "mean_batch_size"]
    table = summary.groupby(by, sort=False)[[c for c in columns if c in summary]].median()
    if "forward_ms" in table and "mean_batch_size" in table:
        per_image = table["forward_ms"] / table["mean_batch_size"]
        table.insert(table.columns.get_loc("forward_ms") + 1, "forward_per_image_ms", per_image)
    if "read_ms" in table:
        blocked = table.index.isin(blocked_loop)
        table.insert(0, "waiting_on_blocked_loop_ms", table["read_ms"].where(blocked))
        table["read_ms"] = table["read_ms"].mask(blocked)
        if not blocked.any():
            table = table.drop(columns="waiting_on_blocked_loop_ms")
    return table.drop(columns="mean_batch_size", errors="ignore")


def percentile_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Latency percentiles (ms, median over repeats) per server and level."""
    cols = [f"p{p}_ms" for p in PERCENTILES] + ["max_ms"]
    return summary.groupby(["server", "mode", "level"], sort=False)[cols].median().round(1)


def max_sustained_rate(summary: pd.DataFrame, p99_budget_ms: float) -> pd.Series:
    """Per server, the highest open-loop rate it sustained with every lower rate measured
    sustained too: no errors, throughput within 10% of the rate the schedule offered, p99
    within the budget, and (where `summary` has the `stable` column of `keeps_up`) no queue
    growing through the run. A rate that passes above one that failed is no promise (the
    failure below it says the server cannot hold that load), so the climb stops at the
    first failure. NaN if the lowest rate already failed."""
    runs = summary[summary["mode"] == "open"]
    ok = (
        (runs["p99_ms"] <= p99_budget_ms)
        & (runs["errors"] == 0)
        & (runs["throughput_rps"] >= 0.9 * runs["offered_rps"])
    )
    if "stable" in runs:
        ok &= runs["stable"].astype(bool)
    passed = ok.groupby([runs["server"], runs["level"]], sort=False).all()  # every repeat
    rates = {}
    for server, levels in passed.groupby(level="server", sort=False):
        good = levels.droplevel("server").sort_index()
        failed = good[~good]
        below = good.index < failed.index.min() if len(failed) else good.index == good.index
        rates[server] = good.index[below].max() if below.any() else float("nan")
    return pd.Series(rates, dtype=float)
