"""A command-line client of qwentts.v1.TextToSpeechService.

    python -m qwentts_cli models [--json]
    python -m qwentts_cli synthesize --speaker vivian --text "Hello there." --out hello.wav [--stream]
    python -m qwentts_cli stream-stdin --speaker vivian --out talk.wav      # one line of text at a time

--address defaults to $QWENTTS_ADDRESS, else 127.0.0.1:50051. The extension of --out picks the
encoding (.wav, .flac, .raw/.pcm: 16-bit PCM, .ulaw: mu-law) unless --encoding names one; "--out -"
writes to stdout. Audio is written as it arrives; a streamed WAV file gets its header sizes set at
the end (a stream's header says "length unknown"). A failed call prints the status code, the
ErrorInfo reason and the bad fields, and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from qwentts.v1 import audio_pb2, tts_pb2, tts_pb2_grpc
from shared.errors import error_details

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the servers' limit; a unary response can exceed gRPC's 4 MiB
ENCODINGS = {
    "pcm16": audio_pb2.AUDIO_ENCODING_PCM16,
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "mulaw": audio_pb2.AUDIO_ENCODING_MULAW,
    "pcm_f32": audio_pb2.AUDIO_ENCODING_PCM_F32,
}
EXTENSIONS = {".wav": "wav", ".flac": "flac", ".raw": "pcm16", ".pcm": "pcm16", ".ulaw": "mulaw"}


def choose_encoding(out: str, encoding: str | None) -> str:
    """--encoding if given, else the one the extension of --out names."""
    if encoding:
        return encoding
    try:
        return EXTENSIONS[Path(out).suffix.lower()]
    except KeyError:
        raise ValueError(f"cannot tell the encoding from {out!r} (extensions: {', '.join(EXTENSIONS)}); "
                         "pass --encoding") from None


def synthesis_config(args: argparse.Namespace) -> tts_pb2.SynthesisConfig:
    config = tts_pb2.SynthesisConfig(
        language=args.language, instruct=args.instruct, model=args.model, max_audio_seconds=args.max_seconds,
        output_format=audio_pb2.AudioFormat(encoding=ENCODINGS[args.encoding], sample_rate_hz=args.sample_rate))
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


def fix_wav_sizes(file) -> None:
    """Set the RIFF and data chunk sizes of the WAV file open in `file` (read-write) from its length."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    if file.read(4) != b"RIFF":
        return
    offset = 12
    while offset + 8 <= size:
        file.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
        if chunk_id == b"data":
            file.seek(4)
            file.write(struct.pack("<I", min(size - 8, 0xFFFFFFFF)))
            file.seek(offset + 4)
            file.write(struct.pack("<I", min(size - offset - 8, 0xFFFFFFFF)))
            return
        offset += 8 + chunk_size + chunk_size % 2


class Output:
    """Where the audio goes: a file ("-": stdout) created at the first write, so that a call that
    fails before any audio leaves an existing file alone. Closing sets a WAV file's header sizes."""

    def __init__(self, path: str, encoding: str):
        self.path, self.encoding = path, encoding
        self.file = None

    def write(self, data: bytes) -> None:
        if self.file is None:
            self.file = sys.stdout.buffer if self.path == "-" else open(self.path, "w+b")
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        if self.file is None or self.file is sys.stdout.buffer:
            return
        if self.encoding == "wav":
            fix_wav_sizes(self.file)
        self.file.close()


