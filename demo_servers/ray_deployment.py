"""What each Ray Serve replica runs: the model, its inference thread, and a FastAPI app.

A replica is a Ray actor (a process) placed by Ray on any node of the cluster; Ray's
HTTP proxy spreads requests over the replicas. In the replica, `read_image` checks the
upload (a bad one gets its 4xx there and never joins a batch) and `@serve.batch` groups
the replica's concurrent requests into one forward pass. `ray_server.py` deploys it.
"""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import ray
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from demo_servers.limits import BodyLimits
from demo_servers.schema import ImageInput, PredictResponse, read_image
from demo_servers.timing import ServerTiming, timed_forward, timed_response

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
