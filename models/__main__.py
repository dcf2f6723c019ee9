"""Synthesize one sentence to a WAV file in-process, from a checkpoint directory.

Point --checkpoint at a real Qwen3-TTS CustomVoice or VoiceDesign directory for speech. A seeded
random one (noise of the right length, not speech) for trying it out:
`python -m tools.random_checkpoints /tmp/tiny --type custom_voice`.
"""

from __future__ import annotations

import argparse
import time

import soundfile as sf

from models.tts import Qwen3TTS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="Qwen3-TTS checkpoint directory")
    parser.add_argument("--text", default="Hello from the Qwen3 TTS serving cluster.")
    parser.add_argument("--speaker", default="vivian", help="preset speaker (CustomVoice checkpoints)")
    parser.add_argument("--instruct", default=None, help="style instruction, or the voice description for VoiceDesign")
    parser.add_argument("--language", default="auto")
    parser.add_argument("--max-frames", type=int, default=75, help="cap on generated frames (12.5 per second)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", default="out.wav")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    tts = Qwen3TTS.from_pretrained(args.checkpoint, dtype=args.dtype)
    loaded = time.perf_counter()
    kind = tts.config.tts_model_type
    speaker = args.speaker if kind == "custom_voice" else None
    instruct = args.instruct
    if kind == "voice_design" and not instruct:
        instruct = "A calm, warm adult voice speaking at a relaxed pace."
    if kind == "base":
        raise SystemExit("a Base checkpoint clones voices; the demo needs a CustomVoice or VoiceDesign one")
    [utterance] = tts.generate(
        [args.text],
        language=args.language,
        speaker=speaker,
        instruct=instruct,
        max_new_tokens=args.max_frames + 1,
        seed=args.seed,
    )
    done = time.perf_counter()
    sf.write(args.out, utterance.audio, tts.codec.sample_rate)
    seconds = len(utterance.audio) / tts.codec.sample_rate
    print(f"checkpoint: {args.checkpoint} ({kind}, loaded in {loaded - start:.1f} s)")
    print(
        f"wrote {args.out}: {seconds:.2f} s of audio, {len(utterance.codes)} frames, "
        f"finish={utterance.finish_reason.value}, synthesis {done - loaded:.1f} s"
    )
    if args.checkpoint is None:
        print("note: the default checkpoint has random weights, so the audio is noise, not speech")


if __name__ == "__main__":
    main()
