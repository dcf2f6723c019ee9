"""Speech over HTTP: OpenAI's `POST /v1/audio/speech`, `GET /v1/models`, and the WebSocket
`/v1/audio/speech/stream` for text that arrives while audio plays.

One request body shape (`SpeechOptions`) becomes the gateway's `SynthesisConfig` for all three
ways in (`synthesis_config`):

- `voice`: `{"id": "<voice id>"}` or a string. A string starting with `design:` is a voice
  designed from the description after it; a string shaped like a catalogue id (`preset:...`, or
  the 28 hex digits the catalogue assigns) is that saved voice; anything else is a preset
  speaker's name (`GET /v1/models` lists them).
- `model`: a model name from `GET /v1/models`, or an alias that lets the gateway pick the model
  for the voice (`MODEL_ALIASES`, which includes OpenAI's model names, so existing clients work).
- Extensions (OpenAI clients send them with `extra_body`): `language`, `seed`, `greedy` (greedy
  decoding, for results that can be compared exactly), `max_audio_seconds`, `sample_rate`.
- `speed` other than 1.0 is refused (400, `SPEED_NOT_SUPPORTED`): no kept library time-stretches
  a stream of speech without artefacts at chunk boundaries, and a wrong-sounding result is worse
  than a clear refusal. See docs/web.md.
- `response_format` `aac` is refused (400, `FORMAT_NOT_SUPPORTED`): libsndfile, which encodes
  every other format in the gateway, has no AAC encoder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Literal

import grpc
from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from qwentts.v1 import audio_pb2, tts_pb2

from .errors import ApiError, from_rpc_error, invalid
from .gateway import Gateway, step

E = audio_pb2.AudioEncoding
# response_format -> (the gateway's encoding, media type)
FORMATS = {
    "mp3": (E.AUDIO_ENCODING_MP3, "audio/mpeg"),
    "opus": (E.AUDIO_ENCODING_OGG_OPUS, "audio/ogg"),
    "flac": (E.AUDIO_ENCODING_FLAC, "audio/flac"),
    "wav": (E.AUDIO_ENCODING_WAV, "audio/wav"),
    "pcm": (E.AUDIO_ENCODING_PCM16, "audio/pcm"),
}
# Model names that mean "the model for this voice" (and every gpt-* name).
MODEL_ALIASES = {"", "qwen3-tts", "tts-1", "tts-1-hd"}
DESIGN_PREFIX = "design:"
CATALOGUE_ID = re.compile(r"preset:.+|[0-9a-f]{28}")
FINISH_REASONS = {
    tts_pb2.FINISH_REASON_END_OF_SPEECH: "end_of_speech",
    tts_pb2.FINISH_REASON_MAX_LENGTH: "max_length",
    tts_pb2.FINISH_REASON_FRAME_BUDGET: "frame_budget",
}

router = APIRouter()


class VoiceId(BaseModel):
    id: str


class SpeechOptions(BaseModel):
    """Everything about a synthesis but its text."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "qwen3-tts",
        description="a model from GET /v1/models, or qwen3-tts (or an OpenAI model "
        "name) to let the server pick one for the voice",
    )
    voice: str | VoiceId = Field(
        description='a preset speaker, a saved voice id (or {"id": ...}), or "design:<a description of the voice>"'
    )
    instructions: str = Field("", description="a style instruction (models that follow instructions only)")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0, description="only 1.0: this server does not time-stretch")
    language: str = Field("", description="extension: a language from GET /v1/models; empty: auto")
    seed: int | None = Field(None, ge=0, lt=1 << 64, description="extension: reproducible sampling")
    greedy: bool = Field(False, description="extension: greedy decoding (no sampling)")
    max_audio_seconds: float = Field(0.0, ge=0, description="extension: a cap on the audio; 0: the server's")
    sample_rate: int = Field(
        0, ge=0, description="extension: output rate in Hz; 0: 24000 (mp3 and opus take only some rates)"
    )


class SpeechRequest(SpeechOptions):
    input: str = Field(description="the text to speak")
    stream_format: Literal["audio", "sse"] | None = Field(
        None, description="unset: the whole file at once; audio: bytes as they are made; sse: base64 events"
    )


class StreamConfig(SpeechOptions):
    """The first message of the WebSocket."""

    type: Literal["config"] = "config"
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "pcm"
    api_key: str = Field("", description="the API key (browsers cannot set headers on a WebSocket)")


class TextMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = "text"
    text: str
    flush: bool = False


class EndMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["end"]


