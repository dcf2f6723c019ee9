"""The registry as the gateway uses it, and saved voices resolved for synthesis.

`Catalogue.voice_for_synthesis`: one cheap registry GetVoice (metadata only) per request, which
also tells a deleted voice (NOT_FOUND) and the current etag; the assets (frames, embeddings) come
from a bounded LRU cache per (tenant, voice id) and are fetched again whenever the etag differs
from the cached one. Assets are written once, with the voice, and only ever gain embeddings, so
assets cached under the current etag are the registry's. A Base model that joined after the voice
was saved computes its embedding from the stored reference audio on first use and stores it
(PutSpeakerEmbedding).

Every call to a dependency here names the public request it is made for, so that its errors
reach the client in that request's terms (fields.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import grpc
import numpy as np

from qwentts.generator.v1 import generator_pb2
from qwentts.registry.v1 import registry_pb2, registry_pb2_grpc
from qwentts.v1 import voices_pb2
from shared.audio import decode_audio
from shared.errors import FailedPrecondition, NotFound
from shared.frames import array_to_samples, frames_to_array
from shared.limits import quote

from .fields import public_error, public_field
from .routing import Pool

VOICE_CACHE_SIZE = 256  # resolved voices kept per gateway (frames and embeddings: ~50 kB each)


async def call_dependency(method, message, context: grpc.aio.ServicerContext, dependency: str, request: str):
    """`await method(message)` within the client's deadline; a failure is raised as the error of
    the public `request` (`fields.public_error`)."""
    try:
        return await method(message, timeout=context.time_remaining())
    except grpc.aio.AioRpcError as error:
        raise public_error(error, dependency, request) from None


def voice_not_found(voice_id: str, field: str) -> NotFound:
    return NotFound(f"no voice {quote(voice_id)}", reason="VOICE_NOT_FOUND", metadata={"field": field})


async def embed_speaker(
    pool: Pool, audio: np.ndarray, sample_rate: int, context, request: str
) -> registry_pb2.SpeakerEmbedding:
    message = generator_pb2.EmbedSpeakerRequest(audio=array_to_samples(audio, sample_rate))
    reply = await call_dependency(pool.stub.EmbedSpeaker, message, context, "generator", request)
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

    async def call(self, method: str, message, context, request: str):
        """The registry's `method`, its errors passed on in the terms of the public `request`."""
        self.check_available()
        return await call_dependency(getattr(self._registry, method), message, context, "registry", request)

    def forget(self, tenant: str, voice_id: str) -> None:
        self._cache.pop((tenant, voice_id), None)

    async def voice_for_synthesis(
        self, tenant: str, voice_id: str, pool: Pool, context, request: str
    ) -> SynthesisVoice:
        """The tenant's saved voice as a cloned-voice prompt for `pool`'s Base model; NotFound
        (VOICE_NOT_FOUND) if the tenant has no such voice. `request`: the public request's name."""
        voice = (await self._get(tenant, voice_id, False, context, request)).voice
        key = (tenant, voice_id)
        cached = self._cache.get(key)
        if cached is None or cached.etag != voice.etag:
            reply = await self._get(tenant, voice_id, True, context, request)
            voice = reply.voice
            reply.assets.ClearField("reference_flac")
            cached = self._cache[key] = _Cached(voice.etag, reply.assets)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        embeddings = cached.assets.speaker_embeddings
        if pool.model.name not in embeddings:
            embeddings[pool.model.name].CopyFrom(
                await self._embed_stored_voice(tenant, voice_id, pool, context, request)
            )
        cloned = generator_pb2.ClonedVoice(speaker_embedding=embeddings[pool.model.name].values)
        frames = None
        if voice.clone_mode == voices_pb2.CLONE_MODE_IN_CONTEXT:
            cloned.reference_frames.CopyFrom(cached.assets.reference_frames)
            cloned.reference_text = voice.transcript
            frames = frames_to_array(cached.assets.reference_frames)
        return SynthesisVoice(cloned, voice.language, frames)

    async def _get(self, tenant: str, voice_id: str, assets: bool, context, request: str):
        message = registry_pb2.GetVoiceRequest(tenant=tenant, voice_id=voice_id, include_assets=assets)
        try:
            return await self.call("GetVoice", message, context, request)
        except NotFound:
            self.forget(tenant, voice_id)
            raise voice_not_found(voice_id, public_field("voice_id", request)) from None

    async def _embed_stored_voice(
        self, tenant: str, voice_id: str, pool: Pool, context, request: str
    ) -> registry_pb2.SpeakerEmbedding:
        """The embedding of a Base model that came after the voice was saved: computed once, from
        the stored reference audio, and stored."""
        assets = (await self._get(tenant, voice_id, True, context, request)).assets
        audio, sample_rate = decode_audio(assets.reference_flac)
        embedding = await embed_speaker(pool, audio, sample_rate, context, request)
        await self.call(
            "PutSpeakerEmbedding",
            registry_pb2.PutSpeakerEmbeddingRequest(
                tenant=tenant, voice_id=voice_id, model=pool.model.name, embedding=embedding
            ),
            context,
            request,
        )
        return embedding
