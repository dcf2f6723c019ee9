"""Seeded random checkpoints (tools/random_checkpoints/) and the reference oracle that checks them.

Fast tests check the files themselves; `reference` tests check that qwen-tts 0.1.1 loads them with
no missing or unexpected keys and tokenizes the prompts as the model expects; `slow` tests do the
same for the real-width presets.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers.oracle_client import OracleError
from tools import random_checkpoints as tc

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
]
CODEC_LAYOUT = ["config.json", "model.safetensors", "preprocessor_config.json"]
GREEDY = dict(do_sample=False, subtalker_dosample=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


@pytest.fixture(params=["base", "custom_voice", "voice_design"])
def tiny_any(request):
    return request.param, request.getfixturevalue(f"tiny_{request.param}")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(tmp_path, tiny_base):
    again = tc.write_checkpoint(tmp_path / "again", "base", "tiny", seed=0)
    assert _files(again) == _files(tiny_base)


def test_a_different_seed_changes_every_weight_but_not_the_config(tmp_path, tiny_base):
    other = tc.write_checkpoint(tmp_path / "seed1", "base", "tiny", seed=1)
    assert _config(other) == _config(tiny_base)
    for rel in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        a, b = load_file(tiny_base / rel), load_file(other / rel)
        assert a.keys() == b.keys()
        for key in a:
            if a[key].numel() > 1 and a[key].float().std() > 0:  # constants (e.g. `initialized`) stay
                assert not torch.equal(a[key], b[key]), key


def test_every_file_of_the_layout_exists(tiny_any):
    _, path = tiny_any
    for rel in LAYOUT:
        assert (path / rel).is_file(), rel
    assert sorted(_files(path)) == sorted(LAYOUT)


def test_standalone_codec_has_the_three_files_and_matches_the_embedded_one(tiny_codec, tiny_base):
    assert sorted(_files(tiny_codec)) == sorted(CODEC_LAYOUT)
    for rel in CODEC_LAYOUT:
        assert (tiny_codec / rel).read_bytes() == (tiny_base / "speech_tokenizer" / rel).read_bytes()


def test_dtypes_are_those_of_the_official_files(tiny_base, tmp_path):
    with safe_open(str(tiny_base / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    with safe_open(str(tiny_base / "speech_tokenizer" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    f32 = tc.write_checkpoint(tmp_path / "f32", "voice_design", dtype="float32")
    with safe_open(str(f32 / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}


def test_config_contents(tiny_any):
    model_type, path = tiny_any
    cfg = _config(path)
    assert cfg["architectures"] == ["Qwen3TTSForConditionalGeneration"]
    assert cfg["model_type"] == "qwen3_tts"
    assert cfg["tokenizer_type"] == "qwen3_tts_tokenizer_12hz"
    assert cfg["transformers_version"] == "4.57.3"
    assert cfg["tts_model_type"] == model_type
    assert cfg["tts_model_size"] == "1b7"
    talker = cfg["talker_config"]
    assert talker["vocab_size"] == 3072 and talker["num_code_groups"] == 16
    assert {k: talker[k] for k in tc.CODEC_IDS} == tc.CODEC_IDS
    assert talker["codec_language_id"] == tc.LANGUAGE_IDS
    assert talker["text_vocab_size"] == tc.text_vocab_size()
    predictor = talker["code_predictor_config"]
    assert predictor["hidden_size"] != talker["hidden_size"]  # small_to_mtp_projection exists
    if model_type == "custom_voice":
        assert talker["spk_id"] == {n: i for n, (i, _) in tc.SPEAKERS.items()}
        assert talker["spk_is_dialect"]["eric"] == "sichuan_dialect"
        assert talker["spk_is_dialect"]["dylan"] == "beijing_dialect"
        assert talker["spk_is_dialect"]["vivian"] is False
    else:
        assert talker["spk_id"] == {} and talker["spk_is_dialect"] == {}
    if model_type == "base":
        se = cfg["speaker_encoder_config"]
        assert "model_type" not in se
        assert se["enc_dim"] == talker["hidden_size"]
    else:
        assert "speaker_encoder_config" not in cfg
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen == tc.GENERATION_CONFIG and gen["max_new_tokens"] == 8192


def test_special_token_ids_point_at_the_toy_tokens(tiny_base):
    cfg = _config(tiny_base)
    vocab = json.loads((tiny_base / "vocab.json").read_text())
    tok_cfg = json.loads((tiny_base / "tokenizer_config.json").read_text())
    added = {v["content"]: int(k) for k, v in tok_cfg["added_tokens_decoder"].items()}
    assert added["<|im_start|>"] == cfg["im_start_token_id"]
    assert added["<|im_end|>"] == cfg["im_end_token_id"]
    assert added["<tts_pad>"] == cfg["tts_pad_token_id"]
    assert added["<tts_text_bos>"] == cfg["tts_bos_token_id"]
    assert added["<tts_text_eod>"] == cfg["tts_eos_token_id"]
    assert vocab["assistant"] == cfg["assistant_token_id"]
    assert vocab["Ċ"] == 198  # "\n" has the Qwen2 id
    assert max(added.values()) + 1 == cfg["talker_config"]["text_vocab_size"]
    assert len(vocab) + len(added) == cfg["talker_config"]["text_vocab_size"]


def test_the_project_tokenizer_reads_the_toy_files(tiny_base):
    from transformers import Qwen2TokenizerFast

    cfg = _config(tiny_base)
    tok = Qwen2TokenizerFast.from_pretrained(str(tiny_base))
    role = tok("<|im_start|>assistant\n")["input_ids"]
    assert role == [cfg["im_start_token_id"], cfg["assistant_token_id"], 198]
    assert len(tok("Hello world, this is a test.")["input_ids"]) > 0


@pytest.mark.parametrize("model_type", ["base", "custom_voice", "voice_design"])
def test_written_tensors_are_exactly_the_specs(tmp_path, model_type):
    path = tc.write_checkpoint(tmp_path / model_type, model_type, talker_layers=3, predictor_layers=1, codec_layers=1)
    cfg = _config(path)
    written = load_file(path / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: s for k, s, _ in tc.main_tensor_specs(cfg)}
    assert sum(k.startswith("talker.model.layers.") and k.endswith(".input_layernorm.weight") for k in written) == 3
    assert ("speaker_encoder.fc.weight" in written) == (model_type == "base")
    codec_cfg = json.loads((path / "speech_tokenizer" / "config.json").read_text())
    codec = load_file(path / "speech_tokenizer" / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in codec.items()} == {k: s for k, s, _ in tc.codec_tensor_specs(codec_cfg)}
    assert codec_cfg["decoder_config"]["num_hidden_layers"] == 1
    assert codec_cfg["encoder_config"]["num_hidden_layers"] == 1


def test_weights_are_finite_and_codebooks_usable(tiny_base):
    for rel in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        for key, value in load_file(tiny_base / rel).items():
            assert torch.isfinite(value.float()).all(), key
    codec = load_file(tiny_base / "speech_tokenizer" / "model.safetensors")
    usage = [v for k, v in codec.items() if k.endswith("cluster_usage")]
    assert len(usage) == 16 + 32 and all((u > 0).all() for u in usage)
    inits = [v for k, v in codec.items() if k.endswith("codebook.initialized")]
    assert len(inits) == 32 and all(v.item() == 1.0 for v in inits)
    sums = [v for k, v in codec.items() if k.endswith("embed_sum") or k.endswith("embedding_sum")]
    assert all(v.abs().sum() > 0 for v in sums)


def test_eos_scale_scales_only_the_eos_row(tmp_path):
    one = load_file(
        tc.write_checkpoint(tmp_path / "one", "voice_design", eos_scale=1.0, dtype="float32") / "model.safetensors"
    )
    big = load_file(
        tc.write_checkpoint(tmp_path / "big", "voice_design", eos_scale=7.0, dtype="float32") / "model.safetensors"
    )
    zero = load_file(tc.write_checkpoint(tmp_path / "zero", "voice_design", dtype="float32") / "model.safetensors")
    head = "talker.codec_head.weight"
    assert torch.equal(zero[head][tc.CODEC_EOS_ID], torch.zeros_like(zero[head][0]))
    torch.testing.assert_close(big[head][tc.CODEC_EOS_ID], 7.0 * one[head][tc.CODEC_EOS_ID])
    rows = torch.arange(one[head].shape[0]) != tc.CODEC_EOS_ID
    assert torch.equal(one[head][rows], big[head][rows]) and torch.equal(one[head][rows], zero[head][rows])
    for key in one:
        if key != head:
            assert torch.equal(one[key], big[key]), key


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        tc.write_checkpoint(tmp_path / "x", "tts")
    with pytest.raises(ValueError, match="preset"):
        tc.write_checkpoint(tmp_path / "x", "base", "3b")
    with pytest.raises(ValueError, match="talker_layers"):
        tc.write_checkpoint(tmp_path / "x", "base", talker_layers=0)
    with pytest.raises(ValueError, match="dtype"):
        tc.write_checkpoint(tmp_path / "x", "base", dtype="int8")
    with pytest.raises(ValueError, match="model_size"):
        tc.write_checkpoint(tmp_path / "x", "base", model_size="7b")
    assert not (tmp_path / "x").exists()


def test_model_size_override(tmp_path):
    path = tc.write_checkpoint(
        tmp_path / "cv06", "custom_voice", model_size="0b6", talker_layers=1, predictor_layers=1, codec_layers=1
    )
    assert _config(path)["tts_model_size"] == "0b6"


# ---------------------------------------------------------------------------------------------
# Real widths, without writing them (the shapes follow from the config alone)
# ---------------------------------------------------------------------------------------------


def _shapes(model_type, preset, **layers):
    cfg = tc.build_config(model_type, preset, **layers)
    return cfg, {k: s for k, s, _ in tc.main_tensor_specs(cfg)}


def test_real_width_shapes_follow_the_spec():
    cfg, s = _shapes("base", "0.6b")
    assert cfg["tts_model_size"] == "0b6"
    assert s["talker.model.codec_embedding.weight"] == (3072, 1024)
    assert s["talker.model.layers.0.self_attn.q_proj.weight"] == (2048, 1024)
    assert s["talker.model.layers.0.self_attn.k_proj.weight"] == (1024, 1024)
    assert s["talker.model.layers.0.self_attn.o_proj.weight"] == (1024, 2048)
    assert s["talker.model.layers.0.mlp.gate_proj.weight"] == (3072, 1024)
    assert s["talker.text_projection.linear_fc1.weight"] == (2048, 2048)
    assert s["talker.text_projection.linear_fc2.weight"] == (1024, 2048)
    assert "talker.code_predictor.small_to_mtp_projection.weight" not in s
    assert s["talker.code_predictor.model.codec_embedding.0.weight"] == (2048, 1024)
    assert s["talker.code_predictor.lm_head.14.weight"] == (2048, 1024)
    assert s["speaker_encoder.fc.weight"] == (1024, 3072, 1)
    assert s["speaker_encoder.blocks.1.res2net_block.blocks.6.conv.weight"] == (64, 64, 3)
    assert s["speaker_encoder.asp.tdnn.conv.weight"] == (128, 4608, 1)
    assert cfg["speaker_encoder_config"] == {"enc_dim": 1024, "sample_rate": 24000}

    cfg, s = _shapes("custom_voice", "1.7b")
    assert cfg["tts_model_size"] == "1b7"
    assert s["talker.model.layers.0.self_attn.q_proj.weight"] == (2048, 2048)
    assert s["talker.model.layers.0.mlp.down_proj.weight"] == (2048, 6144)
    assert s["talker.code_predictor.small_to_mtp_projection.weight"] == (1024, 2048)
    assert s["talker.code_predictor.small_to_mtp_projection.bias"] == (1024,)
    assert s["talker.code_predictor.model.codec_embedding.3.weight"] == (2048, 2048)
    assert s["talker.code_predictor.model.layers.1.self_attn.q_proj.weight"] == (2048, 1024)

    codec = {k: s for k, s, _ in tc.codec_tensor_specs(tc.build_codec_config("0.6b"))}
    assert codec["decoder.pre_conv.conv.weight"] == (1024, 512, 3)
    assert codec["decoder.pre_transformer.input_proj.weight"] == (512, 1024)
    assert codec["decoder.pre_transformer.layers.0.self_attn.q_proj.weight"] == (1024, 512)
    assert codec["decoder.quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"] == (2048, 256)
    assert codec["decoder.quantizer.rvq_first.output_proj.weight"] == (512, 256, 1)
    assert codec["decoder.upsample.0.0.conv.weight"] == (1024, 1024, 2)
    assert codec["decoder.upsample.1.1.pwconv1.weight"] == (4096, 1024)
    assert codec["decoder.decoder.0.conv.weight"] == (1536, 1024, 7)
    assert codec["decoder.decoder.6.conv.weight"] == (1, 96, 7)
    assert codec["decoder.decoder.5.alpha"] == (96,)
    assert codec["encoder.encoder.layers.14.conv.weight"] == (512, 1024, 3)
    assert codec["encoder.downsample.conv.weight"] == (512, 512, 4)
    assert codec["encoder.quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.embed_sum"] == (2048, 256)


@pytest.mark.parametrize("preset, expected", [("0.6b", 0.905e9), ("1.7b", 1.92e9)])
def test_full_depth_parameter_count_matches_the_released_size(preset, expected):
    """Spec §9.5: with 28/5 layers and the real 151936-row text table the counts match the files."""
    cfg, shapes = _shapes("custom_voice", preset, talker_layers=28, predictor_layers=5)
    n = sum(math.prod(s) for k, s in shapes.items() if k != "talker.model.text_embedding.weight")
    n += 151936 * cfg["talker_config"]["text_hidden_size"]
    assert abs(n - expected) / expected < 0.01, n


def test_full_depth_codec_is_about_0_2b_parameters():
    shapes = {k: s for k, s, _ in tc.codec_tensor_specs(tc.build_codec_config("0.6b", codec_layers=8))}
    n = sum(math.prod(s) for s in shapes.values())
    assert 0.15e9 < n < 0.25e9, n


# ---------------------------------------------------------------------------------------------
# CLI and the zero-configuration default
# ---------------------------------------------------------------------------------------------


def _run_py(args, env=None, **kw):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, **kw)


def test_cli_writes_a_checkpoint_and_a_codec(tmp_path):
    out = _run_py(
        [
            "-m",
            "tools.random_checkpoints",
            str(tmp_path / "vd"),
            "--type",
            "voice_design",
            "--seed",
            "3",
            "--talker-layers",
            "1",
            "--predictor-layers",
            "1",
            "--codec-layers",
            "1",
        ]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "vd")
    assert _config(tmp_path / "vd")["talker_config"]["num_hidden_layers"] == 1
    assert _files(tmp_path / "vd") == _files(
        tc.write_checkpoint(
            tmp_path / "lib", "voice_design", seed=3, talker_layers=1, predictor_layers=1, codec_layers=1
        )
    )
    out = _run_py(["-m", "tools.random_checkpoints", str(tmp_path / "codec"), "--codec-only"])
    assert out.returncode == 0, out.stderr
    assert sorted(_files(tmp_path / "codec")) == sorted(CODEC_LAYOUT)
    out = _run_py(["-m", "tools.random_checkpoints", str(tmp_path / "bad"), "--talker-layers", "0"])
    assert out.returncode == 2 and "talker_layers" in out.stderr


def test_default_checkpoint_is_generated_once(tmp_path, monkeypatch, tiny_custom_voice):
    monkeypatch.setenv("QWEN_TTS_TINY_MODELS_DIR", str(tmp_path))
    path = tc.default_checkpoint("custom_voice")
    assert path == tmp_path / "tiny-custom_voice-seed0"
    assert (path / tc.COMPLETE_MARKER).is_file()
    files = _files(path)
    files.pop(tc.COMPLETE_MARKER)
    assert files == _files(tiny_custom_voice)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert tc.default_checkpoint("custom_voice") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    # An incomplete directory (no marker) is replaced.
    (path / tc.COMPLETE_MARKER).unlink()
    (path / "model.safetensors").write_bytes(b"garbage")
    assert tc.default_checkpoint("custom_voice") == path
    assert (path / "model.safetensors").read_bytes() == (tiny_custom_voice / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tiny-custom_voice-seed0"]


def test_default_checkpoint_concurrent_first_use(tmp_path):
    code = "from tools.random_checkpoints import default_checkpoint; print(default_checkpoint('base'))"
    env = {**os.environ, "QWEN_TTS_TINY_MODELS_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert {o[0].strip() for o in outs} == {str(tmp_path / "tiny-base-seed0")}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tiny-base-seed0"]
    assert (tmp_path / "tiny-base-seed0" / tc.COMPLETE_MARKER).is_file()


# ---------------------------------------------------------------------------------------------
# The reference loads what we write
# ---------------------------------------------------------------------------------------------


def _assert_clean(part: dict):
    for key in (
        "missing_keys",
        "unexpected_keys",
        "mismatched_keys",
        "error_msgs",
        "not_in_file",
        "not_in_model",
        "values_differ",
    ):
        assert part[key] == [], (key, part[key][:10])
    assert part["n_model_tensors"] == part["n_file_tensors"]


def test_reference_loads_every_tiny_type(reference, tiny_any):
    model_type, path = tiny_any
    report = reference.load_report(path)
    _assert_clean(report["main"])
    _assert_clean(report["codec"])
    assert report["tts_model_type"] == model_type
    assert report["has_speaker_encoder"] == (model_type == "base")
    expected_speakers = sorted(tc.SPEAKERS) if model_type == "custom_voice" else []
    assert report["supported_speakers"] == expected_speakers
    assert report["supported_languages"] == sorted(["auto"] + [k for k in tc.LANGUAGE_IDS if "dialect" not in k])


def test_reference_loads_the_standalone_codec(reference, tiny_codec):
    report = reference.load_report(tiny_codec)
    assert report["main"] is None
    _assert_clean(report["codec"])


def test_reference_reloads_the_speaker_encoder_config(reference, tiny_base):
    report = reference.load_report(tiny_base)
    assert report["speaker_encoder_config"] == _config(tiny_base)["speaker_encoder_config"]


@pytest.mark.parametrize("model_type, size", [("base", "0.6b"), ("custom_voice", "1.7b")])
def test_reference_loads_real_width(reference, real_width, model_type, size):
    path = real_width(model_type, size)
    report = reference.load_report(path)
    _assert_clean(report["main"])
    _assert_clean(report["codec"])
    assert report["tts_model_size"] == {"0.6b": "0b6", "1.7b": "1b7"}[size]
    if model_type == "base":  # only enc_dim and sample_rate in the file: the rest are class defaults
        se = report["speaker_encoder_config"]
        assert se["enc_dim"] == 1024
        assert se["enc_channels"] == [512, 512, 512, 512, 1536] and se["enc_attention_channels"] == 128


# ---------------------------------------------------------------------------------------------
# Tokenizer and prompt layout, as the reference sees them
# ---------------------------------------------------------------------------------------------

TEXTS = [
    "Hello world, this is a test.",
    "你好，世界！",
    "Guten Morgen, wie geht es dir?",
    "HelloWorld 1234 it's",
    "Bonjour  à tous\tet\u00a0merci",
    "user assistant users",
]


def test_reference_tokenizer_role_prefix_and_offsets(reference, tiny_base):
    cfg = _config(tiny_base)
    im_start, im_end, assistant = cfg["im_start_token_id"], cfg["im_end_token_id"], cfg["assistant_token_id"]
    role = [im_start, assistant, 198]
    text = "Hello world, this is a test."
    ref = "A short reference."
    ids = reference.tokenize(
        tiny_base,
        [
            "<|im_start|>assistant\n",
            f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n",
            f"<|im_start|>assistant\n{ref}<|im_end|>\n",
            "<|im_start|>user\nSpeak warmly.<|im_end|>\n",
            text,
            ref,
        ],
    )
    assert ids[0] == role
    assert ids[1][:3] == role
    assert ids[1][-5:] == [im_end, 198, im_start, assistant, 198]
    assert ids[1][3:-5] == ids[4]
    assert ids[2][:3] == role and ids[2][-2:] == [im_end, 198] and ids[2][3:-2] == ids[5]
    user = json.loads((tiny_base / "vocab.json").read_text())["user"]
    assert ids[3][:3] == [im_start, user, 198] and ids[3][-2:] == [im_end, 198]


def test_reference_and_project_tokenizers_agree(reference, tiny_base):
    from transformers import Qwen2TokenizerFast

    ours = Qwen2TokenizerFast.from_pretrained(str(tiny_base))
    texts = TEXTS + [f"<|im_start|>assistant\n{t}<|im_end|>\n<|im_start|>assistant\n" for t in TEXTS]
    theirs = reference.tokenize(tiny_base, texts)
    assert [ours(t)["input_ids"] for t in texts] == theirs


# ---------------------------------------------------------------------------------------------
# The oracle itself, on tiny checkpoints
# ---------------------------------------------------------------------------------------------


def _audio(seconds=1.5, sr=24000, seed=0):
    rs = np.random.RandomState(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t)))
    return (tone + 0.03 * rs.randn(len(t))).astype(np.float32)


def test_oracle_codec_round_trip(reference, tiny_codec):
    audios = [_audio(1.5), _audio(0.5, seed=1)]
    codes = reference.codec_encode(tiny_codec, audios, 24000)
    assert [c.shape for c in codes] == [(19, 16), (7, 16)]  # ceil(n / 1920)
    assert all(c.dtype == np.int64 and c.min() >= 0 and c.max() < 2048 for c in codes)
    assert all(len(np.unique(c[:, q])) > 1 for c in codes for q in range(16))  # codebooks are not degenerate
    wavs = reference.codec_decode(tiny_codec, codes)
    assert [w.shape for w in wavs] == [(19 * 1920,), (7 * 1920,)]
    for w in wavs:
        assert w.dtype == np.float32 and np.isfinite(w).all()
        assert w.std() > 0.01 and (np.abs(w) >= 1.0).mean() < 0.05  # sound, mostly not clipped
    bf16 = reference.codec_decode(tiny_codec, codes[:1], dtype="bfloat16")[0]
    assert np.isfinite(bf16).all() and np.abs(bf16 - wavs[0]).mean() < 0.1


def test_oracle_generate_every_mode(reference, tiny_base, tiny_custom_voice, tiny_voice_design):
    ref = _audio(2.0, sr=16000)
    runs = {
        "custom_voice": (
            tiny_custom_voice,
            dict(
                text=["Hello world.", "你好"],
                speaker=["vivian", "Eric"],
                language=["English", "Chinese"],
                instruct=["Speak warmly.", ""],
            ),
        ),
        "voice_design": (tiny_voice_design, dict(text=["Hello world."], instruct=["A calm voice."], language=["Auto"])),
        "voice_clone": (
            tiny_base,
            dict(
                text=["Hello world."],
                language=["English"],
                ref_audio=ref,
                ref_sample_rate=16000,
                x_vector_only_mode=True,
            ),
        ),
    }
    for mode, (path, kwargs) in runs.items():
        items = reference.generate(path, mode, **kwargs, **GREEDY, max_new_tokens=6)
        assert len(items) == len(kwargs["text"])
        for item in items:
            assert item["codes"].shape == (5, 16), mode  # eos_scale 0: never stops, max_new_tokens - 1 frames
            assert np.array_equal(item["codes"], item["decoded_codes"])
            assert item["wav"].shape == (5 * 1920,) and np.isfinite(item["wav"]).all()
        again = reference.generate(path, mode, **kwargs, **GREEDY, max_new_tokens=6)
        assert all(np.array_equal(a["codes"], b["codes"]) for a, b in zip(items, again))  # greedy is deterministic


def test_oracle_generate_icl_clone_separates_reference_codes(reference, tiny_base):
    ref = _audio(2.0, sr=24000)
    prompt = reference.voice_clone_prompt(tiny_base, ref, 24000, ref_text="A short reference.")
    assert prompt["icl_mode"] and prompt["ref_code"].shape == (25, 16)
    assert prompt["ref_spk_embedding"].shape == (64,)
    np.testing.assert_allclose(
        prompt["ref_spk_embedding"], reference.speaker_embedding(tiny_base, ref, 24000), rtol=1e-6
    )
    (item,) = reference.generate(
        tiny_base,
        "voice_clone",
        text=["Hello world."],
        language=["English"],
        ref_audio=ref,
        ref_sample_rate=24000,
        ref_text="A short reference.",
        **GREEDY,
        max_new_tokens=4,
        dtype="bfloat16",
    )
    assert item["codes"].shape == (3, 16)
    assert item["decoded_codes"].shape == (28, 16)
    assert np.array_equal(item["decoded_codes"][25:], item["codes"])
    assert abs(item["wav"].shape[0] - 3 * 1920) <= 1  # the wrapper's float crop


def test_oracle_eos_scale_makes_generation_stop(reference, tmp_path):
    path = tc.write_checkpoint(tmp_path / "eos", "voice_design", eos_scale=200.0)
    lengths = [
        item["codes"].shape[0]
        for item in reference.generate(
            path,
            "voice_design",
            text=["Hello world.", "Good morning to you.", "你好", "Bonjour"],
            instruct=["calm"],
            language=["Auto"],
            **GREEDY,
            max_new_tokens=40,
        )
    ]
    assert min(lengths) < 39, lengths  # at least one item met EOS before max_new_tokens


def test_oracle_first_step_probs(reference, tiny_custom_voice):
    out = reference.first_step_probs(
        tiny_custom_voice, "custom_voice", text=["Hello world."], speaker=["ryan"], language=["English"], seed=0
    )
    assert out["call_widths"] == [3072] + [2048] * 15 + [3072]
    talker, predictor = out["talker"], out["predictor"]
    assert talker.shape == (1, 3072) and predictor.shape == (1, 2048)
    np.testing.assert_allclose(talker.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(predictor.sum(-1), 1.0, rtol=1e-5)
    assert (talker > 0).sum() == 50 and (predictor > 0).sum() == 50  # top-k 50
    assert talker[0, 2048:].sum() == 0  # specials suppressed; EOS 2150 has min_new_tokens -inf at step 0
    assert np.array_equal(out["calls"][0], talker) and np.array_equal(out["calls"][1], predictor)


def test_oracle_reports_reference_errors(reference, tiny_base):
    with pytest.raises(OracleError, match="does not support generate_custom_voice"):
        reference.generate(tiny_base, "custom_voice", text=["x"], speaker=["ryan"], max_new_tokens=3)
    assert reference.tokenize(tiny_base, ["<|im_start|>assistant\n"])[0][1] == _config(tiny_base)["assistant_token_id"]


def test_defaults_live_under_the_repository_var_models(monkeypatch):
    # Where `make clean` and docs/deploy.md look for them.
    from tools.random_checkpoints.default_models import default_models_dir

    monkeypatch.delenv("QWEN_TTS_TINY_MODELS_DIR", raising=False)
    assert default_models_dir() == Path(__file__).resolve().parents[2] / "var" / "models"
