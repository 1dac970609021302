"""The original benchmark's published figures, and this run's in the same shape (04)."""

from __future__ import annotations

import pandas as pd

from servebench.paths import REFERENCE_CSV
from servebench.verdicts import Range, compare

__all__ = [
    "below_zero",
    "first_answers",
    "load_reference",
    "original_tables",
    "speedup_table",
]


def load_reference() -> pd.DataFrame:
    """The original benchmark's published figures (2x RTX 3080 Ti)."""
    return pd.read_csv(REFERENCE_CSV)


def original_tables(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original README's two tables, this run beside the published figures.

    1. total runtime per burst (s); 2. mean response time per request, printed as
    the original did: mean ± 2 standard deviations (ms). Medians over repeats. Every
    published burst size is shown, whatever sizes this run measured (NaN: not measured).
    """
    bursts = summary[summary["mode"] == "burst"].rename(columns={"level": "concurrency"})
    reference = load_reference()

    def published(column):
        table = reference.pivot(index="concurrency", columns="server", values=column)
        return table.add_suffix(" (original)")

    runtime = bursts.pivot_table("total_runtime_s", "concurrency", "server", aggfunc="median")
    runtime = runtime.join(published("total_runtime_s"), how="outer")
    mean = bursts.pivot_table("mean_ms", "concurrency", "server", aggfunc="median")
    two_std = 2 * bursts.pivot_table("std_ms", "concurrency", "server", aggfunc="median")
    latency = mean.round(1).astype(str) + " ± " + two_std.round(1).astype(str)
    ref_text = (
        published("mean_latency_ms").round(1).astype(str)
        + " ± "
        + published("latency_spread_ms").round(1).astype(str)
    )
    return runtime, latency.join(ref_text, how="outer")


def below_zero(summary: pd.DataFrame) -> dict:
    """How many rows of the mean ± 2 std table reach below zero, this run and published."""
    bursts = summary[summary["mode"] == "burst"]
    ours = bursts.groupby(["server", "level"])[["mean_ms", "std_ms"]].median()
    reference = load_reference()
    return {
        "this run": int((ours["mean_ms"] - 2 * ours["std_ms"] < 0).sum()),
        "this run rows": len(ours),
        "published": int((reference["mean_latency_ms"] < reference["latency_spread_ms"]).sum()),
        "published rows": len(reference),
    }


def first_answers(requests: pd.DataFrame) -> pd.DataFrame:
    """When the first, the median and the last answer of each burst came back (ms, median
    over repeats): batching makes the first answers wait for a batch to fill."""
    ok = requests[(requests["status"] == 200) & (requests["mode"] == "burst")]
    per_run = ok.groupby(["server", "level", "run_id"])["latency_s"].agg(
        first_ms="min", median_ms="median", last_ms="max"
    )
    return (per_run * 1000).groupby(["server", "level"]).median().round(1)


def speedup_table(summary: pd.DataFrame, a: str = "litserve", b: str = "fastapi") -> pd.DataFrame:
    """Per burst size: each server's total runtime over its runs (median, min-max), how many
    times faster `a` was than `b` (median, and the lowest and highest the runs allow), and
    the verdict: which finished first, or "inconclusive" where their runs overlap."""
    bursts = summary[summary["mode"] == "burst"]
    rows = []
    for level, runs in bursts.groupby("level"):
        times = {s: Range.of(runs.loc[runs["server"] == s, "total_runtime_s"]) for s in (a, b)}
        ratio = times[b] / times[a]  # runtime of b over runtime of a: >1 means a is faster
        winner = compare(times[a], times[b], higher_is_better=False)
        rows.append(
            {
                "burst": level,
                f"{a} (s)": str(times[a]),
                f"{b} (s)": str(times[b]),
                f"{a} speed-up": str(ratio),
                "verdict": {"a": f"{a} faster", "b": f"{b} faster"}.get(winner, winner),
            }
        )
    return pd.DataFrame(rows).set_index("burst")
