"""An OTLP/gRPC receiver of traces and metrics, run by the tests that check telemetry across the
cluster's processes (the services export to it as they would to a collector)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps (service.name, span name, trace id) of each span."""

    def __init__(self):
        self.spans: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attributes.get("service.name", "")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, s.name, s.trace_id) for s in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self):
        with self._lock:
            return list(self.spans)


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP/gRPC metrics receiver that keeps the (service.name, metric name) pairs seen."""

    def __init__(self):
        self.names: set[tuple[str, str]] = set()

    def Export(self, request, context):
        for resource_metrics in request.resource_metrics:
            attributes = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
            for scope_metrics in resource_metrics.scope_metrics:
                self.names.update((attributes.get("service.name", ""), m.name) for m in scope_metrics.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture(scope="module")
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer, metrics = Receiver(), MetricsReceiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.metrics = metrics
    yield servicer, port
    server.stop(grace=None)
