"""FastAPI with the model off the event loop: one inference thread beside the loop.

    python -m demo_servers.fastapi_executor_server --port 8003

The only change from the baseline is where `predict` runs the model: in a single
worker thread (`run_in_executor`), while the event loop goes on reading, decoding and
cropping the next requests and answering `/health`. PyTorch, ONNX Runtime and
OpenVINO release the GIL while they compute, so the two really overlap. One thread,
not Starlette's pool of 40: every forward pass already uses all the cores it was
given, and forty at once would only fight over them. The model is also loaded in
that thread: PyTorch (OpenMP) keeps a pool of threads per calling thread, and a pool
left behind by loading in the main thread slowed every pass here by about a fifth.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from demo_servers.fastapi_app import create_base_app, main
from demo_servers.schema import ImageInput, PredictResponse, read_image, respond
from demo_servers.timing import timed_forward


def create_app(**options) -> FastAPI:
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    server = {"name": "fastapi_executor", "batching": False}
    app = create_base_app(server, inference=inference, **options)  # loads the model there

    @app.post("/predict", response_model=PredictResponse)
    async def predict(image: Annotated[ImageInput, Depends(read_image)], request: Request):
        model = request.app.state.classifier.predict_inputs
        loop = asyncio.get_running_loop()
        (answer,) = await loop.run_in_executor(inference, timed_forward, model, [image])
        return respond(answer, image)

    return app


if __name__ == "__main__":
    main(create_app, __doc__.splitlines()[0])
