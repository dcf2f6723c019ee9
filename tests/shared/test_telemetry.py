"""shared.telemetry: one trace across a real loopback hop, health untraced, trace ids in logs."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.server import GrpcServer
from shared.telemetry import (
    client_interceptors,
    server_interceptors,
    setup_logging,
    setup_telemetry,
)
from tests.helpers import dummy_service


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def tracing():
    """(provider, exporter). The provider is passed to the interceptors explicitly because only
    the first setup_telemetry() in a process becomes the global one."""
    exporter = InMemorySpanExporter()
    provider = setup_telemetry("test", span_processor=SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest_asyncio.fixture
async def traced(tracing):
    """A traced server and a traced client channel to it; yields (channel, exporter)."""
    provider, exporter = tracing
    server = GrpcServer("dummy", interceptors=server_interceptors(tracer_provider=provider))
    server.add_service(dummy_service.add_dummy, None, dummy_service.SERVICE)
    port = await server.start()
    exporter.clear()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=client_interceptors(tracer_provider=provider))
    try:
        yield channel, exporter
    finally:
        await channel.close()
        await server.stop(grace=0)


def _client_and_server_span(exporter: InMemorySpanExporter, method: str):
    spans = exporter.get_finished_spans()
    client = [s for s in spans if s.name == method and s.kind == trace.SpanKind.CLIENT]
    server = [s for s in spans if s.name == method and s.kind == trace.SpanKind.SERVER]
    assert len(client) == 1 and len(server) == 1, [(s.name, s.kind) for s in spans]
    return client[0], server[0]


def _assert_one_trace(client, server):
    assert client.context.trace_id == server.context.trace_id
    # The server span's parent is the client span, received over the wire (traceparent).
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.span_id == client.context.span_id


@pytest.mark.asyncio
async def test_unary_call_is_one_trace(traced):
    channel, exporter = traced
    echo = channel.unary_unary(dummy_service.ECHO, request_serializer=_identity, response_deserializer=_identity)
    assert await echo(b"hi", timeout=5) == b"hi"
    _assert_one_trace(*_client_and_server_span(exporter, dummy_service.ECHO))


@pytest.mark.asyncio
async def test_server_streaming_async_generator_is_one_trace(traced):
    channel, exporter = traced
    count = channel.unary_stream(dummy_service.COUNT, request_serializer=_identity, response_deserializer=_identity)
    assert [m async for m in count(b"3,0", timeout=5)] == [b"0", b"1", b"2"]
    client, server = _client_and_server_span(exporter, dummy_service.COUNT)
    _assert_one_trace(client, server)
    assert server.status.is_ok


@pytest.mark.asyncio
async def test_bidi_async_generator_is_one_trace(traced):
    channel, exporter = traced
    upper = channel.stream_stream(dummy_service.UPPER, request_serializer=_identity, response_deserializer=_identity)
    assert [m async for m in upper(iter([b"a", b"b"]), timeout=5)] == [b"A", b"B"]
    _assert_one_trace(*_client_and_server_span(exporter, dummy_service.UPPER))


@pytest.mark.asyncio
async def test_health_is_not_traced(traced):
    channel, exporter = traced
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Watch is a context.write-style handler, which the aio interceptor would break
    # (contrib#3066); excluded, it works.
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    assert exporter.get_finished_spans() == ()


@pytest.mark.asyncio
async def test_handler_log_line_carries_trace_id(traced):
    channel, exporter = traced
    stream = io.StringIO()
    handler = setup_logging("test", stream=stream)
    try:
        echo = channel.unary_unary(dummy_service.ECHO, request_serializer=_identity, response_deserializer=_identity)
        await echo(b"hi", timeout=5)
    finally:
        logging.getLogger().removeHandler(handler)
    _, server = _client_and_server_span(exporter, dummy_service.ECHO)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [entry] = [e for e in lines if e["message"] == "echo"]
    assert entry["service"] == "test"
    assert entry["logger"] == "tests.helpers.dummy_service"
    assert entry["level"] == "INFO"
    assert entry["trace_id"] == f"{server.context.trace_id:032x}"
    assert entry["span_id"] == f"{server.context.span_id:016x}"


def test_json_log_outside_a_span_and_with_exception():
    stream = io.StringIO()
    handler = setup_logging("svc", level="DEBUG", stream=stream)
    try:
        log = logging.getLogger("t")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"request_id": "r1"})
    finally:
        logging.getLogger().removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "ERROR" and entry["message"] == "failed"
    assert "trace_id" not in entry and "span_id" not in entry
    assert "ValueError: boom" in entry["exception"]
    assert entry["request_id"] == "r1"
    assert entry["time"].endswith("Z")


def test_setup_logging_twice_keeps_one_handler():
    first = setup_logging("svc", stream=io.StringIO())
    second = setup_logging("svc", stream=io.StringIO())
    try:
        assert first not in logging.getLogger().handlers
        assert second in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(second)


def test_setup_telemetry_with_otlp_endpoint_and_repeat_calls(tracing):
    provider = setup_telemetry("svc", otlp_endpoint="http://127.0.0.1:4317")
    try:
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "svc"
        processors = provider._active_span_processor._span_processors  # no public accessor
        assert [type(p) for p in processors] == [BatchSpanProcessor]
        # The global provider stays the first one installed in this process.
        assert trace.get_tracer_provider() is not provider
    finally:
        provider.shutdown()
