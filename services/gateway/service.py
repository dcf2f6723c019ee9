"""The gateway process: its configuration, the public TextToSpeechService, and `build`.

The synthesis RPCs validate the request (gateway.py), then run one `Synthesis` (pipeline.py):
generator -> codec -> audio out to the client. `build` makes the `Gateway` that both public
servicers share (this TextToSpeechServicer and voices.py's VoiceCatalogServicer): the generator
pools (routing.py), the codec stub, the voice catalogue (catalogue.py), the tenancy (tenancy.py)
and the limits. Every RPC starts by authenticating the caller.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from qwentts.codec.v1 import codec_pb2_grpc
from qwentts.registry.v1 import registry_pb2_grpc
from qwentts.v1 import tts_pb2, tts_pb2_grpc, voices_pb2_grpc
from shared.audio import MODEL_SAMPLE_RATE
from shared.client import open_channel
from shared.config import ConfigError, Problem, env
from shared.errors import InvalidArgument, ServiceError, read_to_half_close
from shared.limits import MAX_TEXT_CHARS
from shared.service import ProcessConfig, Registration

from .catalogue import Catalogue
from .gateway import Gateway, Limits, empty_text
from .pipeline import Synthesis, once
from .routing import Router, read_routes
from .tenancy import Tenancy, parse_api_keys
from .voices import VoiceCatalogServicer


@dataclass(frozen=True)
class GatewayConfig(ProcessConfig):
    host: str = env("GATEWAY_HOST", default="127.0.0.1")
    port: int = env("GATEWAY_PORT", default=50051, min=0, max=65535)
    codec_address: str = env("GATEWAY_CODEC_ADDRESS", default="127.0.0.1:50052")
    routes_file: Path = env("GATEWAY_ROUTES_FILE")
    # Frames per audio chunk: the first chunk is small so audio starts early, later ones larger
    # (fewer, cheaper codec calls); the last number repeats.
    chunk_schedule: tuple[str, ...] = env("GATEWAY_CHUNK_SCHEDULE", default=("1", "2", "4", "8"))
    max_text_chars: int = env("GATEWAY_MAX_TEXT_CHARS", default=MAX_TEXT_CHARS, min=1)
    max_audio_seconds: float = env("GATEWAY_MAX_AUDIO_SECONDS", default=300.0, min=1)
    # How long to wait at start for every generator pool to answer DescribeModel.
    discovery_timeout_seconds: float = env("GATEWAY_DISCOVERY_TIMEOUT_SECONDS", default=120.0, min=1)
    # The registry (voice catalogue); empty: none, and saved voices are FAILED_PRECONDITION.
    registry_address: str = env("GATEWAY_REGISTRY_ADDRESS", default="")
    # "key1:tenant-a,key2:tenant-b"; empty: no authentication, every caller is tenant "default".
    api_keys: tuple[str, ...] = env("GATEWAY_API_KEYS", default=(), secret=True)
    # How long a DesignVoice preview can be saved with CreateVoice.
    preview_ttl_seconds: int = env("GATEWAY_PREVIEW_TTL_SECONDS", default=900, min=1, max=86400)

    def __post_init__(self):
        problems = []
        if not all(item.isdigit() and int(item) > 0 for item in self.chunk_schedule):
            problems.append(
                Problem("GATEWAY_CHUNK_SCHEDULE", ",".join(self.chunk_schedule), "comma-separated positive integers")
            )
        try:
            parse_api_keys(self.api_keys)
        except ValueError as error:
            problems.append(Problem("GATEWAY_API_KEYS", "***", f'comma-separated "key:tenant" pairs ({error})'))
        if problems:
            raise ConfigError(type(self).__name__, problems)

    @property
    def chunk_frames(self) -> tuple[int, ...]:
        return tuple(int(item) for item in self.chunk_schedule)


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def _synthesis(self, request, context) -> Synthesis:
        tenant = self.gateway.tenancy.tenant(context)
        name = request.DESCRIPTOR.name  # errors name fields as this request does (fields.py)
        self.gateway.check_config(request.config, name)
        self.gateway.check_text(request.text, "text")
        # Text known up front: the prompt holds all of it (the reference's non-streaming mode).
        return await Synthesis.open(
            self.gateway, request.config, request=name, non_streaming=True, context=context, tenant=tenant
        )

    async def Synthesize(self, request, context):
        synthesis = await self._synthesis(request, context)
        audio, summary = await synthesis.whole(request.text)
        return tts_pb2.SynthesizeResponse(audio=audio, summary=summary)

    async def StreamSynthesize(self, request, context):
        synthesis = await self._synthesis(request, context)
        async for kind, message in synthesis.run(once(request.text)):
            yield tts_pb2.StreamSynthesizeResponse(**{kind: message})

    async def StreamingSynthesize(self, request_iterator, context):
        try:
            synthesis = await self._streaming_synthesis(request_iterator, context)
            async for kind, message in synthesis.run(self._client_texts(request_iterator)):
                yield tts_pb2.StreamingSynthesizeResponse(**{kind: message})
        except ServiceError:  # refused, as it opens or later: not into the client's writes
            await read_to_half_close(request_iterator)
            raise

    async def _streaming_synthesis(self, request_iterator, context) -> Synthesis:
        """The synthesis of a bidirectional stream, from its first message (the config)."""
        tenant = self.gateway.tenancy.tenant(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("request") != "config":
            raise InvalidArgument(
                "the first message must carry the config (and no text)",
                [("config", "required in the first message")],
                reason="CONFIG_REQUIRED",
            )
        name = first.DESCRIPTOR.name
        self.gateway.check_config(first.config, name)
        return await Synthesis.open(
            self.gateway, first.config, request=name, non_streaming=False, context=context, tenant=tenant
        )

    async def _client_texts(self, request_iterator):
        """The text pieces of a bidirectional stream after its config, validated as they come."""
        total, spoken = 0, False
        async for request in request_iterator:
            if request.WhichOneof("request") != "input":
                raise InvalidArgument(
                    "only the first message may carry a config",
                    [("config", "sent again")],
                    reason="CONFIG_ALREADY_SENT",
                )
            total += len(request.input.text)
            if total > self.gateway.limits.max_text_chars:
                raise InvalidArgument(
                    f"the stream's text exceeds {self.gateway.limits.max_text_chars} characters",
                    [("input.text", "too long in total")],
                    reason="TEXT_TOO_LONG",
                )
            spoken = spoken or bool(request.input.text.strip())
            yield request.input.text, request.input.flush
        if not spoken:
            raise empty_text("input.text")

    async def ListModels(self, request, context):
        self.gateway.tenancy.tenant(context)
        return tts_pb2.ListModelsResponse(models=[p.public_model(MODEL_SAMPLE_RATE) for p in self.gateway.router.pools])


@contextlib.asynccontextmanager
async def build(config: GatewayConfig):
    addresses = read_routes(config.routes_file)
    router = await Router.connect(addresses, config.discovery_timeout_seconds)
    codec_channel = open_channel(config.codec_address)
    registry_channel = open_channel(config.registry_address) if config.registry_address else None
    try:
        registry = registry_pb2_grpc.RegistryServiceStub(registry_channel) if registry_channel else None
        gateway = Gateway(
            router=router,
            codec=codec_pb2_grpc.CodecServiceStub(codec_channel),
            catalogue=Catalogue(registry),
            tenancy=Tenancy(parse_api_keys(config.api_keys)),
            limits=Limits(config.max_text_chars, config.max_audio_seconds, config.chunk_frames),
        )
        yield [
            Registration(
                tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server,
                TextToSpeechServicer(gateway),
                "qwentts.v1.TextToSpeechService",
            ),
            Registration(
                voices_pb2_grpc.add_VoiceCatalogServiceServicer_to_server,
                VoiceCatalogServicer(gateway, config.preview_ttl_seconds),
                "qwentts.v1.VoiceCatalogService",
            ),
        ]
    finally:
        await codec_channel.close()
        if registry_channel is not None:
            await registry_channel.close()
        await router.close()
