"""A service served in-process on a free loopback port, built like production: its own `build()`
and the error interceptor, as shared/service.py serves it (tracing aside)."""

from __future__ import annotations

import contextlib

from shared.errors import ErrorInterceptor
from shared.server import GrpcServer


@contextlib.asynccontextmanager
async def serve(name: str, build, config):
    """Yields (port, registrations); stops the server, then leaves `build`, on exit."""
    async with build(config) as registrations:
        server = GrpcServer(name, interceptors=[ErrorInterceptor()])
        for registration in registrations:
            server.add_service(*registration)
        port = await server.start()
        try:
            yield port, registrations
        finally:
            await server.stop(grace=0)
