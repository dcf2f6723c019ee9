"""The one thread that runs a process's model work, so that the event loop never waits on it.

Both model services use it the same way (docs/architecture.md):

    thread = ModelThread("engine", stepper=engine_runner, on_failure=fail_process)
    thread.start()                          # on the event loop
    thread.post(session.add_text, ids)      # a command, applied before the next step, in order
    result = await thread.call(embed, audio)  # a one-off job; its result or exception comes back
    thread.deliver(stream.put, frame)       # from the thread: a callback on the event loop

Between commands the thread calls `stepper.step()` whenever `stepper.has_work()`, and sleeps
otherwise until a command arrives. Everything the thread touches (the engine, a codec's stream
states) is touched by it alone, so none of it needs a lock; GPU work is issued from one thread.

A command or job that raises is reported (to its caller, or the log) and the thread goes on. If
the loop itself fails, `on_failure` is called on the event loop (the services stop the process
so that it is restarted) and the thread ends. It never imports torch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Stepper(Protocol):
    def has_work(self) -> bool: ...

    def step(self) -> None: ...


class ModelThread:
    def __init__(
        self, name: str, stepper: Stepper | None = None, on_failure: Callable[[str], None] = lambda reason: None
    ):
        self.name = name
        self._stepper = stepper
        self._on_failure = on_failure
        self._commands: collections.deque[Callable[[], Any]] = collections.deque()
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed = False

    def start(self) -> None:
        """Start the thread; call on the event loop that will receive results."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Let the thread finish its current step and end; commands not yet applied are dropped."""
        self._running = False
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.sleep(0)  # let what the thread delivered before it stopped land first

    def post(self, command: Callable[..., Any], *args) -> None:
        """Run `command(*args)` on the thread before its next step (commands run in order)."""
        self._commands.append(lambda: command(*args))
        self._wake.set()

    async def call(self, job: Callable[..., Any], *args):
        """`job(*args)` on the thread, awaited: its result, or its exception raised here."""
        future = self._loop.create_future()

        def run():
            try:
                result = job(*args)
            except Exception as error:
                self.deliver(settle, future, None, error)
            else:
                self.deliver(settle, future, result, None)

        self.post(run)
        return await future

    def deliver(self, callback: Callable[..., Any], *args) -> None:
        """From the thread: `callback(*args)` on the event loop."""
        self._loop.call_soon_threadsafe(callback, *args)

    # ----- the thread -----

    def _run(self) -> None:
        try:
            while self._running:
                self._apply_commands()
                if self._stepper is not None and self._stepper.has_work():
                    self._stepper.step()
                else:
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
        except BaseException:  # noqa: BLE001 - whatever it is, the loop is gone: say so, loudly
            log.critical("the %s thread failed", self.name, exc_info=True)
            self.failed = True
            self.deliver(self._on_failure, f"the {self.name} thread failed")

    def _apply_commands(self) -> None:
        while self._commands and self._running:
            command = self._commands.popleft()
            try:
                command()
            except Exception:
                log.exception("a command on the %s thread failed", self.name)


def settle(future: asyncio.Future, result, error: Exception | None) -> None:
    """On the event loop: `future` gets `result`, or `error`, unless its awaiter gave up."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
