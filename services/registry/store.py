"""The voice catalogue's data model on Redis: every key, and every multi-key write as one Lua script.

Keys (docs/registry.md, "Data model"); `{T}` is the tenant, percent-encoded, in braces: a Redis
Cluster hash tag, so that a tenant's keys share a slot and the scripts may touch them together.

    qwentts:{T}:voice:<id>      hash   meta (the qwentts.v1.Voice as protobuf JSON), etag, name,
                                       reference_flac, reference_frames (codec.v1.Frames bytes),
                                       embedding:<model> (registry.v1.SpeakerEmbedding bytes)
    qwentts:{T}:names           hash   voice name -> voice id (one voice per name)
    qwentts:{T}:voices          zset   every voice id, score 0: ZRANGE BYLEX lists them in id order
    qwentts:{T}:preview:<id>    string registry.v1.Preview bytes, with a TTL
    qwentts:{T}:request:<rid>   hash   digest, voice: the voice a CreateVoice with request id <rid>
                                       created (AIP-155), for REQUEST_TTL_SECONDS

One hash holds a voice and all its assets, so a delete is one DEL and nothing can be left behind.
Voice ids are 12 hex digits of the creation time in ms then 16 random hex digits: sorted as
strings they are in creation order, which makes a cursor ("after this id") a stable page token.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote as percent_encode

import redis.asyncio as redis
from google.protobuf import json_format, timestamp_pb2

from qwentts.codec.v1 import codec_pb2
from qwentts.registry.v1 import registry_pb2
from qwentts.v1 import voices_pb2
from shared.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from shared.limits import quote

log = logging.getLogger(__name__)

VOICE_ID_RE = re.compile(r"[0-9a-f]{28}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
REQUEST_TTL_SECONDS = 24 * 3600
PREVIEW_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)
EMBEDDING_PREFIX = "embedding:"


class VoiceNotFound(NotFound):
    reason = "VOICE_NOT_FOUND"


class PreviewNotFound(NotFound):
    reason = "PREVIEW_NOT_FOUND"


class VoiceNameTaken(AlreadyExists):
    reason = "VOICE_NAME_TAKEN"


class EtagMismatch(Aborted):
    reason = "ETAG_MISMATCH"


class VoiceLimitReached(ResourceExhausted):
    reason = "VOICE_LIMIT_REACHED"


class RequestIdReused(InvalidArgument):
    reason = "REQUEST_ID_REUSED"


class RedisUnavailable(Unavailable):
    reason = "REDIS_UNAVAILABLE"


# Each script checks everything before its first write: Redis runs a script alone, and one that
# fails before writing (or is refused for lack of memory at its first write) changes nothing.

# KEYS: voice, names, voices[, request]. ARGV: id, name, max voices, request digest, request TTL,
# a stale voice id (see create_voice), then the voice hash's field/value pairs.
_CREATE = """
if #KEYS == 4 then
  local seen = redis.call('HMGET', KEYS[4], 'digest', 'voice')
  if seen[1] and seen[2] ~= ARGV[6] then
    if seen[1] ~= ARGV[4] then return {'REQUEST_ID_REUSED'} end
    return {'REPLAY', seen[2]}
  end
end
local holder = redis.call('HGET', KEYS[2], ARGV[2])
if holder then return {'NAME_TAKEN', holder} end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {'LIMIT_REACHED'} end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if #KEYS == 4 then
  redis.call('HSET', KEYS[4], 'digest', ARGV[4], 'voice', ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return {'OK'}
"""

# KEYS: voice, names. ARGV: id, expected etag, new name, new meta, new etag.
_UPDATE = """
local current = redis.call('HMGET', KEYS[1], 'etag', 'name')
if not current[1] then return 'NOT_FOUND' end
if current[1] ~= ARGV[2] then return 'ETAG_MISMATCH' end
if ARGV[3] ~= current[2] then
  if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return 'NAME_TAKEN' end
  redis.call('HDEL', KEYS[2], current[2])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[1], 'meta', ARGV[4], 'etag', ARGV[5], 'name', ARGV[3])
