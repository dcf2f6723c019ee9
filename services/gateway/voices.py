"""The public VoiceCatalogService, and saved voices resolved for synthesis.

The registry (`qwentts.registry.v1`, on Redis) keeps the voices; the gateway authenticates the
caller (tenancy.py), passes the tenant with every registry call, and does the model work a voice
needs once, when it is saved, so that synthesis recomputes nothing:

- CreateVoice (reference audio): the codec's Encode gives the frames and the normalised 24 kHz
  audio; every loaded Base pool computes its speaker embedding (EmbedSpeaker; the 0.6B and 1.7B
  embeddings differ); the registry stores them with a 24 kHz FLAC of the audio. A transcript makes
  the voice an in-context clone, otherwise it is a speaker-embedding clone.
- DesignVoice: one synthesis on a VoiceDesign pool (the `Synthesis` pipeline), its audio returned
  and kept by the registry as a short-lived preview; CreateVoice(preview_id) saves it as an
  in-context clone of the preview (its text is the transcript), kind DESIGNED.
- Get/List/Update/Delete go to the registry. The preset speakers of the loaded CustomVoice models
  are read-only voices "preset:<model>:<speaker>", listed before the saved voices.

Synthesis with a saved voice (`Catalogue.voice_for_synthesis`): one cheap registry GetVoice
(metadata only) per request, which also tells a deleted voice (NOT_FOUND) and the current etag;
the assets (frames, embeddings) come from a bounded LRU cache per (tenant, voice id) and are
fetched again whenever the etag differs from the cached one. Assets are written once, with the
voice, and only ever gain embeddings, so assets cached under the current etag are the registry's.
A Base model that joined after the voice was saved computes its embedding from the stored
reference audio on first use and stores it (PutSpeakerEmbedding).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from qwentts.codec.v1 import codec_pb2
from qwentts.generator.v1 import generator_pb2
from qwentts.registry.v1 import registry_pb2, registry_pb2_grpc
from qwentts.v1 import audio_pb2, tts_pb2, voices_pb2, voices_pb2_grpc
from shared.audio import decode_audio, encode_flac
from shared.errors import FailedPrecondition, InvalidArgument, NotFound, from_rpc_error
from shared.frames import array_to_frames, array_to_samples, frames_to_array, samples_to_array
from shared.limits import (
    MAX_DESCRIPTION_CHARS,
    MAX_ID_CHARS,
    MAX_PAGE_TOKEN_CHARS,
    MAX_REFERENCE_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TRANSCRIPT_CHARS,
    VOICE_FIELD_CHARS,
    quote,
)

from .audio_out import MODEL_SAMPLE_RATE
from .routing import PRESET_PREFIX, Pool, preset_voice_id

if TYPE_CHECKING:
    from .service import TextToSpeechServicer

MIN_REFERENCE_SECONDS, SHORT_REFERENCE_SECONDS, MAX_REFERENCE_SECONDS = 1.0, 3.0, 60.0
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as the registry's
VOICE_CACHE_SIZE = 256  # resolved voices kept per gateway (frames and embeddings: ~50 kB each)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100

# Downstream field paths -> the public request's.
CODEC_FIELDS = {name: f"reference_audio.{name}" for name in ("content", "pcm_sample_rate_hz", "pcm_channels")}
EMBED_FIELDS = {"audio.samples_f32le": "reference_audio.content", "audio.sample_rate_hz": "reference_audio.content"}
DESIGN_FIELDS = {
    "config.voice.design_description": "description",
    "config.language": "language",
    "config.instruct": "description",
    "text": "preview_text",
}


async def _call(
    method, request, context: grpc.aio.ServicerContext, dependency: str, fields: dict[str, str] | None = None
):
    """`await method(request)` within the client's deadline, a failure passed on as our own error
    (`from_rpc_error`)."""
    try:
        return await method(request, timeout=context.time_remaining())
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, dependency, fields) from None


def _renamed(error: InvalidArgument, rename: Callable[[str], str]) -> InvalidArgument:
    """`error` with its field paths renamed to the public request's."""
    return InvalidArgument(
        error.message, [(rename(f), d) for f, d in error.violations], reason=error.reason, metadata=error.metadata
    )


