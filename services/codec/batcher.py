"""StreamDecode's batching: the pending pushes of every open stream, decoded together.

The batcher is the codec's stepper on its model thread (shared/model_thread.py): pushes arrive
as commands between steps, and each step takes every push waiting, groups them by frame count
(`push_many` needs equal chunks) and decodes each group in one batched call, the shortest pushes
first: a stream's first chunk (1 frame in the gateway's default schedule) is its first audio, and a
short group waits least behind the others. Pushes that arrive while a step runs wait for the next,
so batches grow with the load. A failure of one group's call
fails those pushes alone (their RPCs end INTERNAL, logged); the others go on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from models.tokenizer_12hz.speech_tokenizer import CodecStream, SpeechTokenizer
from shared.model_thread import ModelThread, settle


@dataclass
class _Push:
    stream: CodecStream
    codes: np.ndarray
    done: asyncio.Future


class StreamBatcher:
    def __init__(self, tokenizer: SpeechTokenizer, on_failure=lambda reason: None):
        self._tokenizer = tokenizer
        self.thread = ModelThread("codec", stepper=self, on_failure=on_failure)
        self._pending: list[_Push] = []  # the model thread's
        self.queued = 0  # pushes posted and not yet in a batch (the event loop's count)

    async def push(self, stream: CodecStream, codes: np.ndarray) -> np.ndarray:
        """`stream.push(codes)`, batched with other streams' pushes; one push per stream at a time."""
        push = _Push(stream, codes, asyncio.get_running_loop().create_future())
        self.queued += 1
        # `_add`, not `self._pending.append`: the bound method would hold today's list, which a step
        # may replace before the post runs, losing the push.
        self.thread.post(self._add, push)
        return await push.done  # a cancelled RPC cancels this future: the batcher then skips it

    def close(self, stream: CodecStream) -> None:
        """Free the stream's state row once the model thread is between steps: a step already
        running may still be decoding it (its push cancelled after the step took it)."""
        self.thread.post(stream.close)

    # ----- on the model thread -----

    def _add(self, push: _Push) -> None:
        self._pending.append(push)

    def has_work(self) -> bool:
        return bool(self._pending)

    def step(self) -> None:
        groups: dict[int, list[_Push]] = defaultdict(list)
        for push in self._pending:
            groups[len(push.codes)].append(push)
        self.thread.deliver(self._taken, len(self._pending))
        self._pending = []
        for _, group in sorted(groups.items()):  # fewest frames first
            group = [push for push in group if not push.done.done()]
            if not group:
                continue
            try:
                wavs = self._tokenizer.push_many([p.stream for p in group], [p.codes for p in group])
            except Exception as error:  # a bug: these RPCs fail (INTERNAL, logged), the rest go on
                for push in group:
                    self.thread.deliver(settle, push.done, None, error)
                continue
            for push, wav in zip(group, wavs):
                self.thread.deliver(settle, push.done, wav, None)

    def _taken(self, count: int) -> None:
        self.queued -= count
