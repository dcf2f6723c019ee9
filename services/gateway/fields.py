"""Field paths in errors, named as the public request that caused them names them.

The gateway's dependencies name a bad field after their own messages (the generator's
`config.speaker`, the codec's `content`, the registry's `voice.name`), and the synthesis pipeline,
which DesignVoice shares with the synthesis RPCs, after a `SynthesisConfig` (`config.language`).
`PUBLIC_FIELDS` is the one table of what each is called in each public request, and
`public_error` applies it, in one step from the dependency's name to the public one.
"""

from __future__ import annotations

import grpc

from shared.errors import InvalidArgument, ServiceError, from_rpc_error

# The public request (message name) -> {path as a dependency or the synthesis config names it:
# the request's own}. A path under a key is the public field that carries it
# (`config.cloned_voice.reference_text` is `config.voice.voice_id`), an element of a key's list
# that element of the public list (`voice.tags[3]` is `tags[3]`); a path no key covers is the
# request's already.
_SYNTHESIS_FIELDS = {
    # the generator's GenerateConfig
    "config.speaker": "config.voice.preset_speaker",
    "config.cloned_voice": "config.voice.voice_id",
    "config.max_frames": "config.max_audio_seconds",
    # the registry's GetVoiceRequest (a saved voice)
    "voice_id": "config.voice.voice_id",
}
PUBLIC_FIELDS: dict[str, dict[str, str]] = {
    "SynthesizeRequest": _SYNTHESIS_FIELDS,
    "StreamingSynthesizeRequest": {**_SYNTHESIS_FIELDS, "text": "input.text"},
    "DesignVoiceRequest": {
        # the synthesis config the preview is rendered with, and the generator's GenerateConfig
        "config.voice.design_description": "description",
        "config.instruct": "description",  # where the generator takes the description
        "config.language": "language",
        "config.output_format.encoding": "output_format.encoding",
        "config.output_format.sample_rate_hz": "output_format.sample_rate_hz",
        "config.seed": "seed",
        "text": "preview_text",
    },
    "CreateVoiceRequest": {
        # the codec's EncodeRequest
        "content": "reference_audio.content",
        "pcm_sample_rate_hz": "reference_audio.pcm_sample_rate_hz",
        "pcm_channels": "reference_audio.pcm_channels",
        # the generator's EmbedSpeakerRequest
        "audio": "reference_audio.content",
        # the registry's CreateVoiceRequest
        "voice.name": "name",
        "voice.language": "language",
        "voice.description": "description",
        "voice.tags": "tags",
        "voice.consent_statement": "consent_statement",
        "voice.transcript": "transcript",
    },
}


def public_field(path: str, request: str) -> str:
    """`path` as the public `request` (a message name of PUBLIC_FIELDS) names it."""
    name, bracket, index = path.partition("[")
    for source, public in PUBLIC_FIELDS.get(request, {}).items():
        if name == source:
            return public + bracket + index
        if name.startswith(f"{source}."):
            return public
    return path


def public_error(rpc_error: grpc.aio.AioRpcError, dependency: str, request: str) -> ServiceError:
    """A failed call to `dependency` ("codec", "generator", "registry") made for the public
    `request`, as the error to give the client: the dependency's code, reason and message
    (`shared.errors.from_rpc_error`), its field paths named as `request` names them."""
    error = from_rpc_error(rpc_error, dependency)
    if isinstance(error, InvalidArgument):
        error.violations = [(public_field(field, request), why) for field, why in error.violations]
    return error
