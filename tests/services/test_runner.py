"""The engine runner: the generator service's core, on the tiny CustomVoice checkpoint.

Concurrent streams, text arriving while audio is produced, admission limits, cancellation that
frees the slot, and the runaway guard. Frames must equal the whole-utterance API's codes.
"""

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from models.engine.engine import FinishReason, SchedulerLimits
from models.qwen3_tts.prompts import plan_prompt
from models.tts import Qwen3TTS
from services.generator.runner import EngineRunner
from shared.errors import ResourceExhausted

TEXTS = ["hello world, this is a test", "short", "another sentence of text here"]
MAX_TOKENS = 13


@pytest.fixture(scope="module")
def tts(tiny_custom_voice):
    return Qwen3TTS.from_pretrained(tiny_custom_voice, load_codec=False)


def greedy(tts, **overrides):
    return tts.sampling(**{"do_sample": False, "subtalker_do_sample": False, "max_new_tokens": MAX_TOKENS, **overrides})


def plan(tts):
    return plan_prompt(tts.config, tts.tokenizer, speaker="ryan", language="english", non_streaming=False)


@pytest_asyncio.fixture
async def make_runner(tts):
    runners = []

    async def make(max_active=16, max_queued=32, **scheduler):
        runner = EngineRunner(tts.new_engine(SchedulerLimits(slots=max_active, **scheduler)), max_queued)
        runner.start()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        await runner.stop()


async def collect(stream):
    frames = [frame async for frame in stream]
    return np.stack(frames) if frames else np.zeros((0, 16), dtype=np.int64)


@pytest.mark.asyncio
async def test_concurrent_streams_match_the_whole_utterance_api(tts, make_runner):
    expected = tts.generate(
        TEXTS,
        speaker="ryan",
        language="english",
        non_streaming=False,
        decode=False,
        do_sample=False,
        subtalker_do_sample=False,
        max_new_tokens=MAX_TOKENS,
    )
    runner = await make_runner()
    streams = []
    for text in TEXTS:
        stream = await runner.open(plan(tts), greedy(tts))
        stream.add_text(tts.tokenizer.target_ids(text))
        stream.close_text()
        streams.append(stream)
    results = await asyncio.gather(*(collect(s) for s in streams))
    for stream, frames, utterance in zip(streams, results, expected):
        assert stream.finish_reason is FinishReason.LENGTH
        assert np.array_equal(frames, utterance.codes.numpy())
    assert runner.stats() == {"active": 0, "queued": 0, "frames_total": sum(len(f) for f in results)}


@pytest.mark.asyncio
async def test_first_frame_arrives_before_the_last_text(tts, make_runner):
    runner = await make_runner()
    ids = tts.tokenizer.target_ids(TEXTS[2])
    stream = await runner.open(plan(tts), greedy(tts))
    stream.add_text(ids[:2])
    first = await asyncio.wait_for(stream.__anext__(), timeout=30)
    assert first.shape == (16,)
    await asyncio.sleep(0.2)  # text runs dry: the stream waits instead of ending
    assert stream.finish_reason is None
    stream.add_text(ids[2:])
    stream.close_text()
    frames = [first] + [f async for f in stream]
    [expected] = tts.generate(
        [TEXTS[2]],
        speaker="ryan",
        language="english",
        non_streaming=False,
        decode=False,
        do_sample=False,
        subtalker_do_sample=False,
        max_new_tokens=MAX_TOKENS,
    )
    assert np.array_equal(np.stack(frames), expected.codes.numpy())


@pytest.mark.asyncio
async def test_admission_queue_and_capacity(tts, make_runner):
    runner = await make_runner(max_active=1, max_queued=1)
    first = await runner.open(plan(tts), greedy(tts))
    second = await runner.open(plan(tts), greedy(tts))
    assert runner.stats()["active"] == 1 and runner.stats()["queued"] == 1
    with pytest.raises(ResourceExhausted) as refused:
        await runner.open(plan(tts), greedy(tts))
    assert refused.value.reason == "GENERATOR_AT_CAPACITY"
    for stream in (first, second):
        stream.add_text(tts.tokenizer.target_ids(TEXTS[1]))
        stream.close_text()
    await collect(first)
    frames = await collect(second)  # ran once the first freed its slot
    assert len(frames) == MAX_TOKENS - 1


@pytest.mark.asyncio
async def test_cancel_frees_the_slot_for_a_waiting_stream(tts, make_runner):
    runner = await make_runner(max_active=1, max_queued=2)
    running = await runner.open(plan(tts), greedy(tts))
    running.add_text(tts.tokenizer.target_ids(TEXTS[0]))  # never closed: would wait forever
    waiting = await runner.open(plan(tts), greedy(tts))
    waiting.add_text(tts.tokenizer.target_ids(TEXTS[1]))
    waiting.close_text()
    await asyncio.wait_for(running.__anext__(), timeout=30)
    running.cancel()
    frames = await asyncio.wait_for(collect(waiting), timeout=60)
    assert running.finish_reason is FinishReason.CANCELLED
    assert len(frames) == MAX_TOKENS - 1
    assert runner.stats()["active"] == 0
    # Cancelled before any text: no frame can exist, and the slot comes back.
    idle = await runner.open(plan(tts), greedy(tts))
    assert runner.stats()["active"] == 1
    idle.cancel()
    assert len(await collect(idle)) == 0
    assert idle.finish_reason is FinishReason.CANCELLED and runner.stats()["active"] == 0


@pytest.mark.asyncio
async def test_runaway_guard_ends_with_budget(tts, make_runner):
    runner = await make_runner(budget_base_frames=3, budget_frames_per_token=0.5)
    stream = await runner.open(plan(tts), greedy(tts, max_new_tokens=200))
    ids = tts.tokenizer.target_ids(TEXTS[1])
    stream.add_text(ids)
    stream.close_text()
    frames = await collect(stream)
    assert stream.finish_reason is FinishReason.BUDGET
    assert len(frames) == 3 + int(np.ceil(0.5 * len(ids)))


@pytest.mark.asyncio
async def test_bad_token_ids_are_refused_without_touching_the_engine(tts, make_runner):
    runner = await make_runner()
    stream = await runner.open(plan(tts), greedy(tts))
    with pytest.raises(ValueError, match="token id"):
        stream.add_text([10**9])
    stream.add_text(tts.tokenizer.target_ids(TEXTS[1]))
    stream.close_text()
    assert len(await collect(stream)) == MAX_TOKENS - 1


@pytest.mark.asyncio
async def test_stop_ends_every_open_stream(tts):
    runner = EngineRunner(tts.new_engine(SchedulerLimits(slots=1)), max_queued=1)
    runner.start()
    running = await runner.open(plan(tts), greedy(tts))
    waiting = await runner.open(plan(tts), greedy(tts))
    running.add_text(tts.tokenizer.target_ids(TEXTS[0]))  # never closed
    await runner.stop()
    for stream in (running, waiting):
        await asyncio.wait_for(collect(stream), timeout=10)  # ends instead of waiting forever
        assert stream.finish_reason is FinishReason.CANCELLED
