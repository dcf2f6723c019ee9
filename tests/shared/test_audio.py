"""shared/audio.py: downmix, resampling (vs librosa soxr_hq), decoding, encoding, validation."""

from __future__ import annotations

import io
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from shared.audio import (
    MODEL_SAMPLE_RATE,
    AudioError,
    decode_audio,
    encode_flac,
    encode_wav,
    prepare_reference_audio,
    resample,
    to_mono,
)

ROOT = Path(__file__).resolve().parents[2]


def _noise(n: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.3 * rng.standard_normal(shape)).astype(np.float32)


def _tone(n: int, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / sample_rate)).astype(np.float32)


# --- to_mono ---------------------------------------------------------------------------------


def test_to_mono_passes_mono_through_as_float32():
    x = np.linspace(-1, 1, 100)
    out = to_mono(x)
    assert out.dtype == np.float32 and out.shape == (100,)
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_to_mono_averages_the_last_axis_after_the_float32_cast():
    x = np.random.default_rng(1).standard_normal((500, 2))  # float64, like a caller might pass
    out = to_mono(x)
    assert out.dtype == np.float32 and out.shape == (500,)
    np.testing.assert_array_equal(out, np.mean(x.astype(np.float32), axis=-1))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(()), "1-D"),
        (np.zeros((10, 2, 2)), "1-D"),
        (np.zeros((2, 1000)), "transpose"),
        (np.zeros((10, 0)), "no channels"),
        (np.zeros(10, dtype=np.int16), "floating point"),
        (np.array(["a", "b"]), "floating point"),
    ],
)
def test_to_mono_rejects_bad_shapes_and_dtypes(bad, match):
    with pytest.raises(AudioError, match=match):
        to_mono(bad)


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


# --- resample --------------------------------------------------------------------------------


def test_resample_same_rate_is_identity():
    x = _noise(1000)
    out = resample(x, 24000, 24000)
    np.testing.assert_array_equal(out, x)
    assert out.dtype == np.float32


@pytest.mark.parametrize("orig_sr, n", [(16000, 16001), (44100, 44100), (48000, 4801), (8000, 3)])
def test_resample_length_is_librosas_ceil(orig_sr, n):
    out = resample(_noise(n), orig_sr, 24000)
    assert out.dtype == np.float32
    assert out.shape == (math.ceil(n * (24000 / orig_sr)),)


def test_resample_length_follows_librosas_float_rounding():
    # librosa sizes the output as ceil(n * (target / orig)); 44100 * (24000 / 44100) is
    # 24000.000000000004 in floating point, so one second at 44.1 kHz becomes 24001 samples, the
    # last one zero padding. The reference does this, so we do too.
    out = resample(_tone(44100, 44100), 44100, 24000)
    assert out.shape == (24001,) and out[-1] == 0.0


def test_resample_keeps_a_tone():
    x = _tone(16000, 16000, 440.0)
    y = resample(x, 16000, 24000)
    expected = _tone(24000, 24000, 440.0)
    # Away from the edges a band-limited resampler reproduces the sine closely.
    assert np.abs(y[1000:-1000] - expected[1000:-1000]).max() < 1e-3


def test_resample_multichannel_resamples_each_channel():
    x = _noise(3001, channels=2)
    y = resample(x, 44100, 24000)
    assert y.shape == (math.ceil(3001 * 24000 / 44100), 2)
    for c in range(2):
        np.testing.assert_array_equal(y[:, c], resample(x[:, c], 44100, 24000))


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16000", None, True])
def test_resample_rejects_bad_rates(rate):
    with pytest.raises(AudioError, match="sample rate"):
        resample(_noise(100), rate, 24000)


def test_resample_rejects_non_finite():
    x = _noise(100)
    x[5] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        resample(x, 16000, 24000)


RESAMPLE_CASES = [  # (orig_sr, target_sr, length)
    (16000, 24000, 16000),
    (16000, 24000, 12347),
    (44100, 24000, 44100),
    (44100, 24000, 10001),
    (48000, 24000, 48000),
    (48000, 24000, 7),
    (22050, 24000, 22051),
    (8000, 24000, 999),
    (24000, 16000, 24001),
    (24000, 44100, 5000),
    (96000, 24000, 96013),
]


