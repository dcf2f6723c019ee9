"""The gateway's output encodings: every encoding decodes back to the model's samples, and a
stream written chunk by chunk equals the clip written whole."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
import soundfile
import soxr

from qwentts.v1 import audio_pb2
from services.gateway.audio_out import AudioWriter, to_mulaw

E = audio_pb2.AudioEncoding
CHUNKS = [1920, 3840, 7680, 15360, 1000]  # frames of 1, 2, 4, 8, then an odd tail


def _clip(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    noise = np.random.default_rng(seed).normal(0, 0.05, t.shape)
    return (0.5 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def _stream(writer: AudioWriter, samples: np.ndarray) -> bytes:
    out, start = [], 0
    for size in CHUNKS * 10:
        if start >= len(samples):
            break
        out.append(writer.write(samples[start : start + size]))
        start += size
    out.append(writer.finish())
    return b"".join(out)


def _flac_with_length(data: bytes, total: int) -> bytes:
    """Fill STREAMINFO's "total samples" (36 bits at byte 21.5), which a stream leaves unknown
    (0) and libsndfile's reader needs."""
    data = bytearray(data)
    value = int.from_bytes(data[21:26], "big")
    data[21:26] = ((value & ~((1 << 36) - 1)) | total).to_bytes(5, "big")
    return bytes(data)


def test_pcm16_and_f32_round_trip():
    samples = _clip()
    pcm = np.frombuffer(_stream(AudioWriter(E.AUDIO_ENCODING_PCM16, 0), samples), "<i2")
    np.testing.assert_allclose(pcm / 32767, samples, atol=1 / 32767)
    f32 = np.frombuffer(_stream(AudioWriter(E.AUDIO_ENCODING_PCM_F32, 24000), samples), "<f4")
    np.testing.assert_array_equal(f32, samples)


def test_unspecified_means_pcm16_at_24k():
    writer = AudioWriter(E.AUDIO_ENCODING_UNSPECIFIED, 0)
    assert (writer.encoding, writer.sample_rate) == (E.AUDIO_ENCODING_PCM16, 24000)


def test_mulaw_matches_g711():
    samples = np.linspace(-1.2, 1.2, 70001, dtype=np.float32)  # every segment, and clipping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the stdlib G.711 encoder, available up to Python 3.12

    pcm = (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
    assert to_mulaw(samples) == audioop.lin2ulaw(pcm, 2)


def test_wav_stream_header_then_pcm_and_whole_file_has_sizes():
    samples = _clip()
    writer = AudioWriter(E.AUDIO_ENCODING_WAV, 0)
    streamed = _stream(writer, samples)
    assert streamed[:4] == b"RIFF" and struct.unpack("<I", streamed[4:8])[0] == 0xFFFFFFFF
    whole = writer.whole_file(streamed)
    decoded, rate = soundfile.read(io.BytesIO(whole), dtype="float32")
    assert rate == 24000 and len(decoded) == len(samples)
    np.testing.assert_allclose(decoded, samples, atol=2 / 32767)


def test_wav_without_audio_is_still_a_header():
    writer = AudioWriter(E.AUDIO_ENCODING_WAV, 0)
    data = writer.finish()
    assert len(data) == 44 and data[:4] == b"RIFF"


def test_flac_stream_decodes_and_whole_file_is_complete():
    samples = _clip()
    writer = AudioWriter(E.AUDIO_ENCODING_FLAC, 0)
    streamed = _stream(writer, samples)
    assert streamed[:4] == b"fLaC"
    decoded, rate = soundfile.read(io.BytesIO(_flac_with_length(streamed, len(samples))), dtype="float32")
    assert rate == 24000
    np.testing.assert_allclose(decoded, samples, atol=2 / 32767)
    whole, _ = soundfile.read(io.BytesIO(writer.whole_file(streamed)), dtype="float32")
    np.testing.assert_array_equal(whole, decoded)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resampling_in_chunks_equals_resampling_whole(rate):
    samples = _clip()
    streamed = np.frombuffer(_stream(AudioWriter(E.AUDIO_ENCODING_PCM_F32, rate), samples), "<f4")
    whole = soxr.resample(samples, 24000, rate, quality="HQ")
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=1e-5)
