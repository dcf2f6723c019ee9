"""Every bound a request is checked against, in one place, so that no request can hurt another.

The gateway checks these before any model work and the services behind it check them again (they
are reachable on their own inside the cluster). docs/limits.md lists them for clients.

Sampling values arrive as float32 on the wire, so ``inf``, ``nan`` and denormals such as 1e-40 are
all possible; each must be finite and inside its range, because a temperature of 1e-40 or a
repetition penalty of 1e-40 turns every score into inf/NaN.
"""

from __future__ import annotations

import math

# Sampling: field -> (lowest, highest, inclusive low). top_k has no upper bound: values above the
# vocabulary keep every code. 0 disables top-k.
SAMPLING_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.01, 10.0, True),
    "top_p": (0.0, 1.0, False),
    "repetition_penalty": (0.1, 10.0, True),
}


def sampling_problem(name: str, value: float | int | bool) -> str | None:
    """What is wrong with one sampling value, or None; `name` as in the proto (temperature, ...)."""
    if name == "top_k":
        return None if value >= 0 else "must be >= 0 (0 disables top-k)"
    if name not in SAMPLING_RANGES:
        return None  # do_sample
    low, high, low_inclusive = SAMPLING_RANGES[name]
    if not math.isfinite(value):
        return "must be a finite number"
    if (value < low if low_inclusive else value <= low) or value > high:
        opening = "[" if low_inclusive else "("
        return f"must be in {opening}{low:g}, {high:g}]"
    return None


# Characters (code points) of the free-text fields a caller sends.
MAX_TEXT_CHARS = 10_000  # one synthesis (GATEWAY_MAX_TEXT_CHARS may lower it)
MAX_INSTRUCT_CHARS = 1_000  # a style instruction
MAX_DESCRIPTION_CHARS = 1_000  # a voice design description, and a saved voice's description
MAX_TRANSCRIPT_CHARS = 2_000  # a reference transcript, and a design preview's text
MAX_ID_CHARS = 128  # voice ids, preview ids, model names, speaker names, languages, request ids
MAX_PAGE_TOKEN_CHARS = 512
# A saved voice's text fields, and its tags.
VOICE_FIELD_CHARS = {
    "name": 100,
    "language": 64,
    "description": MAX_DESCRIPTION_CHARS,
    "consent_statement": 2_000,
    "transcript": MAX_TRANSCRIPT_CHARS,
}
MAX_TAGS, MAX_TAG_CHARS = 32, 64
# Prompt tokens: a long instruct or transcript of dense script can be many tokens per character.
MAX_INSTRUCT_TOKENS = 512
MAX_TRANSCRIPT_TOKENS = 2_048
# A reference clip's file (the gateway refuses more; the web service refuses larger uploads).
MAX_REFERENCE_BYTES = 10_000_000
# A reference clip's codec frames (60 s at 12.5 frames/s).
MAX_REFERENCE_FRAMES = 750
# Any gRPC message, each way: 16 MiB instead of gRPC's 4 MiB receive default, since a unary
# Synthesize response or a CreateVoice reference clip can exceed 4 MiB (24 kHz 16-bit mono PCM is
# ~2.8 MiB per minute). Streams carry small chunks. Clients must raise their receive limit to match.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Voices listed per page: when the caller asks for none, and at most.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100

# How much of a caller's value an error message may quote.
QUOTE_CHARS = 64


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` for an error message: repr'd, and cut to `limit` characters with an ellipsis, so
    that an error never echoes more than a short prefix of what the caller sent."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value)} characters)"
