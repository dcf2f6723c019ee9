"""The engine on its model thread, bridged to asyncio: the core of the generator service.

The engine (models/engine/) runs on one `ModelThread` (shared/model_thread.py); the event loop
never waits on a tensor op. Each request gets a `Stream`: token ids go in with `add_text` and
`close_text`, frames come out of `async for frame in stream` (or `take_ready()`, without waiting),
and `cancel()` frees the slot. Every call into the engine travels as a command the thread applies
between steps, in order, so the engine is only ever touched from that thread.

Admission: the engine's scheduler runs as many streams as it has slots (`max_active`) and queues
the rest in arrival order; beyond `max_queued` waiting, `open` raises ResourceExhausted at once. The scheduler also
bounds prompt prefill per step and guards against runaways (models/engine/scheduler.py).

If the engine loop itself fails, every stream ends (CANCELLED, which the service reports as
UNAVAILABLE), `open` refuses new ones, and `on_failure` is called on the event loop (the service
passes `shared.service.fail_process`, so the process exits and is restarted). A failure of one
stream's step ends that stream alone (FinishReason.ERROR).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
from opentelemetry import metrics

from models.engine.engine import Engine, FinishReason
from models.engine.sampler import SamplingParams
from models.qwen3_tts.prompts import PromptPlan
from shared.errors import ResourceExhausted, Unavailable
from shared.model_thread import ModelThread

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)

# The OpenTelemetry instruments of the generator (the autoscaler reads the first).
ACTIVE_STREAMS_METRIC = "qwentts.generator.active_streams"
QUEUED_STREAMS_METRIC = "qwentts.generator.queued_streams"
FRAMES_METRIC = "qwentts.generator.frames"


_END = object()  # the last item of a stream's queue


class Stream:
    """One utterance seen from the event loop."""

    def __init__(self, runner: EngineRunner, plan: PromptPlan, params: SamplingParams, trace_id: str | None):
        self._runner = runner
        self.plan, self.params, self.trace_id = plan, params, trace_id
        self._queue: asyncio.Queue = asyncio.Queue()
        self.session = None  # set on the model thread when the engine takes the stream
        self.text_tokens = 0
        # Target-text tokens the talker had read when the last frame taken was produced.
        self.text_consumed = 0
        self.closed = False
        self.finish_reason: FinishReason | None = None

    def add_text(self, token_ids: list[int]) -> None:
        if self.closed:
            raise ValueError("text was added after the input was closed")
        self._runner.engine.check_text_ids(token_ids)  # refuse bad ids here, not on the model thread
        if self.plan.non_streaming:  # the whole text goes into the prompt: it must fit the context
            self._runner.engine.check_context(self.plan, self.text_tokens + len(token_ids))
        self.text_tokens += len(token_ids)
        self._runner.thread.post(self._runner.add_text, self, list(token_ids))

    def close_text(self) -> None:
        self.closed = True
        self._runner.thread.post(self._runner.close_text, self)

    def cancel(self) -> None:
        if self.finish_reason is None:
            self._runner.thread.post(self._runner.cancel, self)

    def __aiter__(self):
        return self

    async def __anext__(self) -> np.ndarray:
        """The next frame, (16,) int64; stops at the end of the utterance."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # iterating again stops again
            raise StopAsyncIteration
        return self._take(item)

    def take_ready(self) -> list[np.ndarray]:
        """The frames already produced and not yet taken, without waiting."""
        frames = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                self._queue.put_nowait(_END)
                break
            frames.append(self._take(item))
        return frames

    def _take(self, item) -> np.ndarray:
        frame, self.text_consumed = item
        return frame


