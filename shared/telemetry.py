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

Pitfall (open-telemetry/opentelemetry-python-contrib#3066): the contrib aio server interceptor
iterates streaming handlers with ``async for``, so streaming handlers must be async generators;
the ``await context.write(...)`` style fails with UNKNOWN. ``grpc_health``'s aio ``Watch`` is
written that way, which is one reason health is never traced (the other: probe noise).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

from opentelemetry import metrics, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from opentelemetry.propagate import set_global_textmap
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
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure))
        )
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint, insecure=insecure)))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if span_processor is not None:
        provider.add_span_processor(span_processor)

    # Trace context is what crosses our hops; baggage rides along as in the SDK default.
    set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    if _global_provider is None:
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _global_provider = provider
    return provider


def _traced_rpcs():
    """Filter for the contrib interceptors: True means "trace this RPC"."""
    return filters.negate(filters.any_of(*(filters.service_name(s) for s in UNTRACED_SERVICES)))


def server_interceptors(tracer_provider: TracerProvider | None = None) -> list:
    """The OpenTelemetry aio server interceptor (health and reflection excluded), as a list
    to pass to ``GrpcServer(interceptors=...)``. ``None`` means the global provider."""
    return [aio_server_interceptor(tracer_provider=tracer_provider, filter_=_traced_rpcs())]


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
