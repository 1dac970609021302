"""The baseline: ResNet-50 behind plain FastAPI, built the way the original benchmark built it.

    python -m demo_servers.fastapi_server --host 127.0.0.1 --port 8000

One uvicorn process, one model, one image per forward pass, no batching.
It is deliberately faithful to the original, including its main flaw: the model
runs *inside* an `async def` endpoint, so each forward pass blocks the event
loop. While one request is in the model, the server cannot even answer
`/health`; concurrent requests are served strictly one after another, and the
GPU (or CPU) never sees a batch. Notebook 02 measures what that costs. On a CPU
the model uses torch's default thread count (one per physical core), like a
single LitServe worker, so the two servers get the same hardware.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from demo_servers.fastapi_app import create_base_app, main
from demo_servers.schema import ImageInput, PredictResponse, read_image, respond
from demo_servers.timing import timed_forward


def create_app(**options) -> FastAPI:
    """The FastAPI app (options: see `create_base_app`); the model loads before the port
    answers."""
    app = create_base_app({"name": "fastapi", "batching": False}, **options)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(image: Annotated[ImageInput, Depends(read_image)], request: Request):
        # Blocking call in an async endpoint: the event loop stalls for the whole
        # forward pass (see the module docstring). Kept on purpose as the baseline.
        (answer,) = timed_forward(request.app.state.classifier.predict_inputs, [image])
        return respond(answer, image)

    return app


if __name__ == "__main__":
    main(create_app, __doc__.splitlines()[0])
