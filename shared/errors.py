"""One error model for every service: AIP-193 rich errors over grpc.aio.

Handlers raise domain exceptions (`ServiceError` subclasses) or let foreign ones escape;
`ErrorInterceptor` turns whatever escapes into a `google.rpc.Status` carried in the
`grpc-status-details-bin` trailer (built and read with `grpc_status.rpc_status`):

* every error carries an `ErrorInfo(reason, domain=DOMAIN, metadata)` (AIP-193 requires it);
* `InvalidArgument` also carries a `BadRequest` with one `FieldViolation` per bad field;
* each detail type appears at most once.

Only a `ServiceError` is the caller's business: its code, reason, message and fields reach the
client as raised. Anything else that escapes a handler (a `ValueError` from numpy or torch, a
`KeyError`, ...) is a bug of ours, whatever its type: INTERNAL, reason "INTERNAL", the generic
message "internal error; see the server log, trace id <id>", and the traceback goes to the log
(with that trace id), never to the client. Code that means a foreign exception for the caller
(the generator's `PromptError`, the codec's `AudioError`) catches it and raises the
`InvalidArgument` it stands for, with the field and reason.

`asyncio.CancelledError` (the client cancelled, or the server is stopping) is a BaseException and
is never caught here, nor logged, and a handler's own `context.abort(...)` (`grpc.aio.AbortError`)
passes through unchanged. A streaming handler always hears that its RPC was cancelled as
CancelledError, even when gRPC left it suspended at a `yield` (see `_cancel_when_abandoned`), so
handlers release engine slots in `except CancelledError` / `finally` and re-raise.

DOMAIN is "qwentts.v1", the package of the public API: it is the name clients already see, reasons
are unique within it, and the internal services use the same domain so that the gateway can
forward their errors without rewriting them. A future incompatible API version gets a new domain.

Client side, `error_details(rpc_error)` returns (code, ErrorInfo | None, BadRequest | None), and
`from_rpc_error(rpc_error, dependency)` turns a failed downstream call into the ServiceError to
pass upstream (the gateway then names its fields as its own request does:
services/gateway/fields.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

logger = logging.getLogger(__name__)

DOMAIN = "qwentts.v1"

_REASON_RE = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")


def _check_reason(reason: str) -> str:
    # A programming error (TypeError), raised when the class or the error is defined.
    if len(reason) > 63 or not _REASON_RE.fullmatch(reason):
        raise TypeError(f"error reason {reason!r} is not UPPER_SNAKE_CASE of at most 63 characters")
    return reason


class ServiceError(Exception):
    """A failure the caller should see as a specific gRPC status.

    Subclasses fix `code` and a default `reason`; services subclass further for specific reasons
    (`class VoiceNotFound(NotFound): reason = "VOICE_NOT_FOUND"`). `message` is for the caller
    (developer-facing English); `metadata` adds ErrorInfo key/values (lowerCamelCase keys).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_reason(cls.reason)  # a bad reason is caught when the class is defined

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = _check_reason(reason)  # instance attribute shadows the class default
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` are (field, description) pairs for BadRequest.

    Field paths use the proto field names, dotted for nesting (`config.sampling.top_k`).
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Iterable[tuple[str, str]] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = [(str(f), str(d)) for f, d in violations]


class NotFound(ServiceError):
    code, reason = grpc.StatusCode.NOT_FOUND, "NOT_FOUND"


class AlreadyExists(ServiceError):
    code, reason = grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code, reason = grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"


class Aborted(ServiceError):
    """A concurrency conflict (e.g. an etag mismatch); the client may retry the whole sequence."""

    code, reason = grpc.StatusCode.ABORTED, "ABORTED"


class ResourceExhausted(ServiceError):
    code, reason = grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code, reason = grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code, reason = grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    code, reason = grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code, reason = grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"


def internal_message() -> str:
    """The generic message of an INTERNAL error: where to look, never what happened."""
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return "internal error; see the server log"
    return f"internal error; see the server log, trace id {trace.format_trace_id(span.trace_id)}"


class Internal(ServiceError):
    """A bug or an unexpected failure; the message is generic on purpose (`internal_message`)."""

    code, reason = grpc.StatusCode.INTERNAL, "INTERNAL"

    def __init__(self, message: str | None = None, **kwargs):
        super().__init__(internal_message() if message is None else message, **kwargs)


def as_service_error(exc: Exception) -> ServiceError:
    """The ServiceError the client sees for `exc`: itself if it is one, else INTERNAL."""
    return exc if isinstance(exc, ServiceError) else Internal()


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(exc: Exception) -> grpc.Status:
    """The grpc.Status (code, message, details trailer) for `exc`, for `context.abort_with_status`."""
    error = as_service_error(exc)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in error.violations
                    ]
                )
            )
        )
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str):
    """Log `exc` as it deserves and end the RPC with its rich status (raises AbortError)."""
    if isinstance(exc, MalformedRequest):
        logger.warning("%s: %s", method, exc)  # one line, no traceback: the caller's fault
    elif isinstance(exc, ServiceError):
        logger.debug("%s failed: %s: %s", method, type(exc).__name__, exc)
    else:
        # Called from inside the handler's `except` block, so the traceback is the current one.
        logger.exception("%s failed with an unexpected exception", method)
    await context.abort_with_status(to_rpc_status(exc))


class MalformedRequest(InvalidArgument):
    """Bytes that do not parse as the request message (bad protobuf, invalid UTF-8 in a string)."""

    reason = "MALFORMED_REQUEST"


class _Unparsed:
    """What a request deserializer returns instead of raising (see `_lenient`)."""

    def __init__(self, error: Exception):
        self.error = error

    def check(self):
        raise MalformedRequest(f"the request message could not be parsed ({type(self.error).__name__})")


def _lenient(deserializer):
    """A request deserializer that returns `_Unparsed` where `deserializer` raises: gRPC would
    otherwise answer UNKNOWN and log a traceback for every malformed message."""
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, or a UnicodeDecodeError for bad UTF-8
            return _Unparsed(error)

    return deserialize


def _parsed(request):
    if isinstance(request, _Unparsed):
        request.check()
    return request


async def _parsed_stream(requests):
    async for request in requests:
        yield _parsed(request)


def _wrap_unary_response(behavior, method: str, streaming_request: bool):
    async def wrapper(request, context):
        try:
            request = _parsed_stream(request) if streaming_request else _parsed(request)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise  # the handler aborted on its own; its status stands
        except Exception as exc:  # CancelledError is a BaseException: it propagates untouched
            await _abort(context, exc, method)

    return wrapper


def _wrap_stream_response(behavior, method: str, streaming_request: bool):
    # An async generator around the handler's async generator: the style the OpenTelemetry aio
    # interceptor supports, and the only one grpc.aio runs on the event loop (it checks
    # `inspect.isasyncgenfunction`; any other callable is run as a sync generator in its thread
    # pool). A `context.write` coroutine handler fails here, reported as INTERNAL and logged.
    async def wrapper(request, context):
        try:
            request = _parsed_stream(request) if streaming_request else _parsed(request)
            responses = behavior(request, context)
            _cancel_when_abandoned(responses, context)
            async for response in responses:
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapper


_pending_cancels: set[asyncio.Task] = set()  # strong references until the tasks finish


def _cancel_when_abandoned(responses, context: grpc.aio.ServicerContext) -> None:
    """Make sure a streaming handler hears that its RPC ended, as CancelledError.

    On a client cancel gRPC cancels the RPC's task. If the task is then awaiting inside the
    handler, the handler gets CancelledError there. But if it is in gRPC's own write of the last
    message, the handler is left suspended at its `yield`: it would only see GeneratorExit when
    the generator is garbage-collected, or never. So when the RPC is done and the handler's
    generator is still suspended at a yield, throw CancelledError in at that yield. (In grpc.aio
    `context.cancelled()` stays False after a client cancel, so it cannot be the test here.)
    """
    if not inspect.isasyncgen(responses):
        return
    loop = asyncio.get_running_loop()

    def suspended_at_yield() -> bool:
        # ag_frame is None once finished; ag_running is also True while the handler awaits
        # inside, and then the task cancel reaches it.
        return responses.ag_frame is not None and not responses.ag_running

    async def throw():
        if not suspended_at_yield():  # checked again: it may have been resumed meanwhile
            return
        try:
            await responses.athrow(asyncio.CancelledError())
        except (asyncio.CancelledError, StopAsyncIteration):
            return  # the handler re-raised or returned, as it should
        except Exception:
            logger.exception("streaming handler failed while being cancelled")
            return
        await responses.aclose()  # it yielded again: stop it

    def on_done(_context):
        if suspended_at_yield():
            task = loop.create_task(throw())
            _pending_cancels.add(task)
            task.add_done_callback(_pending_cancels.discard)

    context.add_done_callback(on_done)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping any handler into AIP-193 rich errors (see the module docstring).

    Handlers must be coroutine functions (unary responses) or async generators (streaming
    responses). Put it last in the server's interceptor list, so that it sits closest to the
    handlers and outer interceptors (tracing) see the final status.

    Not built on grpc-interceptor's AsyncServerInterceptor: that one keeps the handler's request
    deserializer, which this one replaces (`_lenient`), and every image would have to pin it.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method = handler_call_details.method
        codecs = dict(
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, method, False), **codecs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, method, False), **codecs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, method, True), **codecs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, method, True), **codecs
        )


def error_details(
    rpc_error: grpc.RpcError,
) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo | None, error_details_pb2.BadRequest | None]:
    """(code, ErrorInfo | None, BadRequest | None) from a failed call (sync or aio).

    Details are ignored if their code or message disagrees with the call's (a proxy rewrote the
    status).
    """
    try:
        status = rpc_status.from_call(rpc_error)
    except ValueError:  # the trailer's code or message is not the call's
        status = None
    info = bad_request = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
    return rpc_error.code(), info, bad_request


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
}

# What grpc.aio reports when a client's write races the end of its stream: the peer's real status
# is overwritten (grpc/grpc#36066). Between our services it means the peer ended the stream, which
# the caller can only retry.
_LOST_STATUS_DETAILS = "Internal error from Core"


def lost_status(rpc_error: grpc.RpcError) -> bool:
    """Whether a failed call's status is grpc.aio's INTERNAL from a write that met the end of the
    stream (the peer's real status is lost; retry), not a status of the peer's."""
    return rpc_error.code() == grpc.StatusCode.INTERNAL and rpc_error.details() == _LOST_STATUS_DETAILS


# How long a refused streaming call goes on reading before its status goes out (read_to_half_close).
REFUSAL_READ_SECONDS = 0.1


async def read_to_half_close(requests) -> None:
    """Read and drop a refused call's remaining requests until its client half-closes, for at most
    REFUSAL_READ_SECONDS; the caller then raises its refusal.

    A status sent while the client is still writing can reach a grpc.aio client as INTERNAL
    "Internal error from Core" instead of itself (grpc/grpc#36066: the write fails and replaces the
    status). Clients that write their messages and half-close at once, as the gateway does to
    the generator for a text known up front and a browser does through the web service, then get
    the real refusal; a client still streaming its text waits the bound at most. A message that
    does not parse meanwhile ends the reading: the refusal stands."""
    with contextlib.suppress(TimeoutError, ServiceError):
        async with asyncio.timeout(REFUSAL_READ_SECONDS):
            async for _ in requests:
                pass


def dependency_unavailable(dependency: str) -> Unavailable:
    """UNAVAILABLE naming the dependency (reason CODEC_UNAVAILABLE, ...): retry later."""
    return Unavailable(
        f"the {dependency} is unavailable; retry later",
        reason=f"{dependency.upper()}_UNAVAILABLE",
        metadata={"dependency": dependency},
    )


def from_rpc_error(rpc_error: grpc.RpcError, dependency: str) -> ServiceError:
    """A failed call to `dependency` ("codec", "generator", "registry") as the error to give our
    own caller: the same code, reason, message, metadata and BadRequest field violations (named
    as the dependency names them).

    A failure that carries no status of ours is the transport's: the dependency is down,
    restarting, went away mid-stream, or ended the stream while we wrote to it (the grpc#36066
    INTERNAL). All of those are UNAVAILABLE with reason `<DEPENDENCY>_UNAVAILABLE`, which clients
    retry; the transport's details (internal addresses) only go to the debug log. Codes that would
    blame our caller for a fault of ours (UNIMPLEMENTED, UNKNOWN, ...) become INTERNAL."""
    code, info, bad_request = error_details(rpc_error)
    ours = info is not None and info.domain == DOMAIN
    if not ours and (code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or lost_status(rpc_error)):
        logger.debug("the %s failed: %s %s", dependency, code.name, rpc_error.details())
        return dependency_unavailable(dependency)
    cls = _BY_CODE.get(code)
    if cls is None or (cls is Internal and not ours):
        logger.error("the %s failed: %s %s", dependency, code.name, rpc_error.details())
        return Internal()
    message = rpc_error.details() or code.name
    if not ours:  # e.g. a deadline that expired in transit
        return cls(f"the {dependency}: {message}")
    metadata = dict(info.metadata)
    if cls is InvalidArgument:
        violations = [(v.field, v.description) for v in (bad_request.field_violations if bad_request else ())]
        return InvalidArgument(message, violations, reason=info.reason, metadata=metadata)
    return cls(message, reason=info.reason, metadata=metadata)
