"""shared.server.GrpcServer over real loopback sockets: health, reflection, message size limit,
and graceful shutdown on SIGTERM in a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shared.server import GrpcServer
from tests.helpers import dummy_service

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _identity(data: bytes) -> bytes:
    return data


@pytest_asyncio.fixture
async def dummy_server():
    server = GrpcServer("dummy", max_message_bytes=1024, grace_seconds=1.0)
    server.add_service(dummy_service.add_dummy, None, dummy_service.SERVICE)
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop(grace=0)


async def _health(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def test_health_serving_for_server_and_service(dummy_server):
    _, port = dummy_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await _health(channel, "") == SERVING
        assert await _health(channel, dummy_service.SERVICE) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _health(channel, "no.such.Service")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services(dummy_server):
    _, port = dummy_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = []
        async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
            names += [s.name for s in reply.list_services_response.service]
    assert dummy_service.SERVICE in names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_oversized_message_rejected_and_server_keeps_serving(dummy_server):
    _, port = dummy_server  # the fixture's limit is 1024 bytes
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(dummy_service.ECHO, request_serializer=_identity, response_deserializer=_identity)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await echo(b"x" * 2048, timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await echo(b"small", timeout=5) == b"small"
        assert await _health(channel, "") == SERVING


async def test_add_service_after_start_is_refused(dummy_server):
    server, _ = dummy_server
    with pytest.raises(RuntimeError):
        server.add_service(dummy_service.add_dummy, None, "other.Service")


async def test_busy_port_fails_loudly(dummy_server):
    # so_reuseport is off: a second server on the same port must not silently share it.
    _, port = dummy_server
    with pytest.raises(RuntimeError, match="cannot listen"):
        await GrpcServer("second", port=port).start()


def _start_script(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.dummy_service", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()  # "PORT <n>", or "" if the script died
    if not line.startswith("PORT "):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"server script did not start: {line!r}\n{err}")
    return proc, int(line.split()[1])


async def test_sigterm_drains_then_finishes_in_flight_calls():
    # drain 2 s: health reports NOT_SERVING while the server still answers, then stop(grace).
    # The in-flight stream (8 messages, 0.4 s apart) outlives the drain, so it also
    # exercises the grace period.
    grace = 10.0
    proc, port = _start_script("--grace", str(grace), "--drain", "2")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _health(channel, "") == SERVING
            count = channel.unary_stream(
                dummy_service.COUNT, request_serializer=_identity, response_deserializer=_identity
            )
            call = count(b"8,0.4", timeout=30)
            received = [await call.read()]  # the call is in flight on the server

            proc.send_signal(signal.SIGTERM)

            # Readiness turns off first. Until it does, poll; a new RPC may also be refused
            # (UNAVAILABLE) once the drain is over, which only a very slow poll would see.
            statuses = set()
            for _ in range(50):
                try:
                    statuses.add(await _health(channel, dummy_service.SERVICE))
                except grpc.aio.AioRpcError as error:
                    statuses.add(error.code())
                if statuses - {SERVING}:
                    break
                await asyncio.sleep(0.05)
            assert statuses - {SERVING} == {NOT_SERVING}, statuses

            # (read() already used on this call, so no `async for`: the styles cannot mix.)
            while (message := await call.read()) is not grpc.aio.EOF:
                received.append(message)
            assert received == [str(i).encode() for i in range(8)]
            assert await call.code() == grpc.StatusCode.OK

        # Exits by itself, cleanly, within the grace (plus interpreter start-up slack).
        rc = await asyncio.to_thread(proc.wait, grace + 10)
        assert rc == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
