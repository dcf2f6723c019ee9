"""The gRPC server bootstrap every service uses.

    server = GrpcServer("codec", port=cfg.port, interceptors=server_interceptors())
    server.add_service(codec_pb2_grpc.add_CodecServiceServicer_to_server, CodecServicer(...),
                       "qwentts.codec.v1.CodecService")
    await server.serve_until_signalled()

What every server gets (design: "standard health and reflection on every server"):

- ``grpc.health.v1.Health``: SERVING for ``""`` (the whole server) and for every added service
  once started; on shutdown everything turns NOT_SERVING *before* the server stops accepting
  RPCs, so a Kubernetes readiness probe fails first and traffic drains away.
- reflection listing every added service, health and reflection itself.
- message size limits and keepalive settings as channel options (see ``Keepalive``).
- SIGTERM/SIGINT handling in ``serve_until_signalled()`` (never at import): readiness off, then
  ``server.stop(grace)`` which refuses new RPCs and lets in-flight ones finish within the grace.

Streaming handlers must be async generators (see shared/telemetry.py for why).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .limits import MAX_MESSAGE_BYTES

__all__ = ["GrpcServer", "Keepalive"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Keepalive:
    """Server-side HTTP/2 keepalive, after grpc/grpc doc/keepalive.md and its Python example.

    - ``time_ms`` 20 s / ``timeout_ms`` 10 s: the server pings idle connections every 20 s and
      drops one whose peer does not answer within 10 s, so calls on a dead peer (node gone,
      NAT state lost) fail in ~30 s instead of the 2 h default.
    - ``permit_without_calls``: keep pinging between calls, so pooled connections from the
      gateway stay warm and dead ones are noticed before the next request.
    - ``min_ping_interval_ms`` 5 s / ``max_ping_strikes`` 2: clients may ping as often as every
      5 s (our clients use ~8 s); faster pingers get GOAWAY ENHANCE_YOUR_CALM after 2 strikes.
      The default (5 min) would reject any useful client keepalive.
    - ``max_connection_age_ms``: off by default. It rebalances long-lived connections across
      replicas, but the connection is then killed after ``max_connection_age_grace_ms``, which
      would cut long TTS streams; enable it only with a grace longer than the longest stream.
    """

    time_ms: int = 20_000
    timeout_ms: int = 10_000
    permit_without_calls: bool = True
    min_ping_interval_ms: int = 5_000
    max_ping_strikes: int = 2
    max_connection_age_ms: int | None = None
    max_connection_age_grace_ms: int | None = None

    def options(self) -> list[tuple[str, int]]:
        opts = [
            ("grpc.keepalive_time_ms", self.time_ms),
            ("grpc.keepalive_timeout_ms", self.timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_ping_interval_ms),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
        ]
        if self.max_connection_age_ms is not None:
            opts.append(("grpc.max_connection_age_ms", self.max_connection_age_ms))
        if self.max_connection_age_grace_ms is not None:
            opts.append(("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms))
        return opts


# add_fn(servicer, server): a generated ``add_XServicer_to_server`` or any callable like it.
AddFn = Callable[[Any, grpc.aio.Server], None]


class GrpcServer:
    """A grpc.aio server with health, reflection, limits, keepalive and graceful shutdown."""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        keepalive: Keepalive = Keepalive(),
        grace_seconds: float = 30.0,
        drain_seconds: float = 0.0,
        options: Sequence[tuple[str, Any]] = (),
    ):
        """``grace_seconds``: how long in-flight RPCs may run after shutdown starts (keep it
        below the pod's terminationGracePeriodSeconds). ``drain_seconds``: how long to stay up,
        reporting NOT_SERVING but still serving, before refusing new RPCs, so that load balancers
        and readiness probes notice first. ``options``: extra channel args, appended last."""
        self.name = name
        self.host = host
        self.port = port
        self.grace_seconds = grace_seconds
        self.drain_seconds = drain_seconds
        self._interceptors = tuple(interceptors)
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Fail loudly if the port is taken instead of silently sharing it with another
            # process (Linux SO_REUSEPORT is on by default in gRPC).
            ("grpc.so_reuseport", 0),
            *keepalive.options(),
            *options,
        ]
        self._services: list[tuple[AddFn, Any, str]] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._stop_task: asyncio.Future | None = None
        self._stop_requested = asyncio.Event()

    @property
    def service_names(self) -> list[str]:
        return [full_name for _, _, full_name in self._services]

    @property
    def health(self) -> health.aio.HealthServicer | None:
        """The health servicer once started, for services that flip their own status (e.g.
        NOT_SERVING while a model reloads)."""
        return self._health

    def add_service(self, add_fn: AddFn, servicer: Any, full_service_name: str) -> None:
        """Register a servicer: ``add_fn(servicer, server)`` runs at start(). The full name
        (``package.Service``) is what health and reflection report."""
        if self._server is not None:
            raise RuntimeError("add_service() must be called before start()")
        self._services.append((add_fn, servicer, full_service_name))

    async def start(self) -> int:
        """Build, bind and start the server; returns the bound port (useful with port=0)."""
        if self._server is not None:
            raise RuntimeError(f"{self.name}: server already started")
        # The server is created here, not in __init__, so it binds to the running event loop.
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        for add_fn, servicer, _ in self._services:
            add_fn(servicer, server)

        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        address = f"{host}:{self.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as error:  # grpcio raises on bind failure
            raise RuntimeError(f"{self.name}: cannot listen on {address}: {error}") from error
        if port == 0:  # older grpcio returned 0 instead of raising
            raise RuntimeError(f"{self.name}: cannot listen on {address}")
        await server.start()
        self._server, self.port = server, port

        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", *self.service_names):
            await self._health.set(service, serving)
        log.info("%s listening on %s:%d", self.name, self.host, port)
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Readiness off (every service NOT_SERVING), optional drain, then stop: new RPCs are
        refused and in-flight ones get ``grace`` seconds (default ``grace_seconds``) before
        being cancelled. Calling it again (or concurrently) waits for the first shutdown."""
        if self._server is None:
            return
        if self._stop_task is None:
            self._stop_requested.set()
            grace = self.grace_seconds if grace is None else grace
            self._stop_task = asyncio.ensure_future(self._shutdown(grace))
        # shield: a caller being cancelled must not abort the shutdown half-way.
        await asyncio.shield(self._stop_task)

    async def _shutdown(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        if self.drain_seconds > 0:
            log.info("%s: NOT_SERVING, draining for %.1fs", self.name, self.drain_seconds)
            await asyncio.sleep(self.drain_seconds)
        log.info("%s: stopping (grace %.1fs)", self.name, grace)
        await self._server.stop(grace)
        log.info("%s: stopped", self.name)

    async def serve_until_signalled(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Start (if not started), serve until one of ``signals`` arrives, shut down gracefully,
        return. Signal handlers are installed only for the duration of this call."""
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            log.info("%s: received %s", self.name, signal.Signals(signum).name)
            self._stop_requested.set()

        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            # Set by a signal, or by stop() called from elsewhere. (Waiting on a task running
            # server.wait_for_termination() instead would be a trap: cancelling that task
            # cancels grpc's internal shutdown future, and the later stop(grace) then raises
            # CancelledError and cuts in-flight RPCs.)
            await self._stop_requested.wait()
            await self.stop()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
