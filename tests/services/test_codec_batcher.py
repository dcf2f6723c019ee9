"""The codec's batcher: pushes posted while a step is running are not lost; short pushes go first."""

import asyncio
import threading

import numpy as np
import pytest

from services.codec.batcher import StreamBatcher

pytestmark = pytest.mark.asyncio


class EchoTokenizer:
    """Stands in for the speech tokenizer: each push decodes to its codes as floats."""

    def push_many(self, streams, codes):
        return [c.astype(np.float32) for c in codes]


async def test_a_push_posted_while_a_step_takes_the_queue_is_kept():
    batcher = StreamBatcher(EchoTokenizer())
    in_step, resume = threading.Event(), threading.Event()
    deliver = batcher.thread.deliver

    def deliver_pausing_the_first_step(callback, *args):
        if not in_step.is_set():  # the step has read the queue and not yet replaced it
            in_step.set()
            resume.wait(timeout=10)
        deliver(callback, *args)

    batcher.thread.deliver = deliver_pausing_the_first_step
    batcher.thread.start()
    try:
        first = asyncio.create_task(batcher.push(object(), np.ones((1, 16), np.int64)))
        await asyncio.to_thread(in_step.wait, 10)
        second = asyncio.create_task(batcher.push(object(), np.full((1, 16), 2, np.int64)))
        await asyncio.sleep(0)  # the second push is posted inside the step's window
        resume.set()
        results = await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
        assert [r[0, 0] for r in results] == [1.0, 2.0]
        assert batcher.queued == 0
    finally:
        resume.set()
        await batcher.thread.stop()


async def test_a_step_decodes_the_shortest_pushes_first():
    """A stream's first chunk (1 frame) is decoded before the longer chunks of the same step."""
    order = []

    class RecordingTokenizer(EchoTokenizer):
        def push_many(self, streams, codes):
            order.append(len(codes[0]))
            return super().push_many(streams, codes)

    batcher = StreamBatcher(RecordingTokenizer())
    pushes = [
        asyncio.create_task(batcher.push(object(), np.zeros((frames, 16), np.int64))) for frames in (8, 4, 8, 1, 2)
    ]
    await asyncio.sleep(0)  # all five posted before the thread starts: one step takes them
    batcher.thread.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*pushes), timeout=10)
        assert [len(r) for r in results] == [8, 4, 8, 1, 2]
        assert order == [1, 2, 4, 8]
    finally:
        await batcher.thread.stop()
