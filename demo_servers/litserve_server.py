"""ResNet-50 behind LitServe, with dynamic batching and one or more workers per device.

    python -m demo_servers.litserve_server --host 127.0.0.1 --port 8001 \\
        --max-batch-size 8 --batch-timeout 0.05 [--workers-per-device N] \\
        [--api-servers N] [--preprocess cpu|gpu] [--runtime half] \\
        [--accelerator auto|cpu|cuda|mps] [--devices N] [--timeout S]

LitServe runs the HTTP layer and the model in separate processes. The HTTP process
reads each request, decodes and checks the image and makes the model's 224x224 crop
(`read_image`), so bad input is refused with a 4xx there and never joins a batch;
then it queues the crop (150 KB of RGB bytes). Each inference worker takes up to
`max_batch_size` requests from the queue, waiting at most `batch_timeout` seconds for
the batch to fill, then calls decode_request (per request) -> batch -> predict ->
unbatch -> encode_response (per request); LitServe's own batch and unbatch pass the list
of inputs and of outputs through, which is all this model needs. With `max_batch_size=1`
there is no batching and predict sees one request. Nothing in the HTTP process needs
torch: only the workers import the model, which keeps restarts quick. With
`--preprocess gpu` the HTTP process checks a JPEG's header only and queues its bytes;
the worker decodes and crops the batch on its device (`device_preprocessing.py`). LitServe 0.2.19's
rough edges are smoothed in `litserve_workarounds.py`, apart from what this file teaches.

Two LitServe rules shape this file. LitServe reads the type annotation of
`decode_request` at run time, so this module must not use
`from __future__ import annotations`. And the API class lives in this
importable module on purpose: workers are started with multiprocessing "spawn"
and must be able to import it (a class defined in a notebook makes the server
hang without an error).
"""

import argparse
import logging
import math
import platform
from typing import Annotated

import litserve as ls
from fastapi import Depends
from fastapi.responses import Response
from litserve.connector import check_cuda_with_nvidia_smi

from demo_servers import admission
from demo_servers.admission import add_admission
from demo_servers.batching import add_batching_arguments
from demo_servers.cli import (
    add_common_arguments,
    add_model_arguments,
    bounds_from,
    prepare_process,
)
from demo_servers.hardware import cpu_threads_per_worker
from demo_servers.http_processes import AllListening, ServedBy
from demo_servers.limits import BodyLimits, uvicorn_options
from demo_servers.litserve_workarounds import ResNetServer
from demo_servers.preprocessing import Preprocessing
from demo_servers.schema import ImageInput, read_image, respond
from demo_servers.supervision import FailOrphanedRequests, WorkerPids
from demo_servers.timing import ServerTiming, timed_forward
from demo_servers.weights import MODEL_ID, RANDOM, resolve_weights

log = logging.getLogger("demo_servers")


class ResNetAPI(ls.LitAPI):
    """ResNet-50 as a LitAPI. Constructed in the main process, set up in each worker."""

    def __init__(
        self, weights="auto", runtime="eager", threads=0, log_batch_sizes=False, **batching
    ):
        super().__init__(**batching)  # max_batch_size, batch_timeout
        self.weights = weights
        self.runtime = runtime
        self.threads = threads  # CPU threads per worker; 0: torch's default
        self.log_batch_sizes = log_batch_sizes
        self.worker_pids: WorkerPids | None = None  # set by build_server
        self.admission_flags: admission.Flags | None = None  # shared with the HTTP processes

    def setup(self, device: str) -> None:
        import torch  # the model stack, in the worker only

        from demo_servers.cli import configure_logging
        from demo_servers.model import load_classifier

        if device == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        configure_logging()
        self.classifier = load_classifier(
            self.weights, device, self.runtime, max_batch_size=self.max_batch_size
        )
        log.info("worker ready on %s with %d torch threads", device, torch.get_num_threads())
        if self.worker_pids:
            self.worker_pids.register()
        if self.admission_flags:  # to drop requests whose client has gone (timed_forward)
            admission.install(self.admission_flags)

    def health(self) -> bool:
        return self.worker_pids is None or self.worker_pids.all_alive()

    def decode_request(self, request: Annotated[ImageInput, Depends(read_image)]) -> ImageInput:
        # The annotation makes LitServe run read_image in the HTTP process, before queueing.
        return request

    def predict(self, x: list[ImageInput] | ImageInput) -> list[tuple] | tuple:
        # LitServe's default batch and unbatch pass lists through: x is the batch's inputs
        inputs = x if isinstance(x, list) else [x]  # max_batch_size=1: a single request
        answers = timed_forward(self.classifier.predict_inputs, inputs)
        if self.log_batch_sizes:
            log.info("batch_size=%d", len(inputs))
        results = list(zip(answers, inputs, strict=True))
        return results if isinstance(x, list) else results[0]

    def encode_response(self, output: tuple) -> Response:
        answer, image = output
        return respond(answer, image)


