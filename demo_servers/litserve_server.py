"""ResNet-50 behind LitServe, with dynamic batching and one or more workers per device.

    python -m demo_servers.litserve_server --host 127.0.0.1 --port 8001 \\
        --max-batch-size 8 --batch-timeout 0.05 [--workers-per-device N] \\
        [--accelerator auto|cpu|cuda|mps] [--devices N] [--timeout S]

LitServe runs the HTTP layer and the model in separate processes. The HTTP
process validates each request (`PredictRequest` decodes the image, so bad input
is refused with 422 there and never joins a batch) and puts it on a queue. Each
inference worker takes up to `max_batch_size` requests from the queue, waiting
at most `batch_timeout` seconds for the batch to fill, then calls
decode_request (per request) -> batch -> predict -> unbatch -> encode_response
(per request). With `max_batch_size=1` there is no batching: batch/unbatch are
skipped and predict sees one request.

Two LitServe rules shape this file. LitServe reads the type annotation of
`decode_request` at run time, so this module must not use
`from __future__ import annotations`. And the API class lives in this
importable module on purpose: workers are started with multiprocessing "spawn"
and must be able to import it (a class defined in a notebook makes the server
hang without an error).
"""

import argparse
import logging

import litserve as ls
import torch  # imported before litserve so that accelerator="auto" can find CUDA

from demo_servers.common import (
    BodySizeLimit,
    PredictRequest,
    PredictResponse,
    add_common_arguments,
    add_error_handlers,
    configure_logging,
    prepare_process,
)
from demo_servers.model import cpu_threads_per_worker, load_classifier, resolve_weights

log = logging.getLogger("demo_servers")


class ResNetAPI(ls.LitAPI):
    """ResNet-50 as a LitAPI. Constructed in the main process, set up in each worker."""

    def __init__(
        self,
        weights: str = "auto",
        workers_per_device: int = 1,
        log_batch_sizes: bool = False,
        **batching,
    ):
        super().__init__(**batching)  # max_batch_size, batch_timeout
        self.weights = weights
        self.workers_per_device = workers_per_device
        self.log_batch_sizes = log_batch_sizes

    def setup(self, device: str) -> None:
        if device == "cpu":
            # Every CPU worker would otherwise start one thread per core.
            torch.set_num_threads(cpu_threads_per_worker(self.workers_per_device))
        configure_logging()
        self.classifier = load_classifier(self.weights, device)
        log.info("worker ready on %s with %d torch threads", device, torch.get_num_threads())

    def decode_request(self, request: PredictRequest) -> torch.Tensor:
        # The type annotation makes LitServe validate the JSON in the HTTP process.
        return self.classifier.preprocess([request.image])[0]

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> list[dict] | dict:
        if x.ndim == 3:  # max_batch_size=1: a single image, no batch dimension
            return self.classifier.predict_tensor(x[None])[0]
        if self.log_batch_sizes:
            log.info("batch_size=%d", len(x))
        return self.classifier.predict_tensor(x)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> PredictResponse:
        return PredictResponse(**output)


def build_server(args: argparse.Namespace) -> ls.LitServer:
    """The LitServer for parsed command-line options."""
    weights = resolve_weights(args.weights)  # once here, so all workers load the same model
    api = ResNetAPI(
        weights=weights,
        workers_per_device=args.workers_per_device,
        log_batch_sizes=args.log_batch_sizes,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(
        api,
        accelerator=args.accelerator,
        devices=args.devices,
        workers_per_device=args.workers_per_device,
        timeout=args.timeout,
        middlewares=[BodySizeLimit],
        model_metadata={
            "name": "microsoft/resnet-50",
            "weights": "random" if weights == "random" else "pretrained",
            "weights_source": weights,
            "max_batch_size": args.max_batch_size,
            "batch_timeout": args.batch_timeout,
            "cpu_threads_per_worker": cpu_threads_per_worker(args.workers_per_device),
        },
    )
    add_error_handlers(server.app)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8001)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.05, help="seconds")
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
        help="seconds a request may wait in the queue before a 504 (LitServe's default, 30, "
        "is shorter than a 200-request burst takes on a laptop CPU)",
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
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
