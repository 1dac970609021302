"""What every server's main() shares: its command line, logging, and dying with its parent."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time

import uvicorn
from uvicorn.supervisors import Multiprocess

from demo_servers.admission import MAX_QUEUE_WAIT_S, Bounds
from demo_servers.http_processes import SharedPort
from demo_servers.limits import BODY_TIMEOUT_S, MAX_CONNECTIONS, uvicorn_options

log = logging.getLogger("demo_servers")

PREPROCESS_CHOICES = ("cpu", "gpu")
APP_FACTORY = "DEMO_SERVER_APP"  # how `serve` tells uvicorn's worker processes what to build


def add_common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind: 127.0.0.1 (default, this machine only), localhost, ::1, 0.0.0.0",
    )
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT_S,
        help=f"seconds a request body may take to arrive before a 408 (default {BODY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"open connections at most; more get a 503 (default {MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=0,
        help="requests admitted at once at most, per HTTP process; more get a 503 with "
        "Retry-After (default 0: the served rate x --max-queue-wait, Little's law)",
    )
    parser.add_argument(
        "--max-queue-wait",
        type=float,
        default=MAX_QUEUE_WAIT_S,
        help=f"seconds a request may wait (default {MAX_QUEUE_WAIT_S:g}); a request that would "
        "wait longer gets a 503 at once. 0: no admission control, every request waits its turn",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="shut down when this process dies (the helpers pass the notebook kernel's pid)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=os.environ.get("RESNET_WEIGHTS", "auto"),
        help="auto | pretrained | random | a local directory (default: $RESNET_WEIGHTS or auto)",
    )
    parser.add_argument(
        "--runtime",
        default="eager",
        help="eager (default) | channels_last | compile | onnxruntime | openvino | half "
        "(see demo_servers/runtimes.py)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for each model process (default: its share of the physical cores)",
    )
    parser.add_argument(
        "--preprocess",
        default="cpu",
        choices=PREPROCESS_CHOICES,
        help="where JPEGs are decoded and resized: cpu (PIL in the HTTP process, the default) "
        "or gpu (in batches on the model's device, nvJPEG on CUDA; other formats stay on the CPU)",
    )


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """--workers: HTTP processes, each with its own model (uvicorn's workers)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own model (default 1): one "
        "process's event loop and PIL work use one core at most",
    )


def configure_logging(level: str = "info") -> None:
    """Timestamped lines from this project's logger on stderr (the helpers send them to a
    log file). Only our logger: configuring the root one would make every library chatty."""
    logger = logging.getLogger("demo_servers")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def exit_with_parent(parent_pid: int | None, grace_s: float = 10.0) -> None:
    """Stop this server's process group when `parent_pid` goes away.

    A notebook kernel that is killed outright runs no cleanup code; without this
    watchdog its servers would keep serving (and holding memory and ports) forever.
    """
    if not parent_pid:
        return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.warning("parent process %d is gone: shutting down", parent_pid)
        os.killpg(os.getpgrp(), signal.SIGINT)
        time.sleep(grace_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def prepare_process(args: argparse.Namespace) -> None:
    """Logging, a working Ctrl+C (even when started with SIGINT ignored, as nohup does),
    and the parent watchdog: what every server's main() does first."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    configure_logging(args.log_level)
    exit_with_parent(args.parent_pid)


def uvicorn_settings(args: argparse.Namespace) -> dict:
    """uvicorn's settings from the command line, with the HTTP limits."""
    return {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        **uvicorn_options(args.max_connections),
    }


def serve(create_app, options: dict, args: argparse.Namespace) -> None:
    """Serve `create_app(**options)` in `args.workers` processes sharing the port, each
    listening on a socket of its own (`SharedPort`), supervised by uvicorn."""
    if args.workers == 1:
        return uvicorn.run(create_app(**options), **uvicorn_settings(args))
    # uvicorn starts each worker process from an import string: tell it which app to build
    module = create_app.__module__
    if module == "__main__":  # started with python -m demo_servers.<name>
        module = sys.modules["__main__"].__spec__.name
    os.environ[APP_FACTORY] = json.dumps({"factory": f"{module}:{create_app.__name__}", **options})
    app = f"{__name__}:app_from_environment"
    config = uvicorn.Config(app, factory=True, workers=args.workers, **uvicorn_settings(args))
    sockets = SharedPort(args.host, args.port, args.workers)
    log.info("%d processes to listen on %s:%d", args.workers, args.host, args.port)
    Multiprocess(config, sockets=sockets).run()


def app_from_environment():
    """The app `serve` asked each uvicorn worker process to build ($DEMO_SERVER_APP)."""
    options = json.loads(os.environ[APP_FACTORY])
    module, name = options.pop("factory").split(":")
    return getattr(importlib.import_module(module), name)(**options)


def bounds_from(args: argparse.Namespace, in_service: int = 1) -> Bounds:
    """The admission bounds given on the command line; `in_service`: see `Bounds`."""
    return Bounds(args.max_queue, args.max_queue_wait, in_service)