return 'OK'
"""

# KEYS: voice, names, voices. ARGV: id, expected etag ('' for any).
_DELETE = """
local current = redis.call('HMGET', KEYS[1], 'etag', 'name')
if not current[1] then return 'NOT_FOUND' end
if ARGV[2] ~= '' and current[1] ~= ARGV[2] then return 'ETAG_MISMATCH' end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], current[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'OK'
"""

# KEYS: voice. ARGV: field, value. Only onto a voice that still exists (HSET alone would recreate it).
_PUT_FIELD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'OK'
"""


def _translate_redis_errors(method):
    """Redis unreachable or too slow -> UNAVAILABLE (REDIS_UNAVAILABLE); the details go to the log
    only, since they name internal addresses."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("Redis failed in %s: %s: %s", method.__name__, type(error).__name__, error)
            raise RedisUnavailable("the voice store is unavailable; retry later") from None

    return wrapper


def _voice_not_found(voice_id: str) -> VoiceNotFound:
    # The id goes into the metadata only when it is one (a caller's long string would overflow
    # the trailers), and the message quotes at most a short prefix of it.
    metadata = {"voiceId": voice_id} if VOICE_ID_RE.fullmatch(voice_id) else None
    return VoiceNotFound(f"voice {quote(voice_id)} not found", metadata=metadata)


def _etag_mismatch(voice_id: str) -> EtagMismatch:
    return EtagMismatch(
        f"voice {quote(voice_id)} has changed since that etag; read it again", metadata={"voiceId": voice_id}
    )


def _check(outcome: bytes, voice_id: str, name: str = "", holder: bytes | None = None) -> None:
    """Raise the error that a script's outcome stands for (`holder`: the id of the voice that has
    the name, when the script tells)."""
    if outcome == b"NOT_FOUND":
        raise _voice_not_found(voice_id)
    if outcome == b"ETAG_MISMATCH":
        raise _etag_mismatch(voice_id)
    if outcome == b"NAME_TAKEN":
        raise VoiceNameTaken(
            f"there is already a voice named {quote(name)}", metadata={"voiceId": holder.decode()} if holder else None
        )
    if outcome == b"REQUEST_ID_REUSED":
        raise RequestIdReused(
            "this request_id was used before for a different voice; use a new id for each voice",
            [("request_id", "used before with different content")],
        )
    if outcome == b"LIMIT_REACHED":
        raise VoiceLimitReached("the tenant has reached its maximum number of voices; delete some first")
    assert outcome == b"OK", outcome


def _now() -> timestamp_pb2.Timestamp:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return now


def _new_etag() -> str:
    return secrets.token_hex(8)


def _to_json(voice: voices_pb2.Voice) -> str:
    return json_format.MessageToJson(voice, preserving_proto_field_name=True, indent=None)


def _from_json(meta: bytes) -> voices_pb2.Voice:
    # A newer registry may have written fields this one does not know yet: skip them.
    return json_format.Parse(meta, voices_pb2.Voice(), ignore_unknown_fields=True)


class VoiceStore:
    """Voices, their assets and previews of every tenant, in one Redis database.

    Methods raise VoiceNotFound, PreviewNotFound, VoiceNameTaken, EtagMismatch, VoiceLimitReached,
    and RedisUnavailable when Redis does not answer within the client's socket timeouts. Inputs are
    assumed valid (the servicer checks them); ids from callers are checked here, since they make keys.
    """

    def __init__(self, client: redis.Redis, *, max_voices_per_tenant: int):
        self.redis = client
        self.max_voices_per_tenant = max_voices_per_tenant
        self._create = client.register_script(_CREATE)
        self._update = client.register_script(_UPDATE)
        self._delete = client.register_script(_DELETE)
        self._put_field = client.register_script(_PUT_FIELD)

    # ----- keys -----

    @staticmethod
    def tenant_prefix(tenant: str) -> str:
        """The prefix of every key of `tenant` (quoted, so no tenant name can reach another's keys)."""
        return f"qwentts:{{{percent_encode(tenant, safe='')}}}:"

    def _voice_key(self, tenant: str, voice_id: str) -> str:
        if not VOICE_ID_RE.fullmatch(voice_id):  # cannot exist; also keeps odd strings out of keys
            raise _voice_not_found(voice_id)
        return f"{self.tenant_prefix(tenant)}voice:{voice_id}"

    def _names_key(self, tenant: str) -> str:
        return f"{self.tenant_prefix(tenant)}names"

    def _voices_key(self, tenant: str) -> str:
        return f"{self.tenant_prefix(tenant)}voices"

    def _preview_key(self, tenant: str, preview_id: str) -> str:
        if not PREVIEW_ID_RE.fullmatch(preview_id):
            raise PreviewNotFound(f"preview {quote(preview_id)} not found or expired")
        return f"{self.tenant_prefix(tenant)}preview:{preview_id}"

    # ----- voices -----

    def _request_key(self, tenant: str, request_id: str) -> str:
        return f"{self.tenant_prefix(tenant)}request:{request_id}"

    @_translate_redis_errors
    async def create_voice(
        self,
        tenant: str,
        voice: voices_pb2.Voice,
        assets: registry_pb2.VoiceAssets,
        request_id: str = "",
        request_digest: bytes = b"",
    ) -> voices_pb2.Voice:
        """Save a new voice with its assets; returns it with its id, etag and times assigned.

        With a `request_id` (checked by the caller against REQUEST_ID_RE) the call is idempotent:
        if that id created a voice that still exists, that voice is returned (RequestIdReused if
        `request_digest` differs from the first call's). A voice created and then deleted frees
        its request id for a new voice."""
        now = _now()
        saved = voices_pb2.Voice()
        saved.CopyFrom(voice)
        saved.voice_id = f"{now.ToMilliseconds():012x}{secrets.token_hex(8)}"
        saved.etag = _new_etag()
        saved.read_only = False
        saved.create_time.CopyFrom(now)
        saved.update_time.CopyFrom(now)
        fields = {
            "meta": _to_json(saved),
            "etag": saved.etag,
            "name": saved.name,
            "reference_flac": assets.reference_flac,
            "reference_frames": assets.reference_frames.SerializeToString(),
            **{
                EMBEDDING_PREFIX + model: embedding.SerializeToString()
                for model, embedding in assets.speaker_embeddings.items()
            },
        }
        keys = [self._voice_key(tenant, saved.voice_id), self._names_key(tenant), self._voices_key(tenant)]
        if request_id:
            keys.append(self._request_key(tenant, request_id))
        stale = ""
        while True:
            outcome = await self._create(
                keys=keys,
                args=[
                    saved.voice_id,
                    saved.name,
                    self.max_voices_per_tenant,
                    request_digest,
                    REQUEST_TTL_SECONDS,
                    stale,
                    *(item for pair in fields.items() for item in pair),
                ],
            )
            if outcome[0] != b"REPLAY":
                _check(outcome[0], saved.voice_id, saved.name, *outcome[1:2])
                return saved
            try:
                return (await self.get_voice(tenant, outcome[1].decode()))[0]
            except VoiceNotFound:
                stale = outcome[1].decode()  # deleted since: the request id creates anew

    @_translate_redis_errors
    async def get_voice(
        self, tenant: str, voice_id: str, *, include_assets: bool = False
    ) -> tuple[voices_pb2.Voice, registry_pb2.VoiceAssets | None]:
        """The voice, and its assets if asked for (None otherwise)."""
        key = self._voice_key(tenant, voice_id)
        if not include_assets:
            meta = await self.redis.hget(key, "meta")
            if meta is None:
                raise _voice_not_found(voice_id)
            return _from_json(meta), None
        record = {field.decode(): value for field, value in (await self.redis.hgetall(key)).items()}
        if not record:
            raise _voice_not_found(voice_id)
        assets = registry_pb2.VoiceAssets(
            reference_flac=record["reference_flac"],
            reference_frames=codec_pb2.Frames.FromString(record["reference_frames"]),
        )
        for field, value in record.items():
            if field.startswith(EMBEDDING_PREFIX):
                assets.speaker_embeddings[field.removeprefix(EMBEDDING_PREFIX)].ParseFromString(value)
        return _from_json(record["meta"]), assets

    @_translate_redis_errors
    async def list_voices(
        self,
        tenant: str,
        *,
        after: str,
        limit: int,
        batch: int,
        max_scanned: int,
        match: Callable[[voices_pb2.Voice], bool],
    ) -> tuple[list[voices_pb2.Voice], str]:
        """Up to `limit` voices that `match`, in id order, from the first id after `after` ("" for
        the start), reading `batch` ids at a time and at most about `max_scanned` of them.

        Returns (voices, cursor): the cursor is the id to continue after, "" at the end. Voices
        created meanwhile appear if their id is past the cursor; deleted ones are skipped.
        """
        voices: list[voices_pb2.Voice] = []
        cursor, scanned = after, 0
        prefix = self.tenant_prefix(tenant)
        while True:
            ids = await self.redis.zrange(
                self._voices_key(tenant), f"({cursor}" if cursor else "-", "+", bylex=True, offset=0, num=batch
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for voice_id in ids:
                    pipe.hget(f"{prefix}voice:{voice_id.decode()}", "meta")
                metas = await pipe.execute()
            for voice_id, meta in zip(ids, metas):
                cursor = voice_id.decode()
                if meta is None:  # deleted since the ZRANGE
                    continue
                voice = _from_json(meta)
                if match(voice):
                    voices.append(voice)
                    if len(voices) == limit:
                        return voices, cursor
            scanned += len(ids)
            if len(ids) < batch:
                return voices, ""
            if scanned >= max_scanned:  # bounds one call's work when a filter matches little
                return voices, cursor

    @_translate_redis_errors
    async def update_voice(
        self, tenant: str, voice_id: str, etag: str, changes: Mapping[str, object]
    ) -> voices_pb2.Voice:
        """Set metadata fields (name -> value; a list replaces a repeated field) if the voice is
        still at `etag`; returns the new version."""
        voice, _ = await self.get_voice(tenant, voice_id)
        if voice.etag != etag:
            raise _etag_mismatch(voice_id)
        for field, value in changes.items():
            if isinstance(value, (list, tuple)):
                getattr(voice, field)[:] = value
            else:
                setattr(voice, field, value)
        voice.etag = _new_etag()
        voice.update_time.CopyFrom(_now())
        # The script re-checks the etag: whatever changed since the read above makes it fail.
        outcome = await self._update(
            keys=[self._voice_key(tenant, voice_id), self._names_key(tenant)],
            args=[voice_id, etag, voice.name, _to_json(voice), voice.etag],
        )
        _check(outcome, voice_id, voice.name)
        return voice

    @_translate_redis_errors
    async def delete_voice(self, tenant: str, voice_id: str, etag: str = "") -> None:
        """Remove the voice and everything of it; only if still at `etag`, when given."""
        outcome = await self._delete(
            keys=[self._voice_key(tenant, voice_id), self._names_key(tenant), self._voices_key(tenant)],
            args=[voice_id, etag],
        )
        _check(outcome, voice_id)

    @_translate_redis_errors
    async def put_speaker_embedding(
        self, tenant: str, voice_id: str, model: str, embedding: registry_pb2.SpeakerEmbedding
    ) -> None:
        """Store (or replace) `model`'s embedding of the voice. The etag does not change: it
        versions what UpdateVoice changes, and a cache filled on first use must not fail updates."""
        outcome = await self._put_field(
            keys=[self._voice_key(tenant, voice_id)], args=[EMBEDDING_PREFIX + model, embedding.SerializeToString()]
        )
        _check(outcome, voice_id)

    # ----- previews -----

    @_translate_redis_errors
    async def save_preview(
        self, tenant: str, preview: registry_pb2.Preview, ttl_seconds: int
    ) -> tuple[str, timestamp_pb2.Timestamp]:
        """Keep `preview` for `ttl_seconds`; returns (its id, when it expires)."""
        preview_id = secrets.token_urlsafe(24)
        expire_time = timestamp_pb2.Timestamp()
        expire_time.FromSeconds(int(time.time()) + ttl_seconds)
        await self.redis.set(self._preview_key(tenant, preview_id), preview.SerializeToString(), ex=ttl_seconds)
        return preview_id, expire_time

    @_translate_redis_errors
    async def get_preview(self, tenant: str, preview_id: str) -> registry_pb2.Preview:
        data = await self.redis.get(self._preview_key(tenant, preview_id))
        if data is None:
            raise PreviewNotFound(f"preview {quote(preview_id)} not found or expired")
        return registry_pb2.Preview.FromString(data)

    # ----- operations -----

    async def check_durability(self) -> None:
        """Log a WARNING unless Redis runs with appendonly yes and appendfsync always (or if
        that cannot be checked: managed Redis often forbids CONFIG; Redis may be down)."""
        advice = "acknowledged writes survive a crash only with appendonly yes, appendfsync always"
        try:
            config = await self.redis.config_get("appendonly", "appendfsync")
        except redis.RedisError as error:
            log.warning("could not check Redis persistence (%s: %s); %s", type(error).__name__, error, advice)
            return
        appendonly, appendfsync = config.get("appendonly", "?"), config.get("appendfsync", "?")  # decoded by redis-py
        if (appendonly, appendfsync) != ("yes", "always"):
            log.warning("Redis runs with appendonly %s, appendfsync %s; %s", appendonly, appendfsync, advice)
        else:
            log.info("Redis persistence: appendonly yes, appendfsync always")
