"""The generator gRPC service on a real loopback server, built as `python -m services.generator`
builds it, against the offline `Qwen3TTS.generate` on the same tiny checkpoints.

Greedy decoding everywhere (the tiny checkpoints never emit end-of-speech, so `max_frames` caps
every stream): a streamed request must give exactly the offline codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import torch

from models.qwen3_tts.prompts import ClonePrompt
from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer
from models.tts import Qwen3TTS
from qwentts.codec.v1 import codec_pb2
from qwentts.generator.v1 import generator_pb2 as pb
from qwentts.generator.v1 import generator_pb2_grpc
from services.generator.service import GeneratorConfig, build
from shared.audio import prepare_reference_audio
from shared.config import load_config
from shared.errors import error_details
from shared.frames import array_to_frames, frames_to_array
from tests.helpers import serving
from tools.random_checkpoints import write_checkpoint

REPO = Path(__file__).resolve().parents[2]
MAX_FRAMES = 12
TEXT = "The quick brown fox jumps over the lazy dog, and then it rests."
GREEDY = dict(sampling=pb.Sampling(do_sample=False), predictor_sampling=pb.Sampling(do_sample=False))


@pytest.fixture(scope="module")
def offline(tiny_base, tiny_custom_voice, tiny_voice_design):
    """`offline(checkpoint, text, max_frames=..., **generate_kwargs)`: the codes of the offline API."""
    models = {}

    def run(checkpoint, text, *, max_frames=MAX_FRAMES, **kwargs):
        if checkpoint not in models:
            models[checkpoint] = Qwen3TTS.from_pretrained(checkpoint, load_codec=False)
        [utterance] = models[checkpoint].generate(
            [text], decode=False, do_sample=False, subtalker_do_sample=False, max_new_tokens=max_frames + 1, **kwargs
        )
        return utterance.codes.numpy()

    return run


@pytest.fixture(scope="module")
def tiny_small_custom_voice(tmp_path_factory):
    """A CustomVoice checkpoint that says it is 0.6B: that model does not follow instructions."""
    return write_checkpoint(tmp_path_factory.mktemp("small") / "cv-0.6b", "custom_voice", "tiny", model_size="0.6b")


@pytest_asyncio.fixture
async def serve():
    """`await serve(checkpoint, **GENERATOR_env)` -> a stub of a server built like production."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(checkpoint, **env):
            # float32: the dtype in which streamed codes equal the offline API's exactly.
            environ = {
                "GENERATOR_CHECKPOINT": str(checkpoint),
                "GENERATOR_DTYPE": "float32",
                **{f"GENERATOR_{k}": str(v) for k, v in env.items()},
            }
            port, _ = await stack.enter_async_context(
                serving.serve("generator", build, load_config(GeneratorConfig, environ))
            )
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stack.push_async_callback(channel.close)
            return generator_pb2_grpc.GeneratorServiceStub(channel)

        yield start


def config_request(**fields) -> pb.GenerateRequest:
    return pb.GenerateRequest(config=pb.GenerateConfig(**{"max_frames": MAX_FRAMES, **GREEDY, **fields}))


def text_request(text: str, flush: bool = False) -> pb.GenerateRequest:
    return pb.GenerateRequest(text=pb.TextChunk(text=text, flush=flush))


async def generate(stub, pieces, **config) -> tuple[np.ndarray, list[pb.GenerateResponse]]:
    """Send the config and the text pieces, then read every response; (codes, responses)."""
    call = stub.Generate()
    await call.write(config_request(**config))
    for piece in pieces:
        await call.write(text_request(piece))
    await call.done_writing()
    responses = await responses_of(call)
    return codes_of(responses), responses


async def responses_of(call) -> list[pb.GenerateResponse]:
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:  # (read and iteration do not mix)
        responses.append(response)
    return responses


def codes_of(responses) -> np.ndarray:
    return np.concatenate([frames_to_array(r.frames) for r in responses if r.frames.num_frames])


def assert_progress(responses, text):
    consumed = [r.characters_consumed for r in responses]
    assert consumed == sorted(consumed) and 0 < consumed[-1] <= len(text)
    assert [r.finish_reason for r in responses] == [pb.FINISH_REASON_UNSPECIFIED] * (len(responses) - 1) + [
        pb.FINISH_REASON_MAX_LENGTH
    ]


