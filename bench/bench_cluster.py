"""Cluster benchmark (`make bench`): time to first audio through the gateway vs in-process, and
through the web service's HTTP streaming; then the gateway under Poisson arrivals.

Closed loop (`--rounds`, 0 skips it): for each concurrency (default 1, 4, 16 streams started
together) it measures, per stream, the time from the request to its first audio chunk (one frame,
80 ms, decoded), and the aggregate x-real-time (seconds of audio produced per second of wall
time, all streams together):

- in-process: an EngineRunner and codec streams in this process, no gRPC (the floor);
- cluster: the same model served by `deploy.local.LocalCluster` (codec, generator and gateway
  processes on loopback), called with StreamSynthesize;
- web: the same cluster through the web service, `POST /v1/audio/speech` with `stream_format`
  audio (PCM) from the `openai` client: the difference to "cluster" is the web hop's cost.

Both decode in the gateway's default chunk schedule (1, 2, 4, 8 frames) and use greedy decoding
with all text known up front.

Open loop (`--rates`, empty skips it), the way users compare serving systems: for each rate
(default 1, 10 and 20 requests per second) requests arrive as a Poisson process (exponential
inter-arrival times from a seeded generator) for `--duration` seconds (or `--requests` per rate).
Each is one StreamSynthesize of a sentence drawn from SENTENCES, fired at its scheduled time
whether or not earlier requests have finished (one asyncio task each), with a gRPC deadline
(`--deadline`). Time to first audio and total time are measured from the scheduled arrival, so a
client that falls behind its schedule shows in the numbers instead of hiding the wait (the
largest send lag is reported too). Failures (deadline exceeded, RESOURCE_EXHAUSTED, ...) are
counted by status code and left out of the percentiles.

Prints the numbers and the machine (CPU flags) and writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: the same setting deploy/local.py gives the cluster's model
# processes, so that the in-process numbers are measured alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

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
# The open-loop requests' texts, 2 to 40 words: a greeting, prompts, a paragraph.
SENTENCES = (
    "Hi there.",
    "Your table for two is ready.",
    "Turn left at the second light, then keep right.",
    "The meeting has moved to Thursday at ten, in the large room upstairs.",
    "Thanks for calling. Every line is busy right now, so please stay on and we will answer soon.",
    "Rain is likely after lunch, so bring a coat if you plan to walk home from the station this evening.",
    "Before you start, check that the power cable is plugged in, the green light is on, and the paper tray is full.",
    "Once upon a time a small boat left the harbour at dawn, and by the time the sun was high the town "
    "behind it had shrunk to a line of white roofs on the edge of a very blue sea.",
)


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


@dataclass
class Outcome:
    """One open-loop request: times from its scheduled arrival, or why it failed."""

    lag: float  # how late the client sent it
    first: float | None = None
    total: float | None = None
    audio_seconds: float = 0.0
    failure: str | None = None


def poisson_schedule(rate: float, duration: float, requests: int | None, seed: int) -> list[tuple[float, str]]:
    """(arrival second, text) of each request: exponential gaps of mean 1/rate, for `duration`
    seconds or, if given, `requests` requests; the same for the same (rate, seed)."""
    rng = random.Random(f"{seed}:{rate}")
    schedule, at = [], 0.0
    while True:
        at += rng.expovariate(rate)
        if (len(schedule) >= requests) if requests is not None else (at >= duration):
            return schedule
        schedule.append((at, rng.choice(SENTENCES)))


async def open_loop(address: str, schedule, max_audio_seconds: float, deadline: float) -> list[Outcome]:
    config = tts_pb2.SynthesisConfig(
        voice=tts_pb2.VoiceSelection(preset_speaker="vivian"),
        language="english",
        sampling=tts_pb2.SamplingOptions(do_sample=False),
        predictor_sampling=tts_pb2.SamplingOptions(do_sample=False),
        max_audio_seconds=max_audio_seconds,
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM16),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tts_pb2_grpc.TextToSpeechServiceStub(channel)

        async def one(due: float, text: str) -> Outcome:
            outcome = Outcome(lag=time.perf_counter() - due)
            request = tts_pb2.StreamSynthesizeRequest(config=config, text=text)
            try:
                async for message in stub.StreamSynthesize(request, timeout=deadline):
                    if message.HasField("audio") and outcome.first is None:
                        outcome.first = time.perf_counter() - due
                    elif message.HasField("summary"):
                        outcome.audio_seconds = message.summary.usage.audio_seconds
            except grpc.aio.AioRpcError as error:
                outcome.failure = error.code().name
                return outcome
            outcome.total = time.perf_counter() - due
            if outcome.first is None:
                outcome.failure = "NO_AUDIO"
            return outcome

        tasks = []
        start = time.perf_counter()
        for at, text in schedule:
            due = start + at
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, text)))
        return await asyncio.gather(*tasks)


def summarize_open_loop(outcomes: list[Outcome], seconds: float) -> dict:
    ok = [o for o in outcomes if o.failure is None]
    failures = Counter(o.failure for o in outcomes if o.failure is not None)

    def spread(values):
        return [percentile(values, q) * 1000 for q in (50, 95, 99)] if values else [float("nan")] * 3

    return {
        "sent": len(outcomes),
        "failed": sum(failures.values()),
        "failures": ", ".join(f"{code} {n}" for code, n in failures.most_common()),
        "offered": len(outcomes) / seconds,
        "first": spread([o.first for o in ok]),
        "total": spread([o.total for o in ok]),
        "audio": statistics.mean(o.audio_seconds for o in ok) if ok else 0.0,
        "lag": max(o.lag for o in outcomes) * 1000,
    }


async def measure_open_loop(address: str, rates, duration, requests, seed, max_audio_seconds, deadline) -> dict:
    results = {}
    for rate in rates:
        schedule = poisson_schedule(rate, duration, requests, seed)
        seconds = schedule[-1][0] if requests is not None else duration
        outcomes = await open_loop(address, schedule, max_audio_seconds, deadline)
        results[rate] = summarize_open_loop(outcomes, seconds)
        row = results[rate]
        print(
            f"rate {rate:g}/s: {row['sent']} sent, {row['failed']} failed; first audio p50/p95/p99 "
            f"{' / '.join(f'{v:.0f}' for v in row['first'])} ms",
            flush=True,
        )
    return results


def open_loop_rows(results: dict) -> list[str]:
    rows = [
        "| rate req/s | sent | failed | first audio p50 / p95 / p99 ms | total p50 / p95 / p99 ms | "
        "audio s per request | largest send lag ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate, r in results.items():
        failed = f"{r['failed']} ({r['failures']})" if r["failed"] else "0"
        rows.append(
            f"| {rate:g} (offered {r['offered']:.2f}) | {r['sent']} | {failed} | "
            f"{' / '.join(f'{v:.1f}' for v in r['first'])} | {' / '.join(f'{v:.1f}' for v in r['total'])} | "
            f"{r['audio']:.2f} | {r['lag']:.1f} |"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny (default) or 0.6b-full (real 0.6B shape)")
    parser.add_argument("--concurrency", default="1,4,16", help="closed loop: streams started together")
    parser.add_argument("--frames", type=int, default=12, help="closed loop: frames per stream")
    parser.add_argument("--rounds", type=int, default=3, help="closed loop: rounds per concurrency; 0 skips it")
    parser.add_argument("--rates", default="1,10,20", help="open loop: Poisson arrival rates, requests/s; '' skips it")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--duration", type=float, default=20.0, help="open loop: seconds of arrivals per rate")
    group.add_argument("--requests", type=int, help="open loop: requests per rate (instead of --duration)")
    parser.add_argument("--seed", type=int, default=0, help="open loop: seed of the arrival times and texts")
    parser.add_argument("--deadline", type=float, default=30.0, help="open loop: gRPC deadline per request, s")
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=0.48,
        help="open loop: each request's audio cap, s (6 frames; the model's EOS may end it sooner)",
    )
    args = parser.parse_args(argv)
    concurrency = [int(n) for n in args.concurrency.split(",")]
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if any(rate <= 0 for rate in rates) or (args.requests is not None and args.requests < 1) or args.duration <= 0:
        parser.error("rates, --duration and --requests must be positive")
    path = default_checkpoint("custom_voice") if args.preset == "tiny" else checkpoint(args.preset)

    local = asyncio.run(measure_in_process(path, concurrency, args.frames, args.rounds)) if args.rounds else None
    env = {"GENERATOR_MAX_ACTIVE": str(max(concurrency)), "LOG_LEVEL": "WARNING"}
    with (
        tempfile.TemporaryDirectory() as run_dir,
        LocalCluster(models={"custom_voice": path}, ports="free", run_dir=run_dir, extra_env=env) as cluster,
    ):
        if args.rounds:
            ways = {"gateway": (cluster_round, cluster.gateway_address), "web": (web_round, cluster.web_url)}
            measured = asyncio.run(measure(ways, concurrency, args.frames, args.rounds))
        if rates:
            if not args.rounds:
                asyncio.run(cluster_round(cluster.gateway_address, 1, 2))  # warm-up
            poisson = asyncio.run(
                measure_open_loop(
                    cluster.gateway_address,
                    rates,
                    args.duration,
                    args.requests,
                    args.seed,
                    args.max_audio_seconds,
                    args.deadline,
                )
            )

    command = f"python -m bench.bench_cluster --preset {args.preset}"
    if args.rounds:
        command += f" --concurrency {args.concurrency} --frames {args.frames} --rounds {args.rounds}"
    else:
        command += " --rounds 0"
    if rates:
        amount = f"--requests {args.requests}" if args.requests is not None else f"--duration {args.duration:g}"
        command += (
            f" --rates {args.rates} {amount} --seed {args.seed} --deadline {args.deadline:g} "
            f"--max-audio-seconds {args.max_audio_seconds:g}"
        )
    else:
        command += " --rates ''"
    lines = [
        f"## Cluster: time to first audio ({args.preset}, cpu)",
        "",
        f"Machine: {machine()}. Command: `{command}`.",
        "",
    ]
    if args.rounds:
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
        lines += [
            "### Streams started together: gateway and web vs in-process",
            "",
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
            "",
        ]
    if rates:
        amount = (
            f"{args.requests} requests per rate"
            if args.requests is not None
            else f"{args.duration:g} s of arrivals per rate"
        )
        lines += [
            "### Poisson arrivals at the gateway (open loop)",
            "",
            f"Requests arrive as a Poisson process (seeded exponential gaps, seed {args.seed}), {amount}, each a "
            f"StreamSynthesize of one of {len(SENTENCES)} fixed sentences (2 to 40 words), greedy CustomVoice, "
            f"audio capped at {args.max_audio_seconds:g} s, gRPC deadline {args.deadline:g} s, all on one channel. "
            "Every request is sent at its scheduled time whether or not earlier ones have finished; times are "
            "from that scheduled time (so a late client counts against the numbers; the largest send lag says "
            "how late it got), to the first audio chunk and to the end of the stream. Percentiles over the "
            "requests that succeeded; with few requests p99 is close to the maximum. Offered: requests sent per "
            "second of schedule. On CPU with the tiny model the model work is small, so this shows the "
            "cluster's own overhead and how it queues as the rate rises; the client shares the cores with the "
            "cluster.",
            "",
            *open_loop_rows(poisson),
        ]
    body = "\n".join(lines)
    print(body)
    write_section(f"bench-cluster-cpu-{args.preset}", body)


if __name__ == "__main__":
    main()
