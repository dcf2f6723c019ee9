"""The registry gRPC service, `qwentts.registry.v1.RegistryService`: the voice catalogue on Redis.

The servicer checks requests and maps them onto `VoiceStore` (store.py), which owns the data
model. Health stays SERVING while Redis is down: the registry itself is up and answers every RPC
at once with UNAVAILABLE (REDIS_UNAVAILABLE), and it must not be restarted or taken out of load
balancing for a fault that every replica shares. See docs/registry.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from qwentts.codec.v1 import codec_pb2
from qwentts.registry.v1 import registry_pb2, registry_pb2_grpc
from qwentts.v1 import voices_pb2
from shared.config import ConfigError, Problem, env
from shared.errors import InvalidArgument
from shared.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_TAG_CHARS, MAX_TAGS, VOICE_FIELD_CHARS
from shared.service import ProcessConfig, Registration

from .store import REQUEST_ID_RE, VOICE_ID_RE, VoiceStore

log = logging.getLogger(__name__)

SERVICE_NAME = "qwentts.registry.v1.RegistryService"

MAX_SCANNED_PER_LIST = 1000  # ids one ListVoices call may read when a filter matches few of them
MAX_TENANT_CHARS = 256
MAX_MODEL_CHARS = 200
MAX_EMBEDDING_VALUES = 8192
UPDATABLE_FIELDS = ("name", "language", "description", "tags")
FLAC_MAGIC = b"fLaC"
_PAGE_TOKEN_PREFIX = "after:"


@dataclass(frozen=True)
class RegistryConfig(ProcessConfig):
    """The registry process's settings (docs/registry.md, "Configuration")."""

    host: str = env("REGISTRY_HOST", default="127.0.0.1")
    port: int = env("REGISTRY_PORT", default=50056, min=0, max=65535)
    # No password here: the URL is logged at start. Put it in REGISTRY_REDIS_PASSWORD.
    redis_url: str = env("REGISTRY_REDIS_URL", default="redis://127.0.0.1:6390/0")
    redis_password: str = env("REGISTRY_REDIS_PASSWORD", default="", secret=True)
    # Connect and command timeout: how long an RPC waits for Redis before UNAVAILABLE.
    redis_timeout_seconds: float = env("REGISTRY_REDIS_TIMEOUT_SECONDS", default=2.0, min=0.01, max=60)
    # The longest a preview is kept (a request asking for 0 or more gets this).
    preview_ttl_seconds: int = env("REGISTRY_PREVIEW_TTL_SECONDS", default=3600, min=1)
    max_voices_per_tenant: int = env("REGISTRY_MAX_VOICES_PER_TENANT", default=10000, min=1)


# ----- request checks -----


def _invalid(reason: str, violations: list[tuple[str, str]]) -> InvalidArgument:
    message = "; ".join(f"{field}: {why}" for field, why in violations)
    return InvalidArgument(message, violations, reason=reason)


def _check_tenant(tenant: str) -> None:
    """The gateway always names the tenant: a missing one is a bug there, never a default."""
    if not 1 <= len(tenant) <= MAX_TENANT_CHARS:
        raise _invalid("INVALID_TENANT", [("tenant", f"required: 1 to {MAX_TENANT_CHARS} characters")])


def _check_id(value: str, field: str) -> None:
    if not value:
        raise _invalid("ID_REQUIRED", [(field, "required")])


def _metadata_violations(voice: voices_pb2.Voice, fields: Iterable[str]) -> list[tuple[str, str]]:
    """What is wrong with `voice`'s text fields among `fields` (names in VOICE_FIELD_CHARS, or "tags")."""
    problems = []
    for field in fields:
        if field == "tags":
            if len(voice.tags) > MAX_TAGS:
                problems.append(("voice.tags", f"at most {MAX_TAGS} tags; got {len(voice.tags)}"))
            problems += [
                (f"voice.tags[{i}]", f"1 to {MAX_TAG_CHARS} characters")
                for i, tag in enumerate(voice.tags)
                if not 1 <= len(tag) <= MAX_TAG_CHARS
            ]
        elif len(getattr(voice, field)) > VOICE_FIELD_CHARS[field]:
            problems.append((f"voice.{field}", f"at most {VOICE_FIELD_CHARS[field]} characters"))
        elif field == "name" and not voice.name.strip():
            problems.append(("voice.name", "required, not only spaces"))
    return problems


def _embedding_violations(model: str, values, model_field: str, values_field: str) -> list[tuple[str, str]]:
    problems = []
    if not 1 <= len(model) <= MAX_MODEL_CHARS:
        problems.append((model_field, f"a model name of 1 to {MAX_MODEL_CHARS} characters"))
    if not 1 <= len(values) <= MAX_EMBEDDING_VALUES:
        problems.append((values_field, f"1 to {MAX_EMBEDDING_VALUES} values; got {len(values)}"))
    elif not all(map(math.isfinite, values)):
        problems.append((values_field, "every value must be finite"))
    return problems