async def rpc_error(coroutine) -> tuple[grpc.StatusCode, str, list[str]]:
    """(code, ErrorInfo reason or "", BadRequest fields) of the call's failure."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await coroutine
    code, info, bad_request = error_details(failure.value)
    return code, info.reason if info else "", [v.field for v in bad_request.field_violations] if bad_request else []


async def wait_for_stats(stub, **expected):
    """GetStats once it shows `expected` (a cancel reaches the engine thread asynchronously)."""
    for _ in range(500):
        stats = await stub.GetStats(pb.GetStatsRequest())
        if all(getattr(stats, name) == value for name, value in expected.items()):
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"GetStats never showed {expected}: {stats}")


def sine(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(
        np.float32
    )


def samples(audio: np.ndarray, rate: int) -> codec_pb2.Samples:
    return codec_pb2.Samples(sample_rate_hz=rate, samples_f32le=audio.astype("<f4").tobytes())


# ----- Generate equals the offline API -----


@pytest.mark.asyncio
async def test_non_streaming_text_sent_at_once(serve, offline, tiny_custom_voice):
    stub = await serve(tiny_custom_voice)
    codes, responses = await generate(stub, [TEXT], speaker="ryan", language="english", non_streaming=True)
    expected = offline(tiny_custom_voice, TEXT, speaker="ryan", language="english", non_streaming=True)
    assert codes.shape == (MAX_FRAMES, 16)
    assert np.array_equal(codes, expected)
    assert_progress(responses, TEXT)
    assert responses[-1].characters_consumed == len(TEXT)  # non-streaming: all text read at once


@pytest.mark.asyncio
async def test_streaming_text_in_pieces_starts_before_the_text_ends(serve, offline, tiny_custom_voice):
    stub = await serve(tiny_custom_voice)
    pieces = ["The qu", "ick bro", "wn fox ju", "mps over the lazy dog, and then it rests."]
    call = stub.Generate()
    await call.write(config_request(speaker="ryan", language="english"))
    for piece in pieces[:-1]:
        await call.write(text_request(piece))
        await asyncio.sleep(0.05)
    first = await call.read()  # audio before the last piece is sent
    assert first.frames.num_frames >= 1 and first.characters_consumed < len(TEXT)
    await call.write(text_request(pieces[-1]))
    await call.done_writing()
    responses = [first, *await responses_of(call)]
    expected = offline(tiny_custom_voice, TEXT, speaker="ryan", language="english", non_streaming=False)
    assert np.array_equal(codes_of(responses), expected)
    assert_progress(responses, TEXT)


@pytest.mark.asyncio
async def test_flush_sends_text_without_word_boundaries(serve, tiny_custom_voice):
    stub = await serve(tiny_custom_voice)
    call = stub.Generate()
    await call.write(config_request(speaker="vivian", language="chinese"))
    await call.write(text_request("你好世界今天", flush=True))  # no boundary: only the flush sends it
    first = await call.read()
    assert first.frames.num_frames >= 1
    await call.write(text_request("天气很好"))
    await call.done_writing()
    responses = [first, *await responses_of(call)]
    assert len(codes_of(responses)) == MAX_FRAMES
    assert_progress(responses, "你好世界今天天气很好")


@pytest.mark.asyncio
async def test_voice_design_with_instruct(serve, offline, tiny_voice_design):
    stub = await serve(tiny_voice_design)
    instruct = "A calm, deep voice"
    codes, _ = await generate(stub, ["Good morning, ", "everyone."], instruct=instruct, non_streaming=True)
    assert np.array_equal(codes, offline(tiny_voice_design, "Good morning, everyone.", instruct=instruct))


@pytest.mark.asyncio
async def test_cloned_voices_from_embed_speaker(serve, offline, tiny_base):
    stub = await serve(tiny_base)
    audio = sine(2.0, 16000)
    reply = await stub.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=samples(audio, 16000)))
    embedding = torch.tensor(reply.speaker_embedding)
    model = Qwen3TTS.from_pretrained(tiny_base, load_codec=False)
    with torch.inference_mode():
        assert torch.allclose(embedding, model.speaker_encoder.embed(audio, 16000), atol=1e-6)

    # x-vector only
    voice = pb.ClonedVoice(speaker_embedding=reply.speaker_embedding)
    codes, _ = await generate(stub, ["Hello there, ", "how are you?"], cloned_voice=voice, language="english")
    expected = offline(
        tiny_base, "Hello there, how are you?", clone=ClonePrompt(embedding), language="english", non_streaming=False
    )
    assert np.array_equal(codes, expected)

    # in-context: the reference's codes (as the codec service would encode them) and transcript
    codec = SpeechTokenizer.from_pretrained(tiny_base)
    ref_codes = codec.encode([prepare_reference_audio(audio, 16000)])[0]
    ref_text = "This is the reference."
    voice = pb.ClonedVoice(
        speaker_embedding=reply.speaker_embedding, reference_frames=array_to_frames(ref_codes), reference_text=ref_text
    )
    codes, responses = await generate(stub, ["Hello there, ", "how are you?"], cloned_voice=voice)
    clone = ClonePrompt(embedding, ref_codes=ref_codes, ref_text_ids=model.tokenizer.ref_text_ids(ref_text))
    assert np.array_equal(codes, offline(tiny_base, "Hello there, how are you?", clone=clone, non_streaming=False))
    assert_progress(responses, "Hello there, how are you?")  # the transcript is not counted


@pytest.mark.asyncio
async def test_concurrent_streams_each_match_their_own(serve, offline, tiny_custom_voice):
    stub = await serve(tiny_custom_voice)
    requests = [("Short one.", 5, "vivian"), (TEXT, 14, "ryan"), ("A medium sentence, here.", 9, "dylan")]
    results = await asyncio.gather(
        *(
            generate(stub, [text[:7], text[7:]], speaker=speaker, max_frames=frames)
            for text, frames, speaker in requests
        )
    )
    for (text, frames, speaker), (codes, _) in zip(requests, results):
        assert codes.shape == (frames, 16)
        assert np.array_equal(
            codes, offline(tiny_custom_voice, text, speaker=speaker, max_frames=frames, non_streaming=False)
        )


# ----- capacity, cancellation, deadlines -----


async def occupy_the_only_slot(stub):
    """A stream that holds a one-slot generator for minutes (served with the runaway guard off)."""
    running = stub.Generate()
    await running.write(config_request(speaker="ryan", max_frames=100_000))
    await running.write(text_request("A long story."))
    await running.done_writing()
    await running.read()
    return running


@pytest.mark.asyncio
async def test_capacity_and_cancel_frees_the_slot(serve, tiny_custom_voice):
    stub = await serve(tiny_custom_voice, MAX_ACTIVE=1, MAX_QUEUED=0, BUDGET_BASE_FRAMES=100_000)
    running = await occupy_the_only_slot(stub)
    refused = stub.Generate()
    await refused.write(config_request(speaker="ryan"))
    code, reason, _ = await rpc_error(refused.read())
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "GENERATOR_AT_CAPACITY")

    running.cancel()
    stats = await wait_for_stats(stub, active_streams=0)
    assert stats.queued_streams == 0 and stats.max_active_streams == 1 and stats.frames_total >= 1
    codes, _ = await generate(stub, ["Admitted now."], speaker="ryan")
    assert len(codes) == MAX_FRAMES


@pytest.mark.asyncio
async def test_a_refusal_keeps_its_status_while_the_client_writes(serve, tiny_custom_voice):
    """A client that writes its config, text and half-close at once, as the gateway does, gets the
    refusal's own status: a refusal sent while it still writes reached grpc.aio clients as INTERNAL
    "Internal error from Core" about one time in six (grpc/grpc#36066), which the gateway turned
    into UNAVAILABLE."""
    stub = await serve(tiny_custom_voice, MAX_ACTIVE=1, MAX_QUEUED=0, BUDGET_BASE_FRAMES=100_000)
    running = await occupy_the_only_slot(stub)

    async def refused() -> tuple[grpc.StatusCode, str]:
        call = stub.Generate()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(config_request(speaker="ryan"))
            for piece in ("Some text, ", "written at once, ", "as the gateway writes it."):
                await call.write(text_request(piece))
            await call.done_writing()
        code, reason, _ = await rpc_error(call.read())
        return code, reason

    outcomes = [await refused() for _ in range(30)]
    assert set(outcomes) == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "GENERATOR_AT_CAPACITY")}, outcomes
    running.cancel()


@pytest.mark.asyncio
async def test_a_refusal_of_later_text_keeps_its_status_while_the_client_writes(serve, tiny_custom_voice):
    """Text refused after the open (too long; a second config) while the client still writes the
    rest of its messages, as the gateway writes a text known up front: the refusal's own status
    every time, as at the open (grpc/grpc#36066)."""
    stub = await serve(tiny_custom_voice, MAX_TEXT_CHARS=40)

    async def refused(bad: pb.GenerateRequest) -> tuple[grpc.StatusCode, str]:
        call = stub.Generate()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for request in (config_request(speaker="ryan"), text_request("x" * 30), bad):
                await call.write(request)
            for _ in range(8):
                await call.write(text_request("and more, "))
            await call.done_writing()
        code, reason, _ = await rpc_error(responses_of(call))
        return code, reason

    for bad, reason in (
        (text_request("y" * 11), "TEXT_TOO_LONG"),
        (config_request(speaker="ryan"), "CONFIG_ALREADY_SENT"),
    ):
        outcomes = [await refused(bad) for _ in range(15)]
        assert set(outcomes) == {(INVALID, reason)}, outcomes


@pytest.mark.asyncio
async def test_deadline_ends_the_stream_and_frees_the_slot(serve, tiny_custom_voice):
    stub = await serve(tiny_custom_voice, MAX_ACTIVE=1)
    call = stub.Generate(timeout=2.0)
    await call.write(config_request(speaker="ryan"))
    await call.write(text_request("Text that never ends, "))  # never half-closed
    code, _, _ = await rpc_error(responses_of(call))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for_stats(stub, active_streams=0)


# ----- bad input: the right error, and the server keeps serving -----


async def generate_error(stub, requests, **kwargs):
    async def run():
        call = stub.Generate(**kwargs)
        for request in requests:
            await call.write(request)
        await call.done_writing()
        return await responses_of(call)

    return await rpc_error(run())


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_bad_generate_requests(serve, tiny_custom_voice):
    stub = await serve(tiny_custom_voice, MAX_TEXT_CHARS=40)
    cv = dict(speaker="ryan")
    cases = [
        ([text_request("no config")], ("CONFIG_REQUIRED", "config")),
        ([], ("CONFIG_REQUIRED", "config")),
        ([config_request(**cv), text_request("a"), config_request(**cv)], ("CONFIG_ALREADY_SENT", "config")),
        ([config_request(speaker="nobody"), text_request("a")], ("INVALID_SPEAKER", "config.speaker")),
        ([config_request(), text_request("a")], ("INVALID_SPEAKER", "config.speaker")),
        ([config_request(language="klingon", **cv)], ("UNSUPPORTED_LANGUAGE", "config.language")),
        (
            [config_request(cloned_voice=pb.ClonedVoice(speaker_embedding=[0.0] * 64), **cv)],
            ("INVALID_CLONED_VOICE", "config.cloned_voice"),
        ),
        ([config_request(sampling=pb.Sampling(top_p=1.5), **cv)], ("INVALID_SAMPLING", "config.sampling.top_p")),
        (
            [config_request(predictor_sampling=pb.Sampling(repetition_penalty=1.1), **cv)],
            ("INVALID_SAMPLING", "config.predictor_sampling.repetition_penalty"),
        ),
        ([config_request(**cv)], ("EMPTY_TEXT", "text")),
        ([config_request(**cv), text_request("x" * 30), text_request("y" * 11)], ("TEXT_TOO_LONG", "text")),
    ]
    for requests, (reason, field) in cases:
        assert await generate_error(stub, requests) == (INVALID, reason, [field]), reason
    code, reason, _ = await rpc_error(stub.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=samples(sine(2, 16000), 16000))))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_BASE_MODEL")
    assert (await wait_for_stats(stub, active_streams=0)).queued_streams == 0
    codes, _ = await generate(stub, ["Still serving."], **cv)
    assert len(codes) == MAX_FRAMES


