"""The entry point every service process shares: `python -m services.<name>`.

    @dataclass(frozen=True)
    class CodecConfig(ProcessConfig):
        host: str = env("CODEC_HOST", default="127.0.0.1")
        port: int = env("CODEC_PORT", default=50052, min=0, max=65535)
        ...

    @contextlib.asynccontextmanager
    async def build(config: CodecConfig):
        tokenizer = await asyncio.to_thread(SpeechTokenizer.from_pretrained, ...)
        yield [Registration(add_CodecServiceServicer_to_server, CodecServicer(tokenizer), NAME)]
        # runs after the server has stopped: release what build() acquired

    if __name__ == "__main__":
        run_service("codec", CodecConfig, build)

In order: the config is read from the environment (a bad one exits with status 2 and a message
naming every bad variable; so does a checkpoint or file that `build` finds unusable), JSON logging
and tracing are set up, `build` loads what the service needs, the server starts with tracing and
error interceptors, and it serves until SIGTERM/SIGINT, then shuts down gracefully (see
shared/server.py).

A process that can no longer serve (the generator's engine loop died) calls `fail_process`: health
turns NOT_SERVING, the server stops, and the process exits with status 1 so that Kubernetes
restarts it, rather than staying up and answering nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from .config import CheckpointError, ConfigError, describe, env, load_config
from .errors import ErrorInterceptor
from .server import AddFn, GrpcServer
from .telemetry import server_interceptors, setup_logging, setup_telemetry

log = logging.getLogger(__name__)

# In-flight RPCs get this long after fail_process before they are cancelled.
FAILURE_GRACE_SECONDS = 1.0

_failure: asyncio.Future | None = None  # set by fail_process; one service per process


class ProcessFailed(Exception):
    """The service called fail_process."""


def fail_process(reason: str) -> None:
    """Call on the event loop when this process can no longer serve: health turns NOT_SERVING,
    the server stops, and the process exits with status 1 (see the module docstring)."""
    log.critical("%s; the process stops and exits with status 1", reason)
    if _failure is not None and not _failure.done():
        _failure.set_result(reason)


@dataclass(frozen=True)
class ProcessConfig:
    """Settings every service process takes; subclasses add `host`, `port` and their own."""

    log_level: str = env("LOG_LEVEL", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    otlp_endpoint: str = env("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
    # In-flight RPCs get this long after SIGTERM (keep it under terminationGracePeriodSeconds).
    grace_seconds: float = env("GRPC_GRACE_SECONDS", default=30.0, min=0)
    # After SIGTERM, keep serving this long while health says NOT_SERVING, so load balancers
    # and readiness probes notice before new RPCs are refused (Kubernetes: a few seconds).
    drain_seconds: float = env("GRPC_DRAIN_SECONDS", default=0.0, min=0)


class Registration(NamedTuple):
    add_fn: AddFn
    servicer: Any
    full_name: str


C = TypeVar("C", bound=ProcessConfig)
Build = Callable[[C], AbstractAsyncContextManager[list[Registration]]]


async def serve(name: str, config: ProcessConfig, build: Build) -> None:
    global _failure
    _failure = asyncio.get_running_loop().create_future()
    async with build(config) as registrations:
        server = GrpcServer(
            name,
            host=config.host,
            port=config.port,
            # Tracing outermost so spans record the final status; errors innermost (errors.py).
            interceptors=[*server_interceptors(), ErrorInterceptor()],
            grace_seconds=config.grace_seconds,
            drain_seconds=config.drain_seconds,
        )
        for registration in registrations:
            server.add_service(*registration)
        await server.start()
        serving = asyncio.ensure_future(server.serve_until_signalled())
        await asyncio.wait([serving, _failure], return_when=asyncio.FIRST_COMPLETED)
        if _failure.done():
            await server.stop(grace=FAILURE_GRACE_SECONDS)  # NOT_SERVING first, then stop
        await serving
        if _failure.done():
            raise ProcessFailed(_failure.result())


def run_service(name: str, config_cls: type[C], build: Build) -> None:
    try:
        config = load_config(config_cls)
    except ConfigError as error:
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(name, config.log_level)
    setup_telemetry(name, otlp_endpoint=config.otlp_endpoint or None)
    log.info("%s starting: %s", name, describe(config))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(name, config, build))
    except (ConfigError, CheckpointError) as error:  # found while loading: the operator's to fix
        log.error("%s cannot start: %s", name, error)
        raise SystemExit(2) from None
    except ProcessFailed:
        raise SystemExit(1) from None
