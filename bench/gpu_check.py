"""The engine on a GPU: exactness of CUDA graphs, bf16 against float32, and step times (bench/gpu_check.sh).

1. **Graphs change nothing**: the same greedy and seeded streams, eager and with CUDA graphs, on
   the device in float32 (TF32 off): the codes must be identical (exit 1 otherwise). The device's
   codes are also compared with the CPU's (reported, not required: kernels may round differently).
2. **bfloat16 against float32** on the device: the share of greedy frames identical, and the
   first frame that differs (bf16 is the serving dtype on GPUs; float32 is the exact one).
3. **Step times** on the real-shape 1.7B (or --size 0.6b; random weights), bfloat16, every stream
   decoding: ms per step at 1, 8, 32 and 64 streams, eager and with graphs, and the audio seconds
   made per second (80 ms per frame); then how long a generator's warm-up (its graphs captured
   before it serves) takes at 64 slots.
4. **First audio's parts**, the same model, eager and with graphs: the step that makes a new
   request's first frame (its prompt and the frame in one step; with graphs that step, padded to
   a bucket, is one replay: the first request of a bucket captures it, the median leaves that
   out), alone and beside 8 speaking streams, and the codec's float32 decode of that frame into a
   fresh stream; what the gateway's first audio adds to these is the hops (bench_cluster,
   gpu_check.sh's last step).
5. **The codec's streaming pushes**, real-shape codec in float32 (after the codec service's
   warm-up, timed): captured (CUDA graphs) against eager, the largest sample difference (3
   streams in a bucket of 4, chunks of 2; rounding only, since the batch shapes differ) and ms per
   push at 1, 8 and 32 streams, chunks of 1 and 4 frames.

`--device cpu` runs the same code on CPU with no graphs (a dry run of the script itself).
Writes its numbers to docs/benchmarks.md (section gpu-check). Never used by tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_model import checkpoint
from bench.report import machine, write_section
from models.engine.scheduler import SchedulerLimits
from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer
from models.tts import Qwen3TTS
from services.codec.service import WARM_UP_FRAMES
from tools.random_checkpoints import write_checkpoint

TEXT = "The quick brown fox jumps over the lazy dog while the band plays on, and every word arrives in time."
FRAME_SECONDS = 0.08


def codes(tts: Qwen3TTS, *, use_graphs: bool, streams: int = 6, frames: int = 30) -> tuple[list[np.ndarray], bool]:
    """The frames of `streams` streams run together (greedy ones, and every third one seeded
    sampling), and whether CUDA graphs stayed on (a failed capture turns them off: the runner's
    warning in the log says why)."""
    engine = tts.new_engine(SchedulerLimits(slots=streams, max_positions=512), use_graphs=use_graphs)
    sessions = []
    for index in range(streams):
        sampled = index % 3 == 2
        params = tts.sampling(do_sample=sampled, subtalker_do_sample=sampled, max_new_tokens=frames + 1, seed=index)
        session = tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
        sessions.append(session)
    while engine.active:
        engine.step()
    return [np.stack(session.frames) for session in sessions], engine.runner.use_graphs


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, int | None]:
    """Share of frames identical, and the first frame index where a stream differs (None: none)."""
    equal = total = 0
    first = None
    for x, y in zip(a, b):
        n = min(len(x), len(y))
        rows = (x[:n] == y[:n]).all(axis=1)
        equal, total = equal + int(rows.sum()), total + max(len(x), len(y))
        if not rows.all():
            index = int(np.argmin(rows))
            first = index if first is None else min(first, index)
    return equal / total, first


def step_ms(tts: Qwen3TTS, streams: int, use_graphs: bool, steps: int) -> float:
    engine = tts.new_engine(SchedulerLimits(slots=streams, max_positions=1024), use_graphs=use_graphs)
    params = tts.sampling(max_new_tokens=steps + 64, seed=0)
    for _ in range(streams):
        tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
    while sum(output.frame is not None for output in engine.step()) < streams:
        pass
    for _ in range(3):  # capture (graphs) and warm-up
        engine.step()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()  # each step ends with its one host sync, so wall time is device time
    if use_graphs and not engine.runner.use_graphs:
        return float("nan")  # no graph: the capture failed (the runner's warning in the log says why)
    return (time.perf_counter() - start) / steps * 1000


def codec_pushes(codec: SpeechTokenizer, streams: int, chunk: int, pushes: int) -> tuple[np.ndarray, float]:
    """`pushes` batched pushes of `chunk` random frames into `streams` new streams: their samples
    (streams, samples) and the ms per push after the first two (capture and warm-up)."""
    rng = np.random.default_rng(streams * 100 + chunk)
    codes = rng.integers(0, codec.codebook_size, (pushes, streams, chunk, codec.num_quantizers))
    opened = [codec.stream() for _ in range(streams)]
    wavs = [codec.push_many(opened, list(codes[0])), codec.push_many(opened, list(codes[1]))]
    start = time.perf_counter()
    for push in codes[2:]:
        wavs.append(codec.push_many(opened, list(push)))  # each ends with its copy to the host
    elapsed = time.perf_counter() - start
    return np.concatenate([np.stack(w) for w in wavs], axis=1), elapsed / (pushes - 2) * 1000


def first_audio_parts(tts: Qwen3TTS, codec: SpeechTokenizer, speaking: int, use_graphs: bool, repeats: int = 5):
    """What a new request's first audio costs on the device, apart from the hops: the step that makes
    its first frame (its whole prompt, beside `speaking` streams already decoding), and the codec's
    decode of that one frame into a fresh stream. Medians over `repeats` new requests, in ms, and
    the steps the first frame took (1: no prompt-only step)."""
    engine = tts.new_engine(SchedulerLimits(slots=speaking + 1, max_positions=1024), use_graphs=use_graphs)
    params = tts.sampling(max_new_tokens=512, seed=0)
    for _ in range(speaking):
        tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
    for _ in range(3):  # the speaking streams past their prompts (and their graphs captured)
        engine.step()
    codec.stream().push(np.zeros((1, codec.num_quantizers), dtype=np.int64))  # one-off set-up
    prefill, decode, steps = [], [], []
    for index in range(repeats):
        one_frame = tts.sampling(max_new_tokens=2, seed=index)
        new = tts.start_utterance(engine, TEXT, one_frame, language="english", speaker="vivian")
        count = 0
        while not new.frames:
            start = time.perf_counter()
            engine.step()
            count += 1
        prefill.append(time.perf_counter() - start)
        steps.append(count)
        start = time.perf_counter()
        codec.stream().push(new.frames[0][None])
        decode.append(time.perf_counter() - start)
        while not new.finished:
            engine.step()
    return np.median(prefill) * 1000, np.median(decode) * 1000, max(steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="1.7b", choices=["0.6b", "1.7b"])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    graphs = args.device.startswith("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    lines = ["## GPU check (`bench/gpu_check.sh`)", "", f"On {machine(args.device)}.", ""]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        layers = write_checkpoint(Path(tmp) / "layers", "custom_voice", "tiny", talker_layers=28, predictor_layers=5)
        on_device = Qwen3TTS.from_pretrained(layers, dtype="float32", device=args.device)
        eager, _ = codes(on_device, use_graphs=False)
        if graphs:
            captured, graphs_on = codes(on_device, use_graphs=True)
            verdict = "identical" if same(eager, captured) else "DIFFER"
            if not graphs_on:
                verdict = "not compared: the capture failed (the warning in the log says why)"
            failed = verdict != "identical"
            lines.append(f"- CUDA graphs vs eager, float32, 6 streams x 30 frames: {verdict}")
        on_cpu, _ = codes(Qwen3TTS.from_pretrained(layers, dtype="float32", device="cpu"), use_graphs=False)
        share, first = agreement(eager, on_cpu)
        lines.append(f"- {args.device} vs CPU, float32: {share:.1%} of frames identical (first difference: {first})")
        bf16, _ = codes(Qwen3TTS.from_pretrained(layers, dtype="bfloat16", device=args.device), use_graphs=graphs)
        share, first = agreement(eager, bf16)
        lines.append(f"- bfloat16 vs float32 on {args.device}: {share:.1%} of frames identical (first diff.: {first})")
        print("\n".join(lines), flush=True)

        real = checkpoint(f"{args.size}-full")  # var/bench's: bench_cluster (gpu_check.sh) then finds it written
        tts = Qwen3TTS.from_pretrained(real, dtype="bfloat16", device=args.device, load_codec=False)
        table = [
            "",
            f"Real-shape {args.size} (random weights), bfloat16, every stream decoding:",
            "",
            "| streams | eager ms/step | graphs ms/step | audio s per s (best) |",
            "|---|---|---|---|",
        ]
        for streams in args.streams:
            eager_ms = step_ms(tts, streams, use_graphs=False, steps=args.steps)
            graph_ms = step_ms(tts, streams, use_graphs=True, steps=args.steps) if graphs else float("nan")
            best = np.nanmin([eager_ms, graph_ms])
            audio_rate = streams * FRAME_SECONDS / best * 1000
            table.append(f"| {streams} | {eager_ms:.1f} | {graph_ms:.1f} | {audio_rate:.1f} |")
            print(table[-1], flush=True)
        lines += table
        if graphs:  # what a generator does before it serves, at the largest batch measured
            limits = SchedulerLimits(slots=max(args.streams))  # the service's default positions
            engine = tts.new_engine(limits, use_graphs=True)
            start = time.perf_counter()
            count = engine.warm_up(tts.sampling())
            seconds = time.perf_counter() - start
            lines += [
                "",
                f"Warm-up before serving ({limits.slots} slots of {limits.max_positions:,} positions): "
                f"{count} graphs in {seconds:.1f} s",
            ]
            print(lines[-1], flush=True)
            del engine

        codec = SpeechTokenizer.from_pretrained(
            real, dtype="float32", device=args.device, load_encoder=False, use_graphs=graphs
        )
        eager_codec = SpeechTokenizer.from_pretrained(real, dtype="float32", device=args.device, load_encoder=False)
        if graphs:  # what the codec service does before it serves, at its default 64 streams
            start = time.perf_counter()
            count = codec.warm_up(64, WARM_UP_FRAMES)
            seconds = time.perf_counter() - start
            lines += [
                "",
                f"Codec warm-up before serving (64 streams, {WARM_UP_FRAMES:,} frames): "
                f"{count} graphs in {seconds:.1f} s",
            ]
            print(lines[-1], flush=True)
        parts = [
            "",
            "First audio's parts on the device (a new request, prompt and text in one step, medians of 5),",
            "eager / with graphs:",
            "",
            "| streams already speaking | first-frame step ms | steps | codec, first frame ms |",
            "|---|---|---|---|",
        ]
        for speaking in (0, 8):
            step, decode, steps = first_audio_parts(tts, eager_codec, speaking, use_graphs=False)
            graph_step = graph_decode = float("nan")
            if graphs:
                graph_step, graph_decode, steps = first_audio_parts(tts, codec, speaking, use_graphs=True)
            parts.append(
                f"| {speaking} | {step:.1f} / {graph_step:.1f} | {steps} | {decode:.1f} / {graph_decode:.1f} |"
            )
            print(parts[-1], flush=True)
        lines += parts

        pushes = ["", "The codec's streaming pushes, real-shape codec, float32:", ""]
        if graphs:
            captured, _ = codec_pushes(codec, streams=3, chunk=2, pushes=6)
            eager, _ = codec_pushes(eager_codec, streams=3, chunk=2, pushes=6)
            difference = np.abs(captured - eager).max()
            verdict = f"max sample difference {difference:.1e}"
            if not codec._states.use_graphs:
                verdict = "not compared: the capture failed (the warning in the log says why)"
            failed = failed or difference > 1e-4 or not codec._states.use_graphs
            pushes += [f"- captured vs eager pushes (3 streams x 6 pushes of 2 frames): {verdict}", ""]
        pushes += ["| streams | frames per push | eager ms/push | graphs ms/push |", "|---|---|---|---|"]
        for streams in (1, 8, 32):
            for chunk in (1, 4):
                eager_ms = codec_pushes(eager_codec, streams, chunk, pushes=12)[1]
                graph_ms = codec_pushes(codec, streams, chunk, pushes=12)[1] if graphs else float("nan")
                if graphs and not codec._states.use_graphs:
                    graph_ms = float("nan")
                pushes.append(f"| {streams} | {chunk} | {eager_ms:.1f} | {graph_ms:.1f} |")
                print(pushes[-1], flush=True)
        lines += pushes
    if not args.no_write:
        write_section("gpu-check", "\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
