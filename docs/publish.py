"""Run the notebooks with the full profile and publish the executed copies in docs/executed/.

`notebooks/` stays free of outputs (that is what readers run); the copies here are what
readers browsing the repository see. Each starts with a cell naming the machine, the
date, the profile and how long the run took, because every figure in it belongs to
that one run on that one machine.

    python docs/publish.py                      # every notebook, full profile
    python docs/publish.py notebooks/07_*.ipynb # just one
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "executed"


def machine_line() -> str:
    """The hardware and versions, as the toolkit records them with every run."""
    sys.path.insert(0, str(ROOT))
    from demo_servers.weights import RANDOM, resolve_weights
    from servebench.results import environment

    m = environment()
    weights = "random (offline fallback)" if resolve_weights() == RANDOM else "pretrained"
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{m['cpu']}, {m['cpu_cores']} CPU cores, {memory_gib:.0f} GiB, GPU: {m['gpus']}; "
        f"torch {m['torch_version']}, transformers {m['transformers_version']}, "
        f"litserve {m['litserve_version']}, fastapi {m['fastapi_version']}. Weights: {weights}"
    )


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def header(machine: str, profile: str, seconds: float) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(
        "> **Executed copy, published by `make docs`.** Ran on "
        f"{time.strftime('%Y-%m-%d')} with the `{profile}` profile in {duration(seconds)}, "
        f"on: {machine}.\n>\n"
        "> Every figure below belongs to this one run on this one machine. The same "
        "machine's speed can drift 2-3x between days, so compare the ratios measured "
        "side by side here, not these figures with another run's. To run it yourself, "
        "open the clean copy in `notebooks/`.",
        id="executed-copy",
    )


def without_progress_bars(notebook: nbformat.NotebookNode) -> None:
    """Drop tqdm's progress bars: live widgets in JupyterLab, but in a static copy they
    show only their first frame ("0%"), which reads as if nothing ran."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                output
                for output in cell.outputs
                if "application/vnd.jupyter.widget-view+json" not in output.get("data", {})
            ]


def publish(path: Path, profile: str, machine: str) -> float:
    notebook = nbformat.read(path, as_version=4)
    os.environ["BENCHMARK_PROFILE"] = profile
    start = time.perf_counter()
    ExecutePreprocessor(timeout=None, kernel_name="python3").preprocess(
        notebook, {"metadata": {"path": str(path.parent)}}
    )
    seconds = time.perf_counter() - start
    without_progress_bars(notebook)
    notebook.cells.insert(0, header(machine, profile, seconds))
    OUT.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, OUT / path.name)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--profile", default="full", help="full (default) or quick")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    machine = machine_line()
    for path in paths:
        seconds = publish(path.resolve(), args.profile, machine)
        print(f"{path.name}: {duration(seconds)} -> {OUT.relative_to(ROOT) / path.name}")


if __name__ == "__main__":
    main()
