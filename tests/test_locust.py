"""Locust as a load mode: its rows in the toolkit's columns, timings and failures."""

import asyncio

import pandas as pd

import helpers


def test_locust_rows_parse_into_the_toolkit(null_server):
    body = helpers.request_body(wire="raw")
    rows, cpu_s = helpers.run_locust(null_server.url, 4, body, 2)
    assert rows and cpu_s > 0
    frame = pd.DataFrame(rows)
    assert set(frame.columns) >= {"scheduled_s", "start_s", "end_s", "latency_s", "status"}
    assert (frame["status"] == 200).all() and (frame["latency_s"] > 0).all()
    measured = asyncio.run(
        helpers.measure(null_server, "locust", 4, body=body, duration_s=2, warmup=0)
    )
    summary = helpers.summarize(measured).iloc[0]
    assert summary["mode"] == "locust" and summary["level"] == 4 and summary["wire"] == "raw"
    assert summary["requests"] > 10 and summary["errors"] == 0 and summary["throughput_rps"] > 5


def test_locust_records_server_timing_and_failures(litserve_server):
    rows, _ = helpers.run_locust(litserve_server.url, 2, helpers.request_body(), 3)
    assert all(row["forward_ms"] > 0 and row["server_ms"] > 0 for row in rows)
    bad = helpers.request_body({"image_bytes": "zz"})
    rows, _ = helpers.run_locust(litserve_server.url, 2, bad, 1)
    assert {row["status"] for row in rows} == {422} and all("HTTP 422" in r["error"] for r in rows)
