"""Load from Locust: many users, each sending its next request as soon as the last returns.

    LOCUST_BODY=body.bin LOCUST_CONTENT_TYPE=image/jpeg \\
        locust -f locustfile.py --host http://127.0.0.1:8001 --headless -u 16 -r 16 -t 30s

`helpers.run_locust()` starts it for you, headless, with worker processes, and reads the
results back. Every user posts the same body to `/predict`: the file `$LOCUST_BODY`
(written by the helpers: the original's hex JSON, or the raw JPEG) with
`$LOCUST_CONTENT_TYPE`. `wait_time` is zero, so each user is a closed loop, like
`helpers.closed_loop` with concurrency = users: the load adapts to the server, and a
server that stalls is sent less (this is not open-loop traffic). Each request is also
written, in every worker process, as a row of `$LOCUST_ROWS_DIR/<pid>.csv`, so that the
toolkit's summaries and plots work on Locust's runs too.
"""

import csv
import os
from pathlib import Path

from locust import FastHttpUser, constant, events, task

BODY = Path(os.environ["LOCUST_BODY"]).read_bytes() if "LOCUST_BODY" in os.environ else b""
HEADERS = {"content-type": os.environ.get("LOCUST_CONTENT_TYPE", "application/json")}
COLUMNS = ["start_epoch_s", "latency_ms", "status", "error", "server_timing"]
rows = None  # this process's csv writer, once the test starts


class Client(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        with self.client.post("/predict", data=BODY, headers=HEADERS, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:100]}")


@events.test_start.add_listener
def open_rows(environment, **kwargs):
    global rows
    folder = os.environ.get("LOCUST_ROWS_DIR")
    if folder and environment.runner.__class__.__name__ != "MasterRunner":
        handle = open(Path(folder) / f"{os.getpid()}.csv", "w", newline="")  # noqa: SIM115
        rows = csv.writer(handle)
        rows.writerow(COLUMNS)
        environment.rows_file = handle


@events.request.add_listener
def write_row(start_time, response_time, response, exception, **kwargs):
    if rows is not None:
        status = getattr(response, "status_code", None) or None
        timing = response.headers.get("server-timing", "") if response is not None else ""
        error = str(exception)[:200] if exception else ""
        rows.writerow([start_time, response_time, status, error, timing])


@events.test_stop.add_listener
def close_rows(environment, **kwargs):
    handle = getattr(environment, "rows_file", None)
    if handle:
        handle.close()
