"""The generator gRPC service, `qwentts.generator.v1.GeneratorService`, over one checkpoint.

Generate streams an utterance: the config first, then text as it arrives, frames back as the
engine produces them (see runner.py). The request stream is read by its own task, so text keeps
flowing into the engine while frames flow out. No model work runs on the event loop: the engine
has its thread, where EmbedSpeaker runs too, between steps. See the section "The generator service"
of docs/generator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from opentelemetry import trace

from models.cpu_kernels import preferred_dtype
from models.cpu_threads import use_cpu_allotment
from models.engine.engine import ContextTooLong, FinishReason, SchedulerLimits
from models.engine.sampler import SamplingParams
from models.qwen3_tts.prompts import ClonePrompt, PromptError, PromptPlan, plan_prompt
from models.qwen3_tts.text_stream import TextStream
from models.tts import Qwen3TTS
from qwentts.codec.v1 import codec_pb2
from qwentts.generator.v1 import generator_pb2 as pb
from qwentts.generator.v1 import generator_pb2_grpc
from shared.audio import INPUT_SAMPLE_RATES, AudioError
from shared.config import env
from shared.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ServiceError,
    Unavailable,
    read_to_half_close,
)
from shared.frames import array_to_frames, frames_to_array, samples_to_array
from shared.limits import (
    MAX_ID_CHARS,
    MAX_INSTRUCT_CHARS,
    MAX_INSTRUCT_TOKENS,
    MAX_REFERENCE_FRAMES,
    MAX_TRANSCRIPT_CHARS,
    MAX_TRANSCRIPT_TOKENS,
)
from shared.service import ProcessConfig, Registration, fail_process

from .runner import EngineRunner, Stream

log = logging.getLogger(__name__)

SERVICE_NAME = "qwentts.generator.v1.GeneratorService"

MAX_AUDIO_SECONDS = 60.0  # EmbedSpeaker input

FINISH_REASONS = {
    FinishReason.EOS: pb.FINISH_REASON_END_OF_SPEECH,
    FinishReason.LENGTH: pb.FINISH_REASON_MAX_LENGTH,
    FinishReason.BUDGET: pb.FINISH_REASON_FRAME_BUDGET,
}
MODEL_SIZES = {"0b6": "0.6B", "1b7": "1.7B"}
# PromptError.field -> (request field, ErrorInfo reason)
PROMPT_ERRORS = {
    "language": ("config.language", "UNSUPPORTED_LANGUAGE"),
    "speaker": ("config.speaker", "INVALID_SPEAKER"),
    "instruct": ("config.instruct", "INVALID_INSTRUCT"),
    "voice": ("config.cloned_voice", "INVALID_CLONED_VOICE"),
}
# Sampling message field -> SamplingParams field, for config.sampling and config.predictor_sampling
TALKER_SAMPLING = {name: name for name in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")}
PREDICTOR_SAMPLING = {name: "subtalker_" + name for name in ("do_sample", "temperature", "top_k", "top_p")}


@dataclass(frozen=True)
class GeneratorConfig(ProcessConfig):
    """The generator process's settings (docs/generator.md, "The generator service")."""

    host: str = env("GENERATOR_HOST", default="127.0.0.1")
    port: int = env("GENERATOR_PORT", default=50053, min=0, max=65535)
    checkpoint: Path = env("GENERATOR_CHECKPOINT")
    # Empty: the checkpoint directory's name.
    model_name: str = env("GENERATOR_MODEL_NAME", default="")
    device: str = env("GENERATOR_DEVICE", default="cpu", choices=("cpu", "cuda"))
    # auto: bfloat16 on CUDA; on CPU bfloat16 where the CPU computes it natively (AVX512-BF16,
    # AMX), else float32 (docs/generator.md, "Dtypes"). float32 is the exact-parity dtype.
    dtype: str = env("GENERATOR_DTYPE", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    # Streams stepped together (each holds a KV slot of GENERATOR_MAX_POSITIONS positions).
    max_active: int = env("GENERATOR_MAX_ACTIVE", default=16, min=1)
    max_queued: int = env("GENERATOR_MAX_QUEUED", default=32, min=0)
    max_positions: int = env("GENERATOR_MAX_POSITIONS", default=4096, min=64)
    # Prompt positions one stream, and all streams, may feed in one step (chunked prefill).
    prefill_chunk: int = env("GENERATOR_PREFILL_CHUNK", default=256, min=1)
    prefill_budget: int = env("GENERATOR_PREFILL_BUDGET", default=512, min=1)
    # On CUDA, replay the decode step as CUDA graphs (one per batch and length bucket).
    cuda_graphs: bool = env("GENERATOR_CUDA_GRAPHS", default=True)
    budget_base_frames: int = env("GENERATOR_BUDGET_BASE_FRAMES", default=50, min=1)
    budget_frames_per_token: float = env("GENERATOR_BUDGET_FRAMES_PER_TOKEN", default=10.0, min=0)
    max_text_chars: int = env("GENERATOR_MAX_TEXT_CHARS", default=20000, min=1)


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    """Generate, EmbedSpeaker, DescribeModel and GetStats over one loaded model and its runner."""

    def __init__(self, tts: Qwen3TTS, runner: EngineRunner, *, name: str, max_text_chars: int):
        self.tts = tts
        self.runner = runner
        self.name = name
        self.max_text_chars = max_text_chars

    async def Generate(self, requests, context):
        first = await anext(requests, None)
        try:
            if first is None or not first.HasField("config"):
                raise InvalidArgument(
                    "the first message must carry the config",
                    [("config", "missing from the first message")],
                    reason="CONFIG_REQUIRED",
                )
            config = first.config
            stream = await self._open(*self._plan(config))
        except ServiceError:  # refused as it opens: not into the client's writes
            await read_to_half_close(requests)
            raise
        text = TextStream(self.tts.tokenizer)
        reader = asyncio.create_task(self._feed_text(requests, stream, text, config.non_streaming))
        try:
            async for frame in stream:
                frames = np.stack([frame, *stream.take_ready()])
                yield pb.GenerateResponse(
                    frames=array_to_frames(frames), characters_consumed=text.characters_read(stream.text_consumed)
                )
            if stream.finish_reason is FinishReason.CANCELLED:
                error = reader.result() if reader.done() else None
                if isinstance(error, ServiceError):  # a later message refused: not into the client's writes
                    await read_to_half_close(requests)
                raise error or Unavailable("the generator stopped this stream before it finished; retry")
            if stream.finish_reason is FinishReason.ERROR:  # its step failed alone (logged with its trace id)
                raise Internal("the generator failed on this stream", reason="GENERATION_FAILED")
            yield pb.GenerateResponse(
                finish_reason=FINISH_REASONS[stream.finish_reason],
                characters_consumed=text.characters_read(stream.text_consumed),
            )
        finally:  # done, failed, or cancelled by the client or its deadline: free the slot now
            stream.cancel()
            reader.cancel()

    async def EmbedSpeaker(self, request: pb.EmbedSpeakerRequest, context) -> pb.EmbedSpeakerResponse:
        if self.tts.speaker_encoder is None:
            raise FailedPrecondition(
                f"speaker embeddings come from Base models; this one is {self.tts.config.tts_model_type}",
                reason="NOT_A_BASE_MODEL",
            )
        return await self.runner.thread.call(self._embed, request.audio)

    async def DescribeModel(self, request, context) -> pb.DescribeModelResponse:
        config = self.tts.config
        dialects = config.talker.spk_is_dialect
        return pb.DescribeModelResponse(
            name=self.name,
            model_type=config.tts_model_type,
            size=MODEL_SIZES.get(config.tts_model_size, config.tts_model_size),
            languages=config.supported_languages,
            speakers=[pb.Speaker(name=name, dialect=dialects.get(name) or "") for name in config.supported_speakers],
            supports_instruct=config.follows_instruct,
            speaker_embedding_size=config.talker.hidden_size if self.tts.speaker_encoder is not None else 0,
        )

    async def GetStats(self, request, context) -> pb.GetStatsResponse:
        stats = self.runner.stats()
        return pb.GetStatsResponse(
            active_streams=stats["active"],
            queued_streams=stats["queued"],
            max_active_streams=self.runner.max_active,
            frames_total=stats["frames_total"],
        )

    # ----- Generate's parts -----

    def _plan(self, config: pb.GenerateConfig) -> tuple[PromptPlan, SamplingParams]:
        """The prompt plan and sampling of a config; InvalidArgument naming the field at fault.

        Every bound on the prompt (shared/limits.py) is checked here, before any model work."""
        sampling = self._sampling(config)
        for path, value, limit in (
            ("config.instruct", config.instruct, MAX_INSTRUCT_CHARS),
            ("config.cloned_voice.reference_text", config.cloned_voice.reference_text, MAX_TRANSCRIPT_CHARS),
            ("config.speaker", config.speaker, MAX_ID_CHARS),
            ("config.language", config.language, MAX_ID_CHARS),
        ):
            if len(value) > limit:
                message = f"{path} has {len(value)} characters; at most {limit} are accepted"
                raise InvalidArgument(message, [(path, message)], reason="PROMPT_TOO_LONG")
        clone = self._clone(config.cloned_voice) if config.HasField("cloned_voice") else None
        try:
            plan = plan_prompt(
                self.tts.config,
                self.tts.tokenizer,
                language=config.language,
                speaker=config.speaker,
                instruct=config.instruct,
                clone=clone,
                non_streaming=config.non_streaming,
            )
        except PromptError as error:
            field, reason = PROMPT_ERRORS.get(error.field, ("config", "INVALID_CONFIG"))
            raise InvalidArgument(str(error), [(field, str(error))], reason=reason) from None
        for path, ids, limit in (
            ("config.instruct", plan.instruct_ids, MAX_INSTRUCT_TOKENS),
            ("config.cloned_voice.reference_text", plan.ref_text_ids, MAX_TRANSCRIPT_TOKENS),
        ):
            if len(ids) > limit:
                message = f"{path} makes {len(ids)} prompt tokens; at most {limit} are accepted"
                raise InvalidArgument(message, [(path, message)], reason="PROMPT_TOO_LONG")
        return plan, sampling

    def _sampling(self, config: pb.GenerateConfig) -> SamplingParams:
        overrides = {}  # SamplingParams field -> (value, request field)
        for message, names, path in (
            (config.sampling, TALKER_SAMPLING, "config.sampling"),
            (config.predictor_sampling, PREDICTOR_SAMPLING, "config.predictor_sampling"),
        ):
            for field, value in message.ListFields():  # only the fields that were set
                if field.name not in names:
                    raise _invalid_sampling(f"{path}.{field.name}", f"the code predictor has no {field.name}")
                overrides[names[field.name]] = (value, f"{path}.{field.name}")
        if config.HasField("seed"):
            overrides["seed"] = (config.seed, "config.seed")
        if config.max_frames:
            # The code that reaches max_new_tokens is never expanded into a frame.
            overrides["max_new_tokens"] = (config.max_frames + 1, "config.max_frames")
        for name, (value, path) in overrides.items():  # one at a time, to name the bad one
            try:
                self.tts.sampling(**{name: value})
            except ValueError as error:
                raise _invalid_sampling(path, str(error)) from None
        return self.tts.sampling(**{name: value for name, (value, _) in overrides.items()})

    def _clone(self, voice: pb.ClonedVoice) -> ClonePrompt:
        embedding = torch.tensor(voice.speaker_embedding, dtype=torch.float32)
        if voice.HasField("reference_frames") != bool(voice.reference_text):
            missing = "reference_text" if voice.HasField("reference_frames") else "reference_frames"
            raise _invalid_clone("in-context cloning needs both reference_frames and reference_text", missing)
        if not voice.reference_text:
            return ClonePrompt(embedding)
        try:
            codes = frames_to_array(voice.reference_frames)
        except ValueError as error:
            raise _invalid_clone(str(error), "reference_frames") from None
        if len(codes) > MAX_REFERENCE_FRAMES:
            raise _invalid_clone(
                f"{len(codes)} reference frames; at most {MAX_REFERENCE_FRAMES} (60 s) are accepted", "reference_frames"
            )
        ref_text_ids = self.tts.tokenizer.ref_text_ids(voice.reference_text)
        return ClonePrompt(embedding, ref_codes=torch.from_numpy(codes), ref_text_ids=ref_text_ids)

    async def _open(self, plan: PromptPlan, params: SamplingParams) -> Stream:
        span = trace.get_current_span().get_span_context()
        trace_id = trace.format_trace_id(span.trace_id) if span.is_valid else None
        try:
            return await self.runner.open(plan, params, trace_id)
        except ContextTooLong as error:
            raise InvalidArgument(str(error), [("config", str(error))], reason="PROMPT_TOO_LONG") from None
        except ValueError as error:  # the engine's checks of the cloned voice (sampling passed above)
            raise _invalid_clone(str(error)) from None

    async def _feed_text(self, requests, stream: Stream, text: TextStream, non_streaming: bool) -> Exception | None:
        """Text requests into the stream until the client half-closes.

        Bad input cancels the stream and is returned (rather than raised, as nobody may await
        this task) for Generate to fail the RPC with.
        """
        try:
            async for request in requests:
                if request.HasField("config"):
                    raise InvalidArgument(
                        "the config must be sent once, in the first message",
                        [("config", "sent again")],
                        reason="CONFIG_ALREADY_SENT",
                    )
                chunk = request.text
                if text.received + len(chunk.text) > self.max_text_chars:
                    message = f"the text is longer than {self.max_text_chars} characters"
                    raise InvalidArgument(message, [("text", message)], reason="TEXT_TOO_LONG")
                # Non-streaming: the engine reads no text before the end, so a flush could only
                # change the tokens, never the timing.
                _add_text(stream, text.feed(chunk.text, flush=chunk.flush and not non_streaming))
            if not text.received:
                raise InvalidArgument("no text was sent", [("text", "no text was sent")], reason="EMPTY_TEXT")
            _add_text(stream, text.flush())
            stream.close_text()
        except Exception as error:
            stream.cancel()
            return error
        return None

    def _embed(self, samples: codec_pb2.Samples) -> pb.EmbedSpeakerResponse:
        """EmbedSpeaker's work, on the model thread."""
        audio = _read_samples(samples)
        try:
            with torch.inference_mode():
                embedding = self.tts.speaker_encoder.embed(audio, samples.sample_rate_hz)
        except AudioError as error:  # e.g. too short for the encoder
            raise _invalid_audio(str(error), "INVALID_AUDIO") from None
        return pb.EmbedSpeakerResponse(speaker_embedding=embedding.float().cpu().tolist())


def _add_text(stream: Stream, ids: list[int]) -> None:
    if ids:
        try:
            stream.add_text(ids)
        except ContextTooLong as error:
            raise InvalidArgument(str(error), [("text", str(error))], reason="TEXT_TOO_LONG") from None


def _read_samples(samples: codec_pb2.Samples) -> np.ndarray:
    """EmbedSpeaker's waveform, checked against the limits; InvalidArgument otherwise."""
    low, high = INPUT_SAMPLE_RATES
    if not low <= samples.sample_rate_hz <= high:
        raise _invalid_audio(
            f"audio.sample_rate_hz is {samples.sample_rate_hz}; {low} to {high} Hz are accepted",
            "INVALID_SAMPLE_RATE",
            "audio.sample_rate_hz",
        )
    if len(samples.samples_f32le) % 4:
        raise _invalid_audio("audio.samples_f32le is not a whole number of float32 samples", "INVALID_AUDIO")
    audio = samples_to_array(samples)
    if not len(audio):
        raise _invalid_audio("audio.samples_f32le is empty", "EMPTY_AUDIO")
    seconds = len(audio) / samples.sample_rate_hz
    if seconds > MAX_AUDIO_SECONDS:
        raise _invalid_audio(
            f"the audio lasts {seconds:.1f} s; at most {MAX_AUDIO_SECONDS:g} s are accepted", "AUDIO_TOO_LONG"
        )
    if not np.isfinite(audio).all():
        raise _invalid_audio("the audio contains NaN or infinite samples", "INVALID_AUDIO")
    return audio


def _invalid_audio(message: str, reason: str, field: str = "audio.samples_f32le") -> InvalidArgument:
    return InvalidArgument(message, [(field, message)], reason=reason)


def _invalid_clone(message: str, field: str = "") -> InvalidArgument:
    path = "config.cloned_voice" + (f".{field}" if field else "")
    return InvalidArgument(message, [(path, message)], reason="INVALID_CLONED_VOICE")


def _invalid_sampling(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", [(field, message)], reason="INVALID_SAMPLING")


@contextlib.asynccontextmanager
async def build(config: GeneratorConfig):
    """Load the model, start the engine runner, yield the registration; stop the runner after."""
    use_cpu_allotment()
    dtype = preferred_dtype(config.device) if config.dtype == "auto" else config.dtype
    log.info("loading the model from %s (%s, %s)", config.checkpoint, config.device, dtype)
    tts = await asyncio.to_thread(
        Qwen3TTS.from_pretrained, config.checkpoint, dtype=dtype, device=config.device, load_codec=False
    )
    limits = SchedulerLimits(
        slots=config.max_active,
        max_positions=config.max_positions,
        prefill_chunk=config.prefill_chunk,
        prefill_budget=config.prefill_budget,
        budget_base_frames=config.budget_base_frames,
        budget_frames_per_token=config.budget_frames_per_token,
    )
    engine = tts.new_engine(limits, use_graphs=config.cuda_graphs)
    started = time.monotonic()
    captured = await asyncio.to_thread(engine.warm_up, tts.sampling())
    if captured:
        log.info("captured %d CUDA graphs before serving in %.1f s", captured, time.monotonic() - started)
    runner = EngineRunner(engine, config.max_queued, on_failure=fail_process)
    runner.start()
    servicer = GeneratorServicer(
        tts,
        runner,
        name=config.model_name or config.checkpoint.resolve().name,
        max_text_chars=config.max_text_chars,
    )
    try:
        yield [Registration(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer, SERVICE_NAME)]
    finally:
        await runner.stop()
