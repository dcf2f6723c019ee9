"""A proto-free gRPC service for the runtime tests, and a script that serves it.

Service ``test.dummy.v1.Dummy`` with raw-bytes (de)serializers:
  Echo  (unary):            returns the request bytes.
  Count (server-streaming): request b"<n>,<delay_s>" -> n messages b"0", b"1", ... one every
                            delay_s seconds; written as an async generator (see telemetry.py).
  Upper (bidi):             each request comes back upper-cased; also an async generator.
Echo and Count log one line ("echo" / "count") from inside the handler.

As a script (``python -m tests.helpers.dummy_service --grace 10 --drain 1``) it serves the service
with GrpcServer.serve_until_signalled() and prints ``PORT <n>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import grpc

SERVICE = "test.dummy.v1.Dummy"
ECHO = f"/{SERVICE}/Echo"
COUNT = f"/{SERVICE}/Count"
UPPER = f"/{SERVICE}/Upper"

log = logging.getLogger("tests.helpers.dummy_service")


def _identity(data: bytes) -> bytes:
    return data


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    log.info("echo")
    return request


async def count(request: bytes, context: grpc.aio.ServicerContext):
    n, delay = request.decode().split(",")
    log.info("count")
    for i in range(int(n)):
        if i:
            await asyncio.sleep(float(delay))
        yield str(i).encode()


async def upper(requests, context: grpc.aio.ServicerContext):
    async for request in requests:
        yield request.upper()


def add_dummy(servicer: object, server: grpc.aio.Server) -> None:
    """An ``add_fn`` for GrpcServer.add_service (the servicer argument is unused)."""
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=_identity, response_serializer=_identity
            ),
            "Count": grpc.unary_stream_rpc_method_handler(
                count, request_deserializer=_identity, response_serializer=_identity
            ),
            "Upper": grpc.stream_stream_rpc_method_handler(
                upper, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))


async def _main(args: argparse.Namespace) -> None:
    from shared.server import GrpcServer

    server = GrpcServer("dummy", grace_seconds=args.grace, drain_seconds=args.drain)
    server.add_service(add_dummy, None, SERVICE)
    port = await server.start()
    print(f"PORT {port}", flush=True)
    await server.serve_until_signalled()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=0.0)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(parser.parse_args()))
