"""The gateway's routing: the routes file, and which pool a request's voice goes to."""

from __future__ import annotations

import pytest

from qwentts.generator.v1 import generator_pb2
from qwentts.v1 import tts_pb2
from services.gateway.routing import Pool, Router, parse_preset_voice_id, preset_as_speaker, read_routes
from shared.config import ConfigError
from shared.errors import FailedPrecondition, InvalidArgument, NotFound


def _pool(name, model_type, speakers=(), instruct=False):
    model = generator_pb2.DescribeModelResponse(
        name=name,
        model_type=model_type,
        size="0.6B",
        languages=["english", "chinese"],
        speakers=[generator_pb2.Speaker(name=s) for s in speakers],
        supports_instruct=instruct,
    )
    return Pool(address=f"{name}:1", channel=None, stub=None, model=model)


ROUTER = Router(
    [
        _pool("cv-small", "custom_voice", ["Vivian", "Ryan"]),
        _pool("cv-large", "custom_voice", ["Vivian", "Ryan", "Eric"], instruct=True),
        _pool("design", "voice_design", instruct=True),
        _pool("base", "base"),
    ]
)


def _config(**voice) -> tts_pb2.SynthesisConfig:
    return tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(**voice))


def test_routes_file(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[[generators]]\naddress = "a:1"\n\n[[generators]]\naddress = "dns:///b:2"\n')
    assert read_routes(path) == ["a:1", "dns:///b:2"]
    for text in ("", "[[generators]]\nport = 1\n", "not toml ["):
        path.write_text(text)
        with pytest.raises(ConfigError, match="GATEWAY_ROUTES_FILE"):
            read_routes(path)


def test_preset_speaker_goes_to_a_model_that_has_it():
    assert ROUTER.route(_config(preset_speaker="vivian")).model.name == "cv-small"
    assert ROUTER.route(_config(preset_speaker="Eric")).model.name == "cv-large"


def test_instruct_picks_a_model_that_follows_it():
    config = _config(preset_speaker="Ryan")
    config.instruct = "whisper"
    assert ROUTER.route(config).model.name == "cv-large"


def test_design_goes_to_voice_design():
    assert ROUTER.route(_config(design_description="a deep calm voice")).model.name == "design"


def test_saved_voice_goes_to_base():
    assert ROUTER.route(_config(voice_id="v1")).model.name == "base"


def test_preset_voice_id_is_that_preset_speaker():
    config = _config(voice_id="preset:cv-large:Eric")
    assert preset_as_speaker(config).voice.preset_speaker == "Eric"
    assert preset_as_speaker(config).model == "cv-large"
    assert ROUTER.route(config).model.name == "cv-large"
    assert ROUTER.route(_config(voice_id="preset:cv-small:vivian")).model.name == "cv-small"
    assert parse_preset_voice_id("v1") is None and parse_preset_voice_id("preset:nospeaker") is None
    assert preset_as_speaker(_config(voice_id="v1")).voice.voice_id == "v1"


def test_model_by_name():
    config = _config(preset_speaker="Vivian")
    config.model = "cv-large"
    assert ROUTER.route(config).model.name == "cv-large"


@pytest.mark.parametrize(
    "config, error, reason",
    [
        (_config(), InvalidArgument, "VOICE_REQUIRED"),
        (_config(preset_speaker="nobody"), InvalidArgument, "UNKNOWN_SPEAKER"),
        (_config(voice_id="preset:cv-small:Eric"), InvalidArgument, "UNKNOWN_SPEAKER"),
        (_config(voice_id="preset:nope:Vivian"), NotFound, "MODEL_NOT_FOUND"),
        (
            tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(preset_speaker="Vivian"), model="nope"),
            NotFound,
            "MODEL_NOT_FOUND",
        ),
        (
            tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(preset_speaker="Vivian"), model="design"),
            InvalidArgument,
            "MODEL_VOICE_MISMATCH",
        ),
        (
            tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(design_description="x"), instruct="y"),
            InvalidArgument,
            "INSTRUCT_NOT_SUPPORTED",
        ),
    ],
)
def test_refusals(config, error, reason):
    with pytest.raises(error) as raised:
        ROUTER.route(config)
    assert raised.value.reason == reason


def test_instruct_without_a_following_model_is_refused():
    router = Router([_pool("cv-small", "custom_voice", ["Vivian"])])
    config = _config(preset_speaker="Vivian")
    config.instruct = "whisper"
    with pytest.raises(InvalidArgument) as raised:
        router.route(config)
    assert raised.value.reason == "INSTRUCT_NOT_SUPPORTED"
    assert raised.value.violations[0][0] == "config.instruct"


def test_no_model_of_the_kind():
    router = Router([_pool("base", "base")])
    with pytest.raises(FailedPrecondition) as raised:
        router.route(_config(preset_speaker="Vivian"))
    assert raised.value.reason == "NO_MODEL_FOR_VOICE"


def test_languages_are_checked_at_the_gateway():
    pool = ROUTER.route(_config(preset_speaker="vivian"))
    pool.check_language("English", "config.language")
    pool.check_language("auto", "config.language")
    with pytest.raises(InvalidArgument) as raised:
        pool.check_language("klingon", "language")
    assert raised.value.reason == "UNSUPPORTED_LANGUAGE"
    assert raised.value.violations == [("language", "not a language of the model")]