class Progress:
    """One status line on stderr: text read by the model and audio received."""

    def __init__(self, total_characters: int | None = None):
        self.total = total_characters
        self.consumed = self.received = 0
        self.audio_seconds = 0.0

    def on_response(self, response) -> None:
        kind = response.WhichOneof("response")
        if kind == "audio":
            self.audio_seconds += response.audio.duration_seconds
        elif kind == "progress":
            self.consumed = response.progress.characters_consumed
            self.received = response.progress.characters_received
        else:
            return
        if self.total:
            done = round(30 * min(self.consumed / self.total, 1))
            text = f"[{'#' * done}{'.' * (30 - done)}] text {self.consumed}/{self.total}"
        else:
            text = f"text {self.consumed}/{self.received}"
        print(f"\r{text} characters, audio {self.audio_seconds:.2f} s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def receive(responses, out, progress: Progress) -> tts_pb2.SynthesisSummary | None:
    """Write the audio of a response stream to `out` as it arrives; the summary."""
    summary = None
    try:
        for response in responses:
            progress.on_response(response)
            kind = response.WhichOneof("response")
            if kind == "audio":
                out.write(response.audio.audio)
            elif kind == "summary":
                summary = response.summary
    finally:
        progress.close()
    return summary


def report(out: str, summary: tts_pb2.SynthesisSummary | None) -> None:
    if summary is None:
        print(f"wrote {out}; the stream ended without a summary", file=sys.stderr)
        return
    fmt = summary.output_format
    print(f"wrote {out}: {summary.usage.audio_seconds:.2f} s of audio at {fmt.sample_rate_hz} Hz "
          f"({audio_pb2.AudioEncoding.Name(fmt.encoding).removeprefix('AUDIO_ENCODING_')}), model {summary.model}, "
          f"{tts_pb2.FinishReason.Name(summary.finish_reason).removeprefix('FINISH_REASON_')}, "
          f"{summary.usage.input_characters} characters",
          file=sys.stderr)


def cmd_synthesize(stub, args) -> None:
    if args.text_file:
        text = (sys.stdin.read() if args.text_file == "-" else Path(args.text_file).read_text("utf-8")).strip()
    else:
        text = args.text
    config = synthesis_config(args)
    with contextlib.closing(Output(args.out, args.encoding)) as out:
        if args.stream:
            responses = stub.StreamSynthesize(tts_pb2.StreamSynthesizeRequest(config=config, text=text),
                                              timeout=args.timeout)
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
        print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return
    rows = [("NAME", "KIND", "SIZE", "RATE", "INSTRUCT", "LANGUAGES", "SPEAKERS")]
    for model in response.models:
        speakers = [f"{s.name} ({s.dialect})" if s.dialect else s.name for s in model.speakers]
        rows.append((model.name, tts_pb2.ModelKind.Name(model.kind).removeprefix("MODEL_KIND_").lower(),
                     model.size, str(model.native_sample_rate_hz), "yes" if model.supports_instruct else "no",
                     ", ".join(model.languages) or "-", ", ".join(speakers) or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))


def report_error(error: grpc.RpcError) -> None:
    code, info, bad_request = error_details(error)
    print(f"error: {code.name}: {error.details()}", file=sys.stderr)
    if info is not None:
        metadata = "".join(f" {key}={value}" for key, value in sorted(info.metadata.items()))
        print(f"  reason: {info.reason} ({info.domain}){metadata}", file=sys.stderr)
    for violation in bad_request.field_violations if bad_request is not None else ():
        print(f"  field {violation.field}: {violation.description}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=os.environ.get("QWENTTS_ADDRESS", "127.0.0.1:50051"),
                        help="the gateway, host:port (default: $QWENTTS_ADDRESS or 127.0.0.1:50051)")
    common.add_argument("--timeout", type=float, help="deadline of the call in seconds (default: none)")

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

    root = argparse.ArgumentParser(prog="python -m qwentts_cli", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    synthesize = commands.add_parser("synthesize", parents=[common, synthesis], help="text to an audio file")
    text = synthesize.add_mutually_exclusive_group(required=True)
    text.add_argument("--text")
    text.add_argument("--text-file", help='a UTF-8 file, "-" for stdin')
    synthesize.add_argument("--stream", action="store_true",
                            help="StreamSynthesize (audio as it is produced, with progress) instead of Synthesize")
    synthesize.set_defaults(run=cmd_synthesize)
    commands.add_parser("stream-stdin", parents=[common, synthesis],
                        help="speak stdin line by line as it is typed (StreamingSynthesize)"
                        ).set_defaults(run=cmd_stream_stdin)
    models = commands.add_parser("models", parents=[common], help="the models the server has loaded")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)
    return root


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    if "out" in args:
        try:
            args.encoding = choose_encoding(args.out, args.encoding)
        except ValueError as error:
            root.error(str(error))
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(args.address, options=options) as channel:
        try:
            args.run(tts_pb2_grpc.TextToSpeechServiceStub(channel), args)
        except grpc.RpcError as error:
            report_error(error)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
