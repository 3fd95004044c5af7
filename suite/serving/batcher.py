"""Concurrent requests' images gathered into batches for one model (the
dynamic batching of TensorFlow Serving and Triton, in asyncio), without
TensorFlow.

A request announces its images while it decodes them (coming), then
submits them and awaits their rows. One task takes what is waiting, up to
max_batch images, waits up to max_wait for more while more are announced
(so a lone request on an idle server does not wait at all), and runs the
model on the batch in a worker thread (ONNX Runtime releases the GIL, so
the event loop goes on reading and decoding requests meanwhile); the
requests that came during a run make the next batch. One run at a time:
the model's own threads use every core for it.
The queue holds at most max_queue images: submit refuses more (Full), so a
burst beyond what the model can serve is answered at once rather than held
in memory.
"""
import asyncio
import concurrent.futures
import contextlib

import numpy as np


class Full(Exception):
    """The queue holds max_queue images: the server is busy."""


class Batcher:
    """Runs model(pixels [N, ...]) -> rows [N, ...] on batches of submitted images."""

    def __init__(self, model, max_batch=32, max_wait=0.005, max_queue=256):
        self._model = model
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self._queue = None
        self._task = None
        self._coming = 0  # images announced (coming) but not yet submitted
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "model")
        self.batches = self.images = 0  # what has run, for /healthz and the benchmarks

    async def start(self):
        """Starts the batching task on the running event loop."""
        self._queue = asyncio.Queue(self.max_queue)
        self._submitted = asyncio.Event()
        self._task = asyncio.create_task(self._serve())

    async def stop(self):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._thread.shutdown(wait=True)

    @property
    def waiting(self):
        return self._queue.qsize() if self._queue else 0

    def submit(self, pixels):
        """A future of the model's row for one image; raises Full. A caller
        that stops waiting cancels the future, and its image is skipped."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((pixels, future))
        except asyncio.QueueFull:
            raise Full(f"{self.max_queue} images are waiting") from None
        self._submitted.set()
        return future

    async def _serve(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(
                    self._thread, self._model, np.stack([pixels for pixels, _ in batch]))
            except Exception as error:  # the model failed on this batch: each waiter hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.images += len(batch)
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)

    @contextlib.contextmanager
    def coming(self, count):
        """Announces count images being prepared (decoded) for submit: while
        any are, a batch waits for them, up to max_wait. Leave the block
        just before submitting them."""
        self._coming += count
        try:
            yield
        finally:
            self._coming -= count

    async def _next_batch(self):
        """The images waiting, up to max_batch: the first awaited, then those
        that come while any are announced (coming), for up to max_wait; a
        lone request on an idle server runs at once. Those no one waits for
        any more are left out."""
        batch = [await self._queue.get()]
        self._take_waiting(batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch and self._coming and loop.time() < deadline:
            # Waiting on an event, not on the queue: a queue read that a
            # timeout cancels can lose the image it took (wait_for, Python 3.11).
            self._submitted.clear()
            try:
                await asyncio.wait_for(self._submitted.wait(), deadline - loop.time())
            except TimeoutError:
                pass
            self._take_waiting(batch)
        return [(pixels, future) for pixels, future in batch if not future.done()]

    def _take_waiting(self, batch):
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
