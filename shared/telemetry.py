"""Tracing and logging, wired once at start-up by every service.

Usage in a service's main (the OpenTelemetry demo pattern: wire once, then only add manual
spans around business steps)::

    setup_logging("codec")
    setup_telemetry("codec", otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    server = GrpcServer("codec", interceptors=server_interceptors())
    channel = grpc.aio.insecure_channel(addr, interceptors=client_interceptors())

Metrics (the generator's active/queued streams and frames, the codec's open streams) go through
the same endpoint as OTLP metrics, exported every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (SDK
default 60 s); the Kubernetes autoscaler reads them from the collector.

Traces cross process boundaries as W3C ``traceparent`` metadata, injected by the client
interceptors and extracted by the server interceptor, so one request is one trace across the
gateway, generator, codec and registry.

Server spans come from our own small interceptor (``ServerTracing``), client spans from
opentelemetry-instrumentation-grpc. The contrib aio *server* interceptor keeps the span's context
attached across every ``yield`` of a streaming handler; when gRPC abandons a cancelled stream at a
yield, the generator is closed later from another context, and every cancelled stream logged
"Failed to detach context" (a ValueError). ``ServerTracing`` attaches the context only while the
handler runs, one step at a time.

Streaming handlers must be async generators (as the contrib interceptor required too,
open-telemetry/opentelemetry-python-contrib#3066): the ``await context.write(...)`` style is not
traced correctly. ``grpc_health``'s aio ``Watch`` is written that way, which is one reason health
is never traced (the other: probe noise).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys
from typing import IO, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters
from opentelemetry.propagate import extract, set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "UNTRACED_SERVICES",
    "JsonFormatter",
    "client_interceptors",
    "server_interceptors",
    "setup_logging",
    "setup_telemetry",
]

# Infrastructure services that are never traced: kubelet probes every few seconds would drown
# real traffic, and Health.Watch breaks under the aio interceptor (see module docstring).
UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# The provider installed as the global one by the first setup_telemetry() call.
_global_provider: TracerProvider | None = None


def setup_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    metric_reader: MetricReader | None = None,
) -> TracerProvider:
    """Create the service's TracerProvider and make it (and W3C propagation) global.

    ``otlp_endpoint`` (callers pass ``OTEL_EXPORTER_OTLP_ENDPOINT``) adds a BatchSpanProcessor
    with the OTLP gRPC exporter; an ``http://`` endpoint means a plaintext connection, as it
    does for the OpenTelemetry SDK's own env handling. ``exporter`` is wrapped in a
    BatchSpanProcessor too; tests pass ``span_processor=SimpleSpanProcessor(InMemorySpanExporter())``
    so spans are visible as soon as they end. With none of the three, spans are created (trace
    ids still propagate and appear in logs) but not exported.

    Metrics: a MeterProvider with an OTLP metric exporter on the same endpoint (and
    ``metric_reader``, for tests) becomes the global one, once per process like the tracer's.

    OpenTelemetry allows the global provider to be set only once per process. The first call
    sets it; later calls (several tests in one process) return a new, non-global provider, which
    callers hand to ``server_interceptors(tracer_provider=...)`` / ``client_interceptors(...)``.
    """
    global _global_provider

    resource = Resource.create({SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)
    readers = [metric_reader] if metric_reader is not None else []
    if otlp_endpoint:
        # Imported lazily: the exporters pull in their own gRPC client machinery.
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = otlp_endpoint.startswith("http://")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure)))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint, insecure=insecure)))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if span_processor is not None:
        provider.add_span_processor(span_processor)

    # Trace context is what crosses our hops; baggage rides along as in the SDK default.
    set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    if _global_provider is None:
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _global_provider = provider
    return provider


def _traced_rpcs():
    """Filter for the contrib interceptors: True means "trace this RPC"."""
    return filters.negate(filters.any_of(*(filters.service_name(s) for s in UNTRACED_SERVICES)))


def server_interceptors(tracer_provider: TracerProvider | None = None) -> list:
    """The tracing server interceptor (health and reflection excluded), as a list to pass to
    ``GrpcServer(interceptors=...)``. ``None`` means the global provider."""
    return [ServerTracing(tracer_provider)]


# Status codes that mark a server span as failed (OpenTelemetry's semantic conventions for gRPC).
_SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


class _StatusRecorder:
    """A servicer context that remembers the status a handler ends its RPC with."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context
        self.code = grpc.StatusCode.OK
        self.details = ""

    def __getattr__(self, name):
        return getattr(self._context, name)

    async def abort(self, code, details="", trailing_metadata=()):
        self.code, self.details = code, details
        await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status):
        self.code, self.details = status.code, status.details
        await self._context.abort_with_status(status)

    def set_code(self, code):
        self.code = code
        self._context.set_code(code)

    def set_details(self, details):
        self.details = details
        self._context.set_details(details)


