"""FastAPI with dynamic batching made by hand: what LitServe does for you, in one process.

    python -m demo_servers.fastapi_batching_server --port 8004 \\
        --max-batch-size 8 --batch-timeout 0.05 [--inference-threads 2]

Each request, once read and checked by `read_image`, joins an asyncio queue and waits
for its answer. One batching task takes the first request from the queue, then more
until it has `max_batch_size` of them or `batch_timeout` seconds have passed since the
first, runs one forward pass for the whole batch in an inference thread, and answers
each request. A bad upload is refused before it joins the queue, so it never harms
its neighbours; a client that has gone is skipped. Unlike LitServe there is no second
process: no queue between processes, no pickling, and one copy of the model.

On a GPU, one batch at a time leaves the device idle while the next batch is copied
and decoded; `--inference-threads 2` keeps two batches in flight (two batching tasks,
two threads, one model), so that one batch's copy and decoding overlap the other's
forward pass. On a CPU the forward pass already uses every core: keep one.
"""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from demo_servers.batching import BATCH_TIMEOUT_S, MAX_BATCH_SIZE, add_batching_arguments
from demo_servers.fastapi_app import create_base_app, main
from demo_servers.schema import ImageInput, PredictResponse, read_image, respond
from demo_servers.timing import timed_forward


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
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(batch, answers, strict=True):
                if not answer.done():  # a result may be an ImageError: that client's 422
                    answer.set_result(result)


def create_app(
    max_batch_size: int = MAX_BATCH_SIZE,
    batch_timeout: float = BATCH_TIMEOUT_S,
    inference_threads: int = 1,
    **options,
) -> FastAPI:
    inference = ThreadPoolExecutor(inference_threads, thread_name_prefix="inference")
    server = {"name": "fastapi_batching", "batching": True, "max_batch_size": max_batch_size}
    server.update(batch_timeout=batch_timeout, inference_threads=inference_threads)
    app = create_base_app(server, inference=inference, **options)
    setup = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with setup(app):  # loads the model
            predict = functools.partial(timed_forward, app.state.classifier.predict_inputs)
            app.state.batcher = Batcher(predict, inference, max_batch_size, batch_timeout)
            tasks = [asyncio.create_task(app.state.batcher.run()) for _ in range(inference_threads)]
            yield
            for task in tasks:
                task.cancel()

    app.router.lifespan_context = lifespan

    @app.post("/predict", response_model=PredictResponse)
    async def predict(image: Annotated[ImageInput, Depends(read_image)], request: Request):
        return respond(await request.app.state.batcher.submit(image), image)

    return app


def add_arguments(parser) -> None:
    add_batching_arguments(parser)
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=1,
        help="batches in flight at once (default 1; 2 overlaps copies with compute on a GPU)",
    )


if __name__ == "__main__":
    main(create_app, __doc__.splitlines()[0], add_arguments)
