"""The TextToSpeechService commands: synthesize, stream-stdin and models."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from qwentts.v1 import audio_pb2, tts_pb2

from .output import ENCODINGS, Output, Progress, print_json, print_table, receive, report


def synthesis_config(args: argparse.Namespace) -> tts_pb2.SynthesisConfig:
    config = tts_pb2.SynthesisConfig(
        language=args.language,
        instruct=args.instruct,
        model=args.model,
        max_audio_seconds=args.max_seconds,
        output_format=audio_pb2.AudioFormat(encoding=ENCODINGS[args.encoding], sample_rate_hz=args.sample_rate),
    )
    if args.speaker:
        config.voice.preset_speaker = args.speaker
    elif args.design:
        config.voice.design_description = args.design
    elif args.voice_id:
        config.voice.voice_id = args.voice_id
    if args.seed is not None:
        config.seed = args.seed
    if args.greedy:
        config.sampling.do_sample = False
        config.predictor_sampling.do_sample = False
    return config


def cmd_synthesize(stub, args) -> None:
    if args.text_file:
        text = (sys.stdin.read() if args.text_file == "-" else Path(args.text_file).read_text("utf-8")).strip()
    else:
        text = args.text
    config = synthesis_config(args)
    with contextlib.closing(Output(args.out, args.encoding)) as out:
        if args.stream:
            responses = stub.StreamSynthesize(
                tts_pb2.StreamSynthesizeRequest(config=config, text=text), timeout=args.timeout
            )
            summary = receive(responses, out, Progress(len(text)))
        else:
            response = stub.Synthesize(tts_pb2.SynthesizeRequest(config=config, text=text), timeout=args.timeout)
            out.write(response.audio)
            summary = response.summary
    report(args.out, summary)


def cmd_stream_stdin(stub, args) -> None:
    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=synthesis_config(args))
        # readline, not `for line in sys.stdin`: send each line as soon as it is typed.
        for line in iter(sys.stdin.readline, ""):
            yield tts_pb2.StreamingSynthesizeRequest(input=tts_pb2.TextInput(text=line))

    with contextlib.closing(Output(args.out, args.encoding)) as out:
        summary = receive(stub.StreamingSynthesize(requests(), timeout=args.timeout), out, Progress())
    report(args.out, summary)


def cmd_models(stub, args) -> None:
    response = stub.ListModels(tts_pb2.ListModelsRequest(), timeout=args.timeout)
    if args.json:
        print_json(response)
        return
    rows = [("NAME", "KIND", "SIZE", "RATE", "INSTRUCT", "LANGUAGES", "SPEAKERS")]
    for model in response.models:
        speakers = [f"{s.name} ({s.dialect})" if s.dialect else s.name for s in model.speakers]
        rows.append(
            (
                model.name,
                tts_pb2.ModelKind.Name(model.kind).removeprefix("MODEL_KIND_").lower(),
                model.size,
                str(model.native_sample_rate_hz),
                "yes" if model.supports_instruct else "no",
                ", ".join(model.languages) or "-",
                ", ".join(speakers) or "-",
            )
        )
    print_table(rows)


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """synthesize, stream-stdin and models."""
    synthesis = argparse.ArgumentParser(add_help=False)
    synthesis.add_argument("--out", required=True, help='output file, "-" for stdout')
    synthesis.add_argument("--encoding", choices=ENCODINGS, help="default: from the extension of --out")
    synthesis.add_argument("--sample-rate", type=int, default=0, help="Hz, 8000-48000 (default: the model's)")
    voice = synthesis.add_mutually_exclusive_group()
    voice.add_argument("--speaker", help="a preset speaker of a CustomVoice model (see `models`)")
    voice.add_argument("--design", help="a voice description, for a VoiceDesign model")
    voice.add_argument("--voice-id", help="a voice from the voice catalogue, for a Base model")
    synthesis.add_argument("--language", default="", help='"auto" (default) or a language of the model')
    synthesis.add_argument("--instruct", default="", help="a style instruction (models that support it)")
    synthesis.add_argument("--model", default="", help="a model name (default: the server picks one)")
    synthesis.add_argument("--seed", type=int, help="makes sampling reproducible")
    synthesis.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    synthesis.add_argument("--max-seconds", type=float, default=0.0, help="cap on the audio length")

    synthesize = commands.add_parser("synthesize", parents=[common, synthesis], help="text to an audio file")
    text = synthesize.add_mutually_exclusive_group(required=True)
    text.add_argument("--text")
    text.add_argument("--text-file", help='a UTF-8 file, "-" for stdin')
    synthesize.add_argument(
        "--stream",
        action="store_true",
        help="StreamSynthesize (audio as it is produced, with progress) instead of Synthesize",
    )
    synthesize.set_defaults(run=cmd_synthesize)
    commands.add_parser(
        "stream-stdin",
        parents=[common, synthesis],
        help="speak stdin line by line as it is typed (StreamingSynthesize)",
    ).set_defaults(run=cmd_stream_stdin)
    models = commands.add_parser("models", parents=[common], help="the models the server has loaded")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)
