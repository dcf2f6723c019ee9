"""The engine on its own thread, bridged to asyncio: the core of the generator service.

One engine thread steps every session together (continuous batching); the event loop never
waits on a tensor op. Each request gets a `Stream`: token ids go in with `add_text` and
`close_text`, frames come out of `async for frame in stream` (or `take_ready()`, without
waiting), and `cancel()` frees the slot at once. Everything the event loop asks of the engine
travels as a command that the engine thread applies between steps, in order, so the engine is
only ever touched from one thread.

Admission: at most `max_active` sessions run; up to `max_queued` more wait for a slot in arrival
order; beyond that `open` raises ResourceExhausted. A runaway guard ends a session whose frames
exceed a budget derived from its text (the models occasionally never emit end-of-speech).

If the engine loop itself fails, every stream ends (CANCELLED, which the service reports as
UNAVAILABLE), `open` refuses new ones, and `on_failure` is called on the event loop (the service
passes `shared.service.fail_process`, so the process exits and is restarted).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry import metrics

from models.engine.engine import Engine, FinishReason
from models.engine.sampling import SamplingParams
from models.qwen3_tts.prompts import PromptPlan
from shared.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)


@dataclass(frozen=True)
class RunnerLimits:
    max_active: int = 16
    max_queued: int = 32
    # Runaway guard: at most base + per_token * (target text tokens) frames once the text is
    # complete. Speech runs at about 2-5 frames (80 ms each) per text token; 10 is generous.
    budget_base_frames: int = 50
    budget_frames_per_token: float = 10.0


_END = object()  # the last item of a stream's queue


class Stream:
    """One utterance seen from the event loop."""

    def __init__(self, runner: EngineRunner, plan: PromptPlan, params: SamplingParams):
        self._runner = runner
        self.plan, self.params = plan, params
        self._queue: asyncio.Queue = asyncio.Queue()
        self.session = None  # set on the engine thread when the session starts
        self.started = False  # has a slot (its start command was sent)
        self._held: list = []  # text and close of a queued stream, replayed when it starts
        self.text_tokens = 0
        # Target-text tokens the talker had read when the last frame taken was produced.
        self.text_consumed = 0
        self.closed = False
        self.finish_reason: FinishReason | None = None

    def add_text(self, token_ids: list[int]) -> None:
        if self.closed:
            raise ValueError("text was added after the input was closed")
        self._runner._engine.check_text_ids(token_ids)  # refuse bad ids here, not on the engine thread
        self.text_tokens += len(token_ids)
        self._send("text", list(token_ids))

    def close_text(self) -> None:
        self.closed = True
        self._send("close")

    def _send(self, kind: str, payload=None) -> None:
        if self.started:
            self._runner._command(self, kind, payload)
        else:
            self._held.append((kind, payload))

    def cancel(self) -> None:
        self._runner._cancel(self)

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
    def __init__(
        self,
        engine: Engine,
        limits: RunnerLimits = RunnerLimits(),
        on_failure: Callable[[str], None] = lambda reason: None,
    ):
        self._engine = engine
        self.limits = limits
        self._on_failure = on_failure
        self.failed = False
        self._commands: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Admission state lives on the event loop thread only.
        self._active: set[Stream] = set()
        self._waiting: collections.deque[Stream] = collections.deque()
        self._streams: dict[int, Stream] = {}  # by session id; engine thread only
        self.frames_total = 0
        meter.create_observable_gauge(
            "qwentts.generator.active_streams", [self._observe_active], description="sessions being generated"
        )
        meter.create_observable_gauge(
            "qwentts.generator.queued_streams", [self._observe_queued], description="sessions waiting for a slot"
        )
        self._frame_counter = meter.create_counter(
            "qwentts.generator.frames", unit="{frame}", description="codec frames generated (80 ms each)"
        )

    # ----- event loop side -----

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Cancel everything and stop the engine thread; every open stream ends (CANCELLED)."""
        self._running = False
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.sleep(0)  # let results the thread posted before it stopped land first
        pending = list(self._waiting) + list(self._active)
        self._waiting.clear()  # so that finishing streams hands no slot on
        for stream in pending:
            self._finished(stream, FinishReason.CANCELLED)

    def stats(self) -> dict:
        return {"active": len(self._active), "queued": len(self._waiting), "frames_total": self.frames_total}

    async def open(self, plan: PromptPlan, params: SamplingParams) -> Stream:
        """A new stream, running at once or queued; ResourceExhausted when the queue is full."""
        if self.failed:
            raise Unavailable(
                "this generator's engine has failed and the process is restarting; retry", reason="ENGINE_FAILED"
            )
        params.validate()
        if plan.clone is not None:
            self._engine.check_clone(plan.clone)
        if len(self._active) >= self.limits.max_active and len(self._waiting) >= self.limits.max_queued:
            raise ResourceExhausted(
                f"the generator is at capacity ({self.limits.max_active} streams running, "
                f"{self.limits.max_queued} waiting); retry later",
                reason="GENERATOR_AT_CAPACITY",
            )
        stream = Stream(self, plan, params)
        if len(self._active) < self.limits.max_active:
            self._activate(stream)
        else:
            self._waiting.append(stream)
        return stream

    def _activate(self, stream: Stream) -> None:
        self._active.add(stream)
        stream.started = True
        self._command(stream, "start")
        for kind, payload in stream._held:
            self._command(stream, kind, payload)
        stream._held.clear()

    def _cancel(self, stream: Stream) -> None:
        if stream in self._waiting:
            self._waiting.remove(stream)
            self._finished(stream, FinishReason.CANCELLED)
        elif stream in self._active:
            self._command(stream, "cancel")

    def _finished(self, stream: Stream, reason: FinishReason) -> None:
        """On the event loop: the stream ended; hand its slot to the next waiting stream."""
        if stream.finish_reason is not None:
            return
        stream.finish_reason = reason
        stream._queue.put_nowait(_END)
        self._active.discard(stream)
        while self._waiting and len(self._active) < self.limits.max_active:
            self._activate(self._waiting.popleft())

    def _deliver(self, stream: Stream, frame: np.ndarray, text_consumed: int) -> None:
        self.frames_total += 1
        self._frame_counter.add(1)
        stream._queue.put_nowait((frame, text_consumed))

    def _command(self, stream: Stream, kind: str, payload=None) -> None:
        self._commands.append((stream, kind, payload))
        self._wake.set()

    def _observe_active(self, _options):
        yield metrics.Observation(len(self._active))

    def _observe_queued(self, _options):
        yield metrics.Observation(len(self._waiting))

    def _fail(self) -> None:
        """On the event loop, once the engine thread has died: end everything, report it."""
        self.failed = True
        pending = list(self._waiting) + list(self._active)
        self._waiting.clear()
        for stream in pending:
            self._finished(stream, FinishReason.CANCELLED)
        self._on_failure("the generator's engine loop failed")

    # ----- engine thread -----

    def _run(self) -> None:
        try:
            self._step_until_stopped()
        except BaseException:  # noqa: BLE001 - whatever it is, the loop is gone: say so, loudly
            log.critical("the engine loop failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._fail)

    def _step_until_stopped(self) -> None:
        engine = self._engine
        while self._running:
            self._apply_commands()
            if not engine.can_progress():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            for output in engine.step():
                stream = self._streams[output.session.id]
                if output.frame is not None:
                    frame, consumed = output.frame.cpu().numpy(), output.session.text_consumed
                    self._loop.call_soon_threadsafe(self._deliver, stream, frame, consumed)
                if output.finished:
                    del self._streams[output.session.id]
                    self._loop.call_soon_threadsafe(self._finished, stream, output.session.finish_reason)
            self._guard_runaways()

    def _apply_commands(self) -> None:
        engine = self._engine
        while self._commands:
            stream, kind, payload = self._commands.popleft()
            session = stream.session
            if kind == "start":
                try:
                    stream.session = session = engine.start(stream.plan, stream.params)
                except Exception:  # validated on open; anything else must not stop the thread
                    log.exception("the engine could not start a session; it ends cancelled")
                    self._loop.call_soon_threadsafe(self._finished, stream, FinishReason.CANCELLED)
                    continue
                self._streams[session.id] = stream
            elif session is None or session.finished:
                continue
            elif kind == "text":
                engine.add_text(session, payload)
            elif kind == "close":
                engine.close_text(session)
            elif kind == "cancel":
                self._end(session, FinishReason.CANCELLED)

    def _guard_runaways(self) -> None:
        limits = self.limits
        for session in list(self._engine.sessions.values()):
            stream = self._streams[session.id]
            if not stream.closed:
                continue  # more text may come: the budget is not known yet
            budget = limits.budget_base_frames + limits.budget_frames_per_token * stream.text_tokens
            if len(session.frames) >= budget:
                self._end(session, FinishReason.BUDGET)

    def _end(self, session, reason: FinishReason) -> None:
        self._engine.cancel(session, reason)
        stream = self._streams.pop(session.id)
        self._loop.call_soon_threadsafe(self._finished, stream, reason)
