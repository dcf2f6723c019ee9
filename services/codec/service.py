"""The codec gRPC service, `qwentts.codec.v1.CodecService`: Encode, Decode, StreamDecode.

Model work never runs on the event loop: it all runs on the process's one model thread
(shared/model_thread.py), as in the generator. Encode and Decode are jobs on it; StreamDecode
pushes go to the `StreamBatcher` (batcher.py), which advances the pending pushes of all open
streams together, one `push_many` call per chunk size, so N concurrent streams cost about one
batched decoder call per step instead of N. See the section "The codec service" of docs/codec.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from opentelemetry import metrics

from models.cpu_threads import use_cpu_allotment
from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer, resolve_codec_dir
from qwentts.codec.v1 import codec_pb2, codec_pb2_grpc
from shared.audio import INPUT_SAMPLE_RATES, AudioError, decode_audio, prepare_reference_audio
from shared.config import env
from shared.errors import InvalidArgument, ResourceExhausted
from shared.frames import array_to_frames, array_to_samples, frames_to_array
from shared.service import ProcessConfig, Registration, fail_process

from .batcher import StreamBatcher

log = logging.getLogger(__name__)
meter = metrics.get_meter(__name__)

SERVICE_NAME = "qwentts.codec.v1.CodecService"

# Frames per Decode request and per StreamDecode message (120 s): the decoded audio, 7680 bytes
# per frame, must fit in one 16 MiB gRPC message (shared/server.py); 1500 frames make 11.5 MB.
MAX_FRAMES_PER_REQUEST = 1500
# Frames a stream's RoPE table is sized for at start (CUDA graphs only): a generator's default
# GENERATOR_MAX_POSITIONS, more than one of its streams makes.
WARM_UP_FRAMES = 4096
SILENCE_PEAK = 1e-3  # peak absolute amplitude below this (about -60 dBFS) counts as silence


@dataclass(frozen=True)
class CodecConfig(ProcessConfig):
    """The codec process's settings (docs/codec.md, "The codec service")."""

    host: str = env("CODEC_HOST", default="127.0.0.1")
    port: int = env("CODEC_PORT", default=50052, min=0, max=65535)
    # A standalone codec dir, or a TTS checkpoint dir whose speech_tokenizer/ is used.
    checkpoint: Path = env("CODEC_CHECKPOINT")
    device: str = env("CODEC_DEVICE", default="cpu", choices=("cpu", "cuda"))
    dtype: str = env("CODEC_DTYPE", default="float32", choices=("float32", "bfloat16", "float16"))
    cuda_graphs: bool = env("CODEC_CUDA_GRAPHS", default=True)
    max_streams: int = env("CODEC_MAX_STREAMS", default=64, min=1)
    max_audio_bytes: int = env("CODEC_MAX_AUDIO_BYTES", default=10_000_000, min=1)
    # At most 150 s: Encode returns the audio as 24 kHz float32 (96 kB/s) in a 16 MiB message.
    max_audio_seconds: float = env("CODEC_MAX_AUDIO_SECONDS", default=60.0, min=1, max=150)


# ----- message <-> numpy conversions (also for the codec's clients) -----


def _invalid_frames(message: str) -> InvalidArgument:
    return InvalidArgument(message, [("frames", message)], reason="INVALID_FRAMES")


def _invalid_audio(message: str, reason: str, field: str = "content") -> InvalidArgument:
    return InvalidArgument(message, [(field, message)], reason=reason)


# ----- the servicer -----


