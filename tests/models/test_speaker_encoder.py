"""models/qwen3_tts/modeling_speaker_encoder.py: mel front end, network, limits, parity with qwen-tts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, load_module_weights, read_safetensors
from models.qwen3_tts.configuration_qwen3_tts import Qwen3TTSConfig, Qwen3TTSSpeakerEncoderConfig
from models.qwen3_tts.modeling_speaker_encoder import (
    Qwen3TTSSpeakerEncoder,
    load_speaker_encoder,
    mel_filterbank,
    mel_frames,
    mel_spectrogram,
)
from shared.audio import AudioError

ROOT = Path(__file__).resolve().parents[2]
RATES = (24000, 16000, 44100, 48000)
TOLERANCE = 1e-4


def _speech_like(seconds: float, sample_rate: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    """Deterministic noise shaped by a slow envelope, peak well inside [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + seed)
    shape = (n,) if channels is None else (n, channels)
    noise = rng.standard_normal(shape)
    if channels is not None:
        envelope = envelope[:, None]
    return (0.2 * envelope * noise).astype(np.float32)


def _run_reference_python(reference, script: str, timeout: int = 600) -> None:
    """Run a script with the reference environment's interpreter (librosa, qwen_tts)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(reference.python), "-c", script], check=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_base) -> Qwen3TTSSpeakerEncoder:
    return load_speaker_encoder(tiny_base)


# --- mel front end ---------------------------------------------------------------------------


def test_mel_filterbank_shape_and_slaney_normalisation():
    basis = mel_filterbank()
    assert basis.shape == (128, 513) and basis.dtype == np.float32
    assert (basis >= 0).all() and (basis.max(axis=1) > 0).all()
    # Slaney normalisation: each triangle has unit area in Hz (height 2 / base width); sampled at
    # the 23.4 Hz bin spacing the sums come within ~10% of 1 (narrow low filters are coarsest).
    areas = basis.sum(axis=1) * (24000 / 1024)
    assert np.allclose(areas, 1.0, atol=0.1)
    assert np.allclose(areas[96:], 1.0, atol=0.01)


def test_mel_spectrogram_shape_and_frames():
    for n in (385, 1280, 24000, 24001, 36011):
        mel = mel_spectrogram(torch.zeros(2, n))
        assert mel.shape == (2, n // 256, 128) == (2, mel_frames(n), 128)
        assert mel.dtype == torch.float32
    silent = mel_spectrogram(torch.zeros(1, 2400))
    # sqrt(1e-9) per bin, summed by the filters, stays below the 1e-5 clamp: log(1e-5).
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(1e-5))))


def test_mel_spectrogram_rejects_bad_input():
    with pytest.raises(ValueError, match="batch, samples"):
        mel_spectrogram(torch.zeros(1000))
    with pytest.raises(ValueError, match="more than 384 samples"):
        mel_spectrogram(torch.zeros(1, 384))


@pytest.mark.reference
def test_mel_filterbank_and_spectrogram_match_the_reference(reference, tmp_path):
    wavs = {f"w{i}": _speech_like(s, 24000, seed=i) for i, s in enumerate((0.05, 1.0, 2.345))}
    wavs["loud"] = (3.0 * _speech_like(0.5, 24000, seed=9)).astype(np.float32)  # outside [-1, 1]
    np.savez(tmp_path / "in.npz", **wavs)
    _run_reference_python(
        reference,
        f"""
import numpy as np, torch, librosa
from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram
data = np.load({str(tmp_path / "in.npz")!r})
out = {{"basis": librosa.filters.mel(sr=24000, n_fft=1024, n_mels=128, fmin=0, fmax=12000)}}
for k in data.files:
    out[k] = mel_spectrogram(torch.from_numpy(data[k]).unsqueeze(0), n_fft=1024, num_mels=128,
                             sampling_rate=24000, hop_size=256, win_size=1024, fmin=0,
                             fmax=12000).transpose(1, 2).numpy()
