"""The gateway's modules: who imports whom (no cycle), and the one table of public field names."""

from __future__ import annotations

import ast
import importlib
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from qwentts.v1 import tts_pb2, voices_pb2
from services.gateway.fields import PUBLIC_FIELDS, public_field

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway"
PACKAGE = "services.gateway"


def gateway_imports(path: Path) -> set[str]:
    """The gateway modules that `path` imports, anywhere in it (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"{PACKAGE}.{base}" if base else PACKAGE
            if base == PACKAGE:  # from . import x / from services.gateway import x
                found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            elif base.startswith(f"{PACKAGE}."):
                found.add(base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(f"{PACKAGE}.")}
    return found


def test_the_gateway_modules_import_each_other_without_a_cycle():
    graph = {f"{PACKAGE}.{path.stem}": gateway_imports(path) for path in GATEWAY.glob("*.py")}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle between gateway modules: {' -> '.join(error.args[1])}")
    # The servicers and the pipeline share the Gateway; it knows none of them.
    assert not graph[f"{PACKAGE}.gateway"] & {f"{PACKAGE}.{m}" for m in ("service", "voices", "pipeline")}
    for module in order:
        if module != f"{PACKAGE}.__main__":
            importlib.import_module(module)


PUBLIC_MESSAGES = {**tts_pb2.DESCRIPTOR.message_types_by_name, **voices_pb2.DESCRIPTOR.message_types_by_name}


@pytest.mark.parametrize("request_name", sorted(PUBLIC_FIELDS))
def test_public_fields_name_fields_of_the_public_requests(request_name):
    message = PUBLIC_MESSAGES[request_name]
    for public in PUBLIC_FIELDS[request_name].values():
        descriptor = message
        for part in public.split("."):
            assert descriptor is not None and part in descriptor.fields_by_name, (request_name, public)
            descriptor = descriptor.fields_by_name[part].message_type


def test_public_field():
    # a listed path, and the paths under it
    assert public_field("config.speaker", "SynthesizeRequest") == "config.voice.preset_speaker"
    assert public_field("config.cloned_voice.reference_text", "SynthesizeRequest") == "config.voice.voice_id"
    assert public_field("config.output_format.sample_rate_hz", "DesignVoiceRequest") == "output_format.sample_rate_hz"
    assert public_field("voice.tags[3]", "CreateVoiceRequest") == "tags[3]"
    # one step from the dependency's name to the request's
    assert public_field("text", "DesignVoiceRequest") == "preview_text"
    assert public_field("text", "StreamingSynthesizeRequest") == "input.text"
    assert public_field("audio.samples_f32le", "CreateVoiceRequest") == "reference_audio.content"
    # a path the request already has, a mere prefix, and a request with no table are kept
    assert public_field("config.language", "SynthesizeRequest") == "config.language"
    assert public_field("config.speakers", "SynthesizeRequest") == "config.speakers"
    assert public_field("voice_id", "GetVoiceRequest") == "voice_id"
