"""What a comparison may conclude: ranges that overlap are inconclusive, targets are judged
on the whole range, bounds and failed checks are said, "within" is two-sided."""

import pandas as pd
import pytest

from servebench import verdicts
from servebench.verdicts import Range, Target


def test_a_range_is_the_median_and_the_extremes():
    assert Range.of([3.0, 1.0, 2.0]) == Range(2.0, 1.0, 3.0)
    assert str(Range.of([25.1, 28.4, 28.1])) == "28.10 (25.10-28.40)"
    with pytest.raises(ValueError, match="at least one reading"):
        Range.of([])


def test_a_ratio_of_ranges_spans_every_pairing():
    ratio = Range.of([23.4, 26.6, 26.7]) / Range.of([25.1, 28.1, 28.4])
    assert ratio.low == pytest.approx(23.4 / 28.4) and ratio.high == pytest.approx(26.7 / 25.1)


def test_overlapping_runs_are_inconclusive():
    off_loop, baseline = Range.of([23.4, 26.6, 26.7]), Range.of([25.1, 28.1, 28.4])
    assert verdicts.compare(off_loop, baseline) == "inconclusive"
    assert verdicts.compare(Range.of([30, 31]), baseline) == "a"
    assert verdicts.compare(Range.of([30, 31]), baseline, higher_is_better=False) == "b"


def test_at_least_targets_are_met_missed_or_inconclusive():
    assert Target("x", Range(1.7, 1.6, 1.8), at_least=1.5).verdict == "MET"
    assert Target("x", Range(1.2, 1.1, 1.3), at_least=1.5).verdict == "MISSED"
    off_loop = Range.of([23.4, 26.6, 26.7]) / Range.of([25.1, 28.1, 28.4])
    target = Target("not slower than the baseline", off_loop, at_least=0.95)
    assert target.verdict == "INCONCLUSIVE" and "straddles" in str(target)


def test_a_target_beyond_the_runs_own_bound_is_unreachable():
    target = Target("0.9x the ceiling", Range(0.76, 0.74, 0.78), at_least=0.9, bound=0.86)
    assert target.verdict == "UNREACHABLE" and "bound is 0.86" in str(target)
    unjudged = Target("x", Range(0.76, 0.74, 0.78), at_least=0.9, unjudged="ceiling drifted")
    assert unjudged.verdict == "UNJUDGED" and "ceiling drifted" in str(unjudged)


def test_within_is_two_sided():
    assert Target("x", Range(1.05, 1.0, 1.1), within=0.15).verdict == "MET"
    assert Target("x", Range(3.0, 2.9, 3.1), within=0.15).verdict == "MISSED"  # far above
    assert Target("x", Range(0.5, 0.4, 0.6), within=0.15).verdict == "MISSED"
    assert Target("x", Range(1.14, 1.1, 1.2), within=0.15).verdict == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="exactly one"):
        Target("x", Range(1, 1, 1))


def test_ranking_names_every_setting_the_run_cannot_tell_from_the_best():
    grid = pd.DataFrame(
        {
            "max_batch_size": [8, 4, 16],
            "median": [23.9, 20.5, 10.0],
            "min": [21.0, 19.0, 9.0],
            "max": [25.0, 21.5, 11.0],
        }
    )
    best, ties = verdicts.ranking(grid, ["max_batch_size"])
    assert best["max_batch_size"] == 8 and ties == [4]
    best, ties = verdicts.ranking(grid.iloc[[0, 2]], ["max_batch_size"])
    assert ties == []  # a clear winner
    table = Target.table([Target("a", Range(2, 2, 2), at_least=1)])
    assert table.loc["a", "verdict"] == "MET"


