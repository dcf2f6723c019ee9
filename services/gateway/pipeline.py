"""The synthesis pipeline: one request through the generator, the codec and out to the client.

One request is one `Synthesis`: a bidirectional Generate call to the routed generator pool
(config, then text as it arrives), a bidirectional StreamDecode call to the codec (frames in
chunks of the chunk schedule), and the encoded audio out to the client (audio_out.py). The
client's deadline is passed to both downstream calls; if the client cancels, both are cancelled,
which frees the generator slot at once. Downstream errors reach the client with their code,
reason and message, their fields named as the public request names them (fields.py).

A saved voice (`voice_id`) is resolved from the voice catalogue first (catalogue.py): its stored
speaker embedding, and for an in-context clone its reference frames and transcript, go into the
generator's config, and the codec stream decodes the reference frames before the generated ones
(their audio is dropped), so the audio continues the reference exactly as offline cloning does.

The synthesis RPCs (service.py) and DesignVoice (voices.py) run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import grpc
import numpy as np

from qwentts.codec.v1 import codec_pb2
from qwentts.generator.v1 import generator_pb2
from qwentts.v1 import audio_pb2, tts_pb2
from shared.audio import FRAME_RATE
from shared.errors import ServiceError, dependency_unavailable
from shared.frames import array_to_frames, frames_to_array

from .audio_out import AudioWriter
from .fields import public_error, public_field
from .gateway import Gateway
from .routing import Pool, preset_as_speaker

FINISH_REASONS = {
    generator_pb2.FINISH_REASON_END_OF_SPEECH: tts_pb2.FINISH_REASON_END_OF_SPEECH,
    generator_pb2.FINISH_REASON_MAX_LENGTH: tts_pb2.FINISH_REASON_MAX_LENGTH,
    generator_pb2.FINISH_REASON_FRAME_BUDGET: tts_pb2.FINISH_REASON_FRAME_BUDGET,
}


class Synthesis:
    """One request through the cluster: `await Synthesis.open(...)`, then `run(texts)` yields
    ("audio" | "progress" | "summary", message).

    `request` is the public request's message name ("SynthesizeRequest", ...): errors name its
    fields (fields.py)."""

    @classmethod
    async def open(cls, gateway: Gateway, config: tts_pb2.SynthesisConfig, **options) -> Synthesis:
        """A synthesis ready to `run`: routed, its saved voice fetched and its language checked, so
        that every refusal that needs no text comes from here (arguments: `__init__`'s)."""
        synthesis = cls(gateway, config, **options)
        if synthesis.config.voice.WhichOneof("source") == "voice_id":
            await synthesis._use_saved_voice()
        synthesis.pool.check_language(
            synthesis.generate_config.language, public_field("config.language", synthesis.request)
        )
        return synthesis

    def __init__(
        self,
        gateway: Gateway,
        config: tts_pb2.SynthesisConfig,
        *,
        request: str,
        non_streaming: bool,
        context: grpc.aio.ServicerContext,
        tenant: str,
        keep_output: bool = False,
    ):
        self.gateway = gateway
        self.request = request
        self.config = config = preset_as_speaker(config)
        self.pool: Pool = gateway.router.route(config)
        self.generate_config = generate_config(config, non_streaming, gateway.limits.max_audio_seconds)
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
            self.tenant, self.config.voice.voice_id, self.pool, self.context, self.request
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
        async for kind, message in self.run(once(text)):
            if kind == "audio":
                audio.append(message.audio)
            elif kind == "summary":
                summary = message
        return self.writer.whole_file(b"".join(audio)), summary

    async def run(self, texts: AsyncIterator[tuple[str, bool]]):
        timeout = self.context.time_remaining()  # None without a deadline
        generate = self.pool.stub.Generate(timeout=timeout)
        decode = self.gateway.codec.StreamDecode(timeout=timeout)
        sender = asyncio.create_task(self._send_text(generate, texts))
        schedule = self.gateway.limits.chunk_frames
        pending: list[np.ndarray] = []
        chunks = 0
        finish = tts_pb2.FINISH_REASON_UNSPECIFIED

        async def decoded_samples(frames: np.ndarray) -> np.ndarray:
            try:
                with contextlib.suppress(asyncio.InvalidStateError):  # it has ended: read() raises why
                    await decode.write(codec_pb2.StreamDecodeRequest(frames=array_to_frames(frames)))
                response = await decode.read()
            except grpc.aio.AioRpcError as error:
                raise public_error(error, "codec", self.request) from None
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
                raise public_error(error, "codec", self.request) from None
            start = self.writer.samples_written
            tail = self.writer.finish()
            if tail:
                yield "audio", self._chunk(tail, chunks, start)
            yield "summary", self._summary(finish)
        except grpc.aio.AioRpcError as error:
            raise public_error(error, "generator", self.request) from None
        except asyncio.CancelledError:
            if self._input_error is not None:  # we cancelled the generator call ourselves
                raise self._input_error from None
            raise
        finally:
            sender.cancel()
            await asyncio.wait([sender])  # done with the client's messages: the caller may read on
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


def generate_config(
    config: tts_pb2.SynthesisConfig, non_streaming: bool, max_audio_seconds: float
) -> generator_pb2.GenerateConfig:
    """The generator's config for a public synthesis config (checked: Gateway.check_config)."""
    voice = config.voice
    seconds = min(config.max_audio_seconds or max_audio_seconds, max_audio_seconds)
    # The public and internal sampling messages share field numbers: copy on the wire.
    generate = generator_pb2.GenerateConfig(
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
        generate.seed = config.seed
    return generate


async def once(text: str):
    """`text` as the text pieces of `Synthesis.run`: all of it, known up front."""
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
