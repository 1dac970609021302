"""What a comparison of measured runs may conclude, and nothing more.

A configuration measured several times is a range (its runs' min to max), not a point;
a share counted once (e.g. of a step's requests served) is a range too, the interval
chance alone could give it.
Two configurations whose ranges overlap cannot be told apart by this run: the verdict
is "inconclusive", never a winner. A target is MET or MISSED only when the whole range
of the measured ratio lies on one side of it; a target that the run's own bound puts out
of reach is UNREACHABLE, whatever was measured; and one that a failed check leaves
without a trustworthy yardstick is UNJUDGED.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

__all__ = ["Range", "Target", "best_of", "compare", "ranking"]


@dataclass(frozen=True)
class Range:
    """The median of repeated readings and their min-max range (or a share and its interval:
    `share`)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values) -> Range:
        series = pd.Series(list(values), dtype=float).dropna()
        if series.empty:
            raise ValueError("a range needs at least one reading")
        return cls(float(series.median()), float(series.min()), float(series.max()))

    @classmethod
    def share(cls, hits: int, total: int) -> Range:
        """The share `hits / total` of one run's events and its 95% (Wilson) interval: how
        far chance alone could have moved a share counted over `total` events."""
        if total <= 0:
            raise ValueError("a share needs at least one event")
        z, p = 1.96, hits / total  # z: 95% of a normal distribution lies within +-z
        scale = 1 + z**2 / total
        centre = (p + z**2 / (2 * total)) / scale
        half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / scale
        return cls(p, max(0.0, centre - half), min(1.0, centre + half))

    def overlaps(self, other: Range) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __truediv__(self, other: Range) -> Range:
        """The ratio of two ranges: its median, and the lowest and highest it can be."""
        return Range(self.median / other.median, self.low / other.high, self.high / other.low)

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def compare(a: Range, b: Range, higher_is_better: bool = True) -> str:
    """ "a", "b" (the better one), or "inconclusive" when their ranges overlap."""
    if a.overlaps(b):
        return "inconclusive"
    return "a" if (a.median > b.median) == higher_is_better else "b"


def ranking(table: pd.DataFrame, by, higher_is_better: bool = True) -> tuple[dict, list]:
    """The best row of a `spread` table (columns median, min, max) as a dict, and the names
    (the `by` values) of every other row whose range overlaps it: rows the run cannot tell
    apart from the best. An empty list means the best is a clear winner."""
    table = table.reset_index(drop=True)
    best_at = table["median"].idxmax() if higher_is_better else table["median"].idxmin()

    def plain(i: int, column: str):
        value = table.at[i, column]
        return value.item() if hasattr(value, "item") else value

    top = Range(table.at[best_at, "median"], table.at[best_at, "min"], table.at[best_at, "max"])
    ties = [
        tuple(plain(i, k) for k in by) if len(by) > 1 else plain(i, by[0])
        for i in table.index
        if i != best_at
        and Range(table.at[i, "median"], table.at[i, "min"], table.at[i, "max"]).overlaps(top)
    ]
    best = {column: plain(best_at, column) for column in table.columns}
    return best, ties


@dataclass
class Target:
    """A claim about a ratio measured in this run, and what the run lets us say about it.

    `at_least`: the ratio must be at least this. `within`: the ratio must lie within this
    fraction of 1, on both sides (0.15: from 0.85 to 1.15). `bound`: the highest ratio
    this run's own measurements allow (e.g. what the shared cores leave). `unjudged`: why
    the ratio cannot be trusted at all, if so."""

    claim: str
    ratio: Range
    at_least: float | None = None
    within: float | None = None
    bound: float | None = None
    unjudged: str | None = None

    def __post_init__(self):
        if (self.at_least is None) == (self.within is None):
            raise ValueError("give exactly one of at_least= or within=")

    @property
    def needed(self) -> str:
        if self.within is not None:
            return f"{1 - self.within:.2f}-{1 + self.within:.2f}"
        return f">= {self.at_least:g}"

    @property
    def verdict(self) -> str:
        if self.unjudged:
            return "UNJUDGED"
        if self.within is not None:
            low, high = 1 - self.within, 1 + self.within
            if low <= self.ratio.low and self.ratio.high <= high:
                return "MET"
            if self.ratio.high < low or self.ratio.low > high:
                return "MISSED"
            return "INCONCLUSIVE"
        if self.bound is not None and self.bound < self.at_least:
            return "UNREACHABLE"
        if self.ratio.low >= self.at_least:
            return "MET"
        if self.ratio.high < self.at_least:
            return "MISSED"
        return "INCONCLUSIVE"

    @property
    def why(self) -> str:
        verdict = self.verdict
        if verdict == "UNJUDGED":
            return self.unjudged
        if verdict == "UNREACHABLE":
            return f"this run's own bound is {self.bound:.2f}"
        if verdict == "INCONCLUSIVE":
            return "the measured range straddles the target"
        return "the whole measured range is on one side"

    def row(self) -> dict:
        return {
            "target": self.claim,
            "measured (range)": str(self.ratio),
            "needed": self.needed,
            "verdict": self.verdict,
            "why": self.why,
        }

    def __str__(self) -> str:
        return f"{self.verdict:12} {self.claim}: {self.ratio}, needs {self.needed} ({self.why})"

    @staticmethod
    def table(targets: list[Target]) -> pd.DataFrame:
        return pd.DataFrame([t.row() for t in targets]).set_index("target")


def best_of(table: pd.DataFrame, by: list[str], what: str, higher_is_better: bool = True) -> str:
    """A one-line verdict on which row of a `spread` table (median, min, max, runs) is
    best: a clear winner, "inconclusive" among the rows whose runs overlap the best's, or
    no ranking at all when some row has a single run (one run shows no spread)."""
    if (table["runs"] < 2).any():
        return f"{what}: one run for some settings, so no ranking (measure more repeats)"
    best, ties = ranking(table, by, higher_is_better)
    name = ", ".join(f"{k}={best[k]}" for k in by)
    runs = f"{best['median']:.1f} (runs {best['min']:.1f}-{best['max']:.1f})"
    if ties:
        return f"{what}: inconclusive between {name} at {runs} and {ties}: their runs overlap"
    return f"{what}: {name}, {runs}, clear of every other setting"