np.savez({str(tmp_path / "out.npz")!r}, **out)
""",
    )
    expected = np.load(tmp_path / "out.npz")
    assert np.abs(mel_filterbank() - expected["basis"]).max() <= 1e-7
    for k, wav in wavs.items():
        ours = mel_spectrogram(torch.from_numpy(wav).unsqueeze(0)).numpy()
        assert ours.shape == expected[k].shape
        assert np.abs(ours - expected[k]).max() <= 1e-5, k


# --- network structure and loading ------------------------------------------------------------


def test_state_dict_keys_are_the_checkpoint_keys(tiny_base):
    tensors = read_safetensors(tiny_base / "model.safetensors")
    config = Qwen3TTSConfig.from_file(tiny_base / "config.json").speaker_encoder
    encoder = Qwen3TTSSpeakerEncoder(config)
    checkpoint_keys = {k[len("speaker_encoder.") :] for k in tensors if k.startswith("speaker_encoder.")}
    assert set(encoder.state_dict()) == checkpoint_keys
    load_module_weights(encoder, tensors, "speaker_encoder.", tiny_base / "model.safetensors")
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, tensors["speaker_encoder." + name].float())


def test_released_architecture_key_set():
    encoder = Qwen3TTSSpeakerEncoder(Qwen3TTSSpeakerEncoderConfig(enc_dim=1024))
    keys = set(encoder.state_dict())
    assert len(keys) == 76
    for expected in (
        "blocks.0.conv.weight",
        "blocks.3.res2net_block.blocks.6.conv.bias",
        "blocks.2.se_block.conv2.weight",
        "mfa.conv.weight",
        "asp.tdnn.conv.weight",
        "asp.conv.bias",
        "fc.weight",
    ):
        assert expected in keys
    assert encoder.asp.tdnn.conv.weight.shape == (128, 4608, 1)
    assert encoder.fc.weight.shape == (1024, 3072, 1)
    assert encoder.blocks[2].res2net_block.blocks[0].conv.dilation == (3,)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in encoder.modules())


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"enc_channels": (32, 32, 32, 96), "enc_kernel_sizes": (5, 3, 3, 3, 1)}, "same length"),
        ({"enc_channels": (32, 32, 32, 32, 64)}, "concatenated"),
        ({"sample_rate": 16000}, "24000 Hz"),
        ({"enc_channels": (32, 36, 36, 36, 108)}, "residual"),
        ({"enc_channels": (36, 36, 36, 36, 108)}, "divisible"),
    ],
)
def test_config_errors(changes, match):
    base = dict(enc_dim=16, enc_channels=(32, 32, 32, 32, 96), enc_attention_channels=8, enc_se_channels=8)
    with pytest.raises(ValueError, match=match):
        Qwen3TTSSpeakerEncoder(Qwen3TTSSpeakerEncoderConfig(**{**base, **changes}))


def test_load_speaker_encoder_rejects_a_checkpoint_without_one(tiny_base, tmp_path):
    config = json.loads((tiny_base / "config.json").read_text())
    config["tts_model_type"] = "custom_voice"
    config.pop("speaker_encoder_config", None)
    config["talker_config"].setdefault("spk_id", {"x": 3000})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no speaker encoder"):
        load_speaker_encoder(tmp_path)


# --- embed: limits and errors -----------------------------------------------------------------


def test_minimum_duration_of_the_released_architecture():
    encoder = Qwen3TTSSpeakerEncoder(Qwen3TTSSpeakerEncoderConfig(enc_dim=1024))
    # dilation 4, k=3 reflect-pads 4 frames per side: >= 5 frames = 5 * 256 samples.
    assert encoder.min_frames == 5
    assert encoder.min_samples == 1280
    assert encoder.min_duration_s == pytest.approx(1280 / 24000)


def test_embed_at_and_below_the_minimum(tiny_encoder):
    n = tiny_encoder.min_samples
    ok = tiny_encoder.embed(_speech_like(n / 24000, 24000), 24000)
    assert ok.shape == (tiny_encoder.config.enc_dim,) and torch.isfinite(ok).all()
    with pytest.raises(AudioError, match=r"too short.*at least 0\.0533 s \(1280 samples"):
        tiny_encoder.embed(_speech_like((n - 1) / 24000, 24000), 24000)
    # The floor applies after resampling: 0.05 s at 16 kHz is 1200 samples at 24 kHz.
    with pytest.raises(AudioError, match="too short"):
        tiny_encoder.embed(_speech_like(0.05, 16000), 16000)
    with pytest.raises(ValueError, match="too few"):
        tiny_encoder(torch.zeros(1, 4, 128))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_embed_rejects_non_finite(tiny_encoder, value):
    audio = _speech_like(1.0, 24000)
    audio[1234] = value
    with pytest.raises(AudioError, match="NaN or infinite"):
        tiny_encoder.embed(audio, 24000)


def test_embed_rejects_empty_and_misshapen(tiny_encoder):
    with pytest.raises(AudioError, match="empty"):
        tiny_encoder.embed(np.zeros(0, np.float32), 24000)
    with pytest.raises(AudioError, match="transpose"):
        tiny_encoder.embed(np.zeros((2, 24000), np.float32), 24000)


def test_embed_bfloat16_runs_and_stays_close(tiny_base):
    audio = _speech_like(1.0, 24000, seed=3)
    full = load_speaker_encoder(tiny_base, dtype="float32").embed(audio, 24000)
    half = load_speaker_encoder(tiny_base, dtype="bfloat16").embed(audio, 24000)
    assert half.dtype == torch.bfloat16 and half.shape == full.shape
    assert torch.isfinite(half).all()
    relative = (half.float() - full).norm() / full.norm()
    assert relative < 0.05


def test_forward_batches_equal_single_items(tiny_encoder):
    wavs = torch.from_numpy(np.stack([_speech_like(0.5, 24000, seed=s) for s in (1, 2)]))
    mels = mel_spectrogram(wavs)
    with torch.no_grad():
        batched = tiny_encoder(mels)
        single = torch.cat([tiny_encoder(mels[i : i + 1]) for i in range(2)])
    assert torch.allclose(batched, single, atol=1e-5)


# --- parity with the reference (create_voice_clone_prompt, x_vector_only_mode) -----------------


def _check_parity(reference, checkpoint: Path, encoder: Qwen3TTSSpeakerEncoder, audio: np.ndarray, rate: int):
    ours = encoder.embed(audio, rate).numpy()
    theirs = reference.speaker_embedding(checkpoint, audio, rate, dtype="float32")
    assert ours.shape == theirs.shape == (encoder.config.enc_dim,)
    diff = float(np.abs(ours - theirs).max())
    assert diff <= TOLERANCE, f"rate {rate}: max abs diff {diff}"
    return diff


@pytest.mark.reference
@pytest.mark.parametrize("rate", RATES)
def test_embedding_matches_reference_tiny(reference, tiny_base, tiny_encoder, rate):
    _check_parity(reference, tiny_base, tiny_encoder, _speech_like(1.3, rate, seed=rate), rate)


@pytest.mark.reference
def test_embedding_matches_reference_tiny_stereo(reference, tiny_base, tiny_encoder):
    stereo = _speech_like(1.1, 44100, seed=7, channels=2)
    ours = tiny_encoder.embed(stereo, 44100)
    # The reference averages (T, C) over the last axis after a float32 cast.
    mono = np.mean(stereo.astype(np.float32), axis=-1)
    theirs = reference.speaker_embedding(tiny_base, mono, 44100, dtype="float32")
    assert float(np.abs(ours.numpy() - theirs).max()) <= TOLERANCE


@pytest.mark.reference
def test_embedding_bfloat16_matches_reference_bfloat16(reference, tiny_base):
    # The mel is float32 in both, then cast; the pooling forms 1/T in bfloat16 like the reference.
    encoder = load_speaker_encoder(tiny_base, dtype="bfloat16")
    audio = _speech_like(1.2, 16000, seed=5)
    ours = encoder.embed(audio, 16000).float().numpy()
    theirs = reference.speaker_embedding(tiny_base, audio, 16000, dtype="bfloat16")
    assert np.abs(ours - theirs).max() <= 2**-8 * np.abs(theirs).max()  # within a bfloat16 ulp


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("size", ["0.6b", "1.7b"])
def test_embedding_matches_reference_real_width(reference, real_width, size):
    checkpoint = real_width("base", size)
    encoder = load_speaker_encoder(checkpoint)
    assert encoder.config.enc_dim == {"0.6b": 1024, "1.7b": 2048}[size]
    for rate in RATES:
        _check_parity(reference, checkpoint, encoder, _speech_like(2.0, rate, seed=rate + 1), rate)
    stereo = _speech_like(1.5, 48000, seed=11, channels=2)
    theirs = reference.speaker_embedding(checkpoint, np.mean(stereo, axis=-1), 48000, dtype="float32")
    assert float(np.abs(encoder.embed(stereo, 48000).numpy() - theirs).max()) <= TOLERANCE
