"""The caller's voice catalogue over HTTP, in the shape of OpenAI's `/v1/audio/voices`.

    GET    /v1/audio/voices                  the presets, then the saved voices, page by page
    POST   /v1/audio/voices                  save a voice (multipart form, or JSON without a file):
             type=audio_sample (default): audio_sample (file), name, consent, transcript, language
             type=prompt: name, prompt (a description), script_hint (what the preview says): design and save
             type=preview: name, preview_id (from /v1/audio/voices/design): save a designed voice
    POST   /v1/audio/voices/design           a preview of a voice described in words, to listen to first
    GET    /v1/audio/voices/{id}             one voice
    PATCH  /v1/audio/voices/{id}             rename (name), or change language, description, tags
    DELETE /v1/audio/voices/{id}

Each maps onto one or two calls of the gateway's VoiceCatalogService; the gateway checks every
field. Here only what HTTP adds is checked: the form's shape, the consent a cloned voice needs,
and the upload's size (at most MAX_REFERENCE_BYTES, refused before it is read; service.py).
"""

from __future__ import annotations

import base64
from typing import Literal

from fastapi import APIRouter, Request
from google.protobuf import field_mask_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from qwentts.v1 import audio_pb2, voices_pb2
from shared.limits import MAX_REFERENCE_BYTES

from .errors import ApiError, invalid
from .gateway import Gateway

VOICE_TYPES = {
    voices_pb2.VOICE_KIND_CLONED: "audio_sample",
    voices_pb2.VOICE_KIND_DESIGNED: "prompt",
    voices_pb2.VOICE_KIND_PRESET: "preset",
}
KINDS = {
    "audio_sample": voices_pb2.VOICE_KIND_CLONED,
    "prompt": voices_pb2.VOICE_KIND_DESIGNED,
    "preset": voices_pb2.VOICE_KIND_PRESET,
}
DEFAULT_SCRIPT = "Hello! This is how I sound. I hope you like my voice."

router = APIRouter()