def _audio_violations(
    flac: bytes, frames: codec_pb2.Frames, flac_field: str, frames_field: str
) -> list[tuple[str, str]]:
    problems = []
    if not flac.startswith(FLAC_MAGIC):
        problems.append((flac_field, "required: a 24 kHz mono FLAC file"))
    if not frames.num_frames or not frames.num_quantizers:
        problems.append((frames_field, "required: num_frames and num_quantizers must be set"))
    elif len(frames.codes) != frames.num_frames * frames.num_quantizers:
        problems.append(
            (
                f"{frames_field}.codes",
                f"{len(frames.codes)} codes for {frames.num_frames} frames of {frames.num_quantizers} codebooks",
            )
        )
    return problems


def _create_violations(voice: voices_pb2.Voice, assets: registry_pb2.VoiceAssets) -> list[tuple[str, str]]:
    problems = _metadata_violations(voice, (*VOICE_FIELD_CHARS, "tags"))
    if voice.kind not in (voices_pb2.VOICE_KIND_CLONED, voices_pb2.VOICE_KIND_DESIGNED):
        problems.append(("voice.kind", "VOICE_KIND_CLONED or VOICE_KIND_DESIGNED"))
    if voice.clone_mode == voices_pb2.CLONE_MODE_UNSPECIFIED:
        problems.append(("voice.clone_mode", "required"))
    elif voice.clone_mode == voices_pb2.CLONE_MODE_IN_CONTEXT and not voice.transcript:
        problems.append(("voice.transcript", "required with CLONE_MODE_IN_CONTEXT"))
    if not (math.isfinite(voice.reference_seconds) and voice.reference_seconds > 0):
        problems.append(("voice.reference_seconds", "the reference's duration: a positive number of seconds"))
    problems += _audio_violations(
        assets.reference_flac, assets.reference_frames, "assets.reference_flac", "assets.reference_frames"
    )
    for model, embedding in sorted(assets.speaker_embeddings.items()):
        problems += _embedding_violations(
            model, embedding.values, "assets.speaker_embeddings", f"assets.speaker_embeddings[{model}].values"
        )
    return problems


def _page_token(voice_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_PAGE_TOKEN_PREFIX}{voice_id}".encode()).decode().rstrip("=")


def _cursor(page_token: str) -> str:
    """The voice id a page token continues after ("" for no token)."""
    if not page_token:
        return ""
    try:
        text = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    voice_id = text.removeprefix(_PAGE_TOKEN_PREFIX)
    if voice_id == text or not VOICE_ID_RE.fullmatch(voice_id):
        raise _invalid("INVALID_PAGE_TOKEN", [("page_token", "not a token from a previous ListVoices response")])
    return voice_id