@pytest.mark.reference
def test_resample_is_bit_identical_to_librosa_soxr_hq(reference, tmp_path):
    inputs = {f"x{i}": _noise(n, seed=i) for i, (_, _, n) in enumerate(RESAMPLE_CASES)}
    np.savez(tmp_path / "in.npz", **inputs)
    script = f"""
import numpy as np, librosa
cases = {RESAMPLE_CASES!r}
data = np.load({str(tmp_path / "in.npz")!r})
out = {{}}
for i, (orig, target, n) in enumerate(cases):
    out[f"y{{i}}"] = librosa.resample(y=data[f"x{{i}}"], orig_sr=orig, target_sr=target, res_type="soxr_hq")
np.savez({str(tmp_path / "out.npz")!r}, **out)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(reference.python), "-c", script], check=True, timeout=300, env=env, cwd=ROOT)
    expected = np.load(tmp_path / "out.npz")
    for i, (orig, target, _) in enumerate(RESAMPLE_CASES):
        ours = resample(inputs[f"x{i}"], orig, target)
        theirs = expected[f"y{i}"]
        assert ours.dtype == theirs.dtype == np.float32
        assert ours.shape == theirs.shape, (orig, target)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{orig}->{target}")


# --- decode / encode -------------------------------------------------------------------------


def _write(audio: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("sample_rate", [16000, 24000, 44100])
def test_wav_and_flac_round_trip(sample_rate):
    x = _tone(sample_rate // 2, sample_rate)
    for data, magic in ((encode_wav(x, sample_rate), b"RIFF"), (encode_flac(x, sample_rate), b"fLaC")):
        assert data[:4] == magic
        y, sr = decode_audio(data)
        assert sr == sample_rate and y.dtype == np.float32 and y.shape == x.shape
        assert np.abs(y - x).max() <= 1 / 32768 + 1e-7  # 16-bit quantisation


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_lossy_formats_decode(fmt, subtype):
    x = _tone(24000, 24000, 440.0)
    y, sr = decode_audio(_write(x, 24000, fmt, subtype))
    assert sr == 24000 and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 2400
    # A lossy codec keeps a pure tone: compare spectra, not samples (codec delay).
    spectrum = np.abs(np.fft.rfft(y[:16000] * np.hanning(16000)))
    peak_hz = np.argmax(spectrum) * 24000 / 16000
    assert abs(peak_hz - 440.0) < 3.0
    assert 0.3 < np.abs(y).max() < 0.7


def test_stereo_file_is_downmixed():
    x = np.stack([_tone(4800, 24000, 440.0), _tone(4800, 24000, 660.0)], axis=1)
    data = encode_wav(x, 24000)
    y, sr = decode_audio(data)
    stereo, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    np.testing.assert_array_equal(y, stereo.mean(axis=-1))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"not audio at all" * 20, "could not decode"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "could not decode"),
        ("a string", "must be bytes"),
    ],
)
def test_decode_rejects_garbage(data, match):
    with pytest.raises(AudioError, match=match):
        decode_audio(data)


def test_decode_rejects_truncated_flac():
    data = encode_flac(_tone(24000, 24000), 24000)
    with pytest.raises(AudioError):
        decode_audio(data[:30])


def test_decode_rejects_a_file_without_samples():
    with pytest.raises(AudioError, match="no samples"):
        decode_audio(encode_wav(np.zeros(0, np.float32), 24000))


def test_decode_accepts_bytearray_and_memoryview():
    data = encode_wav(_tone(2400, 24000), 24000)
    a, _ = decode_audio(bytearray(data))
    b, _ = decode_audio(memoryview(data))
    np.testing.assert_array_equal(a, b)


def test_encode_rejects_bad_input():
    with pytest.raises(AudioError, match="sample rate"):
        encode_wav(_tone(10, 24000), 0)
    with pytest.raises(AudioError, match="shape"):
        encode_flac(np.zeros((2, 2, 2), np.float32), 24000)


# --- prepare_reference_audio -----------------------------------------------------------------


def test_prepare_reference_audio_24k_mono_is_unchanged():
    x = _noise(2400)
    np.testing.assert_array_equal(prepare_reference_audio(x, 24000), x)
    assert MODEL_SAMPLE_RATE == 24000


def test_prepare_reference_audio_downmixes_then_resamples():
    x = _noise(4410, channels=2).astype(np.float64)
    out = prepare_reference_audio(x, 44100)
    np.testing.assert_array_equal(out, resample(np.mean(x.astype(np.float32), axis=-1), 44100, 24000))
    assert out.dtype == np.float32 and out.shape == (2400,)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_prepare_reference_audio_rejects_non_finite(value):
    x = _noise(2400)
    x[100] = value
    with pytest.raises(AudioError, match="NaN or infinite"):
        prepare_reference_audio(x, 24000)


@pytest.mark.parametrize("empty", [np.zeros(0, np.float32), np.zeros((0, 2), np.float32)])
def test_prepare_reference_audio_rejects_empty(empty):
    with pytest.raises(AudioError, match="empty"):
        prepare_reference_audio(empty, 16000)


def test_prepare_reference_audio_rejects_bad_rate():
    with pytest.raises(AudioError, match="sample rate"):
        prepare_reference_audio(_noise(100), 0)
