"""Times the reference package on a checkpoint. Runs inside .venv-ref (see bench_model.py).

Prints one JSON line: talker+predictor ms per frame (the difference of two greedy runs of
different lengths, best of two each, so prefill and start-up cancel out) and the codec's time to decode 25 frames.
"""

import argparse
import json
import sys
import time

import torch
from qwen_tts import Qwen3TTSModel


def timed_generate(model, frames: int, text: str) -> float:
    """Seconds spent in the reference's generate (codes only, not the audio decode)."""
    spent = []
    inner = model.model.generate

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = inner(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return result

    model.model.generate = timed
    try:
        model.generate_custom_voice(
            text=text,
            speaker="vivian",
            language="english",
            non_streaming_mode=True,
            do_sample=False,
            subtalker_dosample=False,
            max_new_tokens=frames + 1,
        )
    finally:
        model.model.generate = inner
    return spent[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--text", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # the package prints notices to stdout

    model = Qwen3TTSModel.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype), device_map=args.device)
    timed_generate(model, 2, args.text)  # warm-up
    short = min(timed_generate(model, 2, args.text) for _ in range(2))
    long = min(timed_generate(model, 2 + args.frames, args.text) for _ in range(2))
    codes = [{"audio_codes": torch.randint(0, 2048, (25, 16))}]
    model.model.speech_tokenizer.decode(codes)
    start = time.perf_counter()
    model.model.speech_tokenizer.decode(codes)
    decode_25 = time.perf_counter() - start
    print(
        json.dumps({"ms_per_frame": 1000 * (long - short) / args.frames, "decode_25_frames_ms": 1000 * decode_25}),
        file=real_stdout,
    )


if __name__ == "__main__":
    main()
