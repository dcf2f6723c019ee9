"""Engine benchmark (`make bench-engine`): what one decode step costs a GPU, counted on any machine.

On a GPU an eager step is bound by kernel launches and by the host waiting for the device, not
by the weights. Both are properties of the code, not of the device, so they are counted here on
CPU, at the real layer counts of the 0.6B and 1.7B models (28 talker and 5 predictor layers; the
widths are tiny, which changes no count), for 1, 8, 32 and 64 streams decoding together:

- **kernel launches per step and per frame**: every aten operator the step dispatches that runs
  a kernel (views and allocations excluded), counted with a TorchDispatchMode;
- **blocking host syncs per step**: every read of a device value by the host: `.item()`/`int()`/
  `bool()` on a tensor (aten `_local_scalar_dense`), and `.numpy()`/`.tolist()`/`.cpu()` of a
  tensor the step computed;
- **uploads per step**: host values copied to the device (non-blocking, from pinned memory);
- whether `torch.compile(fullgraph=True)` takes the whole decode step (talker, 15 predictor passes
  and the sampler) with zero graph breaks (torch._dynamo.explain), and the padded step with prompt
  runs too (a graph break there would be a host read inside what a CUDA graph captures);
- the launches of a new request's first-frame step, and how many of them a CUDA graph replays.

With CUDA graphs (GENERATOR_CUDA_GRAPHS, on by default on CUDA) the launches of a decode step become
one graph replay; the launch count is what a step costs without them. The step is counted as it
runs on a GPU (norms and RoPE as torch ops), and once more as it runs on a CPU, where they are one
operator each (models/csrc/norm_rotary.cpp).

Prints the numbers and writes them to docs/benchmarks.md. Never used by tests.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.report import machine, write_section
from models.cpu_kernels import use_fused_ops
from models.engine import model_runner
from models.engine.model_runner import ModelRunner
from models.engine.scheduler import SchedulerLimits
from models.tts import Qwen3TTS
from tools.random_checkpoints import write_checkpoint

STREAMS = (1, 8, 32, 64)
TEXT = "The quick brown fox jumps over the lazy dog while the band plays on, and every word arrives in time."
# Counted by the issue that asked for this engine (#11), on the engine it replaced, at the same
# layer counts: launches per frame and blocking syncs per step.
BEFORE = {1: (6192, 51), 32: (13_300 / 32, 609)}
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "set_"}


class StepCounter(TorchDispatchMode):
    """Counts the kernels a region launches and the device values the host reads back."""

    def __init__(self):
        super().__init__()
        self.launches = self.syncs = 0
        self.computed: set[int] = set()  # storages the region's kernels wrote

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        returns = func._schema.returns
        is_view = bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
        elif not is_view and name not in NO_KERNEL:
            self.launches += 1
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.computed.add(tensor.untyped_storage().data_ptr())
        return out

    def host_read(self, tensor: torch.Tensor) -> None:
        if tensor.untyped_storage().data_ptr() in self.computed:
            self.syncs += 1


@contextlib.contextmanager
def counting():
    """A StepCounter active over the region, with the host's reads of tensors and the runner's
    uploads counted too."""
    counter = StepCounter()
    counter.uploads = 0
    patched = {name: getattr(torch.Tensor, name) for name in ("numpy", "tolist", "cpu")}
    upload = ModelRunner.upload

    def reading(name):
        def read(tensor, *args, **kwargs):
            counter.host_read(tensor)
            return patched[name](tensor, *args, **kwargs)

        return read

    def counted_upload(runner, values, dtype):
        counter.uploads += 1
        return upload(runner, values, dtype)

    for name in patched:
        setattr(torch.Tensor, name, reading(name))
    ModelRunner.upload = counted_upload
    try:
        with counter:
            yield counter
    finally:
        for name, method in patched.items():
            setattr(torch.Tensor, name, method)
        ModelRunner.upload = upload


def checkpoint(size: str, root: Path) -> Path:
    path = root / f"tiny-{size}-28x5"
    if not (path / "model.safetensors").exists():
        write_checkpoint(path, "custom_voice", "tiny", talker_layers=28, predictor_layers=5, model_size=size.lower())
    return path


def decoding_engine(tts: Qwen3TTS, streams: int, sampled: bool):
    """An engine with `streams` sessions, stepped until every one decodes a frame per step."""
    engine = tts.new_engine(SchedulerLimits(slots=max(streams, 1), max_positions=512, prefill_budget=4096))
    params = tts.sampling(do_sample=sampled, subtalker_do_sample=sampled, max_new_tokens=400, seed=1)
    for _ in range(streams):
        tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
    for _ in range(20):
        if sum(output.frame is not None for output in engine.step()) == streams:
            return engine
    raise RuntimeError("the sessions never all decoded in one step")


def count_steps(tts: Qwen3TTS, streams: int, sampled: bool, steps: int = 3) -> dict:
    engine = decoding_engine(tts, streams, sampled)
    engine.step()  # one more step outside the count: nothing left over from the prompts
    with counting() as counter:
        frames = sum(output.frame is not None for _ in range(steps) for output in engine.step())
    return {
        "launches_per_step": counter.launches / steps,
        "launches_per_frame": counter.launches / frames,
        "syncs_per_step": counter.syncs / steps,
        "uploads_per_step": counter.uploads / steps,
    }


def count_first_frame(tts: Qwen3TTS, speaking: int, graphs: bool) -> tuple[int, int, int]:
    """Launches of the step that makes a new request's first frame (its whole prompt and the
    frame; default sampling), beside `speaking` decoding streams, and how many of them a CUDA
    graph replays. With `graphs` the step takes the graph path, played on CPU by EagerReplay: the
    launches inside its padded step (`padded_mixed_step`) are the graph's, the rest (the prompt's
    input vectors, padding them, copying them into the graph's buffers) go one by one. Returns
    (launches, of them in the graph, blocking syncs)."""
    engine = tts.new_engine(SchedulerLimits(slots=speaking + 1, max_positions=512))
    engine.runner.use_graphs = graphs
    params = tts.sampling(max_new_tokens=100, seed=0)
    padded, in_graph = ModelRunner.padded_mixed_step, []
    captured, model_runner._CapturedStep = model_runner._CapturedStep, model_runner.EagerReplay
    try:
        for _ in range(speaking):
            tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
        for _ in range(3):
            engine.step()
        new = tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
        with counting() as counter:

            def counted(runner, *args):
                before = counter.launches
                out = padded(runner, *args)
                in_graph.append(counter.launches - before)
                return out

            ModelRunner.padded_mixed_step = counted
            while not new.frames:
                engine.step()
    finally:
        ModelRunner.padded_mixed_step, model_runner._CapturedStep = padded, captured
    return counter.launches, sum(in_graph), counter.syncs


def graph_breaks(tts: Qwen3TTS, sampled: bool) -> int:
    """Graph breaks of torch.compile(fullgraph=True)'s view of one whole decode step, called with
    the arguments of a real one."""
    engine = decoding_engine(tts, 2, sampled)
    decode_step, calls = engine.runner.decode_step, []
    engine.runner.decode_step = lambda *args: calls.append(args) or decode_step(*args)
    engine.step()
    engine.runner.decode_step = decode_step
    return explained_breaks(decode_step, calls[0])


def prompt_step_graph_breaks(tts: Qwen3TTS) -> int:
    """Graph breaks of the padded step with prompt runs (what a CUDA graph captures): a new
    request's first-frame step beside one decoding stream, on the graph path played on CPU."""
    engine = tts.new_engine(SchedulerLimits(slots=4, max_positions=512))
    engine.runner.use_graphs = True
    params = tts.sampling(max_new_tokens=100, seed=0)
    padded, calls = ModelRunner.padded_mixed_step, []
    captured, model_runner._CapturedStep = model_runner._CapturedStep, model_runner.EagerReplay
    try:
        tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
        engine.step()
        new = tts.start_utterance(engine, TEXT, params, language="english", speaker="vivian")
        ModelRunner.padded_mixed_step = lambda runner, *args: calls.append(args) or padded(runner, *args)
        while not new.frames:
            engine.step()
    finally:
        ModelRunner.padded_mixed_step, model_runner._CapturedStep = padded, captured
    return explained_breaks(engine.runner.padded_mixed_step, calls[-1])


