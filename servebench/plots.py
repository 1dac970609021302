"""Plots of runs, summaries and ceilings (matplotlib and seaborn, imported when drawing)."""

from __future__ import annotations

import itertools

import pandas as pd

from servebench.ceilings import CeilingCheck
from servebench.published import load_reference
from servebench.stats import spread, stage_table

__all__ = [
    "level_axis",
    "plot_autoscaling",
    "plot_climb",
    "plot_grid",
    "plot_latency",
    "plot_latency_vs_throughput",
    "plot_overload",
    "plot_runtime",
    "plot_stages",
    "plot_throughput",
]

SERVER_COLORS = {"fastapi": "tab:blue", "litserve": "tab:orange", "null": "tab:gray"}
# The original ran FastAPI on one of its two GPUs and LitServe on both (reference/README).
PUBLISHED_GPUS = {"fastapi": "1 GPU", "litserve": "2 GPUs"}


def _palette(names) -> dict:
    """A color per server: the usual ones for fastapi and litserve, then tab10 in order."""
    import matplotlib

    others = itertools.cycle(matplotlib.colormaps["tab10"].colors[2:])  # after blue, orange
    return {name: SERVER_COLORS.get(name) or next(others) for name in dict.fromkeys(names)}


UNSTABLE = {"marker": "x", "color": "red", "s": 80, "zorder": 5}


MARKER_UNSTABLE = {"marker": "x", "color": "red", "markersize": 9}


def _axes(ncols: int = 1, width: float = 6.0):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4), squeeze=False)
    return figure, axes[0]