# ----- the servicer -----


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """RegistryService over a `VoiceStore`."""

    def __init__(self, store: VoiceStore, *, preview_ttl_seconds: int):
        self.store = store
        self.preview_ttl_seconds = preview_ttl_seconds

    async def CreateVoice(self, request: registry_pb2.CreateVoiceRequest, context) -> registry_pb2.CreateVoiceResponse:
        _check_tenant(request.tenant)
        problems = _create_violations(request.voice, request.assets)
        if request.request_id and not REQUEST_ID_RE.fullmatch(request.request_id):
            problems.append(("request_id", "1 to 128 letters, digits, '-' or '_'"))
        if problems:
            raise _invalid("INVALID_VOICE", problems)
        voice = await self.store.create_voice(
            request.tenant, request.voice, request.assets, request.request_id, request.request_digest
        )
        return registry_pb2.CreateVoiceResponse(voice=voice)

    async def GetVoice(self, request: registry_pb2.GetVoiceRequest, context) -> registry_pb2.GetVoiceResponse:
        _check_tenant(request.tenant)
        _check_id(request.voice_id, "voice_id")
        voice, assets = await self.store.get_voice(
            request.tenant, request.voice_id, include_assets=request.include_assets
        )
        return registry_pb2.GetVoiceResponse(voice=voice, assets=assets)

    async def ListVoices(self, request: registry_pb2.ListVoicesRequest, context) -> registry_pb2.ListVoicesResponse:
        _check_tenant(request.tenant)
        after = _cursor(request.page_token)
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filtered = bool(request.kind or request.language or request.tag)

        def match(voice: voices_pb2.Voice) -> bool:
            return (
                (not request.kind or voice.kind == request.kind)
                and (not request.language or voice.language == request.language)
                and (not request.tag or request.tag in voice.tags)
            )

        voices, cursor = await self.store.list_voices(
            request.tenant,
            after=after,
            limit=page_size,
            match=match,
            max_scanned=MAX_SCANNED_PER_LIST,
            # Unfiltered, a page is exactly the next page_size ids; filtered, read more at a time.
            batch=MAX_PAGE_SIZE if filtered else page_size,
        )
        return registry_pb2.ListVoicesResponse(voices=voices, next_page_token=_page_token(cursor) if cursor else "")

    async def UpdateVoice(self, request: registry_pb2.UpdateVoiceRequest, context) -> registry_pb2.UpdateVoiceResponse:
        _check_tenant(request.tenant)
        voice, paths = request.voice, list(dict.fromkeys(request.update_mask.paths))
        if not paths or not set(paths) <= set(UPDATABLE_FIELDS):
            raise _invalid(
                "INVALID_UPDATE_MASK", [("update_mask", f"one or more of {', '.join(UPDATABLE_FIELDS)}; got {paths}")]
            )
        _check_id(voice.voice_id, "voice.voice_id")
        if not voice.etag:
            raise _invalid("ETAG_REQUIRED", [("voice.etag", "required: the etag of the version being changed")])
        problems = _metadata_violations(voice, paths)
        if problems:
            raise _invalid("INVALID_VOICE", problems)
        changes = {path: list(voice.tags) if path == "tags" else getattr(voice, path) for path in paths}
        updated = await self.store.update_voice(request.tenant, voice.voice_id, voice.etag, changes)
        return registry_pb2.UpdateVoiceResponse(voice=updated)

    async def DeleteVoice(self, request: registry_pb2.DeleteVoiceRequest, context) -> registry_pb2.DeleteVoiceResponse:
        _check_tenant(request.tenant)
        _check_id(request.voice_id, "voice_id")
        await self.store.delete_voice(request.tenant, request.voice_id, request.etag)
        return registry_pb2.DeleteVoiceResponse()

    async def PutSpeakerEmbedding(
        self, request: registry_pb2.PutSpeakerEmbeddingRequest, context
    ) -> registry_pb2.PutSpeakerEmbeddingResponse:
        _check_tenant(request.tenant)
        _check_id(request.voice_id, "voice_id")
        problems = _embedding_violations(request.model, request.embedding.values, "model", "embedding.values")
        if problems:
            raise _invalid("INVALID_EMBEDDING", problems)
        await self.store.put_speaker_embedding(request.tenant, request.voice_id, request.model, request.embedding)
        return registry_pb2.PutSpeakerEmbeddingResponse()

    async def SavePreview(self, request: registry_pb2.SavePreviewRequest, context) -> registry_pb2.SavePreviewResponse:
        _check_tenant(request.tenant)
        preview = request.preview
        problems = [
            (f"preview.{field}", f"at most {limit} characters")
            for field, limit in (
                ("description", VOICE_FIELD_CHARS["description"]),
                ("text", VOICE_FIELD_CHARS["transcript"]),
                ("language", VOICE_FIELD_CHARS["language"]),
            )
            if len(getattr(preview, field)) > limit
        ]
        problems += _audio_violations(preview.audio_flac, preview.frames, "preview.audio_flac", "preview.frames")
        if problems:
            raise _invalid("INVALID_PREVIEW", problems)
        # 0 asks for the longest; longer than that is cut to it.
        ttl = min(request.ttl_seconds or self.preview_ttl_seconds, self.preview_ttl_seconds)
        preview_id, expire_time = await self.store.save_preview(request.tenant, preview, ttl)
        return registry_pb2.SavePreviewResponse(preview_id=preview_id, expire_time=expire_time)

    async def GetPreview(self, request: registry_pb2.GetPreviewRequest, context) -> registry_pb2.GetPreviewResponse:
        _check_tenant(request.tenant)
        _check_id(request.preview_id, "preview_id")
        return registry_pb2.GetPreviewResponse(preview=await self.store.get_preview(request.tenant, request.preview_id))


# ----- process wiring -----


def connect(config: RegistryConfig) -> redis.Redis:
    """The Redis client: bounded waits and no retries, so that an RPC fails within about the
    timeout when Redis is away; connections are checked as they leave the pool, so that the next
    call after Redis comes back reconnects."""
    try:
        return redis.Redis.from_url(
            config.redis_url,
            password=config.redis_password or None,
            socket_connect_timeout=config.redis_timeout_seconds,
            socket_timeout=config.redis_timeout_seconds,
            # A retried write whose reply was lost could run twice; the caller decides instead.
            retry=Retry(NoBackoff(), retries=0),
            # Off, so that the pool checks a connection before reusing it (redis-py skips that
            # check while maintenance notifications are on, even "auto" on RESP2): otherwise the
            # first calls after a Redis restart fail on connections that Redis closed.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
    except ValueError as error:
        raise ConfigError(
            RegistryConfig.__name__,
            [
                Problem("REGISTRY_REDIS_URL", config.redis_url, f"a Redis URL ({error})"),
            ],
        ) from None


@contextlib.asynccontextmanager
async def build(config: RegistryConfig):
    """Connect to Redis (which may be down: every RPC then answers UNAVAILABLE until it is back),
    check its persistence settings, yield the registration, close the connections after serving."""
    client = connect(config)
    store = VoiceStore(client, max_voices_per_tenant=config.max_voices_per_tenant)
    try:
        await store.check_durability()
        servicer = RegistryServicer(store, preview_ttl_seconds=config.preview_ttl_seconds)
        yield [Registration(registry_pb2_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)]
    finally:
        await client.aclose()