def explained_breaks(function, args: tuple) -> int:
    torch._dynamo.reset()
    with torch.inference_mode():
        return torch._dynamo.explain(function)(*args).graph_break_count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=list(STREAMS))
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    lines = [
        "## Engine: launches and host syncs per decode step (`make bench-engine`)",
        "",
        f"Counted on {machine()}, at the real layer counts (28 talker + 5 predictor layers, tiny widths),",
        "every stream decoding (no prompt in the step), float32. Launches: aten kernels dispatched (views",
        "and allocations excluded); on CUDA with graphs on, a decode step is one graph replay instead.",
        "Syncs: host reads of device values. Before: the engine this one replaced, as counted in issue 11.",
        "On CPU: launches/step where norms and RoPE run as one operator each (the CPU loader's default).",
        "",
        "| model | sampling | streams | launches/step | launches/frame | blocking syncs/step | uploads/step "
        "| on CPU: launches/step | before: launches/frame, syncs/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    compiled, prompt_breaks, first_frames = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in ("0.6B", "1.7B"):
            tts = Qwen3TTS.from_pretrained(checkpoint(size, Path(tmp)), dtype="float32")
            for sampled in (False, True):
                for streams in args.streams:
                    use_fused_ops(tts.talker, on=False)  # as on a GPU
                    got = count_steps(tts, streams, sampled)
                    on_cpu = count_steps(tts, streams, sampled) if use_fused_ops(tts.talker) else None
                    cpu_cell = f"{on_cpu['launches_per_step']:,.0f}" if on_cpu else "not built"
                    before = BEFORE.get(streams) if not sampled else None
                    mode = "sampled" if sampled else "greedy"
                    row = (
                        f"| {size} | {mode} | {streams} | {got['launches_per_step']:,.0f} "
                        f"| {got['launches_per_frame']:,.0f} | {got['syncs_per_step']:g} | {got['uploads_per_step']:g} "
                        f"| {cpu_cell} "
                        f"| {f'{before[0]:,.0f}, {before[1]}' if before else ''} |"
                    )
                    print(row, flush=True)
                    lines.append(row)
                use_fused_ops(tts.talker, on=False)
                breaks = graph_breaks(tts, sampled)
                fused = (
                    f", {graph_breaks(tts, sampled)} with the CPU's norm and RoPE operators"
                    if use_fused_ops(tts.talker)
                    else ""
                )
                compiled.append(f"{size} {'sampled' if sampled else 'greedy'}: {breaks} graph breaks{fused}")
                print(compiled[-1], flush=True)
            use_fused_ops(tts.talker, on=False)
            prompt_breaks.append(f"{size}: {prompt_step_graph_breaks(tts)} graph breaks")
            print(f"the step with prompt runs, {prompt_breaks[-1]}", flush=True)
            for speaking in (0, 8):
                eager, _, eager_syncs = count_first_frame(tts, speaking, graphs=False)
                launches, in_graph, syncs = count_first_frame(tts, speaking, graphs=True)
                first_frames.append(
                    f"| {size} | {speaking} | {eager:,} | {eager_syncs} | {in_graph:,} "
                    f"| {launches - in_graph:,} + 1 replay | {syncs} |"
                )
                print(first_frames[-1], flush=True)
    lines += ["", "`torch.compile(fullgraph=True)` of the whole decode step: " + "; ".join(compiled) + "."]
    lines += ["", "Of the padded step with prompt runs (default sampling): " + "; ".join(prompt_breaks) + "."]
    lines += [
        "",
        "A new request's first-frame step (its whole prompt, non-streaming, and its first frame; default",
        "sampling), alone and beside 8 decoding streams. With CUDA graphs the step is padded to a bucket",
        "(prompt runs to a count and a length) and replayed: what the graph holds, and what is left to",
        "launch one by one (the prompt's input vectors, padding them, copying them into the graph's",
        "buffers), counted on the graph path played on CPU:",
        "",
        "| model | streams speaking | launches eagerly | syncs eagerly | graph path: launches in the graph "
        "| graph path: launched one by one | graph path: syncs |",
        "|---|---|---|---|---|---|---|",
        *first_frames,
    ]
    if not args.no_write:
        write_section("bench-engine", "\n".join(lines))


if __name__ == "__main__":
    main()
