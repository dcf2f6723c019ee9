"""Channels from one service to another: tracing, message limits, keepalive, load balancing.

    channel = open_channel("dns:///generator-custom-voice:50053")
    stub = generator_pb2_grpc.GeneratorServiceStub(channel)

Round-robin load balancing over every address the name resolves to: behind a Kubernetes
headless Service that is every pod, so long-lived streams spread across replicas instead of all
riding the first connection (the default policy, pick_first, uses one address).
"""

from __future__ import annotations

import json

import grpc

from .server import DEFAULT_MAX_MESSAGE_BYTES
from .telemetry import client_interceptors

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure (in-cluster) traced channel to `address` (host:port or dns:///host:port)."""
    options = [
        ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.service_config", _SERVICE_CONFIG),
        # Ping every 10 s while idle (the servers allow pings down to 5 s; shared/server.py) so
        # a dead peer is noticed before the next request rides the connection.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    return grpc.aio.insecure_channel(address, options=options, interceptors=client_interceptors())