def _plain_numbers(axis) -> None:
    """Tick labels as plain numbers (1, 10, 100, 1,000), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


def level_axis(ax, levels, label: str) -> None:
    """An x axis for load levels or batch sizes: log-scaled when they span more than 5x (so
    a burst of 10 stays readable beside one of 200), ticks at the levels, as integers."""
    from matplotlib.ticker import NullLocator

    levels = sorted({float(v) for v in levels})
    if levels and levels[-1] > 5 * levels[0]:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        label += " (log scale)"
    ax.set_xticks(levels)
    _plain_numbers(ax.xaxis)
    ax.set_xlabel(label)


def _median_with_range(data: pd.DataFrame, y: str, ax) -> None:
    """One line per server over `level`: the median, a min-max band over repeats, and a red x
    on every point whose repeats disagree by more than 10% (see `is_stable`)."""
    import seaborn as sns

    palette = _palette(data["server"])
    sns.lineplot(
        data, x="level", y=y, hue="server", marker="o", ax=ax,
        estimator="median", errorbar=("pi", 100), palette=palette,
    )  # fmt: skip
    points = spread(data, y)
    unstable = points[~points["stable"]]
    if len(unstable):
        ax.scatter(unstable["level"], unstable["median"], label="unstable", **UNSTABLE)
    ax.legend()


def plot_runtime(summary: pd.DataFrame, published: bool = True):
    """Total runtime of each burst vs its size (the original's first table as a chart),
    log-log so that small bursts stay readable, with the published curves dashed."""
    figure, (ax,) = _axes()
    bursts = summary[summary["mode"] == "burst"]
    levels = set(bursts["level"])
    if published:
        reference = load_reference()
        levels |= set(reference["concurrency"])
        for server, rows in reference.groupby("server"):
            ax.plot(
                rows["concurrency"], rows["total_runtime_s"], linestyle="--", marker="s",
                color=SERVER_COLORS.get(server), alpha=0.6,
                label=f"{server}, published ({PUBLISHED_GPUS[server]})",
            )  # fmt: skip
    _median_with_range(bursts, "total_runtime_s", ax)
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    level_axis(ax, levels, "concurrent requests in the burst")
    ax.set(ylabel="total runtime (s, log scale)")
    ax.set_title("Time to answer a whole burst (median, band = min-max over repeats)")
    return figure


def plot_throughput(summary: pd.DataFrame, check: CeilingCheck | None = None):
    """Throughput vs load level. With a `ceiling_check` that can be trusted, the model-alone
    ceiling as dashed lines (its best batch size, and batch 1); with one that cannot, none:
    a plot must not show what the printed check refused."""
    figure, (ax,) = _axes()
    drawn = check is not None and check.trustworthy
    if drawn:
        label = f"model alone, batch {check.batch_size}: {check.ceiling:.1f}/s"
        ax.axhline(check.ceiling, color="black", linestyle="--", label=label)
        label = f"model alone, batch 1: {check.one_image:.1f}/s"
        ax.axhline(check.one_image, color="gray", linestyle=":", label=label)
    _median_with_range(summary, "throughput_rps", ax)
    level_axis(ax, summary["level"], "concurrency (requests in flight)")
    ax.set(ylabel="throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Served throughput vs the model-alone ceiling" if drawn else "Served throughput")
    return figure


def plot_latency(requests: pd.DataFrame):
    """Latency per request: violins per level (log scale), and one ECDF per level with
    each server's p50 (dotted) and p99 (dashed) marked."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    ok = requests[requests["status"] == 200].assign(latency_ms=lambda d: d["latency_s"] * 1000)
    levels = sorted(ok["level"].unique())
    palette = _palette(ok["server"])
    figure = plt.figure(figsize=(max(12, 3.2 * len(levels)), 8))
    grid = figure.add_gridspec(2, len(levels))
    box = figure.add_subplot(grid[0, :])
    sns.violinplot(
        ok, x="level", y="latency_ms", hue="server", ax=box, palette=palette, cut=0,
        inner="quartile", density_norm="width", log_scale=True,
    )  # fmt: skip
    _plain_numbers(box.yaxis)
    box.set(xlabel="concurrency", ylabel="latency (ms, log scale)")
    box.set_title("Latency per request (lines: quartiles)")
    for i, level in enumerate(levels):
        ax = figure.add_subplot(grid[1, i])
        at_level = ok[ok["level"] == level]
        sns.ecdfplot(at_level, x="latency_ms", hue="server", ax=ax, palette=palette, legend=False)
        for server, group in at_level.groupby("server"):
            for p, style in ((50, ":"), (99, "--")):
                value = group["latency_ms"].quantile(p / 100)
                ax.axvline(value, color=palette[server], linestyle=style, linewidth=1)
        ax.set(xlabel="latency (ms)", ylabel="fraction of requests" if i == 0 else "")
        ax.set_title(f"ECDF at {level:g}")
    handles = [Line2D([], [], color=c, label=s) for s, c in palette.items()]
    handles += [Line2D([], [], color="black", linestyle=":", label="p50")]
    handles += [Line2D([], [], color="black", linestyle="--", label="p99")]
    figure.legend(handles=handles, loc="lower center", ncols=len(handles))
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def plot_latency_vs_throughput(summary: pd.DataFrame, percentile: int = 99):
    """The serving trade-off: achieved throughput vs latency, one point per offered rate; a red
    x marks points whose summary says `stable` is False."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    figure, (ax,) = _axes()
    data = summary.sort_values("level")
    palette = _palette(data["server"])
    for column, style in (("p50_ms", ":"), (f"p{percentile}_ms", "-")):
        sns.lineplot(
            data, x="throughput_rps", y=column, hue="server", marker="o", linestyle=style,
            ax=ax, palette=palette, sort=False, estimator=None, legend=False,
        )  # fmt: skip
    handles = [Line2D([], [], color=c, marker="o", label=s) for s, c in palette.items()]
    handles += [Line2D([], [], color="black", linestyle=":", label="p50")]
    handles += [Line2D([], [], color="black", label=f"p{percentile}")]
    if "stable" in data and not data["stable"].all():
        unstable = data[~data["stable"].astype(bool)]
        ax.scatter(unstable["throughput_rps"], unstable[f"p{percentile}_ms"], **UNSTABLE)
        handles.append(Line2D([], [], linestyle="", label="unstable", **MARKER_UNSTABLE))
    ax.legend(handles=handles)
    ax.set(
        xlabel="achieved throughput (requests/s)",
        ylabel="latency (ms), log scale",
        yscale="log",
        title=f"Latency vs throughput (dotted p50, solid p{percentile})",
    )
    _plain_numbers(ax.yaxis)
    return figure


def plot_stages(summary: pd.DataFrame, by: str = "server", blocked_loop: tuple = ()):
    """Stacked bars of `stage_table`: where each server's request time went (`forward` as
    the batch's whole pass, which each request of the batch waits for)."""
    table = stage_table(summary, by, blocked_loop).rename(columns=lambda c: c.removesuffix("_ms"))
    figure, (ax,) = _axes(width=9)
    table.drop(columns="forward_per_image", errors="ignore").plot.barh(
        stacked=True, ax=ax, colormap="tab20", width=0.7
    )
    ax.invert_yaxis()
    ax.set(xlabel="median time per request (ms)", ylabel="", title="Where a request's time goes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # off the bars
    figure.tight_layout()
    return figure


def plot_autoscaling(samples: pd.DataFrame, steps: list[tuple[float, float]]):
    """Replicas over time during an open-loop ramp: `samples` from `poll` of a Ray server's
    /info, `steps` the (wall-clock start, offered requests/s) of each step of the ramp."""
    figure, (ax,) = _axes(width=9)
    start = steps[0][0]
    states = pd.DataFrame(
        [answer["server"]["replicas"] for answer in samples["answer"]], index=samples["at"] - start
    ).fillna(0)
    for state in [s for s in ("RUNNING", "STARTING", "STOPPING") if s in states]:
        ax.step(states.index, states[state], where="post", label=state.lower())
    top = states.to_numpy().max() + 1
    ax.set_ylim(0, top)
    for at, rate in steps:
        ax.axvline(at - start, color="gray", linestyle=":")
        ax.annotate(f"{rate:g} req/s", (at - start, top), va="top", fontsize="small")
    ax.set(xlabel="seconds since the ramp started", ylabel="replicas")
    ax.set_title("Ray Serve's autoscaler under rising open-loop load")
    ax.legend(loc="center left")
    return figure


def plot_grid(summary: pd.DataFrame, latency: str = "p95_ms"):
    """Heatmaps over max_batch_size x batch_timeout: throughput and a latency percentile.

    Where `summary` has a `stable` column (open loop: `keeps_up`), settings that fell
    behind their schedule are left blank and labelled: their latency grows with the run's
    length, so it is no property of the setting, and it would swamp the colour scale."""
    import seaborn as sns

    figure, axes = _axes(2, width=5.5)
    settings = ["max_batch_size", "batch_timeout"]
    if "stable" in summary:
        kept = summary.groupby(settings)["stable"].all().unstack()
    else:
        kept = None
    for ax, (value, title, cmap, fmt) in zip(
        axes,
        [
            ("throughput_rps", "throughput (requests/s)", "viridis", ".1f"),
            (latency, f"{latency.removesuffix('_ms')} latency (ms)", "viridis_r", ".0f"),
        ],
        strict=True,
    ):
        table = summary.pivot_table(value, *settings, aggfunc="median")
        mask = None if kept is None else ~kept.reindex_like(table).fillna(False).astype(bool)
        sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax, mask=mask)
        if mask is not None:
            for row, col in zip(*mask.to_numpy().nonzero(), strict=True):
                ax.text(col + 0.5, row + 0.5, "fell\nbehind", ha="center", va="center",
                        color="red", fontsize="small")  # fmt: skip
        ax.set(title=title, xlabel="batch_timeout (s)", ylabel="max_batch_size")
    figure.tight_layout()
    return figure


def plot_climb(summary: pd.DataFrame):
    """The climb: requests/s per rung (median, min-max over runs) for each server, and beside
    it how busy the GPU was (where there is one) and the p99 latency."""
    import seaborn as sns

    busy = "gpu_busy_pct" in summary and summary["gpu_busy_pct"].notna().any()
    figure, axes = _axes(3 if busy else 2, width=5.0)
    palette = _palette(summary["server"])
    columns = [("throughput_rps", "requests/s"), ("p99_ms", "p99 latency (ms)")]
    if busy:
        columns.append(("gpu_busy_pct", "GPU busy (%)"))
    for ax, (column, label) in zip(axes, columns, strict=True):
        sns.barplot(
            summary, x="rung", y=column, hue="server", estimator="median",
            errorbar=("pi", 100), palette=palette, ax=ax,
        )  # fmt: skip
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=30)
    figure.suptitle("The climb, one change per rung (bars: median; lines: min-max over runs)")
    figure.tight_layout()
    return figure