class EngineRunner:
    def __init__(self, engine: Engine, max_queued: int = 32, on_failure: Callable[[str], None] = lambda reason: None):
        self.engine = engine
        self.max_active = engine.scheduler.limits.slots
        self.max_queued = max_queued
        self._on_failure = on_failure
        self.thread = ModelThread("engine", stepper=self, on_failure=self._fail)
        self.failed = False
        # Event loop side: every stream not yet finished.
        self._open: set[Stream] = set()
        # Model thread side: the streams by session id.
        self._streams: dict[int, Stream] = {}
        self.frames_total = 0
        meter.create_observable_gauge(
            ACTIVE_STREAMS_METRIC, [self._observe_active], description="sessions being generated"
        )
        meter.create_observable_gauge(
            QUEUED_STREAMS_METRIC, [self._observe_queued], description="sessions waiting for a slot"
        )
        self._frame_counter = meter.create_counter(
            FRAMES_METRIC, unit="{frame}", description="codec frames generated (80 ms each)"
        )

    # ----- event loop side -----

    def start(self) -> None:
        self.thread.start()

    async def stop(self) -> None:
        """Stop the model thread; every open stream ends (CANCELLED)."""
        await self.thread.stop()
        for stream in list(self._open):
            self._finished(stream, FinishReason.CANCELLED)

    @property
    def active(self) -> int:
        """Streams holding a slot (the scheduler admits in arrival order, as many as it has slots)."""
        return min(len(self._open), self.max_active)

    @property
    def queued(self) -> int:
        return len(self._open) - self.active

    def stats(self) -> dict:
        return {"active": self.active, "queued": self.queued, "frames_total": self.frames_total}

    async def open(self, plan: PromptPlan, params: SamplingParams, trace_id: str | None = None) -> Stream:
        """A new stream, running at once or queued; ResourceExhausted when the queue is full."""
        if self.failed:
            raise Unavailable(
                "this generator's engine has failed and the process is restarting; retry", reason="ENGINE_FAILED"
            )
        params.validate()
        if plan.clone is not None:
            self.engine.check_clone(plan.clone)
        self.engine.check_context(plan, 0)
        if len(self._open) >= self.max_active + self.max_queued:
            raise ResourceExhausted(
                f"the generator is at capacity ({self.max_active} streams running, {self.max_queued} waiting); "
                "retry later",
                reason="GENERATOR_AT_CAPACITY",
            )
        stream = Stream(self, plan, params, trace_id)
        self._open.add(stream)
        self.thread.post(self._start, stream)
        return stream

    def _finished(self, stream: Stream, reason: FinishReason) -> None:
        """On the event loop: the stream ended."""
        if stream.finish_reason is not None:
            return
        stream.finish_reason = reason
        stream._queue.put_nowait(_END)
        self._open.discard(stream)

    def _deliver(self, stream: Stream, frame: np.ndarray, text_consumed: int) -> None:
        self.frames_total += 1
        self._frame_counter.add(1)
        stream._queue.put_nowait((frame, text_consumed))

    def _fail(self, reason: str) -> None:
        """On the event loop, once the model thread has died: end everything, report it."""
        self.failed = True
        for stream in list(self._open):
            self._finished(stream, FinishReason.CANCELLED)
        self._on_failure(reason)

    def _observe_active(self, _options):
        yield metrics.Observation(self.active)

    def _observe_queued(self, _options):
        yield metrics.Observation(self.queued)

    # ----- model thread side: commands and steps -----

    def _start(self, stream: Stream) -> None:
        if stream.finish_reason is not None:
            return
        try:
            stream.session = self.engine.start(stream.plan, stream.params, trace_id=stream.trace_id)
        except ValueError:  # checked on open; anything else must not stop the thread
            log.exception("the engine could not start a session; it ends cancelled")
            self.thread.deliver(self._finished, stream, FinishReason.CANCELLED)
            return
        self._streams[stream.session.id] = stream

    def add_text(self, stream: Stream, token_ids: list[int]) -> None:
        if stream.session is not None and not stream.session.finished:
            self.engine.add_text(stream.session, token_ids)

    def close_text(self, stream: Stream) -> None:
        if stream.session is not None and not stream.session.finished:
            self.engine.close_text(stream.session)

    def cancel(self, stream: Stream) -> None:
        session = stream.session
        if session is not None and not session.finished:
            self.engine.cancel(session)
            del self._streams[session.id]
        self.thread.deliver(self._finished, stream, FinishReason.CANCELLED)

    def has_work(self) -> bool:
        return self.engine.has_work()

    def step(self) -> None:
        for output in self.engine.step():
            stream = self._streams.get(output.session.id)
            if stream is None:
                continue
            if output.frame is not None:
                self.thread.deliver(self._deliver, stream, output.frame, output.session.text_consumed)
            if output.finished:
                del self._streams[output.session.id]
                self.thread.deliver(self._finished, stream, output.session.finish_reason)
