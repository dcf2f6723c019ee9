"""Codec frames on the wire (`qwentts.codec.v1.Frames`, packed codes) <-> numpy (frames, 16)."""

from __future__ import annotations

import numpy as np

from qwentts.codec.v1 import codec_pb2


def frames_to_array(frames: codec_pb2.Frames) -> np.ndarray:
    """(num_frames, num_quantizers) int64; ValueError if the message is inconsistent."""
    n, q = frames.num_frames, frames.num_quantizers
    if len(frames.codes) != n * q:
        raise ValueError(f"frames: {len(frames.codes)} codes for {n} frames of {q} codebooks")
    return np.asarray(frames.codes, dtype=np.int64).reshape(n, q)


def array_to_frames(codes: np.ndarray) -> codec_pb2.Frames:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"frames must be (num_frames, num_quantizers), got shape {codes.shape}")
    return codec_pb2.Frames(
        num_frames=codes.shape[0], num_quantizers=codes.shape[1], codes=codes.astype(np.uint32).ravel().tolist()
    )


def array_to_samples(audio: np.ndarray, sample_rate: int) -> codec_pb2.Samples:
    """`Samples` of a mono float waveform."""
    return codec_pb2.Samples(sample_rate_hz=sample_rate, samples_f32le=np.asarray(audio).astype("<f4").tobytes())


def samples_to_array(samples: codec_pb2.Samples) -> np.ndarray:
    """The float32 waveform of `Samples` (read-only: it shares the message's bytes)."""
    return np.frombuffer(samples.samples_f32le, dtype="<f4")