@pytest.mark.asyncio
async def test_bad_requests_to_other_models(serve, tiny_small_custom_voice, tiny_voice_design, tiny_base):
    small = await serve(tiny_small_custom_voice)
    assert await generate_error(small, [config_request(speaker="ryan", instruct="happily")]) == (
        INVALID,
        "INVALID_INSTRUCT",
        ["config.instruct"],
    )
    design = await serve(tiny_voice_design)
    assert await generate_error(design, [config_request(speaker="ryan", instruct="calm")]) == (
        INVALID,
        "INVALID_SPEAKER",
        ["config.speaker"],
    )
    base = await serve(tiny_base)
    voice = pb.ClonedVoice(speaker_embedding=[0.1] * 63)
    # The config alone: the server fails on it, and a text written after that could lose the
    # status to the grpc.aio write race (grpc/grpc#36066).
    assert await generate_error(base, [config_request(cloned_voice=voice)]) == (
        INVALID,
        "INVALID_CLONED_VOICE",
        ["config.cloned_voice"],
    )
    voice = pb.ClonedVoice(speaker_embedding=[0.1] * 64, reference_frames=array_to_frames(np.zeros((3, 16), int)))
    assert await generate_error(base, [config_request(cloned_voice=voice)]) == (
        INVALID,
        "INVALID_CLONED_VOICE",
        ["config.cloned_voice.reference_text"],
    )
    voice = pb.ClonedVoice(
        speaker_embedding=[0.1] * 64, reference_frames=array_to_frames(np.full((3, 16), 5000)), reference_text="ref"
    )
    assert await generate_error(base, [config_request(cloned_voice=voice)]) == (
        INVALID,
        "INVALID_CLONED_VOICE",
        ["config.cloned_voice"],
    )
    audio_cases = [
        (samples(sine(2, 16000), 100), ("INVALID_SAMPLE_RATE", "audio.sample_rate_hz")),
        (samples(np.zeros(0, np.float32), 16000), ("EMPTY_AUDIO", "audio.samples_f32le")),
        (samples(np.full(16000, np.nan, np.float32), 16000), ("INVALID_AUDIO", "audio.samples_f32le")),
        (codec_pb2.Samples(sample_rate_hz=16000, samples_f32le=b"abc"), ("INVALID_AUDIO", "audio.samples_f32le")),
        (samples(sine(61, 8000), 8000), ("AUDIO_TOO_LONG", "audio.samples_f32le")),
        (samples(sine(0.01, 16000), 16000), ("INVALID_AUDIO", "audio.samples_f32le")),  # too short to embed
    ]
    for audio, (reason, field) in audio_cases:
        assert await rpc_error(base.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=audio))) == (INVALID, reason, [field])
    reply = await base.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=samples(sine(2, 16000), 16000)))
    assert len(reply.speaker_embedding) == 64