class ServerTracing(grpc.aio.ServerInterceptor):
    """One SERVER span per RPC (health and reflection aside), the child of the caller's span
    (W3C ``traceparent`` metadata); named after the method, with the rpc.* attributes and the
    gRPC status. The span is current while the handler runs, so its logs carry the trace id and
    its calls to other services continue the trace (see the module docstring)."""

    def __init__(self, tracer_provider: TracerProvider | None = None):
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        if handler is None or service in UNTRACED_SERVICES:
            return handler
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        codecs = dict(
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
        if handler.unary_unary or handler.stream_unary:
            behavior = self._unary(handler.unary_unary or handler.stream_unary, method, attributes)
            factory = (
                grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            )
        else:
            behavior = self._streaming(handler.unary_stream or handler.stream_stream, method, attributes)
            factory = (
                grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
            )
        return factory(behavior, **codecs)

    def _start(self, method: str, attributes: dict, context) -> tuple[trace.Span, otel_context.Context]:
        parent = extract({item.key: item.value for item in context.invocation_metadata() or ()})
        span = self._tracer.start_span(method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
        return span, trace.set_span_in_context(span, parent)

    @staticmethod
    def _end(span: trace.Span, status: _StatusRecorder, error: BaseException | None) -> None:
        code = status.code
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            code = grpc.StatusCode.CANCELLED
        elif error is not None and not isinstance(error, grpc.aio.AbortError):
            code = grpc.StatusCode.UNKNOWN
            span.record_exception(error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code.name}: {status.details}"))
        span.end()

    def _unary(self, behavior, method: str, attributes: dict):
        async def traced(request, context):
            span, ctx = self._start(method, attributes, context)
            status, error = _StatusRecorder(context), None
            token = otel_context.attach(ctx)
            try:
                return await behavior(request, status)
            except BaseException as raised:
                error = raised
                raise
            finally:
                otel_context.detach(token)
                self._end(span, status, error)

        return traced

    def _streaming(self, behavior, method: str, attributes: dict):
        async def traced(request, context):
            span, ctx = self._start(method, attributes, context)
            status, error = _StatusRecorder(context), None
            responses = behavior(request, status)
            try:
                while True:
                    token = otel_context.attach(ctx)
                    try:
                        response = await anext(responses)
                    except StopAsyncIteration:
                        break
                    finally:
                        otel_context.detach(token)
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._end(span, status, error)

        return traced


def client_interceptors(tracer_provider: TracerProvider | None = None) -> list:
    """The OpenTelemetry aio client interceptors (all four RPC shapes; health and reflection
    excluded) for ``grpc.aio.insecure_channel(addr, interceptors=...)``."""
    return aio_client_interceptors(tracer_provider=tracer_provider, filter_=_traced_rpcs())


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is
# copied into the JSON line.
_STANDARD_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, trace_id/span_id of the
    current span (W3C hex) when there is one, ``exception`` when the record carries one, plus
    any ``extra=`` fields.

    The trace ids are read from the span current when the record is formatted, which is the
    emitting task/thread for the plain StreamHandler used here (a queue-based handler would
    need to stamp them earlier).
    """

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
            entry["span_id"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_ATTRS and key not in entry:
                entry[key] = value
        # default=str: an odd ``extra`` value must never make logging itself fail.
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(service_name: str, level: str | int = "INFO", *, stream: IO[str] | None = None):
    """Send all logging to ``stream`` (stderr by default) as JSON lines.

    Replaces the handler installed by a previous call (only that one: pytest's capture handlers
    stay), so calling it again does not duplicate output. Returns the installed handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    handler._qwentts_json = True  # marks handlers this function owns
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_qwentts_json", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
