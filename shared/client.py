"""Channels from one service to another: tracing, message limits, keepalive, load balancing.

    channel = open_channel("dns:///generator-custom-voice:50053")
    stub = generator_pb2_grpc.GeneratorServiceStub(channel)

Round-robin load balancing over every address the name resolves to: behind a Kubernetes
headless Service that is every pod, so long-lived streams spread across replicas instead of all
riding the first connection (the default policy, pick_first, uses one address).

Reconnecting: gRPC's default backoff (1 s, then x1.6 per failed attempt up to 2 minutes) left the
gateway failing requests for 6-70 s after a restarted dependency was serving again. Here attempts
start after 100 ms and are never more than a second apart, so a dependency is used again within
about a second of serving. While it is down, calls fail at once with UNAVAILABLE (they do not
wait for it), which the caller turns into `<DEPENDENCY>_UNAVAILABLE` (errors.from_rpc_error).
"""

from __future__ import annotations

import json

import grpc

from .limits import MAX_MESSAGE_BYTES
from .telemetry import client_interceptors

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure (in-cluster) traced channel to `address` (host:port or dns:///host:port)."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.service_config", _SERVICE_CONFIG),
        # Ping every 10 s while idle (the servers allow pings down to 5 s; shared/server.py) so
        # a dead peer is noticed before the next request rides the connection.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]
    return grpc.aio.insecure_channel(address, options=options, interceptors=client_interceptors())
