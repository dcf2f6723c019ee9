"""Loading the official layout: what loads, and the clear errors for what does not."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import CheckpointError
from models.tts import Qwen3TTS


@pytest.fixture
def broken(tmp_path, tiny_custom_voice):
    """A writable copy of the tiny CustomVoice checkpoint to damage."""
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_custom_voice, target)
    return target


def edit_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("fixture", ["tiny_base", "tiny_custom_voice", "tiny_voice_design"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_every_model_type_loads_in_every_dtype(request, fixture, dtype):
    tts = Qwen3TTS.from_pretrained(request.getfixturevalue(fixture), dtype=dtype)
    assert tts.dtype == getattr(torch, dtype)
    assert (tts.speaker_encoder is not None) == (tts.config.tts_model_type == "base")
    assert tts.codec.sample_rate == 24000


def test_supported_speakers_and_languages(tiny_custom_voice):
    config = Qwen3TTS.from_pretrained(tiny_custom_voice, load_codec=False).config
    assert config.supported_speakers == sorted(
        ["vivian", "serena", "uncle_fu", "dylan", "eric", "ryan", "aiden", "ono_anna", "sohee"]
    )
    assert config.supported_languages == [
        "auto",
        "chinese",
        "english",
        "french",
        "german",
        "italian",
        "japanese",
        "korean",
        "portuguese",
        "russian",
        "spanish",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "vocab.json",
        "speech_tokenizer/model.safetensors",
        "speech_tokenizer/config.json",
    ],
)
def test_missing_file_is_named(broken, name):
    (broken / name).unlink()
    with pytest.raises(CheckpointError, match=name.split("/")[-1]):
        Qwen3TTS.from_pretrained(broken)


def test_unknown_model_type(broken):
    edit_config(broken, lambda c: c.update(tts_model_type="karaoke"))
    with pytest.raises(CheckpointError, match="unknown tts_model_type 'karaoke'"):
        Qwen3TTS.from_pretrained(broken)


def test_missing_config_key_is_named(broken):
    edit_config(broken, lambda c: c["talker_config"].pop("codec_bos_id"))
    with pytest.raises(CheckpointError, match="talker_config.codec_bos_id"):
        Qwen3TTS.from_pretrained(broken)


def test_shape_mismatch_names_file_and_key(broken):
    edit_config(
        broken, lambda c: c["talker_config"].update(intermediate_size=c["talker_config"]["intermediate_size"] * 2)
    )
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*talker\.model\.layers\.0\.mlp\.\w+_proj\.weight"):
        Qwen3TTS.from_pretrained(broken)


def test_missing_tensor_is_named(broken):
    weights = load_file(broken / "model.safetensors")
    weights.pop("talker.codec_head.weight")
    save_file(weights, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing tensor 'talker.codec_head.weight'"):
        Qwen3TTS.from_pretrained(broken)


def test_corrupt_weights_file(broken):
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        Qwen3TTS.from_pretrained(broken)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        Qwen3TTS.from_pretrained(tmp_path / "nowhere")
