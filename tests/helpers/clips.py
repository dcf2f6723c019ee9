"""Reference recordings made up for the tests: voice-like, never silent unless asked, seeded."""

from __future__ import annotations

import io

import numpy as np
import soundfile

RATE = 24000


def reference_wav(seconds: float, seed: int = 0, silent: bool = False) -> bytes:
    """A 24 kHz 16-bit WAV: a few harmonics with vibrato, plus noise (or zeros)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110 + 30 * seed + 8 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    signal = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)) + 0.02 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros_like(t) if silent else signal, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
