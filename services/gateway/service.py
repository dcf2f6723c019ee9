"""The public TextToSpeechService: validates, routes, and pipes generator -> codec -> client.

One request is one `Synthesis`: a bidirectional Generate call to the routed generator pool
(config, then text as it arrives), a bidirectional StreamDecode call to the codec (frames in
chunks of the chunk schedule), and the encoded audio out to the client. The gateway holds no
model: it owns the request's lifecycle. Its deadline is passed to both downstream calls; if the
client cancels, both are cancelled, which frees the generator slot at once. Downstream errors
reach the client with their code, reason and message (fields renamed to the public API's).

A saved voice (`voice_id`) is resolved from the voice catalogue first (voices.py): its stored
speaker embedding, and for an in-context clone its reference frames and transcript, go into the
generator's config, and the codec stream decodes the reference frames before the generated ones
(their audio is dropped), so the audio continues the reference exactly as offline cloning does.
Every RPC starts by authenticating the caller (tenancy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from qwentts.codec.v1 import codec_pb2, codec_pb2_grpc
from qwentts.generator.v1 import generator_pb2
from qwentts.registry.v1 import registry_pb2_grpc
from qwentts.v1 import audio_pb2, tts_pb2, tts_pb2_grpc, voices_pb2_grpc
from shared.client import open_channel
from shared.config import ConfigError, Problem, env
from shared.errors import InvalidArgument, ServiceError, dependency_unavailable, from_rpc_error
from shared.frames import array_to_frames, frames_to_array
from shared.limits import MAX_DESCRIPTION_CHARS, MAX_ID_CHARS, MAX_INSTRUCT_CHARS, MAX_TEXT_CHARS, sampling_problem
from shared.service import ProcessConfig, Registration

from .audio_out import MODEL_SAMPLE_RATE, AudioWriter, rate_problem
from .routing import Pool, Router, preset_as_speaker, read_routes
from .tenancy import Tenancy, parse_api_keys
from .voices import Catalogue, VoiceCatalogServicer

log = logging.getLogger(__name__)

FRAME_RATE = 12.5  # codec frames per second of audio

FINISH_REASONS = {
    generator_pb2.FINISH_REASON_END_OF_SPEECH: tts_pb2.FINISH_REASON_END_OF_SPEECH,
    generator_pb2.FINISH_REASON_MAX_LENGTH: tts_pb2.FINISH_REASON_MAX_LENGTH,
    generator_pb2.FINISH_REASON_FRAME_BUDGET: tts_pb2.FINISH_REASON_FRAME_BUDGET,
}


@dataclass(frozen=True)
class GatewayConfig(ProcessConfig):
    host: str = env("GATEWAY_HOST", default="127.0.0.1")
    port: int = env("GATEWAY_PORT", default=50051, min=0, max=65535)
    codec_address: str = env("GATEWAY_CODEC_ADDRESS", default="127.0.0.1:50052")
    routes_file: Path = env("GATEWAY_ROUTES_FILE")
    # Frames per audio chunk: the first chunk is small so audio starts early, later ones larger
    # (fewer, cheaper codec calls); the last number repeats.
    chunk_schedule: tuple[str, ...] = env("GATEWAY_CHUNK_SCHEDULE", default=("1", "2", "4", "8"))
    max_text_chars: int = env("GATEWAY_MAX_TEXT_CHARS", default=MAX_TEXT_CHARS, min=1)
    max_audio_seconds: float = env("GATEWAY_MAX_AUDIO_SECONDS", default=300.0, min=1)
    # How long to wait at start for every generator pool to answer DescribeModel.
    discovery_timeout_seconds: float = env("GATEWAY_DISCOVERY_TIMEOUT_SECONDS", default=120.0, min=1)
    # The registry (voice catalogue); empty: none, and saved voices are FAILED_PRECONDITION.
    registry_address: str = env("GATEWAY_REGISTRY_ADDRESS", default="")
    # "key1:tenant-a,key2:tenant-b"; empty: no authentication, every caller is tenant "default".
    api_keys: tuple[str, ...] = env("GATEWAY_API_KEYS", default=(), secret=True)
    # How long a DesignVoice preview can be saved with CreateVoice.
    preview_ttl_seconds: int = env("GATEWAY_PREVIEW_TTL_SECONDS", default=900, min=1, max=86400)

    def __post_init__(self):
        problems = []
        if not all(item.isdigit() and int(item) > 0 for item in self.chunk_schedule):
            problems.append(
                Problem("GATEWAY_CHUNK_SCHEDULE", ",".join(self.chunk_schedule), "comma-separated positive integers")
            )
        try:
            parse_api_keys(self.api_keys)
        except ValueError as error:
            problems.append(Problem("GATEWAY_API_KEYS", "***", f'comma-separated "key:tenant" pairs ({error})'))
        if problems:
            raise ConfigError(type(self).__name__, problems)

    @property
    def chunk_frames(self) -> list[int]:
        return [int(item) for item in self.chunk_schedule]


# Generator field paths -> public ones, for errors the generator reports about the config.
GENERATOR_FIELDS = {
    "config.speaker": "config.voice.preset_speaker",
    "config.cloned_voice": "config.voice.voice_id",
    "config.max_frames": "config.max_audio_seconds",
    "text": "text",
}


class Synthesis:
    """One request through the cluster; `run(texts)` yields ("audio" | "progress" | "summary", message)."""

    def __init__(
        self,
        gateway: TextToSpeechServicer,
        config: tts_pb2.SynthesisConfig,
        *,
        non_streaming: bool,
        context: grpc.aio.ServicerContext,
        tenant: str,
        keep_output: bool = False,
    ):
        self.gateway = gateway
        self.config = config = preset_as_speaker(config)
        self.pool: Pool = gateway.router.route(config)
        self.generate_config = gateway.generate_config(config, non_streaming)
        fmt = config.output_format
        self.writer = AudioWriter(fmt.encoding, fmt.sample_rate_hz)
        self.context = context
        self.tenant = tenant
        self.reference_frames: np.ndarray | None = None  # an in-context clone's, decoded first
        # keep_output: the frames and 24 kHz samples are kept too (a voice design preview's).
        self._kept: tuple[list[np.ndarray], list[np.ndarray]] | None = ([], []) if keep_output else None
        self.characters_received = 0
        self.characters_consumed = 0
        self.frames = 0
        self._input_error: ServiceError | None = None

    async def _send_text(self, generate, texts: AsyncIterator[tuple[str, bool]]) -> None:
        """Writes the config, then the text as it arrives, then half-closes (a task of `run`).

        Written with `write()` rather than handed to gRPC as a request iterator: gRPC would consume
        it in a task of its own that nobody awaits ("Task was destroyed but it is pending!" for
        every stream whose generator died)."""
        try:
            await generate.write(generator_pb2.GenerateRequest(config=self.generate_config))
            async for text, flush in texts:
                self.characters_received += len(text)
                await generate.write(
                    generator_pb2.GenerateRequest(text=generator_pb2.TextChunk(text=text, flush=flush))
                )
            await generate.done_writing()
        except ServiceError as error:  # bad client input: end the call, report it as this RPC's error
            self._input_error = error
            generate.cancel()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call has ended: `run` reads its status

    async def _use_saved_voice(self) -> None:
        voice = await self.gateway.catalogue.voice_for_synthesis(
            self.tenant, self.config.voice.voice_id, self.pool, self.context
        )
        self.generate_config.cloned_voice.CopyFrom(voice.cloned_voice)
        if not self.config.language and voice.language:  # the voice's language is its default
            self.generate_config.language = voice.language
        self.reference_frames = voice.reference_frames

    def kept_output(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames, 24 kHz samples) produced so far (`keep_output=True` only)."""
        frames, samples = self._kept
        return (
            np.concatenate(frames) if frames else np.zeros((0, 16), np.int64),
            np.concatenate(samples) if samples else np.zeros(0, np.float32),
        )

    async def whole(self, text: str) -> tuple[bytes, tts_pb2.SynthesisSummary]:
        """Synthesize `text` (known up front) to one complete file of the requested format."""
        audio, summary = [], None
        async for kind, message in self.run(_once(text)):
            if kind == "audio":
                audio.append(message.audio)
            elif kind == "summary":
                summary = message
        return self.writer.whole_file(b"".join(audio)), summary

    async def run(self, texts: AsyncIterator[tuple[str, bool]]):
        if self.config.voice.WhichOneof("source") == "voice_id":
            await self._use_saved_voice()
        self.pool.check_language(self.generate_config.language)
        timeout = self.context.time_remaining()  # None without a deadline
        generate = self.pool.stub.Generate(timeout=timeout)
        decode = self.gateway.codec.StreamDecode(timeout=timeout)
        sender = asyncio.create_task(self._send_text(generate, texts))
        schedule = self.gateway.config.chunk_frames
        pending: list[np.ndarray] = []
        chunks = 0
        finish = tts_pb2.FINISH_REASON_UNSPECIFIED

        async def decoded_samples(frames: np.ndarray) -> np.ndarray:
            try:
                with contextlib.suppress(asyncio.InvalidStateError):  # it has ended: read() raises why
                    await decode.write(codec_pb2.StreamDecodeRequest(frames=array_to_frames(frames)))
                response = await decode.read()
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error, "codec") from None
            if response is grpc.aio.EOF:
                raise dependency_unavailable("codec")  # it ended the stream without a status
            return np.frombuffer(response.audio.samples_f32le, dtype="<f4")

        async def audio_chunk(frames: np.ndarray) -> tts_pb2.AudioChunk:
            nonlocal chunks
            samples = await decoded_samples(frames)
            if self._kept is not None:
                self._kept[0].append(frames)
                self._kept[1].append(samples)
            start = self.writer.samples_written
            data = self.writer.write(samples)
            chunk = self._chunk(data, chunks, start)
            chunks += 1
            return chunk

        try:
            if self.reference_frames is not None:
                # An in-context clone continues its reference: the codec decodes the reference
                # frames first, and their audio (exactly 1920 samples a frame) is dropped.
                await decoded_samples(self.reference_frames)
            async for response in generate:
                if response.frames.num_frames:
                    pending.append(frames_to_array(response.frames))
                    self.frames += response.frames.num_frames
                if response.characters_consumed > self.characters_consumed:
                    self.characters_consumed = response.characters_consumed
                    yield (
                        "progress",
                        tts_pb2.TextProgress(
                            characters_consumed=self.characters_consumed, characters_received=self.characters_received
                        ),
                    )
                while sum(map(len, pending)) >= (size := schedule[min(chunks, len(schedule) - 1)]):
                    frames = np.concatenate(pending)
                    pending = [frames[size:]] if len(frames) > size else []
                    yield "audio", await audio_chunk(frames[:size])
                if response.finish_reason:
                    finish = FINISH_REASONS.get(response.finish_reason, tts_pb2.FINISH_REASON_UNSPECIFIED)
            if pending:
                yield "audio", await audio_chunk(np.concatenate(pending))
            try:  # half-close and wait for the codec's status (and let its span end)
                await decode.done_writing()
                if await decode.read() is not grpc.aio.EOF:
                    raise RuntimeError("the codec answered a decode request that was never sent")
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error, "codec") from None
            start = self.writer.samples_written
            tail = self.writer.finish()
            if tail:
                yield "audio", self._chunk(tail, chunks, start)
            yield "summary", self._summary(finish)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "generator", GENERATOR_FIELDS) from None
        except asyncio.CancelledError:
            if self._input_error is not None:  # we cancelled the generator call ourselves
                raise self._input_error from None
            raise
        finally:
            sender.cancel()
            await _end_call(generate)
            await _end_call(decode)

    def _chunk(self, data: bytes, sequence: int, start_sample: int) -> tts_pb2.AudioChunk:
        rate = self.writer.sample_rate
        return tts_pb2.AudioChunk(
            audio=data,
            sequence=sequence,
            start_seconds=start_sample / rate,
            duration_seconds=(self.writer.samples_written - start_sample) / rate,
        )

    def _summary(self, finish: int) -> tts_pb2.SynthesisSummary:
        usage = tts_pb2.Usage(
            input_characters=self.characters_received, audio_frames=self.frames, audio_seconds=self.frames / FRAME_RATE
        )
        fmt = audio_pb2.AudioFormat(encoding=self.writer.encoding, sample_rate_hz=self.writer.sample_rate)
        return tts_pb2.SynthesisSummary(
            finish_reason=finish, usage=usage, model=self.pool.model.name, output_format=fmt
        )


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServiceServicer):
    def __init__(
        self,
        config: GatewayConfig,
        router: Router,
        codec: codec_pb2_grpc.CodecServiceStub,
        tenancy: Tenancy,
        catalogue: Catalogue,
    ):
        self.config = config
        self.router = router
        self.codec = codec
        self.tenancy = tenancy
        self.catalogue = catalogue

    # ----- validation -----

    def check_config(self, config: tts_pb2.SynthesisConfig, field: str = "config") -> None:
        """Raise InvalidArgument naming the bad fields; `field` is the config's path ("" for the top level).

        Everything the generator would refuse, and every bound on the work a request may cause
        (shared/limits.py), is checked here before any model work. (A config the generator
        refuses while the gateway is still sending text could also lose its status to a grpc.aio
        race, grpc/grpc#36066.)"""
        violations = []
        prefix = f"{field}." if field else ""
        fmt = config.output_format
        if fmt.encoding not in audio_pb2.AudioEncoding.values():
            violations.append((f"{prefix}output_format.encoding", f"unknown encoding {fmt.encoding}"))
        elif problem := rate_problem(fmt.encoding, fmt.sample_rate_hz):
            violations.append((f"{prefix}output_format.sample_rate_hz", problem))
        if not (math.isfinite(config.max_audio_seconds) and config.max_audio_seconds >= 0):
            violations.append((f"{prefix}max_audio_seconds", "must be a number >= 0 (0 means the server's limit)"))
        if config.predictor_sampling.HasField("repetition_penalty"):
            violations.append(
                (f"{prefix}predictor_sampling.repetition_penalty", "the code predictor has no repetition penalty")
            )
        for name in ("sampling", "predictor_sampling"):
            for value_field, value in getattr(config, name).ListFields():
                problem = sampling_problem(value_field.name, value)
                if problem:
                    violations.append((f"{prefix}{name}.{value_field.name}", problem))
        voice = config.voice
        for path, value, limit in (
            ("instruct", config.instruct, MAX_INSTRUCT_CHARS),
            ("voice.design_description", voice.design_description, MAX_DESCRIPTION_CHARS),
            ("voice.voice_id", voice.voice_id, MAX_ID_CHARS),
            ("voice.preset_speaker", voice.preset_speaker, MAX_ID_CHARS),
            ("model", config.model, MAX_ID_CHARS),
            ("language", config.language, MAX_ID_CHARS),
        ):
            if len(value) > limit:
                violations.append((f"{prefix}{path}", f"has {len(value)} characters; at most {limit} are accepted"))
        if violations:
            raise InvalidArgument(
                "invalid synthesis config: " + "; ".join(f"{f}: {d}" for f, d in violations),
                violations,
                reason="INVALID_CONFIG",
            )

    def check_text(self, text: str, field: str) -> None:
        if len(text) > self.config.max_text_chars:
            raise InvalidArgument(
                f"the text has {len(text)} characters; the limit is {self.config.max_text_chars}",
                [(field, "too long")],
                reason="TEXT_TOO_LONG",
            )

    @staticmethod
    def empty_text(field: str) -> InvalidArgument:
        return InvalidArgument("there is no text to speak", [(field, "empty")], reason="EMPTY_TEXT")

    def generate_config(self, config: tts_pb2.SynthesisConfig, non_streaming: bool) -> generator_pb2.GenerateConfig:
        voice = config.voice
        limit = self.config.max_audio_seconds
        seconds = min(config.max_audio_seconds or limit, limit)
        # The public and internal sampling messages share field numbers: copy on the wire.
        request = generator_pb2.GenerateConfig(
            language=config.language or "auto",
            speaker=voice.preset_speaker,
            instruct=voice.design_description or config.instruct,
            sampling=generator_pb2.Sampling.FromString(config.sampling.SerializeToString()),
            predictor_sampling=generator_pb2.Sampling.FromString(config.predictor_sampling.SerializeToString()),
            # Rounded first: the float32 on the wire makes 0.8 s 10.0000001 frames, not 10.
            max_frames=max(1, math.ceil(round(seconds * FRAME_RATE, 3))),
            non_streaming=non_streaming,
        )
        if config.HasField("seed"):
            request.seed = config.seed
        return request

    def synthesis(self, config: tts_pb2.SynthesisConfig, **options) -> Synthesis:
        """A `Synthesis` of this gateway (options: non_streaming, context, tenant, keep_output)."""
        return Synthesis(self, config, **options)

    # ----- RPCs -----

    async def _synthesis(self, request, context) -> Synthesis:
        tenant = self.tenancy.tenant(context)
        self.check_config(request.config)
        if not request.text.strip():
            raise self.empty_text("text")
        self.check_text(request.text, "text")
        # Text known up front: the prompt holds all of it (the reference's non-streaming mode).
        return self.synthesis(request.config, non_streaming=True, context=context, tenant=tenant)

    async def Synthesize(self, request, context):
        synthesis = await self._synthesis(request, context)
        audio, summary = await synthesis.whole(request.text)
        return tts_pb2.SynthesizeResponse(audio=audio, summary=summary)

    async def StreamSynthesize(self, request, context):
        synthesis = await self._synthesis(request, context)
        async for kind, message in synthesis.run(_once(request.text)):
            yield tts_pb2.StreamSynthesizeResponse(**{kind: message})

    async def StreamingSynthesize(self, request_iterator, context):
        tenant = self.tenancy.tenant(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("request") != "config":
            raise InvalidArgument(
                "the first message must carry the config (and no text)",
                [("config", "required in the first message")],
                reason="CONFIG_REQUIRED",
            )
        self.check_config(first.config)
        synthesis = self.synthesis(first.config, non_streaming=False, context=context, tenant=tenant)
        async for kind, message in synthesis.run(self._client_texts(request_iterator)):
            yield tts_pb2.StreamingSynthesizeResponse(**{kind: message})

    async def _client_texts(self, request_iterator):
        """The text pieces of a bidirectional stream after its config, validated as they come."""
        total, spoken = 0, False
        async for request in request_iterator:
            if request.WhichOneof("request") != "input":
                raise InvalidArgument(
                    "only the first message may carry a config",
                    [("config", "sent again")],
                    reason="CONFIG_ALREADY_SENT",
                )
            total += len(request.input.text)
            if total > self.config.max_text_chars:
                raise InvalidArgument(
                    f"the stream's text exceeds {self.config.max_text_chars} characters",
                    [("input.text", "too long in total")],
                    reason="TEXT_TOO_LONG",
                )
            spoken = spoken or bool(request.input.text.strip())
            yield request.input.text, request.input.flush
        if not spoken:
            raise self.empty_text("input.text")

    async def ListModels(self, request, context):
        self.tenancy.tenant(context)
        return tts_pb2.ListModelsResponse(models=[p.public_model(MODEL_SAMPLE_RATE) for p in self.router.pools])


async def _once(text: str):
    yield text, False


async def _end_call(call) -> None:
    """Cancel a streaming call, and let go of gRPC's task that feeds it our writes.

    Behind client interceptors, gRPC passes `write()`s to the RPC through a queue that a task of its
    own reads, and nothing ends that task when the call fails on the other side: every stream
    whose codec or generator died left one behind ("Task was destroyed but it is pending!").
    Half-closing an ended call ends it."""
    if not call.cancel():  # it had already ended
        with contextlib.suppress(Exception):
            await call.done_writing()


@contextlib.asynccontextmanager
async def build(config: GatewayConfig):
    addresses = read_routes(config.routes_file)
    router = await Router.connect(addresses, config.discovery_timeout_seconds)
    codec_channel = open_channel(config.codec_address)
    registry_channel = open_channel(config.registry_address) if config.registry_address else None
    try:
        codec = codec_pb2_grpc.CodecServiceStub(codec_channel)
        registry = registry_pb2_grpc.RegistryServiceStub(registry_channel) if registry_channel else None
        catalogue = Catalogue(registry)
        tts = TextToSpeechServicer(config, router, codec, Tenancy(parse_api_keys(config.api_keys)), catalogue)
        yield [
            Registration(tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server, tts, "qwentts.v1.TextToSpeechService"),
            Registration(
                voices_pb2_grpc.add_VoiceCatalogServiceServicer_to_server,
                VoiceCatalogServicer(tts, catalogue, config.preview_ttl_seconds),
                "qwentts.v1.VoiceCatalogService",
            ),
        ]
    finally:
        await codec_channel.close()
        if registry_channel is not None:
            await registry_channel.close()
        await router.close()
