"""The benchmark toolkit against a small real server (the null server, started by the helpers)."""

import asyncio
import warnings

import matplotlib
import pandas as pd
import pytest

import helpers
from servebench import load, notebook, paths, runs, stats

matplotlib.use("Agg")
BODY = helpers.request_body({"image_bytes": "00"})


def url(server):
    return f"{server.url}/predict"


def check_timing(rows):
    for row in rows:
        assert row["scheduled_s"] <= row["start_s"] <= row["end_s"]
        assert row["latency_s"] == pytest.approx(row["end_s"] - row["scheduled_s"])


def test_burst_sends_n_requests_at_once(null_server):
    rows = asyncio.run(helpers.burst(url(null_server), 40, BODY))
    assert len(rows) == 40 and {r["status"] for r in rows} == {200}
    assert {r["scheduled_s"] for r in rows} == {0.0}
    assert {r["predicted_class"] for r in rows} == {"null"}
    check_timing(rows)


def test_closed_loop_keeps_concurrency_and_stops_at_the_count(serial_server):
    rows = asyncio.run(helpers.closed_loop(url(serial_server), 4, BODY, requests=20))
    assert len(rows) == 20
    check_timing(rows)
    # one at a time, 50 ms each: 20 requests take about 1 s however many users wait
    assert 0.95 <= max(r["end_s"] for r in rows) < 10  # upper bound: room for a busy machine


def test_closed_loop_for_a_duration(null_server):
    rows = asyncio.run(helpers.closed_loop(url(null_server), 2, BODY, duration_s=0.5))
    assert rows and max(r["start_s"] for r in rows) < 0.5


def test_open_loop_follows_the_schedule(null_server):
    rows = asyncio.run(
        helpers.open_loop(url(null_server), 50, BODY, requests=25, arrivals="constant")
    )
    assert sorted(r["scheduled_s"] for r in rows) == pytest.approx([i / 50 for i in range(25)])
    # sent on time: a lag well under the 20 ms between requests on an idle machine, and
    # under half a second on a busy one (a client waiting for answers would lag far more)
    assert max(r["send_lag_s"] for r in rows) < 0.5
    check_timing(rows)


def test_open_loop_charges_a_stall_to_every_request_behind_it():
    """Coordinated omission: latency from the schedule sees the stall; service time hides it."""
    with helpers.start_server("null", quiet=True, replace=False, stall_at=5, stall_s=1.0) as server:
        rows = asyncio.run(
            helpers.open_loop(url(server), 20, BODY, requests=30, arrivals="constant")
        )
    # the 5th request froze the server for 1 s; the ~20 due meanwhile all waited for it
    assert max(r["latency_s"] for r in rows) > 0.9
    assert sum(r["latency_s"] > 0.3 for r in rows) >= 10
    assert max(r["send_lag_s"] for r in rows) < 0.5  # the client kept sending through the stall


def test_arrival_times():
    assert load.arrival_times(4, 3, "constant") == [0, 0.25, 0.5]
    poisson = load.arrival_times(100, 5000, "poisson", seed=1)
    assert poisson == load.arrival_times(100, 5000, "poisson", seed=1)
    assert poisson[-1] / 5000 == pytest.approx(1 / 100, rel=0.05)


def test_errors_are_rows_not_exceptions():
    with helpers.start_server("null", quiet=True, replace=False, fail_every=3, delay=0.3) as server:
        rows = asyncio.run(helpers.burst(url(server), 9, BODY))
        assert sorted(r["status"] for r in rows) == [200] * 6 + [500] * 3
        assert all("failure" in r["error"] for r in rows if r["status"] == 500)
        timed_out = asyncio.run(helpers.burst(url(server), 3, BODY, timeout=0.1))
    assert all(r["status"] is None and "Timeout" in r["error"] for r in timed_out)


def test_measure_saves_each_run_and_loads_back(null_server, tmp_path, patch):
    patch(paths, "RESULTS_DIR", tmp_path)
    frame = asyncio.run(helpers.measure(null_server, "burst", 10, body=BODY, repeats=2))
    assert len(frame) == 20 and frame["run_id"].nunique() == 2
    assert len(list((tmp_path / "runs").glob("*.csv"))) == 2  # the patch took effect
    loaded = helpers.load_results()
    assert len(loaded) == 20 and set(loaded["server"]) == {null_server.label}
    for column in ("cpu", "cpu_cores", "gpus", "torch_version", "litserve_version", "date"):
        assert loaded[column].notna().all(), column
    pd.testing.assert_series_equal(
        frame.sort_values("end_s")["latency_s"].reset_index(drop=True),
        loaded.sort_values("end_s")["latency_s"].reset_index(drop=True),
    )
    assert len(helpers.load_results(mode="open")) == 0


