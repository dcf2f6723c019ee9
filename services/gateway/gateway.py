"""What the gateway's servicers and its synthesis pipeline share: the `Gateway`.

It holds the generator pools (`Router`), the codec stub, the voice catalogue (the registry
client), the tenancy (API keys) and the limits, and it checks a synthesis config and text
against those limits before any model work. `build` (service.py) makes one; both servicers
(service.py, voices.py) and every `Synthesis` (pipeline.py) are handed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qwentts.codec.v1 import codec_pb2_grpc
from qwentts.v1 import audio_pb2, tts_pb2
from shared.errors import InvalidArgument
from shared.limits import MAX_DESCRIPTION_CHARS, MAX_ID_CHARS, MAX_INSTRUCT_CHARS, sampling_problem

from .audio_out import rate_problem
from .catalogue import Catalogue
from .fields import public_field
from .routing import Router
from .tenancy import Tenancy


@dataclass(frozen=True)
class Limits:
    """The bounds on one request's work that the deployment sets (GatewayConfig)."""

    max_text_chars: int  # of one synthesis, or of one stream in total
    max_audio_seconds: float  # of one synthesis: longer audio is cut (finish reason MAX_LENGTH)
    chunk_frames: tuple[int, ...]  # frames per audio chunk; the last repeats


@dataclass(frozen=True)
class Gateway:
    router: Router
    codec: codec_pb2_grpc.CodecServiceStub
    catalogue: Catalogue
    tenancy: Tenancy
    limits: Limits

    def check_config(self, config: tts_pb2.SynthesisConfig, request: str) -> None:
        """Raise InvalidArgument naming the bad fields as the public `request` (its message name)
        names them (fields.py).

        Everything the generator would refuse, and every bound on the work a request may cause
        (shared/limits.py), is checked here before any model work. (A config the generator
        refuses while the gateway is still sending text could also lose its status to a grpc.aio
        race, grpc/grpc#36066.)"""
        violations = []  # (path in the config, problem)
        fmt = config.output_format
        if fmt.encoding not in audio_pb2.AudioEncoding.values():
            violations.append(("output_format.encoding", f"unknown encoding {fmt.encoding}"))
        elif problem := rate_problem(fmt.encoding, fmt.sample_rate_hz):
            violations.append(("output_format.sample_rate_hz", problem))
        if not (math.isfinite(config.max_audio_seconds) and config.max_audio_seconds >= 0):
            violations.append(("max_audio_seconds", "must be a number >= 0 (0 means the server's limit)"))
        if config.predictor_sampling.HasField("repetition_penalty"):
            violations.append(("predictor_sampling.repetition_penalty", "the code predictor has no repetition penalty"))
        for name in ("sampling", "predictor_sampling"):
            for value_field, value in getattr(config, name).ListFields():
                problem = sampling_problem(value_field.name, value)
                if problem:
                    violations.append((f"{name}.{value_field.name}", problem))
        voice = config.voice
        for path, value, limit in (
            ("instruct", config.instruct, MAX_INSTRUCT_CHARS),
            ("voice.design_description", voice.design_description, MAX_DESCRIPTION_CHARS),
            ("voice.voice_id", voice.voice_id, MAX_ID_CHARS),
            ("voice.preset_speaker", voice.preset_speaker, MAX_ID_CHARS),
            ("model", config.model, MAX_ID_CHARS),
            ("language", config.language, MAX_ID_CHARS),
        ):
            if len(value) > limit:
                violations.append((path, f"has {len(value)} characters; at most {limit} are accepted"))
        if violations:
            violations = [(public_field(f"config.{path}", request), why) for path, why in violations]
            raise InvalidArgument(
                "invalid synthesis config: " + "; ".join(f"{f}: {d}" for f, d in violations),
                violations,
                reason="INVALID_CONFIG",
            )

    def check_text(self, text: str, field: str) -> None:
        """Text known up front: something to speak, within the limit."""
        if not text.strip():
            raise empty_text(field)
        if len(text) > self.limits.max_text_chars:
            raise InvalidArgument(
                f"the text has {len(text)} characters; the limit is {self.limits.max_text_chars}",
                [(field, "too long")],
                reason="TEXT_TOO_LONG",
            )


def empty_text(field: str) -> InvalidArgument:
    return InvalidArgument("there is no text to speak", [(field, "empty")], reason="EMPTY_TEXT")
