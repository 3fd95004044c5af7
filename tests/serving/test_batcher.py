"""suite/serving/batcher.py: concurrent submissions run together in batches,
each gets its own row, a full queue refuses, and a failing run fails only
its own waiters."""
import asyncio
import threading

import numpy as np
import pytest

from suite.serving.batcher import Batcher, Full


class Model:
    """A real computation (each image's sum, per channel), recording the
    batch sizes it ran on; blocked while `hold` is clear."""

    def __init__(self):
        self.sizes = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail = False

    def __call__(self, pixels):
        self.hold.wait(10)
        self.sizes.append(len(pixels))
        if self.fail:
            raise ValueError("the model failed")
        return pixels.sum(axis=(1, 2))


def images(count):
    return [np.full((4, 4, 3), index, np.float32) for index in range(count)]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_concurrent_images_run_in_batches_each_with_its_own_row():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=8, max_wait=0.01, max_queue=100)
        await batcher.start()
        try:
            rows = await asyncio.gather(*(batcher.submit(p) for p in images(20)))
        finally:
            await batcher.stop()
        return rows, batcher

    rows, batcher = run(main())
    for index, row in enumerate(rows):
        np.testing.assert_array_equal(row, [16 * index] * 3)
    assert sum(model.sizes) == 20 and max(model.sizes) == 8
    assert len(model.sizes) == 3  # 8 + 8 + 4, not 20 runs
    assert (batcher.batches, batcher.images) == (3, 20)


def test_a_lone_image_runs_at_once_and_announced_ones_are_waited_for():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=32, max_wait=5.0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(images(1)[0])      # nothing else coming: no wait
        alone = loop.time() - started
        with batcher.coming(1):                 # another request is decoding its image
            first = batcher.submit(images(1)[0])
            await asyncio.sleep(0.05)
        second = batcher.submit(images(2)[1])
        await asyncio.gather(first, second)
        await batcher.stop()
        return alone

    assert run(main()) < 1.0
    assert model.sizes == [1, 2]


def test_a_full_queue_refuses_and_the_batcher_goes_on():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=2, max_wait=0, max_queue=3)
        await batcher.start()
        model.hold.clear()                      # the model is busy with the first batch
        first = [batcher.submit(p) for p in images(2)]
        await asyncio.sleep(0.05)               # taken into the run: the queue is empty
        queued = [batcher.submit(p) for p in images(3)]
        with pytest.raises(Full, match="3 images are waiting"):
            batcher.submit(images(1)[0])
        model.hold.set()
        rows = await asyncio.gather(*first, *queued)
        await batcher.stop()
        return rows

    assert len(run(main())) == 5
    assert sum(model.sizes) == 5


def test_an_image_no_one_waits_for_is_skipped():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=4, max_wait=0, max_queue=10)
        await batcher.start()
        model.hold.clear()
        busy = batcher.submit(images(1)[0])
        await asyncio.sleep(0.05)
        given_up, kept = batcher.submit(images(2)[1]), batcher.submit(images(3)[2])
        given_up.cancel()                       # its request timed out
        model.hold.set()
        rows = await asyncio.gather(busy, kept)
        await batcher.stop()
        return rows

    rows = run(main())
    np.testing.assert_array_equal(rows[1], [32] * 3)
    assert model.sizes == [1, 1]


def test_a_failing_run_fails_its_waiters_and_the_next_batch_runs():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=4, max_wait=0)
        await batcher.start()
        model.fail = True
        with pytest.raises(ValueError, match="the model failed"):
            await batcher.submit(images(1)[0])
        model.fail = False
        row = await batcher.submit(images(2)[1])
        await batcher.stop()
        return row

    np.testing.assert_array_equal(run(main()), [16] * 3)