def test_sync_wrapper_works_inside_and_outside_an_event_loop(null_server):
    rows = notebook.run_sync(helpers.burst(url(null_server), 3, BODY))
    assert len(rows) == 3

    async def inside():
        return notebook.run_sync(helpers.burst(url(null_server), 2, BODY))

    assert len(asyncio.run(inside())) == 2


FIXED = pd.DataFrame(
    {
        "run_id": "r1",
        "server": "s",
        "mode": "burst",
        "level": 4,
        "repeat": 0,
        "scheduled_s": [0.0, 0.0, 0.0, 0.0, 0.0],
        "start_s": [0.0, 0.0, 0.0, 0.0, 0.0],
        "end_s": [0.1, 0.2, 0.3, 0.4, 0.5],
        "latency_s": [0.1, 0.2, 0.3, 0.4, 0.5],
        "send_lag_s": [0.0, 0.0, 0.0, 0.0, 0.0],
        "status": [200, 200, 200, 200, 500],
    }
)


def test_statistics_on_fixed_data():
    row = helpers.summarize(FIXED).iloc[0]
    assert row["requests"] == 5 and row["errors"] == 1
    assert row["total_runtime_s"] == pytest.approx(0.5)
    assert row["throughput_rps"] == pytest.approx(4 / 0.5)
    assert row["mean_ms"] == pytest.approx(250)
    assert row["std_ms"] == pytest.approx(129.0994, abs=1e-3)  # sample std of 100..400
    assert row["p50_ms"] == pytest.approx(250)  # linear interpolation between 200 and 300
    assert row["p90_ms"] == pytest.approx(370)
    assert row["p99_ms"] == pytest.approx(397)
    assert row["max_ms"] == pytest.approx(400)


def test_the_busiest_process_share_counts_answers_only():
    assert "busiest_process_share" not in helpers.summarize(FIXED)  # no x-served-by
    served_by = ["pid=1", "pid=1", "pid=1", "pid=2", "pid=2"]  # the last one failed
    row = helpers.summarize(FIXED.assign(served_by=served_by)).iloc[0]
    assert row["busiest_process_share"] == pytest.approx(3 / 4)
    unnamed = FIXED.assign(run_id="r2", served_by=None)  # e.g. Locust's rows, beside ours
    both = helpers.summarize(pd.concat([FIXED.assign(served_by=served_by), unnamed]))
    assert list(both["requests"]) == [5, 5] and both["busiest_process_share"].isna().iloc[1]


def test_spread_over_repeats():
    summary = pd.DataFrame({"server": "s", "mode": "burst", "level": 10, "x": [3.0, 1.0, 2.0]})
    table = helpers.spread(summary, "x").iloc[0]
    assert (table["median"], table["min"], table["max"], table["runs"]) == (2.0, 1.0, 3.0, 3)


