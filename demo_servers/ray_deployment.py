"""What each Ray Serve replica runs: the model, its inference thread, and a FastAPI app.

A replica is a Ray actor (a process) placed by Ray on any node of the cluster; Ray's
HTTP proxy spreads requests over the replicas. In the replica, `read_image` checks the
upload (a bad one gets its 4xx there and never joins a batch) and the hand-made
`Batcher` of `fastapi_batching_server.py` groups the replica's concurrent requests into
one forward pass. `ray_server.py` deploys it, and so can Serve's own tools, by import
path (`app`): `serve run`, or KubeRay's RayService.

Why not `@serve.batch`: in Ray 2.60 it forms the next batch as soon as requests arrive,
while the model is still busy with the last one, and queues the formed batches for the
model. Under load its batches stay at about arrival rate x timeout (1-2 requests on this
project's CPU) however long the queue grows, so a replica offered more than it serves
computes small batches, serves less, and falls further behind (notebook 06 measures
it). The `Batcher` takes a batch only when the model is free, from everything that
waited meanwhile: the longer the queue, the fuller the batch.
"""

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import ray
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from ray import serve

from demo_servers.admission import MAX_QUEUE_WAIT_S, Bounds
from demo_servers.batching import BATCH_TIMEOUT_S, MAX_BATCH_SIZE
from demo_servers.fastapi_batching_server import Batcher
from demo_servers.http_processes import SERVED_BY
from demo_servers.limits import BODY_TIMEOUT_S
from demo_servers.schema import ImageInput, PredictResponse, read_image, respond
from demo_servers.skeleton import create_skeleton
from demo_servers.timing import timed_forward

APPLICATION = "resnet"


class Settings(BaseModel):
    """What one replica is told: the model and its batching. Replica counts and
    autoscaling are not here: they are Serve's deployment options."""

    weights: str = "auto"
    runtime: str = "eager"
    threads: int = 0  # 0: torch's default, which Ray sets to the replica's num_cpus
    preprocess: str = "cpu"  # "gpu": JPEGs decoded on the replica's device
    max_queue: int = 0  # admission bounds in each replica (admission.py)
    max_queue_wait: float = MAX_QUEUE_WAIT_S
    max_batch_size: int = MAX_BATCH_SIZE
    batch_timeout: float = BATCH_TIMEOUT_S  # seconds
    body_timeout: float = BODY_TIMEOUT_S
    ready_replicas: int = 1  # /health says 200 once this many replicas run


def replica_states() -> dict[str, int]:
    """How many replicas are STARTING, RUNNING, STOPPING, ... (from Serve's controller)."""
    status = serve.status().applications[APPLICATION].deployments["ResNet50"]
    return {str(getattr(state, "value", state)): n for state, n in status.replica_states.items()}


@serve.deployment(name="ResNet50")
@serve.ingress()  # the FastAPI app is built in each replica, by __serve_build_asgi_app__
class ResNetDeployment:
    """One replica: a model, its inference thread, and its FastAPI app."""

    def __init__(self, settings: Settings):
        from demo_servers.model import load_for_this_thread

        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.classifier = self.inference.submit(
            load_for_this_thread,
            settings.weights,
            None,
            settings.runtime,
            settings.threads,
            settings.max_batch_size,
        ).result()
        self.device_decoding = settings.preprocess == "gpu"
        predict = functools.partial(timed_forward, self.classifier.predict_inputs)
        self.batcher = Batcher(
            predict, self.inference, settings.max_batch_size, settings.batch_timeout
        )
        self.batching: asyncio.Task | None = None  # started on the replica's event loop
        self.body_timeout = settings.body_timeout
        self.settings = settings
        self.ready_at = settings.ready_replicas
        context = ray.get_runtime_context()
        self.served_by = f"node={context.get_node_id()[:8]} pid={os.getpid()}"

    async def predict_batch(self, image: ImageInput) -> dict:
        """Joins this replica's next batch; returns this image's answer."""
        if self.batching is None:  # the first request: start batching on this loop
            self.batching = asyncio.create_task(self.batcher.run())
        return await self.batcher.submit(image)

    def __serve_build_asgi_app__(self) -> FastAPI:
        def not_ready(request) -> str | None:
            running = replica_states().get("RUNNING", 0)
            return (
                f"{running} of {self.ready_at} replicas running"
                if running < self.ready_at
                else None
            )

        def info(request) -> dict:
            nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
            server = {"name": "ray", "replicas": replica_states(), "nodes": len(nodes)}
            return {
                "model": self.classifier.info(),
                "server": {**server, "served_by": self.served_by},
            }

        settings = self.settings
        bounds = Bounds(settings.max_queue, settings.max_queue_wait, settings.max_batch_size)
        app = create_skeleton(
            "ResNet-50 (Ray Serve)", info, not_ready, self.body_timeout, bounds=bounds
        )
        app.state.preprocessing = self.classifier.preprocessing
        app.state.device_decoding = self.device_decoding

        @app.post("/predict", response_model=PredictResponse)
        async def predict(image: Annotated[ImageInput, Depends(read_image)]):
            answer = await self.predict_batch(image)  # joins this replica's next batch
            response = respond(answer, image)
            response.headers[SERVED_BY] = self.served_by
            return response

        return app


def app(settings: Settings) -> serve.Application:
    """The application by import path, for Serve's own tools: settings come as key=value
    (`serve run demo_servers.ray_deployment:app runtime=openvino`) or as a RayService's
    `args:`; replicas and autoscaling as the deployment `ResNet50`'s options."""
    return ResNetDeployment.bind(settings)