def pick_accelerator(choice: str) -> str:
    """LitServe's "auto" finds GPUs only if torch is already imported; this process never
    imports torch, so ask nvidia-smi (as LitServe does) and recognise Apple silicon."""
    if choice != "auto":
        return choice
    if check_cuda_with_nvidia_smi() > 0:
        return "cuda"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def build_server(args: argparse.Namespace) -> ResNetServer:
    """The LitServer for parsed command-line options."""
    weights = resolve_weights(args.weights)  # once here, so all workers load the same model
    accelerator = pick_accelerator(args.accelerator)
    threads = args.threads or cpu_threads_per_worker(args.workers_per_device)
    api = ResNetAPI(
        weights=weights,
        runtime=args.runtime,
        threads=threads if accelerator == "cpu" else 0,
        log_batch_sizes=args.log_batch_sizes,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    supervision = FailOrphanedRequests()
    server = ResNetServer(
        api,
        accelerator=accelerator,
        devices=args.devices,
        workers_per_device=args.workers_per_device,
        timeout=args.timeout,
        restart_workers=True,
        callbacks=[supervision],
        middlewares=[
            (BodyLimits, {"timeout_s": args.body_timeout}),
            ServedBy,
            AllListening,
            ServerTiming,
        ],
        model_metadata={
            "name": MODEL_ID,
            "weights": "random" if weights == RANDOM else "pretrained",
            "weights_source": weights,
            "runtime": args.runtime,
            "max_batch_size": args.max_batch_size,
            "batch_timeout": args.batch_timeout,
            "cpu_threads_per_worker": threads if accelerator == "cpu" else None,
            "preprocess": args.preprocess,
        },
    )
    workers = len(server.devices) * args.workers_per_device
    server.model_metadata["http_processes"] = args.api_servers or workers
    # Admission control in every HTTP process; "client gone" flags in shared memory, made
    # before LitServe forks its HTTP processes and spawns its workers (both inherit them).
    api.admission_flags = admission.Flags(shared=True)
    http_processes = server.model_metadata["http_processes"]
    in_service = math.ceil(args.max_batch_size * workers / http_processes)  # per HTTP process
    add_admission(server.app, bounds_from(args, in_service), api.admission_flags)
    api.worker_pids = supervision.pids = WorkerPids(workers)
    server.app.state.preprocessing = Preprocessing.for_weights(weights)
    server.app.state.device_decoding = args.preprocess == "gpu"
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8001)
    add_model_arguments(parser)
    add_batching_arguments(parser)
    parser.add_argument("--workers-per-device", type=int, default=1)
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--devices",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="how many GPUs to use (default: all; ignored on CPU)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds a request may wait in LitServe's queue before a 504 (LitServe's default, "
        "30, is shorter than a 200-request burst takes on a laptop CPU without admission "
        "control); --max-queue-wait sheds long before",
    )
    parser.add_argument(
        "--api-servers",
        type=int,
        default=0,
        help="HTTP processes (LitServe's num_api_servers; default 0: one per worker, as "
        "LitServe does). One reads, decodes and crops on one core at most",
    )
    parser.add_argument(
        "--log-batch-sizes", action="store_true", help="log the size of every batch formed"
    )
    args = parser.parse_args()
    prepare_process(args)
    build_server(args).run(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        generate_client_file=False,  # LitServe would write client.py into the cwd
        num_api_servers=args.api_servers or None,
        access_log=args.access_log,
        **uvicorn_options(args.max_connections),
    )


if __name__ == "__main__":
    main()