class CodecServicer(codec_pb2_grpc.CodecServiceServicer):
    """Encode, Decode, StreamDecode and DescribeCodec over one `SpeechTokenizer`.

    Call `start()` on the event loop before serving and `await stop()` after.
    """

    def __init__(
        self,
        tokenizer: SpeechTokenizer,
        *,
        max_streams: int,
        max_audio_bytes: int,
        max_audio_seconds: float,
    ):
        self.tokenizer = tokenizer
        self.max_streams = max_streams
        self.max_audio_bytes = max_audio_bytes
        self.max_audio_seconds = max_audio_seconds
        self._batcher = StreamBatcher(tokenizer, on_failure=fail_process)
        self._open_streams = 0
        meter.create_observable_gauge(
            "qwentts.codec.open_streams", [self._observe_open_streams], description="StreamDecode calls open"
        )
        meter.create_observable_gauge(
            "qwentts.codec.queued_pushes",
            [self._observe_queued_pushes],
            description="StreamDecode chunks waiting for the decode thread",
        )

    @property
    def open_streams(self) -> int:
        return self._open_streams

    @property
    def queued_pushes(self) -> int:
        return self._batcher.queued

    def start(self) -> None:
        self._batcher.thread.start()

    async def stop(self) -> None:
        await self._batcher.thread.stop()

    # ----- RPCs -----

    async def Encode(self, request: codec_pb2.EncodeRequest, context) -> codec_pb2.EncodeResponse:
        return await self._batcher.thread.call(self._encode, request)

    async def Decode(self, request: codec_pb2.DecodeRequest, context) -> codec_pb2.DecodeResponse:
        return await self._batcher.thread.call(self._decode, request)

    async def StreamDecode(self, request_iterator, context):
        if self._open_streams >= self.max_streams:
            raise ResourceExhausted(
                f"the codec is decoding {self._open_streams} streams, its maximum; retry later",
                reason="CODEC_AT_CAPACITY",
            )
        stream = self.tokenizer.stream()
        self._open_streams += 1
        try:
            async for request in request_iterator:
                codes = self._check_frames(request.frames)
                wav = await self._batcher.push(stream, codes)
                yield codec_pb2.StreamDecodeResponse(audio=array_to_samples(wav, self.tokenizer.sample_rate))
        finally:  # half-close, error, cancel or deadline (CancelledError): free the slot now
            self._open_streams -= 1
            self._batcher.close(stream)

    async def DescribeCodec(self, request, context) -> codec_pb2.DescribeCodecResponse:
        tok = self.tokenizer
        return codec_pb2.DescribeCodecResponse(
            sample_rate_hz=tok.sample_rate,
            samples_per_frame=tok.samples_per_frame,
            num_quantizers=tok.num_quantizers,
            codebook_size=tok.codebook_size,
        )

    # ----- worker-thread bodies and checks -----

    def _encode(self, request: codec_pb2.EncodeRequest) -> codec_pb2.EncodeResponse:
        audio = prepare_reference_audio(*self._read_audio(request), target_sr=self.tokenizer.input_sample_rate)
        if np.abs(audio).max() < SILENCE_PEAK:
            raise _invalid_audio(
                f"the audio is silent (peak amplitude below {SILENCE_PEAK}, about -60 dBFS)", "SILENT_AUDIO"
            )
        codes = self.tokenizer.encode([audio])[0]
        return codec_pb2.EncodeResponse(
            frames=array_to_frames(codes), audio=array_to_samples(audio, self.tokenizer.input_sample_rate)
        )

    def _read_audio(self, request: codec_pb2.EncodeRequest) -> tuple[np.ndarray, int]:
        """(mono float32 waveform, sample rate) of the request's content, checked against the limits."""
        content = request.content
        if not content:
            raise _invalid_audio("content is empty: send a WAV, FLAC, OGG or MP3 file or raw PCM", "EMPTY_AUDIO")
        if len(content) > self.max_audio_bytes:
            raise _invalid_audio(
                f"content is {len(content)} bytes; at most {self.max_audio_bytes} are accepted", "AUDIO_TOO_LARGE"
            )
        if request.pcm_sample_rate_hz:
            audio, sample_rate = _read_pcm(content, request.pcm_sample_rate_hz, request.pcm_channels or 1)
        else:
            try:
                audio, sample_rate = decode_audio(content)
            except AudioError as error:
                raise _invalid_audio(str(error), "AUDIO_UNDECODABLE") from None
            _check_sample_rate(sample_rate, "the file's sample rate", "content")
        seconds = len(audio) / sample_rate
        if seconds > self.max_audio_seconds:
            raise _invalid_audio(
                f"the audio lasts {seconds:.1f} s; at most {self.max_audio_seconds:g} s are accepted", "AUDIO_TOO_LONG"
            )
        return audio, sample_rate

    def _decode(self, request: codec_pb2.DecodeRequest) -> codec_pb2.DecodeResponse:
        codes = self._check_frames(request.frames)
        wav = self.tokenizer.decode([codes])[0]
        return codec_pb2.DecodeResponse(audio=array_to_samples(wav, self.tokenizer.sample_rate))

    def _check_frames(self, frames: codec_pb2.Frames) -> np.ndarray:
        """The request's codes as a (num_frames, 16) array, or InvalidArgument (INVALID_FRAMES)."""
        tok = self.tokenizer
        if frames.num_quantizers != tok.num_quantizers:
            raise _invalid_frames(
                f"frames.num_quantizers is {frames.num_quantizers}; this codec has {tok.num_quantizers} codebooks"
            )
        if not 1 <= frames.num_frames <= MAX_FRAMES_PER_REQUEST:
            raise _invalid_frames(
                f"frames.num_frames is {frames.num_frames}; send 1 to {MAX_FRAMES_PER_REQUEST} frames per request"
            )
        try:
            codes = frames_to_array(frames)
        except ValueError as error:
            raise _invalid_frames(str(error)) from None
        if codes.max() >= tok.codebook_size:
            index = int(np.argmax(codes.reshape(-1) >= tok.codebook_size))
            raise _invalid_frames(
                f"frames.codes[{index}] is {codes.reshape(-1)[index]}; codes must be below {tok.codebook_size}"
            )
        return codes

    def _observe_open_streams(self, _options):
        yield metrics.Observation(self._open_streams)

    def _observe_queued_pushes(self, _options):
        yield metrics.Observation(self.queued_pushes)