def fake_summary():
    rows = []
    for server, per_request in (("fastapi", 0.1), ("litserve", 0.05)):
        for level in (10, 50):
            rows.append(
                {
                    "server": server, "mode": "burst", "level": level, "repeat": 0,
                    "total_runtime_s": level * per_request, "throughput_rps": 1 / per_request,
                    "mean_ms": 500.0, "std_ms": 100.0, "p50_ms": 400.0, "p90_ms": 800.0,
                    "p95_ms": 900.0, "p99_ms": 990.0, "max_ms": 1000.0,
                    "max_batch_size": 8, "batch_timeout": 0.05,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_original_tables_sit_beside_the_reference():
    runtime, latency = helpers.original_tables(fake_summary())
    assert runtime.loc[10, "fastapi"] == pytest.approx(1.0)
    assert runtime.loc[50, "litserve (original)"] == pytest.approx(0.342)
    assert latency.loc[10, "fastapi"] == "500.0 ± 200.0"
    assert latency.loc[10, "fastapi (original)"] == "81.6 ± 71.7"
    table = helpers.speedup_table(fake_summary().assign(repeat=0))
    assert table.loc[10, "litserve speed-up"] == "2.00 (2.00-2.00)"
    assert table.loc[10, "verdict"] == "litserve faster"


def test_plots_render_without_warnings():
    summary = fake_summary()
    requests = pd.concat(
        [FIXED.assign(server=s, level=lv) for s in ("fastapi", "litserve") for lv in (10, 50)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = [
            helpers.plot_runtime(summary),
            helpers.plot_throughput(summary),
            helpers.plot_latency(requests),
            helpers.plot_latency_vs_throughput(summary.assign(mode="open")),
            helpers.plot_grid(summary[summary["server"] == "litserve"]),
        ]
    for figure in figures:
        assert figure.axes and all(ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes[:1])


def test_plots_draw_no_ceiling_the_check_refused():
    summary = fake_summary()  # litserve serves 20 requests/s
    trusted = helpers.ceiling_check(ceiling({1: 20.0, 8: 25.0}), ceiling({8: 25.0}), summary)
    drifted = helpers.ceiling_check(ceiling({1: 20.0, 8: 25.0}), ceiling({8: 19.0}), summary)
    shown = helpers.plot_throughput(summary, check=trusted).axes[0]
    hidden = helpers.plot_throughput(summary, check=drifted).axes[0]
    assert len(shown.get_lines()) - len(hidden.get_lines()) == 2  # the two ceiling lines
    assert "ceiling" in shown.get_title() and "ceiling" not in hidden.get_title()
    labels = helpers.plot_runtime(summary).axes[0].get_legend_handles_labels()[1]
    assert "fastapi, published (1 GPU)" in labels and "litserve, published (2 GPUs)" in labels


def test_the_overload_plot_counts_answers_when_they_came():
    # 20 arrivals in the first second, served one every 0.5 s, then 4 shed at once at 3.5 s
    served = pd.DataFrame({"scheduled_s": 0.1, "latency_s": [0.5 * k for k in range(1, 21)]})
    shed = pd.DataFrame({"scheduled_s": 3.5, "latency_s": [0.01] * 4})
    run = pd.concat([served.assign(status=200, shed=False), shed.assign(status=503, shed=True)])
    rows = pd.concat([run.assign(admission=a) for a in ("off", "on")]).assign(server="s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = helpers.plot_overload(rows, [2, 2, 2, 2]).axes[0]
    served_line, shed_line = ax.get_lines()[:2]
    assert list(served_line.get_xdata()) == list(range(11))  # every second, the empty ones too
    assert max(served_line.get_ydata()) == 2 and sum(served_line.get_ydata()) == 20
    assert list(shed_line.get_ydata()) == [0, 0, 0, 4] + [0] * 7


def test_a_grid_leaves_settings_that_fell_behind_out_of_the_colour_scale():
    grid = fake_summary().query("server == 'litserve'").assign(stable=[True, False])
    grid["batch_timeout"] = [0.01, 0.05]
    axes = helpers.plot_grid(grid, latency="p99_ms").axes
    texts = [t.get_text() for t in axes[0].texts]
    assert "fell\nbehind" in texts and "20.0" in texts  # one setting shown, one blanked


def test_stage_table_shows_negative_handoffs_per_image_forward_and_a_blocked_loop():
    summary = pd.DataFrame(
        {
            "server": ["baseline", "batching"],
            "read_ms": [40.0, 0.5],
            "forward_ms": [30.0, 80.0],
            "handoffs_ms": [-0.4, 2.0],
            "outside_ms": [1.0, 1.0],
            "server_ms": [70.0, 83.0],
            "mean_batch_size": [1.0, 8.0],
        }
    )
    table = helpers.stage_table(summary, blocked_loop=("baseline",))
    assert table.loc["baseline", "handoffs_ms"] == -0.4  # shown as measured, not clipped
    assert table.loc["batching", "forward_per_image_ms"] == 10.0
    assert table.loc["baseline", "waiting_on_blocked_loop_ms"] == 40.0
    assert pd.isna(table.loc["baseline", "read_ms"]) and table.loc["batching", "read_ms"] == 0.5
    assert "waiting_on_blocked_loop_ms" not in helpers.stage_table(summary).columns


def test_client_ceiling_reports_rate_and_cpu_cost():
    ceiling = asyncio.run(helpers.client_ceiling(concurrency=8, requests=200))
    assert ceiling["errors"] == 0 and ceiling["requests"] == 200
    assert ceiling["requests_per_s"] > 50 and ceiling["client_cpu_ms_per_request"] > 0


def test_model_ceiling_measures_each_batch_size(classifier):
    ceiling = helpers.model_ceiling(batch_sizes=(1, 2), repeats=2, classifier=classifier)
    assert list(ceiling["batch_size"]) == [1, 1, 2, 2]
    assert (ceiling["images_per_s"] > 0).all() and helpers.best_images_per_s(ceiling) > 0


def test_max_sustained_rate_needs_budget_no_errors_and_keeping_up():
    summary = pd.DataFrame(
        {
            "server": ["a", "a", "a", "b", "b"],
            "mode": "open",
            "level": [5, 10, 20, 5, 10],
            "offered_rps": [5.0, 10.0, 20.0, 5.0, 10.0],
            "throughput_rps": [5.0, 9.8, 12.0, 5.0, 10.0],  # a falls behind at 20
            "errors": [0, 0, 0, 0, 3],  # b fails requests at 10
            "p99_ms": [100.0, 400.0, 300.0, 100.0, 100.0],
        }
    )
    assert helpers.max_sustained_rate(summary, p99_budget_ms=500).to_dict() == {"a": 10, "b": 5}
    assert helpers.max_sustained_rate(summary, p99_budget_ms=200).to_dict() == {"a": 5, "b": 5}


def test_a_sustained_rate_holds_at_every_lower_rate_too():
    summary = pd.DataFrame(
        {
            "server": ["a", "a", "a", "b", "b"],
            "mode": "open",
            "level": [5, 10, 20, 5, 10],
            "offered_rps": [5.0, 10.0, 20.0, 5.0, 10.0],
            "throughput_rps": [5.0, 10.0, 20.0, 5.0, 10.0],
            "errors": 0,
            "p99_ms": [100.0, 400.0, 150.0, 400.0, 100.0],  # a fails at 10, passes at 20
        }
    )
    rates = helpers.max_sustained_rate(summary, p99_budget_ms=200)
    assert rates["a"] == 5 and pd.isna(rates["b"])  # b failed its lowest rate
    growing = summary.assign(p99_ms=100.0, stable=[True, False, True, True, True])
    assert helpers.max_sustained_rate(growing, p99_budget_ms=200).to_dict() == {"a": 5, "b": 10}


def test_offered_rate_comes_from_the_schedule():
    run = FIXED.assign(mode="open", scheduled_s=[0.0, 0.25, 0.5, 0.75, 1.0])
    assert helpers.summarize(run).iloc[0]["offered_rps"] == pytest.approx(5.0)


def test_stability_rule():
    assert helpers.is_stable([10.0, 10.5, 9.6])
    assert not helpers.is_stable([10.0, 12.0, 9.0])
    assert helpers.is_stable([5.0, 50.0, 10.0, 10.4, 9.8])  # only the last three count
    assert not helpers.is_stable([10.0])  # one reading shows nothing
    assert helpers.is_stable([10.0, 10.9], tolerance=0.05)


def sweep_spied(patch, servers, restarts=False):
    """Run a small sweep over `servers`, recording for every run: the server's delay option,
    the level, its pid, and which servers were up."""
    seen = []
    original = runs.run_once

    async def spy(server, mode, level, **options):
        up = tuple(s.running for s in servers)
        seen.append((server.options.get("delay", 0), level, server.process.pid, up))
        return await original(server, mode, level, **options)

    patch(runs, "run_once", spy)
    try:
        rows = asyncio.run(
            helpers.sweep(
                servers, "burst", [2, 4], body=BODY, repeats=2, max_repeats=2, warmup=1,
                restarts=restarts,
            )
        )  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    return rows, seen


def test_sweep_alternates_the_order_and_runs_one_server_at_a_time(patch):
    a = helpers.start_server("null", quiet=True, replace=False)
    b = helpers.start_server("null", quiet=True, replace=False, delay=0.01)
    rows, seen = sweep_spied(patch, [a, b])
    order = [(delay, level) for delay, level, *_ in seen]
    assert order == [(0, 2), (0, 4), (0.01, 2), (0.01, 4), (0.01, 2), (0.01, 4), (0, 2), (0, 4)]
    assert all(sum(up) == 1 for *_, up in seen)  # exactly one server up per run
    assert sorted(rows["repeat"].unique()) == [0, 1] and len(rows) == 8 * 3  # 2 or 4 each
    b_pids = {pid for delay, _, pid, _ in seen if delay}
    assert len(b_pids) == 1  # b measured last in round 1 and first in round 2: not restarted


def test_sweep_with_restarts_measures_each_turn_on_a_fresh_server(patch):
    a = helpers.start_server("null", quiet=True, replace=False)
    b = helpers.start_server("null", quiet=True, replace=False, delay=0.01)
    _, seen = sweep_spied(patch, [a, b], restarts=True)
    for delay in (0, 0.01):
        pids = [pid for d, _, pid, _ in seen if d == delay]
        assert len(set(pids)) == 2 and pids[0] == pids[1]  # a new process each round only


def test_a_patch_of_a_re_exported_name_fails_loudly(patch):
    with pytest.raises(pytest.fail.Exception, match="defined elsewhere"):
        patch(helpers, "summarize", None)
    with pytest.raises(pytest.fail.Exception, match="defined elsewhere"):
        patch(runs, "request_body", None)  # defined in servebench.bodies


def test_measure_repeats_until_the_point_is_stable(null_server, patch, monkeypatch):
    answers = iter([])
    patch(stats, "stability", lambda requests, tolerance: pd.DataFrame({"stable": [next(answers)]}))

    def run(verdicts):
        nonlocal answers
        answers = iter(verdicts)
        return asyncio.run(
            helpers.measure(null_server, "burst", 2, body=BODY, repeats=3, max_repeats=5, warmup=0)
        )

    assert run([False, True])["repeat"].max() == 3  # checked after runs 3 and 4
    assert run([False, False, False])["repeat"].max() == 4  # never stable: stops at the cap
    monkeypatch.undo()
    frame = asyncio.run(helpers.measure(null_server, "burst", 2, body=BODY, repeats=2))
    real = stats.stability(frame)
    assert set(real.columns) >= {"server", "level", "runs", "stable"} and real["runs"].iloc[0] == 2


def ceiling(images_per_s: dict) -> pd.DataFrame:
    rows = [
        {"batch_size": b, "repeat": r, "images_per_s": v, "device": "cpu"}
        for b, v in images_per_s.items()
        for r in range(3)
    ]
    return pd.DataFrame(rows)


def test_ceiling_check_says_when_the_comparison_cannot_be_trusted():
    summary = fake_summary()  # litserve serves 20 requests/s
    good = helpers.ceiling_check(ceiling({1: 20.0, 8: 25.0}), ceiling({1: 21.0, 8: 24.0}), summary)
    assert good.trustworthy and good.batch_size == 8 and good.one_image == pytest.approx(20.5)
    assert "can be trusted" in str(good)
    table = helpers.ceiling_fractions(summary, good)
    assert table.loc[10, "litserve / batch 8"] == "82%"
    assert table.loc[10, "fastapi / batch 1"] == "49%"
    drifted = helpers.ceiling_check(ceiling({1: 20.0, 8: 25.0}), ceiling({8: 21.0}), summary)
    assert not drifted.trustworthy and "differ by 16%" in str(drifted)
    assert "fell from 25.0 to 21.0" in str(drifted)  # what was observed, not a guess why
    assert "browser" not in str(drifted)
    rose = helpers.ceiling_check(ceiling({8: 21.0}), ceiling({8: 25.0}), summary)
    assert "rose from 21.0 to 25.0" in str(rose)
    exceeded = helpers.ceiling_check(ceiling({1: 15.0}), ceiling({1: 15.5}), summary)
    assert exceeded.exceeded and "NOT TRUSTWORTHY" in str(exceeded)
    shown = helpers.ceiling_fractions(summary, exceeded)
    assert list(shown.columns) == ["fastapi req/s", "litserve req/s"]  # no percentage over 100
    # FastAPI runs one image per forward pass: the batch-1 ceiling bounds it
    one_image = summary.assign(mean_batch_size=lambda d: d["server"].map({"fastapi": 1.0}))
    over_batch_1 = helpers.ceiling_check(ceiling({1: 9.0, 8: 25.0}), ceiling({8: 25.0}), one_image)
    assert over_batch_1.exceeded and "at batch 1 (9.0)" in str(over_batch_1)
    # where batch 1 is the best, the batch-1 ceiling and the best are one figure
    at_1 = helpers.ceiling_check(ceiling({1: 30.0, 2: 28.0}), ceiling({1: 34.0}), summary)
    assert at_1.batch_size == 1 and at_1.one_image == at_1.ceiling == pytest.approx(32.0)


def test_published_figures_show_whatever_sizes_were_measured():
    quick = fake_summary().assign(level=lambda d: d["level"].map({10: 2, 50: 4}))
    runtime, latency = helpers.original_tables(quick)
    assert list(runtime.index) == [2, 4, 10, 50, 100, 200]
    assert runtime.loc[200, "litserve (original)"] == pytest.approx(1.332)
    assert pd.isna(runtime.loc[200, "fastapi"]) and runtime.loc[2, "fastapi"] == pytest.approx(1.0)
    assert latency.loc[100, "fastapi (original)"] == "725.1 ± 693.9"
    counts = helpers.below_zero(fake_summary().assign(std_ms=300.0))
    assert counts == {"this run": 4, "this run rows": 4, "published": 0, "published rows": 8}


def test_request_bodies_for_every_wire_format():
    sizes = {}
    for wire in helpers.WIRE_FORMATS:
        body = helpers.request_body(wire=wire)
        assert body.wire == wire and len(body) > 10_000
        sizes[wire] = len(body)
    assert sizes["raw"] < sizes["multipart"] < sizes["base64"] < sizes["hex"]
    assert sizes["hex"] == pytest.approx(2 * sizes["raw"], rel=0.01)
    assert helpers.request_body(wire="multipart").content_type.startswith("multipart/form-data")
    with pytest.raises(ValueError, match="wire must be one of"):
        helpers.request_body(wire="xml")


def test_server_timing_header_becomes_columns():
    header = 'read;dur=0.2, forward;dur=181.5;desc="batch of 8", encode;dur=0.1, total;dur=190'
    row = load.server_timings(header)
    assert row["read_ms"] == 0.2 and row["forward_ms"] == 181.5 and row["batch_size"] == 8
    assert row["server_ms"] == 190 and row["queue_ms"] is None
    assert load.server_timings(None)["server_ms"] is None


def test_probe_times_a_url_while_something_else_runs(serial_server):
    url = f"{serial_server.url}/predict"
    rows, latencies = asyncio.run(
        helpers.probe(f"{serial_server.url}/health", helpers.burst(url, 10, BODY), every_s=0.05)
    )
    assert len(rows) == 10 and len(latencies) >= 2
    # /health waited behind the queue of blocking 50 ms requests; the GET still waiting
    # when the burst ends is counted, not dropped.
    assert max(latencies) > 0.3, latencies


def open_run(level: float, latency_s) -> pd.DataFrame:
    """An open-loop run of 60 requests at `level`/s; `latency_s(i)` for request i."""
    scheduled = [i / level for i in range(60)]
    latency = [latency_s(i) for i in range(60)]
    return pd.DataFrame(
        {
            "run_id": f"open-{level}", "server": "s", "mode": "open", "level": level,
            "repeat": 0, "scheduled_s": scheduled, "start_s": scheduled,
            "end_s": [t + d for t, d in zip(scheduled, latency, strict=True)],
            "latency_s": latency, "send_lag_s": 0.0, "status": 200,
        }
    )  # fmt: skip


def test_keeps_up_tells_a_steady_server_from_one_falling_behind():
    steady = open_run(4.0, lambda i: 0.08 + 0.02 * (i % 3))  # jitter, no trend
    behind = open_run(12.0, lambda i: 0.1 + 0.05 * i)  # the queue grows with every request
    verdict = helpers.keeps_up(pd.concat([steady, behind])).set_index("level")["stable"]
    assert verdict[4.0] and not verdict[12.0]


def test_rounded_tables_keep_counts_as_integers():
    summary = helpers.summarize(FIXED)
    table = helpers.rounded(summary)
    assert table["requests"].dtype.kind == "i" and table["errors"].iloc[0] == 1
    assert table["p99_ms"].iloc[0] == 397.0 and table["total_runtime_s"].iloc[0] == 0.5


def test_first_answers():
    requests = FIXED.assign(mode="burst", server="s")
    table = helpers.first_answers(requests)
    assert table.loc[("s", 4)].tolist() == [100.0, 250.0, 400.0]


@pytest.mark.slow
def test_model_ceiling_in_several_processes_adds_up():
    one = helpers.model_ceiling(batch_sizes=(1,), repeats=2, workers=2, threads=1)
    assert list(one["workers"].unique()) == [2] and list(one["torch_threads"].unique()) == [1]
    assert len(one) == 2 and (one["images_per_s"] > 0).all()
