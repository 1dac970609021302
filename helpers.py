"""What the notebooks import: one name for each tool they use, from the `servebench` package.

Each tool lives in the module of its concern (see `servebench/__init__.py`); this facade
only re-exports them, so `helpers.show_source(helpers.burst)` shows the real code. Importing
it starts nothing and registers nothing: the exit handlers that stop servers come with the
first server started.
"""

from demo_servers.batching import ORIGINAL_BATCHING
from servebench.bodies import WIRE_FORMATS, encode_image, image_payload, request_body
from servebench.ceilings import (
    best_images_per_s,
    ceiling_check,
    ceiling_fractions,
    client_ceiling,
    client_headroom,
    client_scaling,
    model_ceiling,
    timed_passes,
)
from servebench.climb import (
    answers_match,
    climb,
    cpu_ladder,
    ladder,
    litserve_verdict,
    rung_table,
    sized_for,
)
from servebench.gpu import gpu_names
from servebench.load import (
    burst,
    closed_loop,
    make_client,
    open_loop,
    poll,
    probe,
    run_in_processes,
    timed_request,
    timing_cost_us,
)
from servebench.locust_runner import run_locust
from servebench.notebook import show_source
from servebench.overload import overload_run, overload_targets, step_table, where_time_went
from servebench.paths import CAT_IMAGE, LOCUSTFILE
from servebench.plots import (
    level_axis,
    plot_autoscaling,
    plot_climb,
    plot_grid,
    plot_latency,
    plot_latency_vs_throughput,
    plot_overload,
    plot_runtime,
    plot_stages,
    plot_throughput,
)
from servebench.profiles import P99_BUDGET_MS, profile
from servebench.published import below_zero, first_answers, original_tables, speedup_table
from servebench.results import load_finding, load_results, save_finding
from servebench.runs import measure, run_once, sweep
from servebench.servers import batch_sizes_from_log, inference_workers, port_in_use, start_server
from servebench.stats import (
    is_stable,
    keeps_up,
    max_sustained_rate,
    percentile_table,
    rounded,
    spread,
    stage_table,
    summarize,
)
from servebench.verdicts import Range, Target, best_of

__all__ = [
    "CAT_IMAGE",
    "LOCUSTFILE",
    "ORIGINAL_BATCHING",
    "P99_BUDGET_MS",
    "WIRE_FORMATS",
    "answers_match",
    "batch_sizes_from_log",
    "below_zero",
    "best_images_per_s",
    "best_of",
    "burst",
    "ceiling_check",
    "ceiling_fractions",
    "client_ceiling",
    "client_headroom",
    "client_scaling",
    "climb",
    "closed_loop",
    "cpu_ladder",
    "encode_image",
    "first_answers",
    "gpu_names",
    "image_payload",
    "inference_workers",
    "is_stable",
    "keeps_up",
    "ladder",
    "level_axis",
    "litserve_verdict",
    "load_finding",
    "load_results",
    "make_client",
    "max_sustained_rate",
    "measure",
    "model_ceiling",
    "open_loop",
    "original_tables",
    "overload_run",
    "overload_targets",
    "percentile_table",
    "plot_autoscaling",
    "plot_climb",
    "plot_grid",
    "plot_latency",
    "plot_latency_vs_throughput",
    "plot_overload",
    "plot_runtime",
    "plot_stages",
    "plot_throughput",
    "poll",
    "port_in_use",
    "probe",
    "profile",
    "Range",
    "request_body",
    "rounded",
    "run_in_processes",
    "run_locust",
    "run_once",
    "rung_table",
    "save_finding",
    "show_source",
    "sized_for",
    "speedup_table",
    "spread",
    "stage_table",
    "start_server",
    "step_table",
    "summarize",
    "sweep",
    "Target",
    "timed_passes",
    "timed_request",
    "timing_cost_us",
    "where_time_went",
]