def voice_not_found(voice_id: str, field: str = "voice_id") -> NotFound:
    return NotFound(f"no voice {quote(voice_id)}", reason="VOICE_NOT_FOUND", metadata={"field": field})


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


async def embed_speaker(pool: Pool, audio: np.ndarray, sample_rate: int, context) -> registry_pb2.SpeakerEmbedding:
    request = generator_pb2.EmbedSpeakerRequest(audio=array_to_samples(audio, sample_rate))
    reply = await _call(pool.stub.EmbedSpeaker, request, context, "generator", EMBED_FIELDS)
    return registry_pb2.SpeakerEmbedding(values=reply.speaker_embedding)


@dataclass(frozen=True)
class SynthesisVoice:
    """What a synthesis with a saved voice needs."""

    cloned_voice: generator_pb2.ClonedVoice
    language: str
    reference_frames: np.ndarray | None  # in-context clones: the codec decodes these first


@dataclass
class _Cached:
    etag: str
    assets: registry_pb2.VoiceAssets  # without the reference audio, which synthesis never needs


class Catalogue:
    """The registry as the gateway uses it, and saved voices resolved for synthesis (cached)."""

    def __init__(self, registry: registry_pb2_grpc.RegistryServiceStub | None, cache_size: int = VOICE_CACHE_SIZE):
        self._registry = registry
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()

    def check_available(self) -> None:
        if self._registry is None:
            raise FailedPrecondition(
                "this deployment runs no voice catalogue (GATEWAY_REGISTRY_ADDRESS is unset); "
                "use preset_speaker or design_description",
                reason="VOICE_CATALOGUE_UNAVAILABLE",
            )

    async def call(self, method: str, request, context):
        """The registry's `method`, its errors passed on."""
        self.check_available()
        return await _call(getattr(self._registry, method), request, context, "registry")

    def forget(self, tenant: str, voice_id: str) -> None:
        self._cache.pop((tenant, voice_id), None)

    async def voice_for_synthesis(self, tenant: str, voice_id: str, pool: Pool, context) -> SynthesisVoice:
        """The tenant's saved voice as a cloned-voice prompt for `pool`'s Base model; NotFound
        (VOICE_NOT_FOUND) if the tenant has no such voice."""
        voice = (await self._get(tenant, voice_id, False, context)).voice
        key = (tenant, voice_id)
        cached = self._cache.get(key)
        if cached is None or cached.etag != voice.etag:
            reply = await self._get(tenant, voice_id, True, context)
            voice = reply.voice
            reply.assets.ClearField("reference_flac")
            cached = self._cache[key] = _Cached(voice.etag, reply.assets)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        embeddings = cached.assets.speaker_embeddings
        if pool.model.name not in embeddings:
            embeddings[pool.model.name].CopyFrom(await self._embed_stored_voice(tenant, voice_id, pool, context))
        cloned = generator_pb2.ClonedVoice(speaker_embedding=embeddings[pool.model.name].values)
        frames = None
        if voice.clone_mode == voices_pb2.CLONE_MODE_IN_CONTEXT:
            cloned.reference_frames.CopyFrom(cached.assets.reference_frames)
            cloned.reference_text = voice.transcript
            frames = frames_to_array(cached.assets.reference_frames)
        return SynthesisVoice(cloned, voice.language, frames)

    async def _get(self, tenant: str, voice_id: str, assets: bool, context):
        request = registry_pb2.GetVoiceRequest(tenant=tenant, voice_id=voice_id, include_assets=assets)
        try:
            return await self.call("GetVoice", request, context)
        except NotFound:
            self.forget(tenant, voice_id)
            raise voice_not_found(voice_id, "config.voice.voice_id") from None

    async def _embed_stored_voice(
        self, tenant: str, voice_id: str, pool: Pool, context
    ) -> registry_pb2.SpeakerEmbedding:
        """The embedding of a Base model that came after the voice was saved: computed once, from
        the stored reference audio, and stored."""
        assets = (await self._get(tenant, voice_id, True, context)).assets
        audio, sample_rate = decode_audio(assets.reference_flac)
        embedding = await embed_speaker(pool, audio, sample_rate, context)
        await self.call(
            "PutSpeakerEmbedding",
            registry_pb2.PutSpeakerEmbeddingRequest(
                tenant=tenant, voice_id=voice_id, model=pool.model.name, embedding=embedding
            ),
            context,
        )
        return embedding


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
    def __init__(self, tts: TextToSpeechServicer, catalogue: Catalogue, preview_ttl_seconds: int):
        self.tts = tts
        self.catalogue = catalogue
        self.preview_ttl_seconds = preview_ttl_seconds

    def _tenant(self, context) -> str:
        """The caller's tenant, once the caller is authenticated and the catalogue is known to run."""
        tenant = self.tts.tenancy.tenant(context)
        self.catalogue.check_available()
        return tenant

    # ----- the preset speakers -----

    def presets(self) -> list[voices_pb2.Voice]:
        voices = []
        for pool in self.tts.router.pools:
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
            raise voice_not_found(voice_id)
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
            for pool in self.tts.router.pools
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
                    "GetPreview", registry_pb2.GetPreviewRequest(tenant=tenant, preview_id=request.preview_id), context
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
        assets, voice.reference_seconds = await self._reference_assets(audio, context)
        warnings = []
        if voice.reference_seconds < SHORT_REFERENCE_SECONDS:
            warnings.append(
                f"the reference audio lasts {voice.reference_seconds:.1f} s; "
                f"{SHORT_REFERENCE_SECONDS:g} s or more clone a voice better"
            )
        try:
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
            )
        except InvalidArgument as error:  # the registry's paths are voice.name, ...; ours name, ...
            raise _renamed(error, lambda field: field.removeprefix("voice.")) from None
        return voices_pb2.CreateVoiceResponse(voice=created.voice, warnings=warnings)

    async def _reference_assets(self, audio: audio_pb2.AudioInput, context) -> tuple[registry_pb2.VoiceAssets, float]:
        """Frames, 24 kHz FLAC and every Base model's speaker embedding of reference audio; its length."""
        if len(audio.content) > MAX_REFERENCE_BYTES:
            raise InvalidArgument(
                f"the reference audio is {len(audio.content)} bytes; at most {MAX_REFERENCE_BYTES} are accepted",
                [("reference_audio.content", "too large")],
                reason="AUDIO_TOO_LARGE",
            )
        encoded = await _call(
            self.tts.codec.Encode,
            codec_pb2.EncodeRequest(
                content=audio.content, pcm_sample_rate_hz=audio.pcm_sample_rate_hz, pcm_channels=audio.pcm_channels
            ),
            context,
            "codec",
            CODEC_FIELDS,
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
        bases = [p for p in self.tts.router.pools if p.model.model_type == "base"]
        embeddings = await asyncio.gather(*(embed_speaker(p, samples, rate, context) for p in bases))
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
        if not text.strip():
            raise self.tts.empty_text("preview_text")
        self.tts.check_text(text, "preview_text")
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
        self.tts.check_config(config, field="")
        try:
            synthesis = self.tts.synthesis(config, non_streaming=True, context=context, tenant=tenant, keep_output=True)
            audio, summary = await synthesis.whole(text)
        except InvalidArgument as error:
            raise _renamed(error, lambda field: DESIGN_FIELDS.get(field, field)) from None
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
                    "GetVoice", registry_pb2.GetVoiceRequest(tenant=tenant, voice_id=request.voice_id), context
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
        )
        self.catalogue.forget(tenant, request.voice_id)
        return voices_pb2.DeleteVoiceResponse()
