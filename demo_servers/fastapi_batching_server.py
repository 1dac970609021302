"""FastAPI with dynamic batching made by hand: what LitServe does for you, in one process.

    python -m demo_servers.fastapi_batching_server --port 8004 \\
        --max-batch-size 8 --batch-timeout 0.05

Each request, once read and checked by `read_image`, joins an asyncio queue and waits
for its answer. One batching task takes the first request from the queue, then more
until it has `max_batch_size` of them or `batch_timeout` seconds have passed since the
first, runs one forward pass for the whole batch in an inference thread, and answers
each request. A bad upload is refused before it joins the queue, so it never harms
its neighbours; a client that has gone is skipped. Unlike LitServe there is no second
process: no queue between processes, no pickling, and one copy of the model.
"""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from demo_servers.batching import BATCH_TIMEOUT_S, MAX_BATCH_SIZE, add_batching_arguments
from demo_servers.fastapi_app import create_base_app, main
from demo_servers.schema import ImageInput, PredictResponse, read_image
from demo_servers.timing import timed_forward, timed_response


class Batcher:
    """Collects queued requests into batches and runs `predict` once per batch."""

    def __init__(
        self,
        predict,
        inference,
        max_batch_size: int = MAX_BATCH_SIZE,
        batch_timeout: float = BATCH_TIMEOUT_S,
    ):
        self.predict = predict  # list of inputs -> list of answers
        self.inference = inference  # the executor whose one thread runs `predict`
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.queue: asyncio.Queue = asyncio.Queue()

    async def submit(self, item):
        """Queue one input; returns its answer once its batch has run."""
        answer = asyncio.get_running_loop().create_future()
        await self.queue.put((item, answer))
        return await answer

    async def run(self) -> None:
        """The batching task: runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.batch_timeout
            while len(batch) < self.max_batch_size and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            batch = [(item, answer) for item, answer in batch if not answer.done()]
            if not batch:  # every client of this batch has gone
                continue
            items = [item for item, _ in batch]
            try:
                answers = await loop.run_in_executor(self.inference, self.predict, items)
            except Exception as exc:  # a failed forward pass fails this batch only
                answers = [exc] * len(batch)
            for (_, answer), result in zip(batch, answers, strict=True):
                if not answer.done():
                    if isinstance(result, Exception):
                        answer.set_exception(result)
                    else:
                        answer.set_result(result)


def create_app(
    max_batch_size: int = MAX_BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S, **options
) -> FastAPI:
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    server = {"name": "fastapi_batching", "batching": True, "max_batch_size": max_batch_size}
    server["batch_timeout"] = batch_timeout
    app = create_base_app(server, inference=inference, **options)
    setup = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with setup(app):  # loads the model
            predict = functools.partial(timed_forward, app.state.classifier.predict_crops)
            app.state.batcher = Batcher(predict, inference, max_batch_size, batch_timeout)
            task = asyncio.create_task(app.state.batcher.run())
            yield
            task.cancel()

    app.router.lifespan_context = lifespan

    @app.post("/predict", response_model=PredictResponse)
    async def predict(image: Annotated[ImageInput, Depends(read_image)], request: Request):
        answer = await request.app.state.batcher.submit(image)
        return timed_response(answer, image.stages, image.batch_size)

    return app


if __name__ == "__main__":
    main(create_app, __doc__.splitlines()[0], add_batching_arguments)