def synthesis_config(options: SpeechOptions) -> tts_pb2.SynthesisConfig:
    if options.speed != 1.0:
        raise ApiError(
            400,
            f"speed {options.speed:g} is not supported: this server speaks at speed 1.0 only "
            "(it does not time-stretch audio)",
            "SPEED_NOT_SUPPORTED",
            "speed",
        )
    if options.response_format == "aac":
        raise ApiError(
            400,
            "response_format aac is not supported; use mp3, opus, flac, wav or pcm",
            "FORMAT_NOT_SUPPORTED",
            "response_format",
        )
    config = tts_pb2.SynthesisConfig(
        voice=voice_selection(options.voice),
        language=options.language,
        instruct=options.instructions,
        output_format=audio_pb2.AudioFormat(
            encoding=FORMATS[options.response_format][0], sample_rate_hz=options.sample_rate
        ),
        max_audio_seconds=options.max_audio_seconds,
        model="" if options.model.lower() in MODEL_ALIASES or options.model.startswith("gpt-") else options.model,
    )

    if options.greedy:
        config.sampling.do_sample = config.predictor_sampling.do_sample = False
    if options.seed is not None:
        config.seed = options.seed
    return config


def voice_selection(voice: str | VoiceId) -> tts_pb2.VoiceSelection:
    if isinstance(voice, VoiceId):
        return tts_pb2.VoiceSelection(voice_id=voice.id)
    if voice.startswith(DESIGN_PREFIX):
        return tts_pb2.VoiceSelection(design_description=voice.removeprefix(DESIGN_PREFIX).strip())
    if CATALOGUE_ID.fullmatch(voice):
        return tts_pb2.VoiceSelection(voice_id=voice)
    return tts_pb2.VoiceSelection(preset_speaker=voice)


def usage(summary: tts_pb2.SynthesisSummary) -> dict:
    """A summary as JSON; the token fields are OpenAI's names for characters in and frames out."""
    used = summary.usage
    return {
        "input_tokens": used.input_characters,
        "output_tokens": used.audio_frames,
        "total_tokens": used.input_characters + used.audio_frames,
        "input_characters": used.input_characters,
        "audio_frames": used.audio_frames,
        "audio_seconds": used.audio_seconds,
    }


def summary_json(summary: tts_pb2.SynthesisSummary) -> dict:
    return {
        "usage": usage(summary),
        "model": summary.model,
        "finish_reason": FINISH_REASONS.get(summary.finish_reason, "unspecified"),
        "sample_rate": summary.output_format.sample_rate_hz,
    }


@router.get("/v1/models", summary="The models the server has loaded (OpenAI's list shape)")
async def list_models(request: Request):
    gateway: Gateway = request.app.state.gateway
    reply = await gateway.unary(request, gateway.tts.ListModels, tts_pb2.ListModelsRequest())
    return {
        "object": "list",
        "data": [
            {
                "id": model.name,
                "object": "model",
                "owned_by": "qwentts",
                "created": 0,
                "kind": tts_pb2.ModelKind.Name(model.kind).removeprefix("MODEL_KIND_").lower(),
                "size": model.size,
                "languages": list(model.languages),
                "speakers": [speaker.name for speaker in model.speakers],
                "supports_instructions": model.supports_instruct,
                "sample_rate": model.native_sample_rate_hz,
            }
            for model in reply.models
        ],
    }


@router.post(
    "/v1/audio/speech",
    summary="Speak text (OpenAI-compatible)",
    responses={200: {"content": {media: {} for _, media in FORMATS.values()} | {"text/event-stream": {}}}},
)
async def create_speech(body: SpeechRequest, request: Request):
    gateway: Gateway = request.app.state.gateway
    config = synthesis_config(body)
    media_type = FORMATS[body.response_format][1]
    if body.stream_format is None:
        reply = await gateway.unary(
            request, gateway.tts.Synthesize, tts_pb2.SynthesizeRequest(config=config, text=body.input)
        )
        headers = {
            "x-audio-seconds": f"{reply.summary.usage.audio_seconds:g}",
            "x-input-characters": str(reply.summary.usage.input_characters),
            "x-model": reply.summary.model,
            "x-finish-reason": FINISH_REASONS.get(reply.summary.finish_reason, "unspecified"),
        }
        return Response(reply.audio, media_type=media_type, headers=headers)

    call = gateway.tts.StreamSynthesize(
        tts_pb2.StreamSynthesizeRequest(config=config, text=body.input), **gateway.call_options(request.headers)
    )
    # Wait for the first message, so that an error before any audio is a proper HTTP error.
    first = await step(request, call, call.read())
    encode = _sse_event if body.stream_format == "sse" else _audio_bytes
    return StreamingResponse(
        _streamed(call, first, encode), media_type="text/event-stream" if body.stream_format == "sse" else media_type
    )


