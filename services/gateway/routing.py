"""Which generator pool serves a request: the routes file and the voice kind.

The routes file (TOML, `GATEWAY_ROUTES_FILE`) lists the generator pools; each pool serves one
model, possibly from many replicas behind one address (`dns:///name:port` resolves to every pod
and the channel balances round-robin)::

    [[generators]]
    address = "127.0.0.1:50054"

What each pool serves (name, kind, languages, speakers) is asked from the pool itself
(DescribeModel) at start, so the file never disagrees with the checkpoints. A request's voice
kind picks the model kind: `preset_speaker` a CustomVoice model that has the speaker (and follows
instructions, if the request has one), `design_description` a VoiceDesign model, `voice_id` a
Base model (a saved voice: the gateway resolves it, see catalogue.py); `config.model` picks a model
by name. The voice ids of preset speakers, "preset:<model>:<speaker>" (the catalogue lists them
so), mean that speaker of that model (`preset_as_speaker`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import tomllib

from qwentts.generator.v1 import generator_pb2, generator_pb2_grpc
from qwentts.v1 import tts_pb2
from shared.client import open_channel
from shared.config import ConfigError, Problem
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.limits import quote

log = logging.getLogger(__name__)

MODEL_TYPE_OF_VOICE = {"preset_speaker": "custom_voice", "design_description": "voice_design", "voice_id": "base"}
PRESET_PREFIX = "preset:"
MODEL_KINDS = {
    "base": tts_pb2.MODEL_KIND_BASE,
    "custom_voice": tts_pb2.MODEL_KIND_CUSTOM_VOICE,
    "voice_design": tts_pb2.MODEL_KIND_VOICE_DESIGN,
}


def preset_voice_id(model: str, speaker: str) -> str:
    return f"{PRESET_PREFIX}{model}:{speaker}"


def parse_preset_voice_id(voice_id: str) -> tuple[str, str] | None:
    """(model, speaker) of a "preset:<model>:<speaker>" voice id; None for any other id."""
    if not voice_id.startswith(PRESET_PREFIX):
        return None
    model, _, speaker = voice_id.removeprefix(PRESET_PREFIX).rpartition(":")
    return (model, speaker) if model and speaker else None


def preset_as_speaker(config: tts_pb2.SynthesisConfig) -> tts_pb2.SynthesisConfig:
    """`config` with a "preset:<model>:<speaker>" voice id turned into that preset speaker of that
    model; any other config unchanged (the same object)."""
    preset = parse_preset_voice_id(config.voice.voice_id)
    if preset is None:
        return config
    config = tts_pb2.SynthesisConfig.FromString(config.SerializeToString())
    config.model, config.voice.preset_speaker = preset
    return config


def read_routes(path: Path) -> list[str]:
    """The generator addresses of the routes file (GATEWAY_ROUTES_FILE); ConfigError on any fault."""

    def bad(expected: str) -> ConfigError:
        return ConfigError("routes file", [Problem("GATEWAY_ROUTES_FILE", str(path), expected)])

    try:
        routes = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise bad(f"a readable TOML file ({error})") from None
    generators = routes.get("generators")
    if not isinstance(generators, list) or not generators:
        raise bad("[[generators]] tables")
    addresses = []
    for i, entry in enumerate(generators):
        address = entry.get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str) or not address:
            raise bad(f'generators[{i}] to have an address = "host:port"')
        addresses.append(address)
    return addresses


@dataclass
class Pool:
    address: str
    channel: grpc.aio.Channel
    stub: generator_pb2_grpc.GeneratorServiceStub
    model: generator_pb2.DescribeModelResponse

    def has_speaker(self, speaker: str) -> bool:
        return speaker.lower() in (s.name.lower() for s in self.model.speakers)

    def check_language(self, language: str, field: str) -> None:
        """Refuse a language the model does not speak, naming `field` (see Gateway.check_config
        for why the gateway checks what the generator checks too)."""
        known = {name.lower() for name in self.model.languages} | {"auto"}
        if language.lower() not in known:
            raise InvalidArgument(
                f"unsupported language {quote(language)} for model {self.model.name}; supported: "
                f"{', '.join(sorted(known))}",
                [(field, "not a language of the model")],
                reason="UNSUPPORTED_LANGUAGE",
            )

    def public_model(self, sample_rate: int) -> tts_pb2.Model:
        m = self.model
        return tts_pb2.Model(
            name=m.name,
            kind=MODEL_KINDS.get(m.model_type, tts_pb2.MODEL_KIND_UNSPECIFIED),
            size=m.size,
            languages=m.languages,
            supports_instruct=m.supports_instruct,
            native_sample_rate_hz=sample_rate,
            speakers=[tts_pb2.PresetSpeaker(name=s.name, dialect=s.dialect) for s in m.speakers],
        )


async def _describe(address: str, deadline: float) -> Pool:
    """Connect to a pool and ask what it serves, retrying until `deadline` (loop time)."""
    channel = open_channel(address)
    stub = generator_pb2_grpc.GeneratorServiceStub(channel)
    loop = asyncio.get_running_loop()
    while True:
        try:
            model = await stub.DescribeModel(generator_pb2.DescribeModelRequest(), timeout=5, wait_for_ready=True)
            return Pool(address, channel, stub, model)
        except grpc.aio.AioRpcError as error:
            if loop.time() >= deadline:
                await channel.close()
                raise RuntimeError(f"generator at {address} did not answer: {error.details()}") from None
            await asyncio.sleep(0.5)


class Router:
    def __init__(self, pools: list[Pool]):
        self.pools = pools

    @classmethod
    async def connect(cls, addresses: list[str], timeout: float) -> Router:
        deadline = asyncio.get_running_loop().time() + timeout
        pools = await asyncio.gather(*(_describe(a, deadline) for a in addresses))
        names = [p.model.name for p in pools]
        if len(set(names)) != len(names):
            raise RuntimeError(f"two generator pools serve the same model name: {names}")
        for pool in pools:
            log.info("route: %s (%s) at %s", pool.model.name, pool.model.model_type, pool.address)
        return cls(list(pools))

    async def close(self) -> None:
        await asyncio.gather(*(p.channel.close() for p in self.pools))

    def route(self, config: tts_pb2.SynthesisConfig) -> Pool:
        config = preset_as_speaker(config)
        voice = config.voice.WhichOneof("source")
        if voice is None:
            raise InvalidArgument(
                "a voice is required: voice_id, preset_speaker or design_description",
                [("config.voice", "set one of voice_id, preset_speaker, design_description")],
                reason="VOICE_REQUIRED",
            )
        model_type = MODEL_TYPE_OF_VOICE[voice]
        if config.model:
            pool = next((p for p in self.pools if p.model.name == config.model), None)
            if pool is None:
                raise NotFound(
                    f"no model named {quote(config.model)}; loaded: {', '.join(self._names())}",
                    reason="MODEL_NOT_FOUND",
                )
            if pool.model.model_type != model_type:
                raise InvalidArgument(
                    f"model {quote(config.model)} is a {pool.model.model_type} model; a {voice} voice needs a "
                    f"{model_type} model",
                    [("config.model", f"not a {model_type} model")],
                    reason="MODEL_VOICE_MISMATCH",
                )
            candidates = [pool]
        else:
            candidates = [p for p in self.pools if p.model.model_type == model_type]
            if not candidates:
                raise FailedPrecondition(
                    f"no {model_type} model is loaded, which a {voice} voice needs; loaded: {', '.join(self._names())}",
                    reason="NO_MODEL_FOR_VOICE",
                )
        if voice == "preset_speaker":
            speaker = config.voice.preset_speaker
            with_speaker = [p for p in candidates if p.has_speaker(speaker)]
            if not with_speaker:
                known = sorted({s.name for p in candidates for s in p.model.speakers})
                raise InvalidArgument(
                    f"unknown preset speaker {quote(speaker)}; available: {', '.join(known)}",
                    [("config.voice.preset_speaker", "not a preset speaker of the model")],
                    reason="UNKNOWN_SPEAKER",
                )
            candidates = with_speaker
        if voice == "design_description" and config.instruct:
            raise InvalidArgument(
                "a designed voice takes its style from design_description; put the instruction there",
                [("config.instruct", "not used with design_description")],
                reason="INSTRUCT_NOT_SUPPORTED",
            )
        if config.instruct and voice == "preset_speaker":
            following = [p for p in candidates if p.model.supports_instruct]
            if not following:
                raise InvalidArgument(
                    f"model {candidates[0].model.name} does not follow style instructions (only the 1.7B "
                    "CustomVoice model does)",
                    [("config.instruct", "not supported by the model")],
                    reason="INSTRUCT_NOT_SUPPORTED",
                )
            candidates = following
        return candidates[0]

    def _names(self) -> list[str]:
        return [p.model.name for p in self.pools] or ["none"]