class NewVoice(BaseModel):
    """The fields of POST /v1/audio/voices besides the file."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["audio_sample", "prompt", "preview"] = "audio_sample"
    name: str
    consent: str = Field("", description="who consented to the cloning, and how (required for audio_sample)")
    transcript: str = Field("", description="what audio_sample says: a closer clone")
    language: str = ""
    description: str = ""
    prompt: str = Field("", description="type prompt: a description of the voice")
    script_hint: str = Field(DEFAULT_SCRIPT, description="type prompt: what the voice says while it is designed")
    preview_id: str = Field("", description="type preview: a preview from POST /v1/audio/voices/design")
    request_id: str = Field(
        "",
        description="a UUID: send the same one when retrying, and the retry returns the "
        "voice the first attempt created (docs/errors.md)",
    )


class DesignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="a description of the voice")
    script_hint: str = Field(DEFAULT_SCRIPT, description="what the preview says")
    language: str = ""
    seed: int | None = Field(None, ge=0, lt=1 << 64)


class VoiceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    language: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    etag: str = Field(
        "",
        description="change only this version (from GET); empty: the current one "
        "(a change made meanwhile is still refused, 409 ETAG_MISMATCH)",
    )


def voice_json(voice: voices_pb2.Voice) -> dict:
    return {
        "id": voice.voice_id,
        "object": "audio.voice",
        "name": voice.name,
        "created_at": voice.create_time.seconds,
        "type": VOICE_TYPES.get(voice.kind, "audio_sample"),
        "language": voice.language,
        "description": voice.description,
        "tags": list(voice.tags),
        "transcript": voice.transcript,
        "consent": voice.consent_statement,
        "reference_seconds": round(voice.reference_seconds, 3),
        "read_only": voice.read_only,
        "etag": voice.etag,
    }


@router.get("/v1/audio/voices", summary="The caller's voices, presets first")
async def list_voices(
    request: Request,
    page_size: int = 0,
    page_token: str = "",
    type: Literal["audio_sample", "prompt", "preset"] | None = None,
):
    gateway: Gateway = request.app.state.gateway
    reply = await gateway.unary(
        request,
        gateway.voices.ListVoices,
        voices_pb2.ListVoicesRequest(
            page_size=max(page_size, 0), page_token=page_token, kind=KINDS.get(type, voices_pb2.VOICE_KIND_UNSPECIFIED)
        ),
    )
    return {
        "object": "list",
        "data": [voice_json(v) for v in reply.voices],
        "next_page_token": reply.next_page_token,
        "has_more": bool(reply.next_page_token),
    }


@router.post(
    "/v1/audio/voices",
    summary="Save a voice: clone audio, or design from a description",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "audio_sample": {"type": "string", "format": "binary"},
                            **NewVoice.model_json_schema()["properties"],
                        },
                    }
                },
                "application/json": {"schema": NewVoice.model_json_schema()},
            }
        }
    },
)
async def create_voice(request: Request):
    gateway: Gateway = request.app.state.gateway
    fields, audio = await _voice_form(request)
    try:
        new = NewVoice.model_validate(fields)
    except ValidationError as error:
        raise invalid(error.errors()) from None
    message = voices_pb2.CreateVoiceRequest(
        name=new.name,
        language=new.language,
        description=new.description,
        consent_statement=new.consent,
        request_id=new.request_id,
    )
    if new.type == "audio_sample":
        if audio is None:
            raise ApiError(400, "attach the recording as the audio_sample file", "AUDIO_REQUIRED", "audio_sample")
        if not new.consent.strip():
            raise ApiError(
                400, "say who consented to cloning this voice, and how (consent)", "CONSENT_REQUIRED", "consent"
            )
        message.reference_audio.content, message.transcript = audio, new.transcript
    else:
        preview_id = new.preview_id
        if new.type == "prompt":
            preview_id = (
                await _design(
                    request,
                    gateway,
                    DesignRequest(prompt=new.prompt, script_hint=new.script_hint, language=new.language),
                )
            ).preview_id
            message.description = message.description or new.prompt
        elif not preview_id:
            raise ApiError(400, "type preview needs the preview_id of a design", "PREVIEW_REQUIRED", "preview_id")
        message.preview_id = preview_id
    reply = await gateway.unary(request, gateway.voices.CreateVoice, message)
    return voice_json(reply.voice) | {"warnings": list(reply.warnings)}


@router.post("/v1/audio/voices/design", summary="Design a voice from a description: a preview to listen to")
async def design_voice(body: DesignRequest, request: Request):
    gateway: Gateway = request.app.state.gateway
    reply = await _design(request, gateway, body)
    return {
        "object": "audio.voice.preview",
        "preview_id": reply.preview_id,
        "format": "wav",
        "audio": base64.b64encode(reply.audio).decode(),
        "expires_at": reply.expire_time.seconds,
    }


@router.get("/v1/audio/voices/{voice_id}", summary="One voice")
async def get_voice(voice_id: str, request: Request):
    gateway: Gateway = request.app.state.gateway
    reply = await gateway.unary(request, gateway.voices.GetVoice, voices_pb2.GetVoiceRequest(voice_id=voice_id))
    return voice_json(reply.voice)


@router.patch("/v1/audio/voices/{voice_id}", summary="Rename a voice, or change its language, description, tags")
async def update_voice(voice_id: str, change: VoiceChange, request: Request):
    gateway: Gateway = request.app.state.gateway
    fields = change.model_dump(exclude_none=True, exclude={"etag"})
    if not fields:
        raise ApiError(400, "nothing to change: send name, language, description or tags", "NOTHING_TO_CHANGE")
    etag = (
        change.etag
        or (
            await gateway.unary(request, gateway.voices.GetVoice, voices_pb2.GetVoiceRequest(voice_id=voice_id))
        ).voice.etag
    )
    voice = voices_pb2.Voice(voice_id=voice_id, etag=etag, **fields)
    reply = await gateway.unary(
        request,
        gateway.voices.UpdateVoice,
        voices_pb2.UpdateVoiceRequest(voice=voice, update_mask=field_mask_pb2.FieldMask(paths=sorted(fields))),
    )
    return voice_json(reply.voice)


@router.delete("/v1/audio/voices/{voice_id}", summary="Delete a voice")
async def delete_voice(voice_id: str, request: Request, etag: str = ""):
    gateway: Gateway = request.app.state.gateway
    await gateway.unary(
        request, gateway.voices.DeleteVoice, voices_pb2.DeleteVoiceRequest(voice_id=voice_id, etag=etag)
    )
    return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


async def _design(request: Request, gateway: Gateway, body: DesignRequest) -> voices_pb2.DesignVoiceResponse:
    message = voices_pb2.DesignVoiceRequest(
        description=body.prompt,
        preview_text=body.script_hint,
        language=body.language,
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV),
    )
    if body.seed is not None:
        message.seed = body.seed
    return await gateway.unary(request, gateway.voices.DesignVoice, message)


async def _voice_form(request: Request) -> tuple[dict, bytes | None]:
    """The fields and the audio_sample file of a multipart form, or the fields of a JSON body."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            fields = await request.json()
        except ValueError:
            raise ApiError(400, "the body is not valid JSON", "INVALID_JSON") from None
        if not isinstance(fields, dict):
            raise ApiError(400, "the body must be a JSON object", "INVALID_JSON")
        return fields, None
    # The body's size is bounded before it is read (service.py), so the form fits in memory.
    async with request.form(max_files=1, max_fields=20) as form:
        fields, audio = {}, None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "audio_sample":
                    raise ApiError(
                        400, f"unexpected file {key!r}; send the recording as audio_sample", "INVALID_REQUEST", key
                    )
                audio = await value.read(MAX_REFERENCE_BYTES + 1)
                if len(audio) > MAX_REFERENCE_BYTES:
                    raise ApiError(
                        413, f"the recording is over {MAX_REFERENCE_BYTES} bytes", "AUDIO_TOO_LARGE", "audio_sample"
                    )
            else:
                fields[key] = value
        return fields, audio
