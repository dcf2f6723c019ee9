"""Audio helpers shared by the services: decoding, mono downmix, resampling, encoding.

Conventions (those of the reference `qwen-tts` package, see the architecture spec §8.2):

* waveforms are float32 numpy arrays, shaped (T,) for mono or (T, C) for C channels;
* multi-channel audio is downmixed by averaging over the last axis, after the cast to float32;
* no normalisation, clipping or trimming is applied;
* resampling is libsoxr's "HQ" quality, called exactly as `librosa.resample(res_type="soxr_hq")`
  calls it (including librosa's fix of the output length to ceil(T * target / orig) samples), so
  the results are bit-identical to the reference without depending on librosa.

Every problem with user-supplied audio raises `AudioError`, a `ValueError`, with a message meant for
the person who sent the audio.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
import soxr

MODEL_SAMPLE_RATE = 24000
"""The rate of the 12 Hz codec and of the speaker encoder's front end."""
FRAME_RATE = 12.5
"""Codec frames per second of audio (1,920 samples at MODEL_SAMPLE_RATE each)."""
INPUT_SAMPLE_RATES = (8000, 192000)
"""Inclusive bounds on the rate of audio a caller sends (raw PCM, or a decoded file)."""


class AudioError(ValueError):
    """Audio that cannot be decoded or used: undecodable bytes, empty, non-finite, bad shape."""


def _check_sample_rate(sample_rate, what: str = "sample rate") -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer)):
        if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
            sample_rate = int(sample_rate)
        else:
            raise AudioError(f"{what} must be a positive integer number of Hz, got {sample_rate!r}")
    if sample_rate <= 0:
        raise AudioError(f"{what} must be a positive integer number of Hz, got {sample_rate}")
    return int(sample_rate)


def _as_float32(audio) -> np.ndarray:
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(
            f"audio samples must be floating point (nominally in [-1, 1]), got dtype {audio.dtype}; "
            "scale integer PCM first"
        )
    return audio.astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """A float32 (T,) waveform from a (T,) or (T, C) array; channels are averaged (last axis)."""
    audio = _as_float32(audio)
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        samples, channels = audio.shape
        if channels == 0:
            raise AudioError("audio has shape (T, 0): no channels")
        if channels > samples > 0:
            raise AudioError(
                f"audio has shape {audio.shape}, read as {samples} samples of {channels} channels; "
                "multi-channel audio must be laid out (samples, channels) - transpose it"
            )
        return audio.mean(axis=-1)
    raise AudioError(f"audio must be a 1-D (samples,) or 2-D (samples, channels) array, got shape {audio.shape}")


def _resample_mono(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    # librosa.resample(res_type="soxr_hq", fix=True): soxr at HQ quality, then the output is cut or
    # zero-padded to ceil(T * ratio) samples, with the ratio computed exactly as librosa does.
    length = int(np.ceil(audio.shape[0] * (float(target_sr) / orig_sr)))
    out = soxr.resample(np.ascontiguousarray(audio), orig_sr, target_sr, quality="soxr_hq")
    if out.shape[0] > length:
        out = out[:length]
    elif out.shape[0] < length:
        out = np.pad(out, (0, length - out.shape[0]))
    return np.asarray(out, dtype=np.float32)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a float32 (T,) or (T, C) waveform along time; equal to librosa's soxr_hq resample.

    Returns the input (as float32) when the rates are equal. Channels are resampled one by one.
    """
    orig_sr = _check_sample_rate(orig_sr, "original sample rate")
    target_sr = _check_sample_rate(target_sr, "target sample rate")
    audio = _as_float32(audio)
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and audio.shape[1] == 0):
        raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    if orig_sr == target_sr:
        return audio
    if audio.ndim == 1:
        return _resample_mono(audio, orig_sr, target_sr)
    channels = [_resample_mono(audio[:, c], orig_sr, target_sr) for c in range(audio.shape[1])]
    return np.stack(channels, axis=1)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 (anything libsndfile reads) bytes to (float32 mono, sample rate)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"audio data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioError("audio data is empty")
    try:
        audio, sample_rate = soundfile.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=False)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        detail = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        raise AudioError(
            f"could not decode audio ({len(data)} bytes; WAV, FLAC, OGG and MP3 are supported): {detail}"
        ) from None
    audio = to_mono(audio)
    if audio.shape[0] == 0:
        raise AudioError("decoded audio has no samples")
    if not np.isfinite(audio).all():
        raise AudioError("decoded audio contains NaN or infinite samples")
    return audio, int(sample_rate)


def _encode(audio: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> bytes:
    sample_rate = _check_sample_rate(sample_rate)
    audio = _as_float32(audio)
    if audio.ndim not in (1, 2):
        raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {audio.shape}")
    buffer = io.BytesIO()
    # libsndfile clips float input to [-1, 1] when writing integer PCM.
    soundfile.write(buffer, audio, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of a float waveform in [-1, 1] ((T,) or (T, C))."""
    return _encode(audio, sample_rate, "WAV", "PCM_16")


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC bytes of a float waveform in [-1, 1] ((T,) or (T, C))."""
    return _encode(audio, sample_rate, "FLAC", "PCM_16")


def prepare_reference_audio(audio: np.ndarray, sample_rate: int, target_sr: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """A reference recording as the models take it: float32, mono, at `target_sr` (24 kHz).

    Cast to float32, average the channels of (T, C) input, check that there are samples and that
    all are finite, then resample as the reference does (librosa soxr_hq).
    """
    sample_rate = _check_sample_rate(sample_rate)
    mono = to_mono(audio)
    if mono.shape[0] == 0:
        raise AudioError("reference audio is empty")
    if not np.isfinite(mono).all():
        raise AudioError("reference audio contains NaN or infinite samples")
    return resample(mono, sample_rate, target_sr)