# ----- describing the model, the process entry point -----


@pytest.mark.asyncio
async def test_describe_model(serve, tiny_custom_voice, tiny_base):
    description = await (await serve(tiny_custom_voice)).DescribeModel(pb.DescribeModelRequest())
    assert (description.name, description.model_type, description.size) == (
        tiny_custom_voice.name,
        "custom_voice",
        "1.7B",
    )
    assert description.languages[0] == "auto" and "english" in description.languages
    assert "sichuan_dialect" not in description.languages
    assert pb.Speaker(name="dylan", dialect="beijing_dialect") in description.speakers
    assert pb.Speaker(name="ryan") in description.speakers
    assert description.supports_instruct and description.speaker_embedding_size == 0
    description = await (await serve(tiny_base, MODEL_NAME="my-base")).DescribeModel(pb.DescribeModelRequest())
    assert (description.name, description.model_type, len(description.speakers)) == ("my-base", "base", 0)
    assert not description.supports_instruct and description.speaker_embedding_size == 64


def test_the_process_needs_a_checkpoint():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "services.generator"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "GENERATOR_CHECKPOINT" in result.stderr


def test_a_dead_engine_loop_turns_health_off_and_exits_non_zero(tiny_custom_voice, tmp_path):
    """Not a hung pool that says SERVING: every stream ends UNAVAILABLE, health turns NOT_SERVING
    (kept for GRPC_DRAIN_SECONDS), and the process exits with status 1 for Kubernetes to restart."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from deploy.local import grpc_serving, pick_ports

    port = pick_ports("free")["base"]
    env = {
        **os.environ,
        "GENERATOR_CHECKPOINT": str(tiny_custom_voice),
        "GENERATOR_PORT": str(port),
        "GRPC_DRAIN_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "generator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.broken_generator"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        address = f"127.0.0.1:{port}"
        for _ in range(600):
            if grpc_serving(address) or process.poll() is not None:
                break
            time.sleep(0.1)
        with grpc.insecure_channel(address) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            requests = [config_request(speaker="vivian"), text_request("Hello there.")]
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.Generate(iter(requests), timeout=60))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
        process.wait()
    assert "injected failure of the engine loop" in log_path.read_text()
