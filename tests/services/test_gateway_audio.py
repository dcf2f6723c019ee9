"""The gateway's output encodings: every encoding decodes back to the model's samples, and a
stream written chunk by chunk equals the clip written whole."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import warnings

import numpy as np
import pytest
import soundfile
import soxr

from qwentts.v1 import audio_pb2
from services.gateway.audio_out import AudioWriter, rate_problem, to_mulaw

E = audio_pb2.AudioEncoding
CHUNKS = [1920, 3840, 7680, 15360, 1000]  # frames of 1, 2, 4, 8, then an odd tail


def _clip(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    noise = np.random.default_rng(seed).normal(0, 0.05, t.shape)
    return (0.5 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def _chunks(writer: AudioWriter, samples: np.ndarray) -> list[bytes]:
    """What the writer returns for `samples` written in the gateway's chunk sizes, then finished."""
    out, start = [], 0
    for size in CHUNKS * 10:
        if start >= len(samples):
            break
        out.append(writer.write(samples[start : start + size]))
        start += size
    out.append(writer.finish())
    return out


def _stream(writer: AudioWriter, samples: np.ndarray) -> bytes:
    return b"".join(_chunks(writer, samples))


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


def _ffmpeg_decode(data: bytes, rate: int, *input_format: str) -> np.ndarray:
    """What ffmpeg makes of `data`: mono float32 samples at `rate` (Opus decodes at 48 kHz)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is needed (.ci/run installs it)"
    done = subprocess.run(
        [ffmpeg, "-v", "error", *input_format, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(rate), "pipe:1"],
        input=data,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(done.stdout, "<f4")


def _best_correlation(decoded: np.ndarray, samples: np.ndarray, max_lag: int) -> float:
    """Pearson correlation of `samples` with `decoded`, at the lag (codec delay) that fits best."""
    n = len(samples) - max_lag
    size = 1 << (len(decoded) + n).bit_length()
    cross = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(samples[:n], size)), size)
    lag = int(np.argmax(cross[:max_lag]))
    return float(np.corrcoef(decoded[lag : lag + n], samples[:n])[0, 1])


def _speech_like(rate: int, seconds: float = 1.5) -> np.ndarray:
    """A gliding tone: no period for a lag search to alias onto."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * np.sin(2 * np.pi * (150 * t + 200 * t * t))).astype(np.float32)


@pytest.mark.parametrize(
    "encoding, rate",
    [
        (E.AUDIO_ENCODING_MP3, 24000),
        (E.AUDIO_ENCODING_MP3, 8000),
        (E.AUDIO_ENCODING_MP3, 44100),
        (E.AUDIO_ENCODING_OGG_OPUS, 24000),
        (E.AUDIO_ENCODING_OGG_OPUS, 48000),
        (E.AUDIO_ENCODING_OGG_OPUS, 16000),
    ],
)
def test_lossy_stream_decodes_with_ffmpeg_and_soundfile_and_whole_file_is_exact_length(encoding, rate):
    samples = _speech_like(24000)
    writer = AudioWriter(encoding, rate)
    chunks = _chunks(writer, samples)
    streamed = b"".join(chunks)
    expected = soxr.resample(samples, 24000, rate, quality="HQ")
    seconds = len(samples) / 24000
    # Audio leaves while it is being made, not all at the end.
    assert sum(map(len, chunks[:-1])) > len(streamed) / 2
    for decoded in (_ffmpeg_decode(streamed, rate), soundfile.read(io.BytesIO(streamed), dtype="float32")[0]):
        # One extra frame and the encoder delay at most (MP3 streams have no Info frame to trim them).
        assert seconds <= len(decoded) / rate <= seconds + 0.25
        assert _best_correlation(decoded, expected, max_lag=int(0.25 * rate)) > 0.95
    whole, whole_rate = soundfile.read(io.BytesIO(writer.whole_file(streamed)), dtype="float32")
    assert whole_rate == rate and len(whole) == len(expected)


def test_every_prefix_of_an_opus_stream_is_playable():
    writer = AudioWriter(E.AUDIO_ENCODING_OGG_OPUS, 24000)
    samples, received = _speech_like(24000), b""
    for start in range(0, len(samples), 1920):  # one 80 ms frame at a time, as the gateway's first chunk
        received += writer.write(samples[start : start + 1920])
        decoded, _ = soundfile.read(io.BytesIO(received), dtype="float32")
        assert len(decoded) > 0, "the first 80 ms already carry audio"
    assert received.startswith(b"OggS")


def test_mp3_prefixes_decode_as_they_grow():
    writer = AudioWriter(E.AUDIO_ENCODING_MP3, 24000)
    samples, received, lengths = _speech_like(24000), b"", []
    for start in range(0, len(samples), 3840):
        received += writer.write(samples[start : start + 3840])
        if received:
            lengths.append(len(_ffmpeg_decode(received, 24000)))
    assert lengths == sorted(lengths) and lengths[-1] > len(samples) / 2


def test_alaw_is_g711_and_decodes_with_ffmpeg():
    samples = np.linspace(-1.2, 1.2, 70001, dtype=np.float32)  # every segment, and clipping
    data = _stream(AudioWriter(E.AUDIO_ENCODING_ALAW, 0), samples)
    assert len(data) == len(samples)  # one byte a sample, no header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    pcm = (np.clip(samples, -1, 1) * 32767).round()
    decoded = np.frombuffer(audioop.alaw2lin(data, 2), "<i2")
    # Within half a quantization step of A-law's segment (16 at the smallest, 1024 at the largest).
    assert np.all(np.abs(decoded - pcm) <= np.maximum(16, np.abs(pcm) / 32) + 1)
    np.testing.assert_array_equal(_ffmpeg_decode(data, 24000, "-f", "alaw", "-ar", "24000"), decoded / 32768)


@pytest.mark.parametrize(
    "encoding, rate, allowed",
    [
        (E.AUDIO_ENCODING_MP3, 22050, True),
        (E.AUDIO_ENCODING_MP3, 20000, False),
        (E.AUDIO_ENCODING_OGG_OPUS, 0, True),
        (E.AUDIO_ENCODING_OGG_OPUS, 22050, False),
        (E.AUDIO_ENCODING_ALAW, 22050, True),
        (E.AUDIO_ENCODING_WAV, 4000, False),
        (E.AUDIO_ENCODING_WAV, 96000, False),
    ],
)
def test_rates_each_encoding_takes(encoding, rate, allowed):
    problem = rate_problem(encoding, rate)
    assert (problem is None) == allowed
    if encoding == E.AUDIO_ENCODING_OGG_OPUS and not allowed:
        assert problem == "OGG_OPUS takes only 8000, 12000, 16000, 24000, 48000 Hz, not 22050"
