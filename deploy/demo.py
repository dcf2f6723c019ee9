"""`make demo`: start the cluster, synthesize one sentence through the gateway to out.wav, stop.

The request travels like any client's: the CLI (`python -m qwentts_cli`, run as a user would, in
its own process) calls the gateway's StreamSynthesize, the gateway routes it to the CustomVoice
generator and decodes the frames through the codec service. With no
QWENTTS_MODEL_CUSTOM_VOICE set the model is the tiny random checkpoint: the audio is noise of
the right length, not speech.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from .local import LocalCluster


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default="Hello from the Qwen3 TTS serving cluster.")
    parser.add_argument("--speaker", default="vivian")
    parser.add_argument("--max-seconds", default="6")
    parser.add_argument("--out", default="out.wav")
    args = parser.parse_args(argv)
    model = os.environ.get("QWENTTS_MODEL_CUSTOM_VOICE") or None
    with (
        tempfile.TemporaryDirectory() as run_dir,
        LocalCluster(models={"custom_voice": model}, ports="free", run_dir=run_dir) as cluster,
    ):
        print(
            f"cluster up: gateway {cluster.gateway_address}, codec {cluster.codec_address}, "
            f"generator {cluster.generator_addresses['custom_voice']}",
            flush=True,  # before the CLI's own output
        )
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "qwentts_cli",
                "synthesize",
                "--address",
                cluster.gateway_address,
                "--stream",
                "--text",
                args.text,
                "--speaker",
                args.speaker,
                "--max-seconds",
                args.max_seconds,
                "--seed",
                "0",
                "--out",
                args.out,
            ],
            check=False,
        )
    if model is None:
        print("note: the default checkpoint has random weights, so the audio is noise, not speech")
    return cli.returncode


if __name__ == "__main__":
    sys.exit(main())
