"""A command-line client of qwentts.v1.TextToSpeechService and qwentts.v1.VoiceCatalogService.

    python -m qwentts_cli models [--json]
    python -m qwentts_cli synthesize --speaker vivian --text "Hello there." --out hello.wav [--stream]
    python -m qwentts_cli stream-stdin --speaker vivian --out talk.wav      # one line of text at a time
    python -m qwentts_cli voices create --name Ana --audio ana.wav [--transcript "What ana.wav says."]
    python -m qwentts_cli voices design --description "a calm, low voice" --text "Hello." --out preview.wav
    python -m qwentts_cli voices save --preview-id P --name Calm
    python -m qwentts_cli voices list [--kind cloned] [--language L] [--tag T] [--all]
    python -m qwentts_cli voices get|delete ID;  voices update ID --etag E [--name N] [--tags a b]
    python -m qwentts_cli synthesize --voice-id ID --text "Hi." --out hi.wav

--address defaults to $QWENTTS_ADDRESS, else 127.0.0.1:50051; --api-key to $QWENTTS_API_KEY (sent
as `x-api-key` metadata on every call; needed when the gateway has GATEWAY_API_KEYS). The
extension of --out picks the encoding (.wav, .flac, .raw/.pcm: 16-bit PCM, .ulaw: mu-law) unless
--encoding names one; "--out -" writes to stdout. Audio is written as it arrives; a streamed WAV
file gets its header sizes set at the end (a stream's header says "length unknown"). A failed
call prints the status code, the ErrorInfo reason and the bad fields, and exits with status 1.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import grpc

from qwentts.v1 import tts_pb2_grpc
from shared.errors import error_details
from shared.limits import MAX_MESSAGE_BYTES

from . import synthesize, voices
from .output import choose_encoding


class ApiKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `x-api-key` metadata to every call."""

    def __init__(self, key: str):
        self.metadata = (("x-api-key", key),)

    def _details(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = intercept_unary_unary


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


def report_error(error: grpc.RpcError) -> None:
    code, info, bad_request = error_details(error)
    print(f"error: {code.name}: {error.details()}", file=sys.stderr)
    if info is not None:
        metadata = "".join(f" {key}={value}" for key, value in sorted(info.metadata.items()))
        print(f"  reason: {info.reason} ({info.domain}){metadata}", file=sys.stderr)
    for violation in bad_request.field_violations if bad_request is not None else ():
        print(f"  field {violation.field}: {violation.description}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=os.environ.get("QWENTTS_ADDRESS", "127.0.0.1:50051"),
        help="the gateway, host:port (default: $QWENTTS_ADDRESS or 127.0.0.1:50051)",
    )
    common.add_argument("--timeout", type=float, help="deadline of the call in seconds (default: none)")
    common.add_argument(
        "--api-key",
        default=os.environ.get("QWENTTS_API_KEY", ""),
        help="sent as x-api-key metadata (default: $QWENTTS_API_KEY)",
    )

    root = argparse.ArgumentParser(prog="python -m qwentts_cli", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    synthesize.add_commands(commands, common)
    voices.add_commands(commands, common)
    return root


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    if "out" in args:
        try:
            args.encoding = choose_encoding(args.out, args.encoding)
        except ValueError as error:
            root.error(str(error))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]  # reference audio of up to 10 MB
    with grpc.insecure_channel(args.address, options=options) as channel:
        if args.api_key:
            channel = grpc.intercept_channel(channel, ApiKey(args.api_key))
        stub = getattr(args, "stub", tts_pb2_grpc.TextToSpeechServiceStub)
        try:
            args.run(stub(channel), args)
        except grpc.RpcError as error:
            report_error(error)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0
