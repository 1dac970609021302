"""ResNet-50 on Ray Serve: replicas that can live on many machines, batching, autoscaling.

    python -m demo_servers.ray_server --port 8005 --replicas 2 [--nodes 2]
        [--max-batch-size 8 --batch-timeout 0.05] [--runtime openvino]
        [--autoscale-max 4 --target-ongoing 8] [--address HEAD:6379]
        [--preprocess gpu] [--replica-gpus 0.5]

Deploys `ray_deployment.ResNetDeployment` behind Ray Serve's HTTP proxy, with a fixed
number of replicas or, with `--autoscale-max`, as many as the load needs (Serve adds a
replica when each has more than `--target-ongoing` requests in flight). CPU threads
are divided among the replicas as among LitServe's workers; where there is a GPU, each
replica reserves a share of one (Ray hides the GPU from replicas that reserve none).

Without `--address`, this process starts a cluster of its own on this machine, on
127.0.0.1 only, in its own process group: a head node (Ray's control plane and the
proxy, no CPUs for replicas) and `--nodes` worker nodes, each a separate raylet, as
separate machines would have. With `--address`, it deploys onto a running cluster
(see the README for a real multi-host one) and assumes nothing about where it is.
"""

import argparse
import logging
import os
import time

from demo_servers.batching import add_batching_arguments
from demo_servers.cli import add_common_arguments, add_model_arguments, prepare_process
from demo_servers.hardware import cpu_threads_per_worker, physical_cores

log = logging.getLogger("demo_servers")

MAX_ONGOING = 1024  # requests a replica may hold (Serve's max_ongoing_requests)


def start_cluster(nodes: int, cpus_per_node: float):
    """A head node and `nodes` worker nodes on this machine, each its own raylet, every
    Ray process on 127.0.0.1 (Ray reads this switch, named for Windows and macOS, to
    decide whether to use the machine's network address), none reporting usage stats."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster  # imports ray: after the switches above

    store = {"object_store_memory": 100 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, **store},
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, **store)
    cluster.wait_for_nodes()
    return cluster


def replica_gpus(requested: float | None, most_replicas: int) -> float:
    """The share of a GPU Ray reserves per replica. Ray hides every GPU from an actor that
    reserves none (CUDA_VISIBLE_DEVICES is emptied), so on a machine with GPUs each replica
    asks for a share of one by default, and replicas share it."""
    if requested is not None:
        return requested
    from litserve.connector import check_cuda_with_nvidia_smi

    return 1 / most_replicas if check_cuda_with_nvidia_smi() > 0 else 0


def deployment_options(args: argparse.Namespace) -> dict:
    """Replica count or autoscaling, and the CPUs and GPU share Ray reserves per replica."""
    actor = {"num_cpus": args.replica_cpus}
    if args.replica_gpus:
        actor["num_gpus"] = args.replica_gpus
    options = {
        "ray_actor_options": actor,
        # Serve lets a replica hold 5 requests by default: fewer than one batch. We let it
        # hold every request it is sent: then nothing waits in the proxy's router, where an
        # overload was measured to starve the replica (notebook 06), and the replica's own
        # admission control (admission.py) sees the whole queue and sheds above its bound.
        "max_ongoing_requests": args.max_ongoing or MAX_ONGOING,
    }
    if args.max_queue_wait:  # Serve's own bound on its router queue, as a backstop
        options["max_queued_requests"] = args.max_ongoing or MAX_ONGOING
        options["backpressure_config"] = {"status_code": 503, "retry_after_s": 1}
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
    add_batching_arguments(parser)
    parser.add_argument("--autoscale-max", type=int, default=0, help="0: a fixed replica count")
    parser.add_argument("--target-ongoing", type=float, default=8, help="requests per replica")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for one request")
    parser.add_argument(
        "--replica-cpus",
        type=float,
        help="CPUs Ray reserves per replica (default: 1 on a cluster; here, the cores shared)",
    )
    parser.add_argument(
        "--max-ongoing",
        type=int,
        default=0,
        help=f"requests a replica holds at once (Serve's max_ongoing_requests; default "
        f"{MAX_ONGOING}: the queue is in the replica, bounded by --max-queue-wait there)",
    )
    parser.add_argument(
        "--replica-gpus",
        type=float,
        help="share of a GPU per replica (default: 1 / replicas where there is a GPU, else 0)",
    )
    args = parser.parse_args()
    prepare_process(args)
    most = args.autoscale_max or args.replicas
    args.replica_gpus = replica_gpus(args.replica_gpus, most)
    if args.address:
        args.replica_cpus = args.replica_cpus or 1
        threads = args.threads or max(1, int(args.replica_cpus))
        cluster = None
    else:
        per_node = physical_cores() / args.nodes
        # What Ray reserves decides placement; a replica must fit on one node.
        args.replica_cpus = args.replica_cpus or min(physical_cores() / most, per_node)
        threads = args.threads or cpu_threads_per_worker(most)
        cluster = start_cluster(args.nodes, per_node)
    # Ray is imported only now: a local cluster's switches must be set before.
    import ray
    from ray import serve

    from demo_servers.ray_deployment import APPLICATION, ResNetDeployment, Settings

    ray.init(address=args.address or cluster.address, logging_level="WARNING")
    try:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": args.host, "port": args.port, "request_timeout_s": args.timeout},
            logging_config={"enable_access_log": args.access_log, "log_level": "WARNING"},
        )
        settings = Settings(
            weights=args.weights,
            runtime=args.runtime,
            threads=threads,
            preprocess=args.preprocess,
            max_queue=args.max_queue,
            max_queue_wait=args.max_queue_wait,
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout,
            body_timeout=args.body_timeout,
            ready_replicas=args.replicas,
        )
        deployment = ResNetDeployment.options(**deployment_options(args))
        serve.run(deployment.bind(settings), name=APPLICATION, route_prefix="/")
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
