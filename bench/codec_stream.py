"""Streaming codec decode cost per frame along a long stream (flat cost = no re-decoding of context).

    .venv/bin/python -m bench.codec_stream                          # real widths, 8 layers (written once)
    .venv/bin/python -m bench.codec_stream --preset tiny --frames 300
    .venv/bin/python -m bench.codec_stream --checkpoint DIR --chunk 4 --dtype bfloat16
    .venv/bin/python -m bench.codec_stream --threads 1 --chunk 1 4 --streams 1 4 8
    .venv/bin/python -m bench.codec_stream --preset tiny --bf16-error --chunk 1 4   # bf16 accuracy only

Random codes are pushed `chunk` frames at a time into one `SpeechTokenizer.stream()`; the time of
every push is divided among its frames and averaged over windows of the stream (frames 0-50,
200-250, 500-550, ...). One frame is 80 ms of audio, so ms/frame below 80 is faster than real time.
`--bf16-error` instead compares a bfloat16 streaming decode with the float32 full decode of the
same codes (max abs error and SNR). Never used by tests (no timing assertions anywhere).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FRAME_MS = 80.0
DEFAULT_WINDOWS = ((0, 50), (200, 250), (500, 550))


def measure_stream_decode(
    tokenizer,
    frames: int = 600,
    chunk: int = 1,
    windows: tuple[tuple[int, int], ...] = DEFAULT_WINDOWS,
    seed: int = 0,
    warmup_frames: int = 8,
) -> dict:
    """Push `frames` random frames `chunk` at a time; ms per frame by position in the stream.

    Returns {"frames", "chunk", "dtype", "ms_per_frame": {"0-50": ms, ...}, "mean_ms_per_frame",
    "x_real_time", "state_bytes"} where state_bytes is the stream state once the attention window
    is full (it stays constant after that).
    """
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, tokenizer.codebook_size, (frames, tokenizer.num_quantizers), generator=g)

    warm = tokenizer.stream()  # first calls pay one-off kernel setup; keep them out of the numbers
    for i in range(0, warmup_frames, chunk):
        warm.push(codes[i : i + chunk])
    del warm

    stream = tokenizer.stream()
    per_frame = np.zeros(frames)
    state_bytes = 0
    for start in range(0, frames, chunk):
        piece = codes[start : start + chunk]
        t0 = time.perf_counter()
        stream.push(piece)
        per_frame[start : start + len(piece)] = (time.perf_counter() - t0) * 1e3 / len(piece)
        state_bytes = max(state_bytes, stream.state_nbytes)

    ms = {}
    for lo, hi in windows:
        if hi <= frames:
            ms[f"{lo}-{hi}"] = float(per_frame[lo:hi].mean())
    mean = float(per_frame.mean())
    return {
        "frames": frames,
        "chunk": chunk,
        "dtype": str(tokenizer.dtype).replace("torch.", ""),
        "ms_per_frame": ms,
        "mean_ms_per_frame": mean,
        "x_real_time": FRAME_MS / mean,
        "state_bytes": state_bytes,
    }


def measure_many_streams(tokenizer, streams: int = 4, frames: int = 40, chunk: int = 1, seed: int = 0) -> dict:
    """`streams` concurrent streams advanced together with `push_many`, `chunk` frames per step.

    Returns {"streams", "chunk", "ms_per_step", "ms_per_stream_frame"}; the streams start from
    different positions so the batched attention sees ragged caches, as in serving.
    """
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, tokenizer.codebook_size, (frames + 8 * streams, tokenizer.num_quantizers), generator=g)
    group = [tokenizer.stream() for _ in range(streams)]
    for i, s in enumerate(group):  # stagger the starting positions
        if i:
            s.push(codes[: 8 * i])
    tokenizer.push_many(group, [codes[:chunk]] * streams)  # warm-up
    steps = max(1, frames // chunk)
    t0 = time.perf_counter()
    for k in range(steps):
        piece = codes[k * chunk : (k + 1) * chunk]
        tokenizer.push_many(group, [piece] * streams)
    step_ms = (time.perf_counter() - t0) * 1e3 / steps
    return {
        "streams": streams,
        "chunk": chunk,
        "ms_per_step": step_ms,
        "ms_per_stream_frame": step_ms / (streams * chunk),
    }


def measure_bf16_error(path: Path, frames: int = 200, chunk: int = 1, seed: int = 0) -> dict:
    """bfloat16 streaming decode (pushes of `chunk` frames) vs the float32 full decode of `frames`
    random frames. Returns {"chunk", "max_abs_error", "error_rms", "signal_rms", "snr_db"}."""
    from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer

    results = {}
    for dtype in ("float32", "bfloat16"):
        tok = SpeechTokenizer.from_pretrained(path, dtype=dtype, load_encoder=False)
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, tok.codebook_size, (frames, tok.num_quantizers), generator=g)
        if dtype == "float32":
            (results[dtype],) = tok.decode([codes])
        else:
            stream = tok.stream()
            results[dtype] = np.concatenate([stream.push(codes[i : i + chunk]) for i in range(0, frames, chunk)])
    ref, err = results["float32"], results["bfloat16"] - results["float32"]
    signal_rms, error_rms = float(np.sqrt(np.mean(ref**2))), float(np.sqrt(np.mean(err**2)))
    return {
        "chunk": chunk,
        "max_abs_error": float(np.abs(err).max()),
        "error_rms": error_rms,
        "signal_rms": signal_rms,
        "snr_db": 20 * float(np.log10(signal_rms / error_rms)),
    }


def _checkpoint(preset: str, layers: int) -> Path:
    from tools.random_checkpoints import write_codec_checkpoint

    path = ROOT / "var" / "bench" / f"codec-{preset}-{layers}l"
    if not (path / "model.safetensors").exists():
        write_codec_checkpoint(path, preset, codec_layers=layers)
    return path


def main() -> None:
    from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="codec or TTS checkpoint dir (default: write one)")
    parser.add_argument(
        "--preset",
        default="0.6b",
        choices=("tiny", "0.6b", "1.7b"),
        help="widths of the written codec (0.6b/1.7b = the real codec)",
    )
    parser.add_argument("--layers", type=int, default=8, help="pre-transformer layers of the written codec")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--chunk", type=int, nargs="+", default=[1])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--streams",
        type=int,
        nargs="*",
        default=[],
        help="also time this many streams advanced together by push_many (e.g. 1 4 8)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument(
        "--bf16-error",
        action="store_true",
        help="only compare bfloat16 streaming (each --chunk) with the float32 full decode of --frames frames",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    path = args.checkpoint or _checkpoint(args.preset, args.layers)
    if args.bf16_error:
        for chunk in args.chunk:
            r = measure_bf16_error(path, frames=args.frames, chunk=chunk)
            print(
                f"{path}: bfloat16 streaming (chunk {chunk}) vs float32 full decode, {args.frames} frames: "
                f"max abs error {r['max_abs_error']:.4f}, error RMS {r['error_rms']:.4f} "
                f"(signal RMS {r['signal_rms']:.3f}), SNR {r['snr_db']:.1f} dB",
                flush=True,
            )
        return
    tok = SpeechTokenizer.from_pretrained(path, dtype=args.dtype, device=args.device, load_encoder=False)
    windows = tuple((lo, lo + 50) for lo in range(0, args.frames - 49, 100)) or DEFAULT_WINDOWS
    print(
        f"codec {path} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads), "
        f"{args.frames} frames per stream",
        flush=True,
    )
    for chunk in args.chunk:
        r = measure_stream_decode(tok, frames=args.frames, chunk=chunk, windows=windows)
        cols = "  ".join(f"{k}: {v:6.2f}" for k, v in r["ms_per_frame"].items())
        print(
            f"chunk {chunk:3d}: ms/frame by frames  {cols}  | mean {r['mean_ms_per_frame']:.2f} "
            f"({r['x_real_time']:.1f}x real time), state {r['state_bytes'] / 2**20:.2f} MiB",
            flush=True,
        )
    for n in args.streams:
        r = measure_many_streams(tok, streams=n, chunk=args.chunk[0])
        print(
            f"{n:3d} streams by push_many, chunk {r['chunk']}: {r['ms_per_step']:.1f} ms per step, "
            f"{r['ms_per_stream_frame']:.1f} ms per stream-frame",
            flush=True,
        )


if __name__ == "__main__":
    main()
