"""shared.errors over a real grpc.aio server on loopback: rich statuses, streaming, cancellation.

The service is a generic handler over raw bytes (no protos): the request bytes pick what the
handler does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider

from models.qwen3_tts.prompts import PromptError
from qwentts.v1 import voices_pb2
from shared import errors
from shared.errors import (
    DOMAIN,
    ErrorInterceptor,
    InvalidArgument,
    NotFound,
    ServiceError,
    error_details,
    to_rpc_status,
)
from shared.telemetry import ServerTracing

SERVICE = "test.Errors"


class VoiceNotFound(NotFound):
    reason = "VOICE_NOT_FOUND"


class Handlers:
    """Handler behaviours keyed by request; records what the handlers saw."""

    def __init__(self):
        self.cancelled = asyncio.Event()  # set when a handler sees CancelledError
        self.exits: list[str] = []  # how streaming handlers ended: exception type names

    async def unary(self, request: bytes, context) -> bytes:
        if request == b"invalid":
            raise InvalidArgument(
                "text must not be empty",
                [("input.text", "must not be empty"), ("config.language", "unknown language 'xx'")],
                metadata={"maxChars": "4096"},
            )
        if request == b"prompt":
            raise PromptError("unknown speaker 'nobody'", field="config.preset_speaker")
        if request == b"value":
            raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")
        if request == b"notfound":
            raise VoiceNotFound("voice 'v1' not found", metadata={"voiceId": "v1"})
        if request == b"boom":
            raise RuntimeError("secret detail from deep inside")
        if request == b"abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "handler aborted itself")
        return b"ok:" + request

    async def stream(self, request: bytes, context):
        try:
            yield b"one"
            yield b"two"
            if request == b"fail":
                raise NotFound("ran out of voices")
            if request == b"abort":
                await context.abort(grpc.StatusCode.NOT_FOUND, "handler aborted itself")
            if request == b"hang":
                await asyncio.Event().wait()  # until the client cancels
            while request == b"flood":
                yield b"more"  # never awaits: a cancel finds it suspended at this yield
        except BaseException as exc:
            self.exits.append(type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                self.cancelled.set()
            raise

    async def upload(self, requests, context) -> bytes:
        chunks = [request async for request in requests]
        if b"bad" in chunks:
            raise InvalidArgument("bad chunk", [("audio", f"chunk {chunks.index(b'bad')} is bad")])
        return b"%d chunks" % len(chunks)

    async def bidi(self, requests, context):
        async for request in requests:
            if request == b"bad":
                raise InvalidArgument("bad chunk", [("input.text", "bad chunk")])
            yield b"echo:" + request

    async def parsed(self, request: voices_pb2.GetVoiceRequest, context) -> bytes:
        return request.voice_id.encode()

    async def parsed_bidi(self, requests, context):
        async for request in requests:
            yield request.voice_id.encode()


@contextlib.asynccontextmanager
async def serve(interceptors):
    """(channel, handlers) for a real aio server with `interceptors`; stopped at the end."""
    handlers = Handlers()
    generic = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            # No (de)serializers: requests and responses are raw bytes.
            "Unary": grpc.unary_unary_rpc_method_handler(handlers.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(handlers.stream),
            "Upload": grpc.stream_unary_rpc_method_handler(handlers.upload),
            "Bidi": grpc.stream_stream_rpc_method_handler(handlers.bidi),
            # Protobuf requests, to send malformed bytes to.
            "Parsed": grpc.unary_unary_rpc_method_handler(
                handlers.parsed, request_deserializer=voices_pb2.GetVoiceRequest.FromString
            ),
            "ParsedBidi": grpc.stream_stream_rpc_method_handler(
                handlers.parsed_bidi, request_deserializer=voices_pb2.GetVoiceRequest.FromString
            ),
        },
    )
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, handlers
    finally:
        await channel.close()
        await server.stop(grace=None)


@pytest_asyncio.fixture
async def served():
    """(channel, handlers) for a real aio server with the ErrorInterceptor."""
    async with serve([ErrorInterceptor()]) as served:
        yield served


def unary(channel):
    return channel.unary_unary(f"/{SERVICE}/Unary")


def stream(channel):
    return channel.unary_stream(f"/{SERVICE}/Stream")


async def call_failing(channel, request: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unary(channel)(request, timeout=10)
    return info.value


async def assert_still_serving(channel):
    assert await unary(channel)(b"ping", timeout=10) == b"ok:ping"


@pytest.mark.asyncio
async def test_good_call(served):
    channel, _ = served
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_invalid_argument_has_error_info_and_bad_request(served):
    channel, _ = served
    error = await call_failing(channel, b"invalid")
    code, info, bad_request = error_details(error)
    assert code == error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "text must not be empty"
    assert (info.reason, info.domain, dict(info.metadata)) == ("INVALID_ARGUMENT", DOMAIN, {"maxChars": "4096"})
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("input.text", "must not be empty"),
        ("config.language", "unknown language 'xx'"),
    ]
    # The official client helper agrees (it checks code and message against the trailer).
    from grpc_status import rpc_status

    assert rpc_status.from_call(error).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await assert_still_serving(channel)


@pytest.mark.asyncio
@pytest.mark.parametrize("request_bytes", [b"value", b"prompt"])
async def test_a_value_error_that_escapes_is_internal_not_the_callers_fault(served, caplog, request_bytes):
    # A ValueError is as likely a bug (numpy, torch) as bad input; only a ServiceError speaks to
    # the caller, even when the ValueError names a field (PromptError, which the generator
    # catches and raises as the InvalidArgument it means).
    channel, _ = served
    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        error = await call_failing(channel, request_bytes)
    code, info, bad_request = error_details(error)
    assert (code, info.reason, info.domain, bad_request) == (grpc.StatusCode.INTERNAL, "INTERNAL", DOMAIN, None)
    assert error.details() == "internal error; see the server log"  # no span here: no trace id
    [record] = [r for r in caplog.records if r.name == "shared.errors"]
    assert issubclass(record.exc_info[0], ValueError) and "/test.Errors/Unary" in record.getMessage()
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_the_internal_message_names_the_trace(caplog):
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traceparent = (("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),)
    async with serve([ServerTracing(TracerProvider()), ErrorInterceptor()]) as (channel, _):
        with caplog.at_level(logging.ERROR, logger="shared.errors"), pytest.raises(grpc.aio.AioRpcError) as raised:
            await unary(channel)(b"value", metadata=traceparent, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == f"internal error; see the server log, trace id {trace_id}"
    assert "broadcast" not in raised.value.details()
    [record] = [r for r in caplog.records if r.name == "shared.errors"]
    assert record.exc_info[0] is ValueError


@pytest.mark.asyncio
async def test_domain_error_with_specific_reason_and_metadata(served):
    channel, _ = served
    error = await call_failing(channel, b"notfound")
    code, info, bad_request = error_details(error)
    assert code == grpc.StatusCode.NOT_FOUND and error.details() == "voice 'v1' not found"
    assert (info.reason, info.domain, dict(info.metadata)) == ("VOICE_NOT_FOUND", DOMAIN, {"voiceId": "v1"})
    assert bad_request is None
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_unexpected_exception_is_internal_and_does_not_leak(served, caplog):
    channel, _ = served
    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        error = await call_failing(channel, b"boom")
    code, info, _ = error_details(error)
    assert code == grpc.StatusCode.INTERNAL and info.reason == "INTERNAL" and info.domain == DOMAIN
    assert error.details() == "internal error; see the server log"
    assert "secret" not in error.debug_error_string() and "Traceback" not in error.details()
    # ... but the server log has the whole story.
    [record] = [r for r in caplog.records if r.name == "shared.errors"]
    assert record.exc_info[0] is RuntimeError and "/test.Errors/Unary" in record.getMessage()
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_handler_abort_passes_through(served, caplog):
    channel, _ = served
    with caplog.at_level(logging.DEBUG):
        error = await call_failing(channel, b"abort")
    # Not remapped: re-aborting would fail server-side with UsageError("Abort already called!").
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.name == "shared.errors"]
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "handler aborted itself")
    assert error_details(error) == (grpc.StatusCode.NOT_FOUND, None, None)  # no rich details added
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_stream_delivers_messages_then_the_status(served):
    channel, _ = served
    call = stream(channel)(b"fail", timeout=10)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            received.append(message)
    assert received == [b"one", b"two"]
    code, error_info, _ = error_details(info.value)
    assert code == grpc.StatusCode.NOT_FOUND and info.value.details() == "ran out of voices"
    assert (error_info.reason, error_info.domain) == ("NOT_FOUND", DOMAIN)
    await assert_still_serving(channel)


@pytest.mark.asyncio
async def test_stream_handler_abort_passes_through(served, caplog):
    channel, _ = served
    with caplog.at_level(logging.DEBUG):
        call = stream(channel)(b"abort", timeout=10)
        assert [await call.read(), await call.read()] == [b"one", b"two"]
        assert await call.code() == grpc.StatusCode.NOT_FOUND
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.name == "shared.errors"]
    assert await call.details() == "handler aborted itself"
    await assert_still_serving(channel)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [b"hang", b"flood"])
async def test_client_cancel_reaches_the_handler_as_cancelled_error(served, caplog, mode):
    # hang: the handler awaits when the cancel comes; gRPC cancels the task, which reaches it.
    # flood: the handler is suspended at a yield while gRPC writes; without the interceptor's
    # help it would only see GeneratorExit whenever the generator is garbage-collected.
    channel, handlers = served
    call = stream(channel)(mode, timeout=10)
    assert await call.read() == b"one"
    assert await call.read() == b"two"
    with caplog.at_level(logging.DEBUG, logger="shared.errors"):
        assert call.cancel()
        await asyncio.wait_for(handlers.cancelled.wait(), timeout=10)
        await assert_still_serving(channel)
    assert handlers.exits == ["CancelledError"]
    assert await call.code() == grpc.StatusCode.CANCELLED
    assert not [r for r in caplog.records if r.name == "shared.errors"]  # not mapped, not logged


@pytest.mark.asyncio
async def test_bidi_stream_errors_too(served):
    channel, _ = served
    call = channel.stream_stream(f"/{SERVICE}/Bidi")(timeout=10)
    await call.write(b"a")
    assert await call.read() == b"echo:a"
    await call.write(b"bad")
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await call.details() == "bad chunk"


@pytest.mark.asyncio
async def test_client_stream_errors_too(served):
    upload = served[0].stream_unary(f"/{SERVICE}/Upload")
    assert await upload(iter([b"a", b"b"]), timeout=10) == b"2 chunks"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(iter([b"a", b"bad"]), timeout=10)
    code, _, bad_request = error_details(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("audio", "chunk 1 is bad")]


def test_reasons_are_checked():
    with pytest.raises(TypeError, match="UPPER_SNAKE"):
        NotFound("x", reason="voiceNotFound")
    with pytest.raises(TypeError, match="63"):
        ServiceError("x", reason="A" * 64)
    with pytest.raises(TypeError):

        class Bad(ServiceError):
            reason = "TRAILING_"


def test_to_rpc_status_without_a_server():
    status = to_rpc_status(InvalidArgument("bad", [("a.b", "c")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT and status.details == "bad"
    [(key, _)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"


@pytest.mark.asyncio
async def test_from_rpc_error_forwards_reason_metadata_and_fields(served):
    from shared.errors import from_rpc_error

    channel, _ = served
    error = from_rpc_error(await call_failing(channel, b"invalid"), "the backend")
    assert isinstance(error, InvalidArgument)
    assert (error.reason, error.message, error.metadata) == (
        "INVALID_ARGUMENT",
        "text must not be empty",
        {"maxChars": "4096"},
    )
    assert [f for f, _ in error.violations] == ["input.text", "config.language"]


@pytest.mark.asyncio
async def test_from_rpc_error_on_a_transport_failure_names_the_downstream():
    from shared.errors import Unavailable, from_rpc_error

    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:  # nothing listens on port 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/x.Y/Z")(b"", timeout=5)
    error = from_rpc_error(info.value, "codec")
    assert isinstance(error, Unavailable) and error.reason == "CODEC_UNAVAILABLE"
    assert error.metadata == {"dependency": "codec"}
    assert "127.0.0.1" not in error.message  # transport details stay in the log


# ----- malformed requests -----

MALFORMED = [
    b"\xff\xff\xff",  # not protobuf at all
    b"\x0a\x02\xff\xfe",  # field 1 (a string) holding invalid UTF-8
]


@pytest.mark.asyncio
async def test_malformed_requests_are_invalid_argument_with_one_log_line(served, caplog):
    channel, _ = served
    parsed = channel.unary_unary(f"/{SERVICE}/Parsed")
    bidi = channel.stream_stream(f"/{SERVICE}/ParsedBidi")
    good = voices_pb2.GetVoiceRequest(voice_id="v1").SerializeToString()
    caplog.set_level(logging.DEBUG)
    for data in MALFORMED:
        caplog.clear()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await parsed(data, timeout=5)
        code, info, _ = error_details(raised.value)
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in bidi(iter([good, data]), timeout=5):
                pass
        code, info, _ = error_details(raised.value)
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
        records = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(records) == 2, [r.getMessage() for r in records]  # one line per request
        assert not any(r.exc_info for r in records)  # and no traceback
    assert await parsed(good, timeout=5) == b"v1"


@pytest.mark.asyncio
async def test_a_refused_call_reads_to_the_half_close_within_a_bound(monkeypatch):
    """read_to_half_close: every message up to the client's half-close; at most
    REFUSAL_READ_SECONDS for a client that goes on streaming; a message that does not parse ends
    it without replacing the refusal."""
    read = []

    async def requests(then: str):
        for message in ("config", "text", "more text"):
            read.append(message)
            yield message
        if then == "stream on":
            await asyncio.Event().wait()
        elif then == "garbage":
            raise errors.MalformedRequest("the request message could not be parsed")

    await errors.read_to_half_close(requests("half-close"))
    assert read == ["config", "text", "more text"]
    monkeypatch.setattr(errors, "REFUSAL_READ_SECONDS", 0.05)
    await asyncio.wait_for(errors.read_to_half_close(requests("stream on")), timeout=5)
    await errors.read_to_half_close(requests("garbage"))
    assert len(read) == 9
