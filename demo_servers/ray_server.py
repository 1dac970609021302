"""ResNet-50 on Ray Serve: replicas that can live on many machines, batching, autoscaling.

    python -m demo_servers.ray_server --port 8005 --replicas 2 [--nodes 2]
        [--max-batch-size 8 --batch-timeout 0.05] [--runtime openvino]
        [--autoscale-max 4 --target-ongoing 8] [--address HEAD:6379]

Ray Serve puts an HTTP proxy in front of replicas: copies of the deployment below,
each a Ray actor (a process) with its own model, placed by Ray on any node of the
cluster. A request goes client -> proxy -> replica; in the replica, `read_image`
checks it (a bad upload gets its 4xx there and never joins a batch), and
`@serve.batch` groups concurrent requests of that replica into one forward pass.

Without `--address`, this process starts a cluster of its own on this machine, on
127.0.0.1 only: a head node (Ray's control plane and the proxy, no CPUs for
replicas) and `--nodes` worker nodes, each a separate raylet, as separate machines
would have. With `--address`, it deploys onto a running cluster instead (see the
README for a real multi-host one). `--autoscale-max` lets Serve add replicas, up to
that many, when each has more than `--target-ongoing` requests in flight. CPU
threads are divided among the replicas as among LitServe's workers.
"""

import argparse
import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from demo_servers.cli import add_common_arguments, add_model_arguments, prepare_process
from demo_servers.hardware import cpu_threads_per_worker, physical_cores
from demo_servers.limits import BodyLimits
from demo_servers.schema import ImageInput, PredictResponse, read_image
from demo_servers.timing import ServerTiming, timed_forward, timed_response

# Every Ray process on 127.0.0.1, none on the machine's network address (Ray reads this
# switch, named for Windows and macOS, to decide whether it runs a multi-host cluster).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402  (after the switches above)
from ray import serve  # noqa: E402

log = logging.getLogger("demo_servers")
APPLICATION = "resnet"


def replica_states() -> dict[str, int]:
    """How many replicas are STARTING, RUNNING, STOPPING, ... (from Serve's controller)."""
    status = serve.status().applications[APPLICATION].deployments["ResNet50"]
    return {str(getattr(state, "value", state)): n for state, n in status.replica_states.items()}


@serve.deployment(name="ResNet50")
@serve.ingress()  # the FastAPI app is built in each replica, by __serve_build_asgi_app__
class ResNetDeployment:
    """One replica: a model, its inference thread, and its FastAPI app."""

    def __init__(self, weights, runtime, threads, batching: dict, body_timeout, ready_at):
        import torch

        from demo_servers.model import load_classifier

        def load():  # in the inference thread, as in the FastAPI servers (OpenMP pools)
            torch.set_num_threads(threads)
            return load_classifier(weights, None, runtime)

        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.classifier = self.inference.submit(load).result()
        self.predict_batch.set_max_batch_size(batching["max_batch_size"])
        self.predict_batch.set_batch_wait_timeout_s(batching["batch_timeout"])
        self.body_timeout = body_timeout
        self.ready_at = ready_at  # replicas that must run before /health says 200
        context = ray.get_runtime_context()
        self.served_by = f"node={context.get_node_id()[:8]} pid={os.getpid()}"

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def predict_batch(self, images: list[ImageInput]) -> list[dict]:
        loop = asyncio.get_running_loop()
        model = self.classifier.predict_crops
        return await loop.run_in_executor(self.inference, timed_forward, model, images)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(title="ResNet-50 (Ray Serve)")
        app.add_middleware(BodyLimits, timeout_s=self.body_timeout)
        app.add_middleware(ServerTiming)
        app.state.preprocessing = self.classifier.preprocessing

        @app.post("/predict", response_model=PredictResponse)
        async def predict(image: Annotated[ImageInput, Depends(read_image)]):
            answer = await self.predict_batch(image)  # joins this replica's next batch
            response = timed_response(answer, image.stages, image.batch_size)
            response.headers["x-served-by"] = self.served_by
            return response

        @app.get("/health")
        async def health():
            running = replica_states().get("RUNNING", 0)
            if running < self.ready_at:
                return PlainTextResponse(f"{running} of {self.ready_at} replicas running", 503)
            return PlainTextResponse("ok")

        @app.get("/info")
        async def info():
            nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
            server = {"name": "ray", "replicas": replica_states(), "nodes": len(nodes)}
            return JSONResponse(
                {"model": self.classifier.info(), "server": {**server, "served_by": self.served_by}}
            )

        return app


def start_cluster(nodes: int, cpus_per_node: float):
    """A head node and `nodes` worker nodes on this machine, each its own raylet."""
    from ray.cluster_utils import Cluster

    store = {"object_store_memory": 100 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, **store},
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, **store)
    cluster.wait_for_nodes()
    return cluster


def deployment_options(args: argparse.Namespace) -> dict:
    """Replica count or autoscaling, and the CPUs Ray reserves for each replica."""
    most = args.autoscale_max or args.replicas
    options = {"ray_actor_options": {"num_cpus": args.cpus / most}}
    if args.autoscale_max:
        options["autoscaling_config"] = {
            "min_replicas": args.replicas,
            "max_replicas": args.autoscale_max,
            "target_ongoing_requests": args.target_ongoing,
            "upscale_delay_s": 2,
            "downscale_delay_s": 10,
        }
    else:
        options["num_replicas"] = args.replicas
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_port=8005)
    add_model_arguments(parser)
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas (the minimum if autoscaling)"
    )
    parser.add_argument("--nodes", type=int, default=1, help="worker nodes of the local cluster")
    parser.add_argument("--address", help="a running Ray cluster to deploy onto (host:port)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.05, help="seconds")
    parser.add_argument("--autoscale-max", type=int, default=0, help="0: a fixed replica count")
    parser.add_argument("--target-ongoing", type=float, default=8, help="requests per replica")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for one request")
    args = parser.parse_args()
    prepare_process(args)
    args.cpus = physical_cores()
    most = args.autoscale_max or args.replicas
    threads = args.threads or cpu_threads_per_worker(most)
    cluster = None if args.address else start_cluster(args.nodes, args.cpus / args.nodes)
    ray.init(address=args.address or cluster.address, logging_level="WARNING")
    try:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": args.host, "port": args.port, "request_timeout_s": args.timeout},
        )
        deployment = ResNetDeployment.options(**deployment_options(args))
        batching = {"max_batch_size": args.max_batch_size, "batch_timeout": args.batch_timeout}
        replica = (args.weights, args.runtime, threads, batching, args.body_timeout, args.replicas)
        serve.run(
            deployment.bind(*replica),
            name=APPLICATION,
            route_prefix="/",
        )
        log.info("Ray Serve ready on %s:%d", args.host, args.port)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        log.info("shutting down Ray Serve")
    finally:
        serve.shutdown()
        ray.shutdown()
        if cluster:
            cluster.shutdown()


if __name__ == "__main__":
    main()
