"""The codec gRPC service (services/codec/service.py) over a real loopback server, built as the
process builds it: `build(config)` registrations on a `GrpcServer` with the error interceptor.

Expected values come from a separately loaded `SpeechTokenizer` of the same tiny codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer
from qwentts.codec.v1 import codec_pb2, codec_pb2_grpc
from services.codec.service import MAX_FRAMES_PER_REQUEST, CodecConfig, CodecServicer, build
from shared.audio import decode_audio, encode_wav, prepare_reference_audio
from shared.config import load_config
from shared.errors import DOMAIN, error_details
from shared.frames import array_to_frames, frames_to_array, samples_to_array
from tests.helpers.serving import serve

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
SPF = 1920  # samples per frame
Q = 16  # codebooks


@dataclass
class Served:
    stub: codec_pb2_grpc.CodecServiceStub
    servicer: CodecServicer


@contextlib.asynccontextmanager
async def serve_codec(checkpoint: Path, **env: str):
    config = load_config(CodecConfig, {"CODEC_CHECKPOINT": str(checkpoint), **env})
    async with (
        serve("codec", build, config) as (port, registrations),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield Served(codec_pb2_grpc.CodecServiceStub(channel), registrations[0].servicer)


@pytest_asyncio.fixture
async def served(tiny_codec):
    async with serve_codec(tiny_codec) as s:
        yield s


@pytest.fixture(scope="module")
def tokenizer(tiny_codec) -> SpeechTokenizer:
    return SpeechTokenizer.from_pretrained(tiny_codec)


def _signal(sample_rate: int, seconds: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A float32 test waveform in [-0.6, 0.6]: a tone plus noise per channel, (T,) or (T, C)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    out = [0.4 * np.sin(2 * np.pi * (180 + 70 * c) * t) + 0.2 * rng.uniform(-1, 1, t.shape) for c in range(channels)]
    audio = np.stack(out, axis=1) if channels > 1 else out[0]
    return audio.astype(np.float32)


def _codes(num_frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, size=(num_frames, Q), dtype=np.int64)


def _pcm16(audio: np.ndarray) -> bytes:
    return np.round(audio * 32767).astype("<i2").tobytes()


def _stream_request(codes: np.ndarray) -> codec_pb2.StreamDecodeRequest:
    return codec_pb2.StreamDecodeRequest(frames=array_to_frames(codes))


async def _eventually(predicate, timeout: float = 10.0) -> None:
    """Wait until predicate() holds (server-side bookkeeping runs after the client sees the end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _assert_invalid(error: grpc.aio.AioRpcError, reason: str, field: str) -> None:
    code, info, bad_request = error_details(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (info.reason, info.domain) == (reason, DOMAIN)
    assert [v.field for v in bad_request.field_violations] == [field]
    assert error.details()  # a message for a person


async def _stream(stub, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """One StreamDecode call: each chunk written, then its response read; then half-close."""
    call = stub.StreamDecode(timeout=30)
    out = []
    for chunk in chunks:
        await call.write(_stream_request(chunk))
        reply = await call.read()
        assert reply.audio.sample_rate_hz == 24000
        out.append(samples_to_array(reply.audio))
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    return out


def _split(codes: np.ndarray, schedule: list[int]) -> list[np.ndarray]:
    assert sum(schedule) == len(codes)
    return np.split(codes, np.cumsum(schedule)[:-1])


# ----- Encode -----


async def test_encode_wav_equals_tokenizer_encode(served, tokenizer):
    content = encode_wav(_signal(44100, 1.3), 44100)
    reply = await served.stub.Encode(codec_pb2.EncodeRequest(content=content), timeout=30)

    expected_audio = prepare_reference_audio(*decode_audio(content))
    expected = tokenizer.encode([expected_audio])[0].numpy()
    assert (reply.frames.num_frames, reply.frames.num_quantizers) == expected.shape
    np.testing.assert_array_equal(frames_to_array(reply.frames), expected)
    assert reply.audio.sample_rate_hz == 24000
    np.testing.assert_array_equal(samples_to_array(reply.audio), expected_audio)


async def test_encode_raw_pcm_stereo_16k_equals_tokenizer_encode(served, tokenizer):
    content = _pcm16(_signal(16000, 1.1, seed=1, channels=2))
    request = codec_pb2.EncodeRequest(content=content, pcm_sample_rate_hz=16000, pcm_channels=2)
    reply = await served.stub.Encode(request, timeout=30)

    stereo = np.frombuffer(content, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768
    expected_audio = prepare_reference_audio(stereo, 16000)
    np.testing.assert_array_equal(frames_to_array(reply.frames), tokenizer.encode([expected_audio])[0].numpy())
    np.testing.assert_array_equal(samples_to_array(reply.audio), expected_audio)


# ----- Decode and StreamDecode -----


async def test_decode_equals_tokenizer_decode(served, tokenizer):
    codes = _codes(37, seed=2)
    reply = await served.stub.Decode(codec_pb2.DecodeRequest(frames=array_to_frames(codes)), timeout=30)
    assert reply.audio.sample_rate_hz == 24000
    np.testing.assert_allclose(samples_to_array(reply.audio), tokenizer.decode([codes])[0], rtol=0, atol=1e-6)


async def test_stream_decode_irregular_chunks_equals_decode(served, tokenizer):
    codes = _codes(18, seed=3)
    chunks = _split(codes, [1, 2, 4, 8, 3])
    pieces = await _stream(served.stub, chunks)

    local = tokenizer.stream()
    for chunk, piece in zip(chunks, pieces):
        assert piece.shape == (len(chunk) * SPF,)
        np.testing.assert_allclose(piece, local.push(chunk), rtol=0, atol=1e-5)
    whole = await served.stub.Decode(codec_pb2.DecodeRequest(frames=array_to_frames(codes)), timeout=30)
    np.testing.assert_allclose(np.concatenate(pieces), samples_to_array(whole.audio), rtol=0, atol=1e-5)


def _gate_push_many(monkeypatch, servicer: CodecServicer) -> tuple[list[int], threading.Event, list]:
    """Record the batch size of every push_many call and the streams pushed; the calls wait until
    the event is set."""
    tok = servicer.tokenizer
    batch_sizes: list[int] = []
    pushed = []
    gate = threading.Event()
    push_many = tok.push_many

    def spy(streams, frames):
        batch_sizes.append(len(streams))
        pushed.extend(streams)
        gate.wait(timeout=30)
        return push_many(streams, frames)

    monkeypatch.setattr(tok, "push_many", spy)
    return batch_sizes, gate, pushed


async def test_concurrent_streams_are_batched_and_kept_apart(served, monkeypatch):
    # The first batched call is held until the other streams' first pushes have queued.
    batch_sizes, gate, _ = _gate_push_many(monkeypatch, served.servicer)
    # Same first chunk size everywhere (so the queued first pushes form one group), then
    # different schedules, so later steps mix chunk sizes and stream positions.
    schedules = [[2, 1, 1, 3], [2, 5, 1], [2, 2, 2, 2], [2, 1, 4], [2, 6]]
    all_codes = [_codes(sum(s), seed=10 + i) for i, s in enumerate(schedules)]
    tasks = [
        asyncio.create_task(_stream(served.stub, _split(codes, schedule)))
        for codes, schedule in zip(all_codes, schedules)
    ]
    await _eventually(lambda: sum(batch_sizes) + served.servicer.queued_pushes == len(schedules))
    gate.set()
    results = await asyncio.gather(*tasks)

    assert max(batch_sizes) > 1
    for codes, pieces in zip(all_codes, results):
        whole = await served.stub.Decode(codec_pb2.DecodeRequest(frames=array_to_frames(codes)), timeout=30)
        np.testing.assert_allclose(np.concatenate(pieces), samples_to_array(whole.audio), rtol=0, atol=1e-5)
    await _eventually(lambda: served.servicer.open_streams == 0)


async def test_cancelled_stream_is_freed_at_once_and_its_queued_push_skipped(served, monkeypatch):
    batch_sizes, gate, _ = _gate_push_many(monkeypatch, served.servicer)
    running = asyncio.create_task(_stream(served.stub, [_codes(1, seed=7)]))
    await _eventually(lambda: batch_sizes == [1])  # its push holds the decode thread
    queued = served.stub.StreamDecode(timeout=30)
    await queued.write(_stream_request(_codes(1, seed=8)))
    await _eventually(lambda: served.servicer.queued_pushes == 1)

    queued.cancel()
    await _eventually(lambda: served.servicer.open_streams == 1)
    gate.set()
    await running
    await _eventually(lambda: served.servicer.open_streams == 0)
    assert batch_sizes == [1]  # the cancelled stream's push was never decoded


async def test_stream_cancelled_during_its_push_frees_its_state_row_after_the_step(served, monkeypatch):
    """The call's slot is free at once; the stream's state row only once the step decoding it has
    written it back, so that a new stream cannot get the row while it is still being used."""
    batch_sizes, gate, pushed = _gate_push_many(monkeypatch, served.servicer)
    call = served.stub.StreamDecode(timeout=30)
    await call.write(_stream_request(_codes(1, seed=9)))
    await _eventually(lambda: batch_sizes == [1])
    call.cancel()
    await _eventually(lambda: served.servicer.open_streams == 0)
    await asyncio.sleep(0.05)
    assert not pushed[0].closed
    gate.set()
    await _eventually(lambda: pushed[0].closed)


# ----- StreamDecode admission -----


async def test_capacity_and_slots_freed_on_cancel_half_close_and_deadline(tiny_codec):
    async with serve_codec(tiny_codec, CODEC_MAX_STREAMS="2") as served:
        one_frame = _stream_request(_codes(1, seed=4))

        async def open_stream(**kwargs):
            call = served.stub.StreamDecode(**kwargs)
            await call.write(one_frame)
            await call.read()  # the handler is running: the slot is taken
            return call

        first, second = await open_stream(), await open_stream()
        assert served.servicer.open_streams == 2
        third = served.stub.StreamDecode(timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await third.read()
        code, info, _ = error_details(error.value)
        assert (code, info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CODEC_AT_CAPACITY")

        first.cancel()
        await _eventually(lambda: served.servicer.open_streams == 1)
        short = await open_stream(timeout=1.0)  # the freed slot is usable; this one idles past its deadline
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await short.read()
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await _eventually(lambda: served.servicer.open_streams == 1)

        await second.done_writing()
        assert await second.read() is grpc.aio.EOF
        await _eventually(lambda: served.servicer.open_streams == 0)


# ----- bad input -----

_FOUR_KHZ_WAV = encode_wav(_signal(4000, 0.5), 4000)
_QUIET_WAV = encode_wav(_signal(24000, 0.5) * 1e-3, 24000)  # peak 6e-4


def _encode(content: bytes, rate: int = 0, channels: int = 0) -> tuple[str, codec_pb2.EncodeRequest]:
    return "Encode", codec_pb2.EncodeRequest(content=content, pcm_sample_rate_hz=rate, pcm_channels=channels)


def _decode(num_frames: int, num_quantizers: int, codes) -> tuple[str, codec_pb2.DecodeRequest]:
    frames = codec_pb2.Frames(num_frames=num_frames, num_quantizers=num_quantizers, codes=list(codes))
    return "Decode", codec_pb2.DecodeRequest(frames=frames)


# (id, env, (rpc, request), reason, field)
BAD_REQUESTS = [
    ("empty", {}, _encode(b""), "EMPTY_AUDIO", "content"),
    ("too-large", {"CODEC_MAX_AUDIO_BYTES": "1000"}, _encode(bytes(1002), 16000), "AUDIO_TOO_LARGE", "content"),
    ("undecodable", {}, _encode(b"this is not an audio file"), "AUDIO_UNDECODABLE", "content"),
    ("pcm-odd-bytes", {}, _encode(b"\x01\x02\x03", 16000), "INVALID_PCM", "content"),
    ("pcm-channels", {}, _encode(bytes(6), 16000, 2), "INVALID_PCM", "content"),
    ("pcm-rate-low", {}, _encode(_pcm16(_signal(4000, 0.5)), 4000), "INVALID_SAMPLE_RATE", "pcm_sample_rate_hz"),
    ("pcm-rate-high", {}, _encode(_pcm16(_signal(8000, 0.1)), 200_000), "INVALID_SAMPLE_RATE", "pcm_sample_rate_hz"),
    ("file-rate-low", {}, _encode(_FOUR_KHZ_WAV), "INVALID_SAMPLE_RATE", "content"),
    (
        "too-long",
        {"CODEC_MAX_AUDIO_SECONDS": "1"},
        _encode(_pcm16(_signal(16000, 1.5)), 16000),
        "AUDIO_TOO_LONG",
        "content",
    ),
    ("silent-pcm", {}, _encode(bytes(32000), 16000), "SILENT_AUDIO", "content"),
    ("quiet-wav", {}, _encode(_QUIET_WAV), "SILENT_AUDIO", "content"),
    ("quantizers", {}, _decode(2, 8, range(16)), "INVALID_FRAMES", "frames"),
    ("code-count", {}, _decode(2, Q, range(31)), "INVALID_FRAMES", "frames"),
    ("code-range", {}, _decode(2, Q, [5] * 20 + [2048] + [5] * 11), "INVALID_FRAMES", "frames"),
    ("no-frames", {}, _decode(0, Q, []), "INVALID_FRAMES", "frames"),
    (
        "too-many-frames",
        {},
        _decode(MAX_FRAMES_PER_REQUEST + 1, Q, [0] * (Q * (MAX_FRAMES_PER_REQUEST + 1))),
        "INVALID_FRAMES",
        "frames",
    ),
]


@pytest.mark.parametrize(
    ("env", "call", "reason", "field"), [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS]
)
async def test_bad_request_is_invalid_argument_with_reason_and_field(tiny_codec, env, call, reason, field):
    rpc, request = call
    async with serve_codec(tiny_codec, **env) as served:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await getattr(served.stub, rpc)(request, timeout=30)
        _assert_invalid(error.value, reason, field)
        assert (await served.stub.DescribeCodec(codec_pb2.DescribeCodecRequest(), timeout=10)).num_quantizers == Q


@pytest.mark.parametrize(
    "bad", [codec_pb2.Frames(num_quantizers=Q), array_to_frames(np.full((1, Q), 4096))], ids=["no-frames", "code-range"]
)
async def test_stream_decode_bad_frames_end_the_stream_and_free_the_slot(served, bad):
    call = served.stub.StreamDecode(timeout=30)
    await call.write(_stream_request(_codes(2, seed=5)))
    await call.read()
    await call.write(codec_pb2.StreamDecodeRequest(frames=bad))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    _assert_invalid(error.value, "INVALID_FRAMES", "frames")
    await _eventually(lambda: served.servicer.open_streams == 0)
    assert len(await _stream(served.stub, [_codes(3, seed=6)])) == 1


# ----- DescribeCodec and the process -----


async def test_describe_codec(served):
    reply = await served.stub.DescribeCodec(codec_pb2.DescribeCodecRequest(), timeout=10)
    assert (reply.sample_rate_hz, reply.samples_per_frame, reply.num_quantizers, reply.codebook_size) == (
        24000,
        SPF,
        Q,
        2048,
    )


async def test_process_exits_2_naming_the_bad_variables():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.codec",
        cwd=REPO,
        env={**env, "CODEC_DTYPE": "float64"},
        stdout=PIPE,
        stderr=PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 2
    assert b"CODEC_CHECKPOINT" in stderr and b"CODEC_DTYPE" in stderr
