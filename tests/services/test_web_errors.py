"""How the web service answers a failed gateway call that carries no status of the gateway's."""

import grpc
import pytest

from services.web.errors import from_rpc_error


def failed_call(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_a_status_lost_to_a_racing_write_is_a_retry_not_a_server_error():
    """grpc.aio's INTERNAL "Internal error from Core" means our write met the end of the stream and
    the gateway's status was lost (grpc/grpc#36066): 503, retry, as docs/errors.md advises."""
    error = from_rpc_error(failed_call(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    assert (error.status, error.code, error.grpc_status) == (503, "GATEWAY_UNAVAILABLE", "UNAVAILABLE")


@pytest.mark.parametrize(
    "code, status, reason",
    [
        (grpc.StatusCode.INTERNAL, 500, "INTERNAL"),  # any other INTERNAL without our ErrorInfo
        (grpc.StatusCode.UNAVAILABLE, 503, "GATEWAY_UNAVAILABLE"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED"),
    ],
)
def test_transport_failures(code, status, reason):
    error = from_rpc_error(failed_call(code, "something"))
    assert (error.status, error.code) == (status, reason)