def plot_overload(rows: pd.DataFrame, step_s: list[float]):
    """Per server (rows) with admission control off and on (columns): requests served and
    shed per second through the ramp, counted when their answer came (what the server
    delivered), and the p99 latency of the served ones by the second they arrived (what
    their clients got; right axis)."""
    import matplotlib.pyplot as plt

    servers = list(dict.fromkeys(rows["server"]))
    figure, axes = plt.subplots(
        len(servers), 2, figsize=(12, 3.2 * len(servers)), squeeze=False, sharex=True
    )
    edges = [sum(step_s[:k]) for k in range(1, len(step_s))]
    for i, server in enumerate(servers):
        for j, admission in enumerate(["off", "on"]):
            ax = axes[i][j]
            run = rows[(rows["server"] == server) & (rows["admission"] == admission)]
            answered = (run["scheduled_s"] + run["latency_s"]).fillna(-1).astype(int)
            seconds = range(int(answered.max()) + 1)  # every second, the empty ones too
            served = run["status"].eq(200).groupby(answered).sum().reindex(seconds, fill_value=0)
            shed = run["shed"].astype(bool).groupby(answered).sum().reindex(seconds, fill_value=0)
            ax.plot(served.index, served.values, label="served/s", color="tab:green")
            ax.plot(shed.index, shed.values, label="shed/s (503)", color="tab:red")
            ok = run[run["status"] == 200]
            latency = ok.groupby(ok["scheduled_s"].astype(int))["latency_s"].quantile(0.99)
            twin = ax.twinx()
            twin.plot(latency.index, latency.values, ":", color="black", label="p99 latency")
            twin.set_ylabel("p99 of served, by arrival (s)")
            for edge in edges:
                ax.axvline(edge, color="gray", lw=0.5)
            ax.set_title(f"{server}, admission control {admission}")
            ax.set_ylabel("answers/s")
            if i == 0 and j == 0:
                ax.legend(loc="upper left")
                twin.legend(loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("seconds (steps: 0.5x, 0.9x, 2x, 0.5x capacity; then the backlog)")
    figure.tight_layout()
    return figure