def _check_sample_rate(sample_rate: int, what: str, field: str) -> None:
    low, high = INPUT_SAMPLE_RATES
    if not low <= sample_rate <= high:
        message = f"{what} is {sample_rate} Hz; {low} to {high} Hz are accepted"
        raise _invalid_audio(message, "INVALID_SAMPLE_RATE", field)


def _read_pcm(content: bytes, sample_rate: int, channels: int) -> tuple[np.ndarray, int]:
    """Raw 16-bit little-endian interleaved PCM to (mono float32, sample rate)."""
    _check_sample_rate(sample_rate, "pcm_sample_rate_hz", "pcm_sample_rate_hz")
    frame_bytes = 2 * channels
    if len(content) % frame_bytes:
        raise _invalid_audio(
            f"raw PCM content is {len(content)} bytes, not a whole number of {channels}-channel 16-bit "
            f"samples ({frame_bytes} bytes each)",
            "INVALID_PCM",
        )
    # / 32768 is how libsndfile reads 16-bit files as float, so WAV and raw PCM agree exactly.
    pcm = np.frombuffer(content, dtype="<i2").astype(np.float32) / np.float32(32768)
    # The channels are averaged in float32 as shared.audio.to_mono does (which cannot be used
    # here: it refuses arrays with fewer samples than channels, as likely transposed).
    return pcm.reshape(-1, channels).mean(axis=-1), sample_rate


# ----- process wiring -----


@contextlib.asynccontextmanager
async def build(config: CodecConfig):
    """Load the codec, yield the service's registration, stop the decode thread after serving."""
    use_cpu_allotment()
    codec_dir = resolve_codec_dir(config.checkpoint)
    log.info("loading the codec from %s (%s, %s)", codec_dir, config.device, config.dtype)
    tokenizer = await asyncio.to_thread(
        SpeechTokenizer.from_pretrained,
        codec_dir,
        dtype=config.dtype,
        device=config.device,
        use_graphs=config.cuda_graphs,
    )
    started = time.monotonic()
    captured = await asyncio.to_thread(tokenizer.warm_up, config.max_streams, WARM_UP_FRAMES)
    if captured:
        log.info("captured %d CUDA graphs of streaming pushes in %.1f s", captured, time.monotonic() - started)
    servicer = CodecServicer(
        tokenizer,
        max_streams=config.max_streams,
        max_audio_bytes=config.max_audio_bytes,
        max_audio_seconds=config.max_audio_seconds,
    )
    servicer.start()
    try:
        yield [Registration(codec_pb2_grpc.add_CodecServiceServicer_to_server, servicer, SERVICE_NAME)]
    finally:
        await servicer.stop()
