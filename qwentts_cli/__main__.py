"""A command-line client of qwentts.v1.TextToSpeechService and qwentts.v1.VoiceCatalogService.

    python -m qwentts_cli models [--json]
    python -m qwentts_cli synthesize --speaker vivian --text "Hello there." --out hello.wav [--stream]
    python -m qwentts_cli stream-stdin --speaker vivian --out talk.wav      # one line of text at a time
    python -m qwentts_cli voices create --name Ana --audio ana.wav [--transcript "What ana.wav says."]
    python -m qwentts_cli voices design --description "a calm, low voice" --text "Hello." --out preview.wav
    python -m qwentts_cli voices save --preview-id P --name Calm
    python -m qwentts_cli voices list [--kind cloned] [--language L] [--tag T] [--all]
    python -m qwentts_cli voices get|delete ID;  voices update ID --etag E [--name N] [--tags a b]
    python -m qwentts_cli synthesize --voice-id ID --text "Hi." --out hi.wav

--address defaults to $QWENTTS_ADDRESS, else 127.0.0.1:50051; --api-key to $QWENTTS_API_KEY (sent
as `x-api-key` metadata on every call; needed when the gateway has GATEWAY_API_KEYS). The
extension of --out picks the encoding (.wav, .flac, .raw/.pcm: 16-bit PCM, .ulaw: mu-law) unless
--encoding names one; "--out -" writes to stdout. Audio is written as it arrives; a streamed WAV
file gets its header sizes set at the end (a stream's header says "length unknown"). A failed
call prints the status code, the ErrorInfo reason and the bad fields, and exits with status 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import struct
import sys
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2, json_format

from qwentts.v1 import audio_pb2, tts_pb2, tts_pb2_grpc, voices_pb2, voices_pb2_grpc
from shared.errors import error_details

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the servers' limit; a unary response can exceed gRPC's 4 MiB
ENCODINGS = {
    "pcm16": audio_pb2.AUDIO_ENCODING_PCM16,
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "mulaw": audio_pb2.AUDIO_ENCODING_MULAW,
    "pcm_f32": audio_pb2.AUDIO_ENCODING_PCM_F32,
    "alaw": audio_pb2.AUDIO_ENCODING_ALAW,
    "mp3": audio_pb2.AUDIO_ENCODING_MP3,
    "opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
}
EXTENSIONS = {
    ".wav": "wav",
    ".flac": "flac",
    ".raw": "pcm16",
    ".pcm": "pcm16",
    ".ulaw": "mulaw",
    ".alaw": "alaw",
    ".mp3": "mp3",
    ".ogg": "opus",
    ".opus": "opus",
}
VOICE_KINDS = {
    "cloned": voices_pb2.VOICE_KIND_CLONED,
    "designed": voices_pb2.VOICE_KIND_DESIGNED,
    "preset": voices_pb2.VOICE_KIND_PRESET,
}


def choose_encoding(out: str, encoding: str | None) -> str:
    """--encoding if given, else the one the extension of --out names."""
    if encoding:
        return encoding
    try:
        return EXTENSIONS[Path(out).suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the encoding from {out!r} (extensions: {', '.join(EXTENSIONS)}); pass --encoding"
        ) from None


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
            self.file = sys.stdout.buffer if self.path == "-" else open(self.path, "w+b")  # noqa: SIM115 - kept for the stream
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
    print(
        f"wrote {out}: {summary.usage.audio_seconds:.2f} s of audio at {fmt.sample_rate_hz} Hz "
        f"({audio_pb2.AudioEncoding.Name(fmt.encoding).removeprefix('AUDIO_ENCODING_')}), model {summary.model}, "
        f"{tts_pb2.FinishReason.Name(summary.finish_reason).removeprefix('FINISH_REASON_')}, "
        f"{summary.usage.input_characters} characters",
        file=sys.stderr,
    )


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
        print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2))
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
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))


# ----- voices -----


def print_json(message) -> None:
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


def print_created(response: voices_pb2.CreateVoiceResponse) -> None:
    print_json(response.voice)
    for warning in response.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def voice_metadata(args) -> dict:
    return dict(language=args.language, description=args.description, tags=args.tag, consent_statement=args.consent)


def cmd_voices_create(stub, args) -> None:
    audio = audio_pb2.AudioInput(content=Path(args.audio).read_bytes())
    request = voices_pb2.CreateVoiceRequest(
        name=args.name, reference_audio=audio, transcript=args.transcript, **voice_metadata(args)
    )
    print_created(stub.CreateVoice(request, timeout=args.timeout))


def cmd_voices_design(stub, args) -> None:
    request = voices_pb2.DesignVoiceRequest(
        description=args.description,
        preview_text=args.text,
        language=args.language,
        output_format=audio_pb2.AudioFormat(encoding=ENCODINGS[args.encoding], sample_rate_hz=args.sample_rate),
    )
    if args.seed is not None:
        request.seed = args.seed
    response = stub.DesignVoice(request, timeout=args.timeout)
    with contextlib.closing(Output(args.out, args.encoding)) as out:
        out.write(response.audio)
    expires = response.expire_time.ToDatetime().isoformat(timespec="seconds")
    print(
        f"wrote the preview to {args.out}; save it with `voices save --preview-id {response.preview_id} "
        f"--name NAME` before {expires} UTC",
        file=sys.stderr,
    )
    print(response.preview_id)


def cmd_voices_save(stub, args) -> None:
    request = voices_pb2.CreateVoiceRequest(name=args.name, preview_id=args.preview_id, **voice_metadata(args))
    print_created(stub.CreateVoice(request, timeout=args.timeout))


def cmd_voices_list(stub, args) -> None:
    request = voices_pb2.ListVoicesRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        kind=VOICE_KINDS.get(args.kind, 0),
        language=args.language,
        tag=args.tag,
    )
    rows = [("ID", "NAME", "KIND", "LANGUAGE", "MODE", "SECONDS", "TAGS")]
    while True:
        response = stub.ListVoices(request, timeout=args.timeout)
        for v in response.voices:
            mode = voices_pb2.CloneMode.Name(v.clone_mode).removeprefix("CLONE_MODE_").lower()
            rows.append(
                (
                    v.voice_id,
                    v.name,
                    voices_pb2.VoiceKind.Name(v.kind).removeprefix("VOICE_KIND_").lower(),
                    v.language or "-",
                    "-" if v.read_only else mode,
                    f"{v.reference_seconds:.1f}" if v.reference_seconds else "-",
                    ", ".join(v.tags) or "-",
                )
            )
        request.page_token = response.next_page_token
        if not (args.all and request.page_token):
            break
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))
    if request.page_token:
        print(f"more: --page-token {request.page_token} (or --all)", file=sys.stderr)


def cmd_voices_get(stub, args) -> None:
    print_json(stub.GetVoice(voices_pb2.GetVoiceRequest(voice_id=args.voice_id), timeout=args.timeout).voice)


def cmd_voices_update(stub, args) -> None:
    voice = voices_pb2.Voice(voice_id=args.voice_id, etag=args.etag)
    paths = []
    for field in ("name", "language", "description", "tags"):
        value = getattr(args, field)
        if value is not None:
            paths.append(field)
            if field == "tags":
                voice.tags.extend(value)
            else:
                setattr(voice, field, value)
    if not paths:
        raise SystemExit("error: nothing to update: give --name, --language, --description or --tags")
    request = voices_pb2.UpdateVoiceRequest(voice=voice, update_mask=field_mask_pb2.FieldMask(paths=paths))
    print_json(stub.UpdateVoice(request, timeout=args.timeout).voice)


def cmd_voices_delete(stub, args) -> None:
    stub.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id=args.voice_id, etag=args.etag), timeout=args.timeout)
    print(f"deleted {args.voice_id}", file=sys.stderr)


class ApiKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `x-api-key` metadata to every call."""

    def __init__(self, key: str):
        self.metadata = (("x-api-key", key),)

    def _details(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = intercept_unary_unary


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


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
    common.add_argument(
        "--address",
        default=os.environ.get("QWENTTS_ADDRESS", "127.0.0.1:50051"),
        help="the gateway, host:port (default: $QWENTTS_ADDRESS or 127.0.0.1:50051)",
    )
    common.add_argument("--timeout", type=float, help="deadline of the call in seconds (default: none)")
    common.add_argument(
        "--api-key",
        default=os.environ.get("QWENTTS_API_KEY", ""),
        help="sent as x-api-key metadata (default: $QWENTTS_API_KEY)",
    )

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
    add_voices_commands(commands, common)
    return root


def add_voices_commands(commands, common: argparse.ArgumentParser) -> None:
    metadata = argparse.ArgumentParser(add_help=False)
    metadata.add_argument("--language", default="", help="the voice's language (its syntheses' default)")
    metadata.add_argument("--description", default="")
    metadata.add_argument("--tag", nargs="+", action="extend", default=[], help="tags (--tag a b, or repeated)")
    metadata.add_argument("--consent", default="", help="who consented to the cloning, and how")

    voices = commands.add_parser("voices", help="the voice catalogue: saved, designed and preset voices")
    voices.set_defaults(stub=voices_pb2_grpc.VoiceCatalogServiceStub)
    sub = voices.add_subparsers(dest="voices_command", required=True)
    create = sub.add_parser("create", parents=[common, metadata], help="save a voice cloned from reference audio")
    create.add_argument("--name", required=True)
    create.add_argument("--audio", required=True, help="a WAV, FLAC, OGG or MP3 file, 1 to 60 s (3+ recommended)")
    create.add_argument("--transcript", default="", help="what the audio says: enables in-context cloning")
    create.set_defaults(run=cmd_voices_create)

    design = sub.add_parser("design", parents=[common], help="preview a voice described in words")
    design.add_argument("--description", required=True)
    design.add_argument("--text", required=True, help="what the preview says (the saved voice's transcript)")
    design.add_argument("--language", default="")
    design.add_argument("--out", required=True, help='the preview audio, "-" for stdout')
    design.add_argument("--encoding", choices=ENCODINGS, help="default: from the extension of --out")
    design.add_argument("--sample-rate", type=int, default=0, help="Hz, 8000-48000 (default: the model's)")
    design.add_argument("--seed", type=int)
    design.set_defaults(run=cmd_voices_design)

    save = sub.add_parser("save", parents=[common, metadata], help="save a design preview as a voice")
    save.add_argument("--preview-id", required=True)
    save.add_argument("--name", required=True)
    save.set_defaults(run=cmd_voices_save)

    listing = sub.add_parser("list", parents=[common], help="saved voices and preset speakers")
    listing.add_argument("--kind", choices=VOICE_KINDS)
    listing.add_argument("--language", default="")
    listing.add_argument("--tag", default="")
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="")
    listing.add_argument("--all", action="store_true", help="every page")
    listing.set_defaults(run=cmd_voices_list)

    get = sub.add_parser("get", parents=[common], help="one voice, as JSON")
    get.add_argument("voice_id")
    get.set_defaults(run=cmd_voices_get)

    update = sub.add_parser("update", parents=[common], help="change a voice's name, language, description, tags")
    update.add_argument("voice_id")
    update.add_argument("--etag", required=True, help="the etag of the version being changed (see `voices get`)")
    update.add_argument("--name")
    update.add_argument("--language")
    update.add_argument("--description")
    update.add_argument("--tags", nargs="*", help="the new tags (none: remove them all)")
    update.set_defaults(run=cmd_voices_update)

    delete = sub.add_parser("delete", parents=[common], help="delete a voice")
    delete.add_argument("voice_id")
    delete.add_argument("--etag", default="", help="delete only if the voice is still at this version")
    delete.set_defaults(run=cmd_voices_delete)


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    if "out" in args:
        try:
            args.encoding = choose_encoding(args.out, args.encoding)
        except ValueError as error:
            root.error(str(error))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]  # reference audio of up to 10 MB
    with grpc.insecure_channel(args.address, options=options) as channel:
        if args.api_key:
            channel = grpc.intercept_channel(channel, ApiKey(args.api_key))
        stub = getattr(args, "stub", tts_pb2_grpc.TextToSpeechServiceStub)
        try:
            args.run(stub(channel), args)
        except grpc.RpcError as error:
            report_error(error)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
