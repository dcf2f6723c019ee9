"""Cluster benchmark (`make bench`): time to first audio through the gateway vs in-process, and
through the web service's HTTP streaming.

For each concurrency (default 1, 4, 16 streams started together) it measures, per stream, the
time from the request to its first audio chunk (one frame, 80 ms, decoded), and the aggregate
x-real-time (seconds of audio produced per second of wall time, all streams together):

- in-process: an EngineRunner and codec streams in this process, no gRPC (the floor);
- cluster: the same model served by `deploy.local.LocalCluster` (codec, generator and gateway
  processes on loopback), called with StreamSynthesize;
- web: the same cluster through the web service, `POST /v1/audio/speech` with `stream_format`
  audio (PCM) from the `openai` client: the difference to "cluster" is the web hop's cost.

Both decode in the gateway's default chunk schedule (1, 2, 4, 8 frames) and use greedy decoding
with all text known up front. Prints the numbers and writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: the same setting deploy/local.py gives the cluster's model
# processes, so that the in-process numbers are measured alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio
import statistics
import tempfile
import time

import grpc
import numpy as np
import openai

from bench.bench_model import TEXT, checkpoint
from bench.report import machine, write_section
from deploy.local import LocalCluster
from models.engine.engine import SchedulerLimits
from models.qwen3_tts.prompts import plan_prompt
from models.tts import Qwen3TTS
from qwentts.v1 import audio_pb2, tts_pb2, tts_pb2_grpc
from services.generator.runner import EngineRunner
from tools.random_checkpoints import default_checkpoint

SCHEDULE = (1, 2, 4, 8)
FRAME_SECONDS = 0.08


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def in_process_round(tts: Qwen3TTS, runner: EngineRunner, streams: int, frames: int):
    params = tts.sampling(do_sample=False, subtalker_do_sample=False, max_new_tokens=frames)
    ids = tts.tokenizer.target_ids(TEXT)

    async def one():
        start = time.perf_counter()
        plan = plan_prompt(tts.config, tts.tokenizer, language="english", speaker="vivian", non_streaming=True)
        stream = await runner.open(plan, params)
        stream.add_text(ids)
        stream.close_text()
        decoder = tts.codec.stream()
        first, pending, chunks = None, [], 0
        async for frame in stream:
            pending.append(frame)
            if len(pending) >= SCHEDULE[min(chunks, len(SCHEDULE) - 1)]:
                await asyncio.to_thread(decoder.push, np.stack(pending))
                pending, chunks = [], chunks + 1
                first = first or time.perf_counter() - start
        if pending:
            await asyncio.to_thread(decoder.push, np.stack(pending))
        return first

    start = time.perf_counter()
    firsts = await asyncio.gather(*(one() for _ in range(streams)))
    return firsts, time.perf_counter() - start


async def cluster_round(address: str, streams: int, frames: int):
    config = tts_pb2.SynthesisConfig(
        voice=tts_pb2.VoiceSelection(preset_speaker="vivian"),
        language="english",
        sampling=tts_pb2.SamplingOptions(do_sample=False),
        predictor_sampling=tts_pb2.SamplingOptions(do_sample=False),
        max_audio_seconds=frames * FRAME_SECONDS,
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM16),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tts_pb2_grpc.TextToSpeechServiceStub(channel)

        async def one():
            start = time.perf_counter()
            first = None
            async for message in stub.StreamSynthesize(tts_pb2.StreamSynthesizeRequest(config=config, text=TEXT)):
                if message.HasField("audio") and first is None:
                    first = time.perf_counter() - start
            return first

        start = time.perf_counter()
        firsts = await asyncio.gather(*(one() for _ in range(streams)))
        return firsts, time.perf_counter() - start


async def web_round(url: str, streams: int, frames: int):
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    extra = {"greedy": True, "language": "english", "max_audio_seconds": frames * FRAME_SECONDS}

    async def one():
        start = time.perf_counter()
        first = None
        async with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts",
            voice="vivian",
            input=TEXT,
            response_format="pcm",
            stream_format="audio",
            extra_body=extra,
        ) as response:
            async for chunk in response.iter_bytes():
                if chunk and first is None:
                    first = time.perf_counter() - start
        return first

    try:
        start = time.perf_counter()
        firsts = await asyncio.gather(*(one() for _ in range(streams)))
        return firsts, time.perf_counter() - start
    finally:
        await client.close()


def summarize(rounds, streams: int, frames: int) -> dict:
    firsts = [f for firsts, _ in rounds for f in firsts]
    wall = statistics.median(w for _, w in rounds)
    return {
        "p50": percentile(firsts, 50) * 1000,
        "p95": percentile(firsts, 95) * 1000,
        "xrt": streams * frames * FRAME_SECONDS / wall,
    }


async def measure_in_process(path, concurrency, frames, rounds) -> dict:
    tts = Qwen3TTS.from_pretrained(path)
    runner = EngineRunner(tts.new_engine(SchedulerLimits(slots=max(concurrency))), max_queued=0)
    runner.start()
    try:
        await in_process_round(tts, runner, 1, 2)  # warm-up
        return {
            n: summarize([await in_process_round(tts, runner, n, frames) for _ in range(rounds)], n, frames)
            for n in concurrency
        }
    finally:
        await runner.stop()


async def measure(ways: dict, concurrency, frames, rounds) -> dict:
    """{name: {streams: summary}} for each way in `ways` ({name: (round function, its target)}). The
    ways take turns round by round, so that the machine's drift (other processes) hits them alike."""
    for round_of, target in ways.values():
        await round_of(target, 1, 2)  # warm-up
    results = {name: {} for name in ways}
    for n in concurrency:
        measured = {name: [] for name in ways}
        for _ in range(rounds):
            for name, (round_of, target) in ways.items():
                measured[name].append(await round_of(target, n, frames))
        for name in ways:
            results[name][n] = summarize(measured[name], n, frames)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny (default) or 0.6b-full (real 0.6B shape)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--frames", type=int, default=12, help="frames per stream")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency (p50/p95 over all streams)")
    args = parser.parse_args(argv)
    concurrency = [int(n) for n in args.concurrency.split(",")]
    path = default_checkpoint("custom_voice") if args.preset == "tiny" else checkpoint(args.preset)

    local = asyncio.run(measure_in_process(path, concurrency, args.frames, args.rounds))
    env = {"GENERATOR_MAX_ACTIVE": str(max(concurrency)), "LOG_LEVEL": "WARNING"}
    with (
        tempfile.TemporaryDirectory() as run_dir,
        LocalCluster(models={"custom_voice": path}, ports="free", run_dir=run_dir, extra_env=env) as cluster,
    ):
        ways = {"gateway": (cluster_round, cluster.gateway_address), "web": (web_round, cluster.web_url)}
        measured = asyncio.run(measure(ways, concurrency, args.frames, args.rounds))
    served, web = measured["gateway"], measured["web"]

    rows = [
        "| streams | in-process p50 / p95 ms | cluster p50 / p95 ms | added p50 ms | web (HTTP) p50 / p95 ms | "
        "web hop p50 ms | in-process x-real-time | cluster x-real-time | web x-real-time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in concurrency:
        a, b, c = local[n], served[n], web[n]
        rows.append(
            f"| {n} | {a['p50']:.1f} / {a['p95']:.1f} | {b['p50']:.1f} / {b['p95']:.1f} | "
            f"{b['p50'] - a['p50']:+.1f} | {c['p50']:.1f} / {c['p95']:.1f} | {c['p50'] - b['p50']:+.1f} | "
            f"{a['xrt']:.2f} | {b['xrt']:.2f} | {c['xrt']:.2f} |"
        )
    command = f"python -m bench.bench_cluster --preset {args.preset} --frames {args.frames} --rounds {args.rounds}"
    body = "\n".join(
        [
            f"## Cluster: time to first audio, gateway and web vs in-process ({args.preset}, cpu)",
            "",
            f"Machine: {machine()}. Command: `{command}`.",
            f"Each stream: greedy CustomVoice, {args.frames} frames ({args.frames * FRAME_SECONDS:.2f} s of audio), "
            f"text known up front, chunk schedule {', '.join(map(str, SCHEDULE))} frames. Time to first audio is from "
            "the request to the first decoded chunk (one frame; over HTTP, its first body bytes); p50/p95 over every "
            "stream of "
            f"{args.rounds} rounds. x-real-time: audio seconds per wall second, all streams together. The web column "
            "is the same cluster through the web service (openai client, `stream_format` audio, PCM), its rounds "
            "taking turns with the gateway's; web hop: its p50 minus the gateway's. "
            "In the cluster the generator, codec and gateway are separate processes sharing this "
            "machine's cores with the client; OpenMP waits passively (OMP_WAIT_POLICY=PASSIVE) in both "
            "setups, since spinning processes steal each other's cores.",
            "",
            *rows,
        ]
    )
    print(body)
    write_section(f"bench-cluster-cpu-{args.preset}", body)


if __name__ == "__main__":
    main()
