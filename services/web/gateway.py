"""The gateway's public gRPC API as the web service calls it, like any other client.

Every call carries what the HTTP request carries: the caller's credential (`Authorization: Bearer
<key>` or `x-api-key`, forwarded as they came, so the gateway alone decides who the caller is and
refuses two credentials), a deadline (`X-Request-Timeout` seconds, at most
WEB_REQUEST_TIMEOUT_SECONDS, which is also the default), and the trace context (the channel's
client interceptor injects the current span, the ASGI server span of the request). An HTTP client
that goes away cancels the call, so the generator frees its slot at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request

from qwentts.v1 import tts_pb2_grpc, voices_pb2_grpc
from shared.client import open_channel

from .errors import ApiError, from_rpc_error

CREDENTIAL_HEADERS = ("authorization", "x-api-key")
TIMEOUT_HEADER = "x-request-timeout"


class Gateway:
    def __init__(self, address: str, max_timeout_seconds: float):
        self.channel = open_channel(address)
        self.tts = tts_pb2_grpc.TextToSpeechServiceStub(self.channel)
        self.voices = voices_pb2_grpc.VoiceCatalogServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.max_timeout_seconds = max_timeout_seconds

    async def close(self) -> None:
        await self.channel.close()

    async def serving(self) -> bool:
        """Whether the gateway's health check says SERVING (within 2 s)."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def call_options(self, headers: Mapping[str, str], api_key: str = "") -> dict:
        """`metadata` and `timeout` for a gateway call made for a request with these headers;
        `api_key` is a credential that came in the body (browsers cannot set WebSocket headers)."""
        metadata = [(name, value) for name, value in headers.items() if name in CREDENTIAL_HEADERS]
        if api_key:
            metadata.append(("x-api-key", api_key))
        timeout = self.max_timeout_seconds
        if TIMEOUT_HEADER in headers:
            try:
                asked = float(headers[TIMEOUT_HEADER])
            except ValueError:
                asked = math.nan
            if not (math.isfinite(asked) and asked > 0):
                raise ApiError(
                    400, f"{TIMEOUT_HEADER} must be a number of seconds above 0", "INVALID_TIMEOUT", TIMEOUT_HEADER
                )
            timeout = min(asked, timeout)
        return {"metadata": metadata, "timeout": timeout}

    async def unary(self, request: Request, method, message):
        """`method(message)` for this HTTP request (see `step`)."""
        call = method(message, **self.call_options(request.headers))
        return await step(request, call, call)


async def step(request: Request, call, awaitable):
    """Awaits `awaitable`, a step of the gRPC `call` (the call itself, or a read of its stream), its
    failure raised as an ApiError. If the HTTP client disconnects first, the call is cancelled (and
    the ApiError is 499, which nobody reads)."""
    disconnected = asyncio.ensure_future(_disconnect(request))
    answer = asyncio.ensure_future(_answer(awaitable))
    try:
        await asyncio.wait([answer, disconnected], return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request's own task is cancelled
        disconnected.cancel()
        if not answer.done():
            call.cancel()
            answer.cancel()
    if not answer.done() or answer.cancelled():
        raise ApiError(499, "the client went away", "CLIENT_GONE")
    return answer.result()


async def _answer(awaitable):
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the body has been read by then: only the disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
