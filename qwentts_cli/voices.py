"""The VoiceCatalogService commands: voices create, design, save, list, get, update, delete."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from google.protobuf import field_mask_pb2

from qwentts.v1 import audio_pb2, voices_pb2, voices_pb2_grpc

from .output import ENCODINGS, Output, print_json, print_table

VOICE_KINDS = {
    "cloned": voices_pb2.VOICE_KIND_CLONED,
    "designed": voices_pb2.VOICE_KIND_DESIGNED,
    "preset": voices_pb2.VOICE_KIND_PRESET,
}


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
    print_table(rows)
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


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """voices and its subcommands."""
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
