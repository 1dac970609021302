"""Small conveniences for notebook cells and scripts."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

__all__ = ["run_sync", "show_source"]


def show_source(obj):
    """Display the source of a function, class or module, or a file, straight from its file."""
    import inspect

    from IPython.display import Code

    if isinstance(obj, (str, Path)):
        return Code(Path(obj).read_text(), language="python")
    return Code(inspect.getsource(obj), language="python")


def run_sync(coroutine):
    """Run a coroutine from plain code. (In a notebook, just `await` it.)"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # already inside an event loop
        return pool.submit(asyncio.run, coroutine).result()