def test_best_of_names_a_winner_a_tie_or_refuses_single_runs():
    grid = pd.DataFrame(
        {
            "max_batch_size": [8, 4, 16],
            "median": [23.9, 20.5, 10.0],
            "min": [21.0, 19.0, 9.0],
            "max": [25.0, 21.5, 11.0],
            "runs": 3,
        }
    )
    tie = verdicts.best_of(grid, ["max_batch_size"], "most throughput")
    assert tie.startswith("most throughput: inconclusive between max_batch_size=8") and "[4]" in tie
    clear = verdicts.best_of(grid.iloc[[0, 2]], ["max_batch_size"], "most throughput")
    assert "clear of every other setting" in clear
    lowest = verdicts.best_of(grid.iloc[[0, 2]], ["max_batch_size"], "lowest", False)
    assert "max_batch_size=16" in lowest
    once = verdicts.best_of(grid.assign(runs=1), ["max_batch_size"], "most throughput")
    assert "no ranking" in once


def test_a_share_counted_once_is_judged_by_its_interval():
    assert Target("x", Range.share(120, 126), at_least=0.85).verdict == "MET"
    assert Target("x", Range.share(90, 126), at_least=0.85).verdict == "MISSED"
    few = Range.share(34, 42)  # 0.81: chance alone moves a share of 42 by several points
    assert few.median == 34 / 42 and few.low < 0.85 < few.high
    assert Target("x", few, at_least=0.85).verdict == "INCONCLUSIVE"
    assert Range.share(42, 42).high == 1.0


def test_the_overload_table_counts_served_shed_and_failed_per_step():
    from servebench.overload import overload_targets, step_table

    # one request a second in each 2 s step; in "0.9x" one is shed, one is answered late
    rows = pd.DataFrame(
        {
            "step": [0, 0, 1, 1, 2, 2, 3, 3],
            "start_s": [0, 1, 2, 3, 4, 5, 6, 7],
            "latency_s": [0.2, 0.2, 3.5, 0.01, 0.3, 0.01, 0.4, 0.3],
            "status": [200, 200, 200, 503, 200, 503, 200, 200],
            "shed": [False, False, False, True, False, True, False, False],
        }
    ).assign(end_s=lambda r: r["start_s"] + r["latency_s"])
    capacity = {"capacity_rps": 1.0, "capacity_low": 1.0, "capacity_high": 1.0}
    rows = rows.assign(server="ray", admission="on", **capacity)
    table = step_table(rows, [2, 2, 2, 2]).set_index("step")
    near = table.loc["0.9x"]
    assert near["served_rps"] == 0  # its answer came in the next step
    assert near["served_share"] == 0.5 and near["shed_rps"] == 0.5 and near["failed"] == 0
    targets = overload_targets(table.reset_index())
    # one of two: chance alone could give anything from 0.09 to 0.91
    assert targets.loc["ray (admission on): 0.9x, served / offered", "verdict"] == "INCONCLUSIVE"
    assert targets.loc["ray: 2x, 0.5 s / median time to a 503", "verdict"] == "MET"


def test_served_over_capacity_is_judged_against_every_capacity_reading():
    from servebench.overload import overload_targets

    steps = ["before", "0.9x", "2x", "after"]
    table = pd.DataFrame(
        {
            "server": "litserve",
            "admission": "on",
            "step": steps,
            "requests": [10, 18, 40, 10],
            "served": [10, 18, 17, 10],
            "served_rps": [5.0, 9.0, 8.5, 5.0],
            "shed_rps": [0, 0, 11.0, 0],
            "failed": 0,
            "p99_served_s": [1.0, 1.5, 2.0, 1.0],
            "median_to_503_ms": [None, None, 10.0, None],
            "capacity_rps": 10.0,
        }
    )
    name = "litserve: 2x, served / capacity"
    # readings 9.5-10.5: 8.5 served is 0.81-0.89 of any of them
    close = overload_targets(table.assign(capacity_low=9.5, capacity_high=10.5))
    assert close.loc[name, "verdict"] == "MET"
    # readings 8-12: 8.5 is 0.71-1.06 of them, on both sides of 0.8
    spread = overload_targets(table.assign(capacity_low=8.0, capacity_high=12.0))
    assert spread.loc[name, "verdict"] == "INCONCLUSIVE"