async def _streamed(call, first, encode):
    """The response body; Starlette cancels it when the client disconnects, which cancels the call."""
    try:
        message = first
        while message is not grpc.aio.EOF:
            data = encode(message)
            if data:
                yield data
            message = await call.read()
    except grpc.aio.AioRpcError as error:
        # The status line has gone: an SSE client gets an error event; an audio stream just ends.
        if encode is _sse_event:
            yield _sse(from_rpc_error(error).body() | {"type": "error"})
    finally:
        call.cancel()


def _audio_bytes(message) -> bytes:
    return message.audio.audio if message.HasField("audio") else b""


def _sse_event(message) -> bytes:
    kind = message.WhichOneof("response")
    if kind == "audio":
        return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(message.audio.audio).decode()})
    if kind == "summary":
        return _sse({"type": "speech.audio.done", **summary_json(message.summary)})
    return b""


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


# ----- WebSocket -----


@router.websocket("/v1/audio/speech/stream")
async def speech_stream(websocket: WebSocket):
    """The bidirectional stream (docs/web.md): a config message, then text messages ({"type": "text",
    "text": ..., "flush": false}) and {"type": "end"} when the text is complete. Audio comes back
    as binary messages as it is made, with JSON `progress` events and a final `done` (or `error`)."""
    gateway: Gateway = websocket.app.state.gateway
    await websocket.accept()
    call = reader = None
    try:
        options = StreamConfig.model_validate(await _receive_json(websocket))
        call = gateway.tts.StreamingSynthesize(**gateway.call_options(websocket.headers, options.api_key))
        await call.write(tts_pb2.StreamingSynthesizeRequest(config=synthesis_config(options)))
        reader = asyncio.create_task(_forward_text(websocket, call))
        async for response in call:
            kind = response.WhichOneof("response")
            if kind == "audio":
                await websocket.send_bytes(response.audio.audio)
            elif kind == "progress":
                await websocket.send_json(
                    {
                        "type": "progress",
                        "characters_consumed": response.progress.characters_consumed,
                        "characters_received": response.progress.characters_received,
                    }
                )
            else:
                await websocket.send_json({"type": "done", **summary_json(response.summary)})
        await websocket.close()
    except WebSocketDisconnect:
        pass  # the client went away: `finally` cancels the synthesis
    except ValidationError as error:
        await _close_with_error(websocket, invalid(error.errors(), "INVALID_MESSAGE"))
    except ApiError as error:
        await _close_with_error(websocket, error)
    except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
        # The reader cancels the call when the client leaves or sends a bad message.
        failure = reader.exception() if reader is not None and reader.done() and not reader.cancelled() else None
        if isinstance(failure, ApiError):
            await _close_with_error(websocket, failure)
        elif isinstance(error, asyncio.CancelledError) and not isinstance(failure, WebSocketDisconnect):
            raise  # this handler itself was cancelled (the server is stopping)
        elif isinstance(error, grpc.aio.AioRpcError) and failure is None:
            await _close_with_error(websocket, from_rpc_error(error))
    finally:
        if reader is not None:
            reader.cancel()
        if call is not None:
            call.cancel()


async def _forward_text(websocket: WebSocket, call) -> None:
    """The client's text messages into the call; `end` half-closes it. A disconnect or a bad
    message cancels the call, which ends the response loop."""
    try:
        while True:
            message = await _receive_json(websocket)
            if message.get("type") == "end":
                EndMessage.model_validate(message)
                await call.done_writing()
                return
            text = TextMessage.model_validate(message)
            await call.write(
                tts_pb2.StreamingSynthesizeRequest(input=tts_pb2.TextInput(text=text.text, flush=text.flush))
            )
    except ValidationError as error:
        call.cancel()
        raise invalid(error.errors(), "INVALID_MESSAGE") from None
    except (ApiError, WebSocketDisconnect):
        call.cancel()
        raise
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call has ended; the response loop reports how


async def _receive_json(websocket: WebSocket) -> dict:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        value = json.loads(message.get("text") or "")
    except json.JSONDecodeError:
        raise ApiError(
            400, "every message from the client must be a JSON object (text frame)", "INVALID_JSON"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(400, "every message from the client must be a JSON object", "INVALID_JSON")
    return value


async def _close_with_error(websocket: WebSocket, error: ApiError) -> None:
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    try:
        await websocket.send_json({"type": "error", **error.body()})
        # 1008: policy violation (the client's fault); 1011: the server's.
        await websocket.close(code=1008 if error.status < 500 else 1011)
    except (WebSocketDisconnect, RuntimeError):
        pass  # it went away meanwhile
