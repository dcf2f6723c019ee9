"""The public VoiceCatalogService.

The registry (`qwentts.registry.v1`, on Redis) keeps the voices; the gateway authenticates the
caller (tenancy.py), passes the tenant with every registry call, and does the model work a voice
needs once, when it is saved, so that synthesis recomputes nothing:

- CreateVoice (reference audio): the codec's Encode gives the frames and the normalised 24 kHz
  audio; every loaded Base pool computes its speaker embedding (EmbedSpeaker; the 0.6B and 1.7B
  embeddings differ); the registry stores them with a 24 kHz FLAC of the audio. A transcript makes
  the voice an in-context clone, otherwise it is a speaker-embedding clone.
- DesignVoice: one synthesis on a VoiceDesign pool (pipeline.py), its audio returned
  and kept by the registry as a short-lived preview; CreateVoice(preview_id) saves it as an
  in-context clone of the preview (its text is the transcript), kind DESIGNED.
- Get/List/Update/Delete go to the registry. The preset speakers of the loaded CustomVoice models
  are read-only voices "preset:<model>:<speaker>", listed before the saved voices.

The registry and saved voices resolved for synthesis are catalogue.py's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re

from qwentts.codec.v1 import codec_pb2
from qwentts.registry.v1 import registry_pb2
from qwentts.v1 import audio_pb2, tts_pb2, voices_pb2, voices_pb2_grpc
from shared.audio import MODEL_SAMPLE_RATE, encode_flac
from shared.errors import FailedPrecondition, InvalidArgument
from shared.frames import array_to_frames, samples_to_array
from shared.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_DESCRIPTION_CHARS,
    MAX_ID_CHARS,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_CHARS,
    MAX_REFERENCE_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TRANSCRIPT_CHARS,
    VOICE_FIELD_CHARS,
    quote,
)

from .catalogue import call_dependency, embed_speaker, voice_not_found
from .gateway import Gateway
from .pipeline import Synthesis
from .routing import PRESET_PREFIX, preset_voice_id

MIN_REFERENCE_SECONDS, SHORT_REFERENCE_SECONDS, MAX_REFERENCE_SECONDS = 1.0, 3.0, 60.0
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as the registry's


def check_id(value: str, field: str) -> None:
    """Ids longer than any we issue are refused before they reach a message, a log or a key."""
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(
            f"{field} has {len(value)} characters; ids have at most {MAX_ID_CHARS}",
            [(field, "too long")],
            reason="INVALID_ID",
        )


def _request_digest(request: voices_pb2.CreateVoiceRequest) -> bytes:
    """What a retry with the same request_id must repeat: the request without its id."""
    content = voices_pb2.CreateVoiceRequest()
    content.CopyFrom(request)
    content.ClearField("request_id")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).digest()


def _voice_field_violations(request: voices_pb2.CreateVoiceRequest) -> list[tuple[str, str]]:
    """CreateVoice's metadata checked against the registry's limits, before any model work."""
    problems = [
        (field, f"at most {limit} characters")
        for field, limit in VOICE_FIELD_CHARS.items()
        if len(getattr(request, field)) > limit
    ]
    if len(request.tags) > MAX_TAGS:
        problems.append(("tags", f"at most {MAX_TAGS} tags"))
    problems += [
        (f"tags[{i}]", f"1 to {MAX_TAG_CHARS} characters")
        for i, tag in enumerate(request.tags)
        if not 1 <= len(tag) <= MAX_TAG_CHARS
    ]
    if request.request_id and not REQUEST_ID_RE.fullmatch(request.request_id):
        problems.append(("request_id", "1 to 128 letters, digits, '-' or '_' (a UUID, say)"))
    if request.WhichOneof("source") == "preview_id" and len(request.preview_id) > MAX_ID_CHARS:
        problems.append(("preview_id", "too long"))
    return problems


# ----- page tokens: the preset speakers first, then the registry's pages -----


def _page_token(phase: str, value: str | int) -> str:
    return base64.urlsafe_b64encode(f"{phase}:{value}".encode()).decode()


def _read_page_token(token: str) -> tuple[str, str]:
    """("presets", offset) or ("saved", the registry's token); "" is the first page."""
    if not token:
        return "presets", "0"
    phase = value = ""
    if len(token) <= MAX_PAGE_TOKEN_CHARS:
        with contextlib.suppress(binascii.Error, UnicodeError, ValueError):
            phase, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    if phase == "saved" or (phase == "presets" and value.isascii() and value.isdigit()):
        return phase, value
    raise InvalidArgument(
        "page_token is not one this service returned", [("page_token", "invalid")], reason="INVALID_PAGE_TOKEN"
    )


class VoiceCatalogServicer(voices_pb2_grpc.VoiceCatalogServiceServicer):
    def __init__(self, gateway: Gateway, preview_ttl_seconds: int):
        self.gateway = gateway
        self.catalogue = gateway.catalogue
        self.preview_ttl_seconds = preview_ttl_seconds

    def _tenant(self, context) -> str:
        """The caller's tenant, once the caller is authenticated and the catalogue is known to run."""
        tenant = self.gateway.tenancy.tenant(context)
        self.catalogue.check_available()
        return tenant

    # ----- the preset speakers -----

    def presets(self) -> list[voices_pb2.Voice]:
        voices = []
        for pool in self.gateway.router.pools:
            if pool.model.model_type != "custom_voice":
                continue
            for speaker in pool.model.speakers:
                dialect = f"; speaks {speaker.dialect} when the language is Chinese" if speaker.dialect else ""
                voices.append(
                    voices_pb2.Voice(
                        voice_id=preset_voice_id(pool.model.name, speaker.name),
                        name=speaker.name,
                        kind=voices_pb2.VOICE_KIND_PRESET,
                        description=f"preset speaker of {pool.model.name}{dialect}",
                        read_only=True,
                    )
                )
        return voices

    def _preset(self, voice_id: str) -> voices_pb2.Voice | None:
        """The preset voice `voice_id` names; None for a saved voice's id; NotFound for an unknown preset."""
        if not voice_id.startswith(PRESET_PREFIX):
            return None
        found = next((v for v in self.presets() if v.voice_id.lower() == voice_id.lower()), None)
        if found is None:
            raise voice_not_found(voice_id, "voice_id")
        return found

    def _check_writable(self, voice_id: str) -> None:
        if self._preset(voice_id) is not None:
            raise FailedPrecondition(
                f"{voice_id} is a preset speaker; presets cannot be changed or deleted", reason="VOICE_READ_ONLY"
            )

    def _check_language(self, language: str) -> None:
        """A voice's language is the default of its syntheses: one a Base model speaks, or "auto"."""
        known = {
            lang.lower()
            for pool in self.gateway.router.pools
            if pool.model.model_type == "base"
            for lang in pool.model.languages
        }
        if language and language.lower() != "auto" and known and language.lower() not in known:
            raise InvalidArgument(
                f"unsupported language {quote(language)}; supported: auto, {', '.join(sorted(known))}",
                [("language", "not a language of the Base models")],
                reason="UNSUPPORTED_LANGUAGE",
            )

    # ----- RPCs -----

    async def CreateVoice(self, request, context):
        tenant = self._tenant(context)
        if not request.name.strip():
            raise InvalidArgument("a voice needs a name", [("name", "required")], reason="NAME_REQUIRED")
        if len(request.transcript) > MAX_TRANSCRIPT_CHARS:
            raise InvalidArgument(
                f"the transcript has {len(request.transcript)} characters; the limit is {MAX_TRANSCRIPT_CHARS}",
                [("transcript", "too long")],
                reason="TRANSCRIPT_TOO_LONG",
            )
        problems = _voice_field_violations(request)
        if problems:
            raise InvalidArgument(
                "; ".join(f"{field}: {why}" for field, why in problems), problems, reason="INVALID_VOICE"
            )
        self._check_language(request.language)
        voice = voices_pb2.Voice(
            name=request.name,
            language=request.language,
            description=request.description,
            tags=request.tags,
            consent_statement=request.consent_statement,
        )
        source = request.WhichOneof("source")
        if source == "reference_audio":
            audio = request.reference_audio
            voice.kind, voice.transcript = voices_pb2.VOICE_KIND_CLONED, request.transcript
        elif source == "preview_id":
            preview = (
                await self.catalogue.call(
                    "GetPreview",
                    registry_pb2.GetPreviewRequest(tenant=tenant, preview_id=request.preview_id),
                    context,
                    request.DESCRIPTOR.name,
                )
            ).preview
            audio = audio_pb2.AudioInput(content=preview.audio_flac)
            voice.kind, voice.transcript = voices_pb2.VOICE_KIND_DESIGNED, preview.text
            voice.description = request.description or preview.description
            voice.language = request.language or preview.language
        else:
            raise InvalidArgument(
                "the voice needs reference_audio or a preview_id",
                [("reference_audio", "set reference_audio or preview_id")],
                reason="SOURCE_REQUIRED",
            )
        if voice.transcript.strip():
            voice.clone_mode = voices_pb2.CLONE_MODE_IN_CONTEXT
        else:
            voice.clone_mode, voice.transcript = voices_pb2.CLONE_MODE_SPEAKER_EMBEDDING, ""
        assets, voice.reference_seconds = await self._reference_assets(audio, context, request.DESCRIPTOR.name)
        warnings = []
        if voice.reference_seconds < SHORT_REFERENCE_SECONDS:
            warnings.append(
                f"the reference audio lasts {voice.reference_seconds:.1f} s; "
                f"{SHORT_REFERENCE_SECONDS:g} s or more clone a voice better"
            )
        created = await self.catalogue.call(
            "CreateVoice",
            registry_pb2.CreateVoiceRequest(
                tenant=tenant,
                voice=voice,
                assets=assets,
                request_id=request.request_id,
                request_digest=_request_digest(request) if request.request_id else b"",
            ),
            context,
            request.DESCRIPTOR.name,
        )
        return voices_pb2.CreateVoiceResponse(voice=created.voice, warnings=warnings)

    async def _reference_assets(
        self, audio: audio_pb2.AudioInput, context, request: str
    ) -> tuple[registry_pb2.VoiceAssets, float]:
        """Frames, 24 kHz FLAC and every Base model's speaker embedding of reference audio; its
        length. `request`: the public request's name (fields.py)."""
        if len(audio.content) > MAX_REFERENCE_BYTES:
            raise InvalidArgument(
                f"the reference audio is {len(audio.content)} bytes; at most {MAX_REFERENCE_BYTES} are accepted",
                [("reference_audio.content", "too large")],
                reason="AUDIO_TOO_LARGE",
            )
        encoded = await call_dependency(
            self.gateway.codec.Encode,
            codec_pb2.EncodeRequest(
                content=audio.content, pcm_sample_rate_hz=audio.pcm_sample_rate_hz, pcm_channels=audio.pcm_channels
            ),
            context,
            "codec",
            request,
        )
        samples, rate = samples_to_array(encoded.audio), encoded.audio.sample_rate_hz
        seconds = len(samples) / rate
        for too, bad, limit in (
            ("short", seconds < MIN_REFERENCE_SECONDS, f"at least {MIN_REFERENCE_SECONDS:g}"),
            ("long", seconds > MAX_REFERENCE_SECONDS, f"at most {MAX_REFERENCE_SECONDS:g}"),
        ):
            if bad:
                raise InvalidArgument(
                    f"the reference audio lasts {seconds:.2f} s; it must last {limit} s",
                    [("reference_audio.content", f"too {too}")],
                    reason=f"AUDIO_TOO_{too.upper()}",
                )
        bases = [p for p in self.gateway.router.pools if p.model.model_type == "base"]
        embeddings = await asyncio.gather(*(embed_speaker(p, samples, rate, context, request) for p in bases))
        assets = registry_pb2.VoiceAssets(reference_flac=encode_flac(samples, rate), reference_frames=encoded.frames)
        for pool, embedding in zip(bases, embeddings):
            assets.speaker_embeddings[pool.model.name].CopyFrom(embedding)
        return assets, seconds

    async def DesignVoice(self, request, context):
        tenant = self._tenant(context)
        if not request.description.strip():
            raise InvalidArgument("describe the voice", [("description", "required")], reason="DESCRIPTION_REQUIRED")
        if len(request.description) > MAX_DESCRIPTION_CHARS:  # checked before a preview is rendered
            raise InvalidArgument(
                f"the description has {len(request.description)} characters; the limit is {MAX_DESCRIPTION_CHARS}",
                [("description", "too long")],
                reason="DESCRIPTION_TOO_LONG",
            )
        text = request.preview_text
        self.gateway.check_text(text, "preview_text")
        if len(text) > MAX_TRANSCRIPT_CHARS:  # it becomes the saved voice's transcript
            raise InvalidArgument(
                f"the preview text has {len(text)} characters; the limit is {MAX_TRANSCRIPT_CHARS}",
                [("preview_text", "too long")],
                reason="TEXT_TOO_LONG",
            )
        # Capped at the longest reference a voice may have, so the preview can be saved.
        config = tts_pb2.SynthesisConfig(
            voice=tts_pb2.VoiceSelection(design_description=request.description),
            language=request.language,
            output_format=request.output_format,
            max_audio_seconds=MAX_REFERENCE_SECONDS,
        )
        if request.HasField("seed"):
            config.seed = request.seed
        name = request.DESCRIPTOR.name  # errors name fields as this request does (fields.py)
        self.gateway.check_config(config, name)
        synthesis = await Synthesis.open(
            self.gateway, config, request=name, non_streaming=True, context=context, tenant=tenant, keep_output=True
        )
        audio, summary = await synthesis.whole(text)
        frames, samples = synthesis.kept_output()
        preview = registry_pb2.Preview(
            description=request.description,
            text=text,
            language=request.language,
            audio_flac=encode_flac(samples, MODEL_SAMPLE_RATE),
            frames=array_to_frames(frames),
        )
        saved = await self.catalogue.call(
            "SavePreview",
            registry_pb2.SavePreviewRequest(tenant=tenant, preview=preview, ttl_seconds=self.preview_ttl_seconds),
            context,
            name,
        )
        return voices_pb2.DesignVoiceResponse(
            preview_id=saved.preview_id, audio=audio, output_format=summary.output_format, expire_time=saved.expire_time
        )

    async def GetVoice(self, request, context):
        tenant = self._tenant(context)
        check_id(request.voice_id, "voice_id")
        voice = (
            self._preset(request.voice_id)
            or (
                await self.catalogue.call(
                    "GetVoice",
                    registry_pb2.GetVoiceRequest(tenant=tenant, voice_id=request.voice_id),
                    context,
                    request.DESCRIPTOR.name,
                )
            ).voice
        )
        return voices_pb2.GetVoiceResponse(voice=voice)

    async def ListVoices(self, request, context):
        """The presets that match the filters first, then the registry's voices; the page token
        says which part comes next: ("presets", offset) or ("saved", the registry's own token)."""
        tenant = self._tenant(context)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        phase, value = _read_page_token(request.page_token)
        voices = []
        if phase == "presets":
            # Presets have no language or tags: a filter on either leaves them out.
            listed = (
                request.kind in (voices_pb2.VOICE_KIND_UNSPECIFIED, voices_pb2.VOICE_KIND_PRESET)
                and not request.language
                and not request.tag
            )
            presets = self.presets() if listed else []
            start = int(value)
            voices = presets[start : start + size]
            if start + size < len(presets):
                token = _page_token("presets", start + size)
                return voices_pb2.ListVoicesResponse(voices=voices, next_page_token=token)
            if request.kind == voices_pb2.VOICE_KIND_PRESET:
                return voices_pb2.ListVoicesResponse(voices=voices)
            if len(voices) == size:  # the saved voices start on the next page
                return voices_pb2.ListVoicesResponse(voices=voices, next_page_token=_page_token("saved", ""))
            phase, value = "saved", ""
        reply = await self.catalogue.call(
            "ListVoices",
            registry_pb2.ListVoicesRequest(
                tenant=tenant,
                page_size=size - len(voices),
                page_token=value,
                kind=request.kind,
                language=request.language,
                tag=request.tag,
            ),
            context,
            request.DESCRIPTOR.name,
        )
        voices.extend(reply.voices)
        token = _page_token("saved", reply.next_page_token) if reply.next_page_token else ""
        return voices_pb2.ListVoicesResponse(voices=voices, next_page_token=token)

    async def UpdateVoice(self, request, context):
        tenant = self._tenant(context)
        check_id(request.voice.voice_id, "voice.voice_id")
        self._check_writable(request.voice.voice_id)
        if "language" in request.update_mask.paths:
            self._check_language(request.voice.language)
        reply = await self.catalogue.call(
            "UpdateVoice",
            registry_pb2.UpdateVoiceRequest(tenant=tenant, voice=request.voice, update_mask=request.update_mask),
            context,
            request.DESCRIPTOR.name,
        )
        return voices_pb2.UpdateVoiceResponse(voice=reply.voice)

    async def DeleteVoice(self, request, context):
        tenant = self._tenant(context)
        check_id(request.voice_id, "voice_id")
        self._check_writable(request.voice_id)
        await self.catalogue.call(
            "DeleteVoice",
            registry_pb2.DeleteVoiceRequest(tenant=tenant, voice_id=request.voice_id, etag=request.etag),
            context,
            request.DESCRIPTOR.name,
        )
        self.catalogue.forget(tenant, request.voice_id)
        return voices_pb2.DeleteVoiceResponse()
