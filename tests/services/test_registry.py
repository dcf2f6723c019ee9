"""The registry service (services/registry) against a real redis-server (tests/helpers/redis_server.py).

Most tests serve the registry in-process on a loopback port, as the process builds it (`build`
registrations on a `GrpcServer` with the error interceptor); the crash test runs it as
`python -m services.registry`, since it restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qwentts.codec.v1 import codec_pb2
from qwentts.registry.v1 import registry_pb2, registry_pb2_grpc
from qwentts.v1 import voices_pb2
from services.registry.service import RegistryConfig, build
from services.registry.store import VOICE_ID_RE, VoiceStore
from shared.config import ConfigError, describe, load_config
from shared.errors import DOMAIN, error_details
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.serving import serve

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"
OTHER = "beta:{shop}"  # separators and braces, escaped in its keys
MODELS = {"Qwen3-TTS-12Hz-0.6B-Base": 1024, "Qwen3-TTS-12Hz-1.7B-Base": 2048}  # embedding sizes
NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT


# ----- fixtures and helpers -----


@dataclass
class Served:
    stub: registry_pb2_grpc.RegistryServiceStub
    health: health_pb2_grpc.HealthStub


@contextlib.asynccontextmanager
async def registry_channel(address: str):
    async with grpc.aio.insecure_channel(address) as channel:
        yield Served(registry_pb2_grpc.RegistryServiceStub(channel), health_pb2_grpc.HealthStub(channel))


@contextlib.asynccontextmanager
async def serve_registry(redis_url: str, **env: str):
    config = load_config(RegistryConfig, {"REGISTRY_REDIS_URL": redis_url, **env})
    async with serve("registry", build, config) as (port, _), registry_channel(f"127.0.0.1:{port}") as served:
        yield served


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest_asyncio.fixture
async def registry(redis_server):
    async with serve_registry(redis_server.url) as served:
        yield served


@pytest_asyncio.fixture
async def redis_client(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def make_voice(name: str, i: int = 0, **fields) -> voices_pb2.Voice:
    """A cloned voice whose every field says `i` (so that mixed records would show)."""
    voice = voices_pb2.Voice(
        name=name,
        kind=voices_pb2.VOICE_KIND_CLONED,
        language="english",
        description=f"voice {i}",
        tags=[f"t{i}", "all"],
        consent_statement=f"speaker {i} agreed in writing",
        clone_mode=voices_pb2.CLONE_MODE_IN_CONTEXT,
        transcript=f"transcript {i}",
        reference_seconds=10.0 + i,
    )
    for field, value in fields.items():
        if isinstance(value, list):
            getattr(voice, field)[:] = value
        else:
            setattr(voice, field, value)
    return voice


def make_assets(i: int = 0, flac_bytes: int = 300_000, frames: int = 125) -> registry_pb2.VoiceAssets:
    """Assets of a 10 s reference by default (a FLAC-sized blob, 125 frames, two embeddings)."""
    rng = np.random.default_rng(i)
    assets = registry_pb2.VoiceAssets(
        reference_flac=b"fLaC" + rng.bytes(flac_bytes),
        reference_frames=codec_pb2.Frames(
            num_frames=frames, num_quantizers=16, codes=rng.integers(0, 2048, frames * 16).tolist()
        ),
    )
    for model, size in MODELS.items():
        assets.speaker_embeddings[model].values[:] = rng.standard_normal(size).astype(np.float32).tolist()
    return assets


def unassigned(voice: voices_pb2.Voice) -> voices_pb2.Voice:
    """A copy without the fields the registry assigns."""
    copy = voices_pb2.Voice()
    copy.CopyFrom(voice)
    for field in ("voice_id", "etag", "read_only", "create_time", "update_time"):
        copy.ClearField(field)
    return copy


async def create(stub, name: str, i: int = 0, tenant: str = TENANT, small: bool = False, **fields) -> voices_pb2.Voice:
    assets = make_assets(i, flac_bytes=100, frames=2) if small else make_assets(i)
    request = registry_pb2.CreateVoiceRequest(tenant=tenant, voice=make_voice(name, i, **fields), assets=assets)
    return (await stub.CreateVoice(request, timeout=30)).voice


async def get(stub, voice_id: str, tenant: str = TENANT, include_assets: bool = False):
    return await stub.GetVoice(
        registry_pb2.GetVoiceRequest(tenant=tenant, voice_id=voice_id, include_assets=include_assets), timeout=30
    )


def update_request(voice: voices_pb2.Voice, paths: list[str], tenant: str = TENANT, **fields):
    changed = voices_pb2.Voice(voice_id=voice.voice_id, etag=voice.etag)
    for field, value in fields.items():
        if isinstance(value, list):
            getattr(changed, field)[:] = value
        else:
            setattr(changed, field, value)
    return registry_pb2.UpdateVoiceRequest(
        tenant=tenant, voice=changed, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


async def list_all(stub, tenant: str = TENANT, page_size: int = 7, **filters) -> list[list[voices_pb2.Voice]]:
    """Every page, following next_page_token to the end."""
    pages, token = [], ""
    while True:
        reply = await stub.ListVoices(
            registry_pb2.ListVoicesRequest(tenant=tenant, page_size=page_size, page_token=token, **filters), timeout=30
        )
        pages.append(list(reply.voices))
        token = reply.next_page_token
        if not token:
            return pages


def assert_error(error: BaseException, code: grpc.StatusCode, reason: str, fields: list[str] | None = None) -> None:
    assert isinstance(error, grpc.aio.AioRpcError), repr(error)
    got, info, bad_request = error_details(error)
    assert got == code, error.details()
    assert (info.reason, info.domain) == (reason, DOMAIN)
    assert error.details()  # a message for a person
    if fields is not None:
        assert [v.field for v in bad_request.field_violations] == fields


async def expect_error(
    call, code: grpc.StatusCode, reason: str, fields: list[str] | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert_error(raised.value, code, reason, fields)
    return raised.value


async def tenant_keys(client: aioredis.Redis, tenant: str) -> set[bytes]:
    return {key async for key in client.scan_iter(match=VoiceStore.tenant_prefix(tenant) + "*")}


# ----- the lifecycle -----


async def test_voice_lifecycle(registry, redis_client):
    stub = registry.stub
    sent, assets = make_voice("Narrator"), make_assets(1)
    sent.voice_id, sent.etag, sent.read_only = "mine", "mine", True  # assigned by the registry instead
    voice = (
        await stub.CreateVoice(registry_pb2.CreateVoiceRequest(tenant=TENANT, voice=sent, assets=assets), timeout=30)
    ).voice
    assert VOICE_ID_RE.fullmatch(voice.voice_id) and voice.etag not in ("", "mine") and not voice.read_only
    assert voice.create_time == voice.update_time and voice.create_time.seconds > 0
    assert unassigned(voice) == unassigned(sent)

    plain = await get(stub, voice.voice_id)
    assert plain.voice == voice and not plain.HasField("assets")
    full = await get(stub, voice.voice_id, include_assets=True)
    assert full.voice == voice
    assert full.assets.reference_flac == assets.reference_flac  # byte for byte
    assert full.assets == assets
    assert [list(page) for page in await list_all(stub)] == [[voice]]

    reply = await stub.UpdateVoice(
        update_request(voice, ["name", "tags"], name="Storyteller", tags=["calm"], description="not in the mask"),
        timeout=30,
    )
    updated = reply.voice
    assert (updated.name, list(updated.tags), updated.description) == ("Storyteller", ["calm"], voice.description)
    assert updated.etag != voice.etag and updated.create_time == voice.create_time
    assert updated.update_time.ToNanoseconds() >= voice.update_time.ToNanoseconds()
    assert (await get(stub, voice.voice_id)).voice == updated

    embedding = registry_pb2.SpeakerEmbedding(values=[0.25, -1.5, 3.0])
    await stub.PutSpeakerEmbedding(
        registry_pb2.PutSpeakerEmbeddingRequest(
            tenant=TENANT, voice_id=voice.voice_id, model="other-model", embedding=embedding
        ),
        timeout=30,
    )
    full = await get(stub, voice.voice_id, include_assets=True)
    assert full.assets.speaker_embeddings["other-model"] == embedding
    assert len(full.assets.speaker_embeddings) == 3 and full.voice.etag == updated.etag  # etag unchanged

    await stub.DeleteVoice(
        registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=voice.voice_id, etag=updated.etag), timeout=30
    )
    await expect_error(get(stub, voice.voice_id), NOT_FOUND, "VOICE_NOT_FOUND")
    assert await list_all(stub) == [[]]
    assert await tenant_keys(redis_client, TENANT) == set()  # nothing of the voice is left
    await create(stub, "Narrator")  # its name is free again


async def test_stale_etags_abort(registry):
    stub = registry.stub
    voice = await create(stub, "v", small=True)
    updated = (await stub.UpdateVoice(update_request(voice, ["description"], description="new"), timeout=30)).voice
    await expect_error(
        stub.UpdateVoice(update_request(voice, ["description"], description="lost"), timeout=30),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    await expect_error(
        stub.DeleteVoice(
            registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=voice.voice_id, etag=voice.etag), timeout=30
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    assert (await get(stub, voice.voice_id)).voice == updated

    await stub.DeleteVoice(registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=voice.voice_id), timeout=30)
    await expect_error(
        stub.DeleteVoice(registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=voice.voice_id), timeout=30),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
    )


# ----- listing -----


async def create_many(stub, prefix: str, count: int, **fields) -> list[voices_pb2.Voice]:
    voices = []
    for start in range(0, count, 50):
        voices += await asyncio.gather(
            *(create(stub, f"{prefix}{i}", i, small=True, **fields) for i in range(start, min(start + 50, count)))
        )
    return voices


async def test_pagination_while_voices_are_added_and_deleted(registry):
    stub = registry.stub
    before = {voice.voice_id for voice in await create_many(stub, "v", 250)}
    stop, churn = asyncio.Event(), []

    async def add_and_delete():
        while not stop.is_set():
            voice = await create(stub, f"late{len(churn)}", small=True)
            churn.append(voice.voice_id)
            if len(churn) % 2:
                await stub.DeleteVoice(
                    registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=voice.voice_id), timeout=30
                )

    churner = asyncio.create_task(add_and_delete())
    try:
        pages = await list_all(stub, page_size=7)
    finally:
        stop.set()
        await churner
    assert churn  # voices did come and go while listing
    ids = [voice.voice_id for page in pages for voice in page]
    assert all(len(page) <= 7 for page in pages)
    assert len(ids) == len(set(ids))  # no duplicates
    assert ids == sorted(ids)  # in id (creation) order
    assert before <= set(ids)  # nothing that existed before was skipped

    first = await stub.ListVoices(registry_pb2.ListVoicesRequest(tenant=TENANT), timeout=30)
    assert len(first.voices) == 20 and first.next_page_token  # page_size 0 means 20
    big = await stub.ListVoices(registry_pb2.ListVoicesRequest(tenant=TENANT, page_size=1000), timeout=30)
    assert len(big.voices) == 100  # at most 100


async def test_list_filters(registry):
    stub = registry.stub
    english = await create_many(stub, "en", 12)
    german = await create_many(stub, "de", 5, language="german", kind=voices_pb2.VOICE_KIND_DESIGNED)
    for filters, expected in [
        ({"language": "german"}, german),
        ({"kind": voices_pb2.VOICE_KIND_CLONED}, english),
        ({"tag": "t3"}, [english[3], german[3]]),
        ({"tag": "all", "language": "english"}, english),
        ({"tag": "none"}, []),
    ]:
        pages = await list_all(stub, page_size=2, **filters)
        assert [voice.voice_id for page in pages for voice in page] == sorted(v.voice_id for v in expected), filters


# ----- tenants -----


async def test_tenants_are_isolated(registry, redis_client):
    stub = registry.stub
    voice = await create(stub, "shared name", small=True)
    preview = (
        await stub.SavePreview(
            registry_pb2.SavePreviewRequest(tenant=TENANT, preview=make_preview(), ttl_seconds=60), timeout=30
        )
    ).preview_id

    await expect_error(get(stub, voice.voice_id, tenant=OTHER), NOT_FOUND, "VOICE_NOT_FOUND")
    await expect_error(get(stub, voice.voice_id, tenant=OTHER, include_assets=True), NOT_FOUND, "VOICE_NOT_FOUND")
    await expect_error(
        stub.UpdateVoice(update_request(voice, ["name"], tenant=OTHER, name="mine"), timeout=30),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
    )
    await expect_error(
        stub.DeleteVoice(registry_pb2.DeleteVoiceRequest(tenant=OTHER, voice_id=voice.voice_id), timeout=30),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
    )
    await expect_error(
        stub.PutSpeakerEmbedding(
            registry_pb2.PutSpeakerEmbeddingRequest(
                tenant=OTHER, voice_id=voice.voice_id, model="m", embedding=registry_pb2.SpeakerEmbedding(values=[1.0])
            ),
            timeout=30,
        ),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
    )
    await expect_error(
        stub.GetPreview(registry_pb2.GetPreviewRequest(tenant=OTHER, preview_id=preview), timeout=30),
        NOT_FOUND,
        "PREVIEW_NOT_FOUND",
    )
    assert await list_all(stub, tenant=OTHER) == [[]]

    theirs = await create(stub, "shared name", tenant=OTHER, small=True)  # names are per tenant
    assert [v.voice_id for page in await list_all(stub) for v in page] == [voice.voice_id]
    assert [v.voice_id for page in await list_all(stub, tenant=OTHER) for v in page] == [theirs.voice_id]
    full = await get(stub, voice.voice_id, include_assets=True)
    assert full.voice == voice and full.assets == make_assets(0, flac_bytes=100, frames=2)  # untouched
    assert (
        await stub.GetPreview(registry_pb2.GetPreviewRequest(tenant=TENANT, preview_id=preview), timeout=30)
    ).preview == make_preview()
    ours, other = await tenant_keys(redis_client, TENANT), await tenant_keys(redis_client, OTHER)
    assert len(ours) == 4 and len(other) == 3 and not ours & other  # voice, names, voices (+ preview)
    assert {key async for key in redis_client.scan_iter()} == ours | other


# ----- concurrency -----


async def test_concurrent_creates_and_updates(registry):
    stub = registry.stub
    # 50 creates, two per name: one of each pair wins, and each record is whole.
    results = await asyncio.gather(
        *(create(stub, f"n{i % 25}", i, small=True) for i in range(50)), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, voices_pb2.Voice)]
    failed = [r for r in results if not isinstance(r, voices_pb2.Voice)]
    assert len(created) == 25 and len({v.name for v in created}) == 25
    for error in failed:
        assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN")
    for voice in created:
        i = int(voice.description.removeprefix("voice "))
        full = await get(stub, voice.voice_id, include_assets=True)
        assert full.voice == voice and unassigned(voice) == make_voice(voice.name, i)
        assert full.assets == make_assets(i, flac_bytes=100, frames=2)

    # 50 updates of one version: exactly one applies, the others are ABORTED.
    target = created[0]
    results = await asyncio.gather(
        *(
            stub.UpdateVoice(
                update_request(
                    target, ["name", "description", "tags"], name=f"renamed{i}", description=f"d{i}", tags=[f"x{i}"]
                ),
                timeout=30,
            )
            for i in range(50)
        ),
        return_exceptions=True,
    )
    applied = [r.voice for r in results if isinstance(r, registry_pb2.UpdateVoiceResponse)]
    assert len(applied) == 1
    for error in results:
        if not isinstance(error, registry_pb2.UpdateVoiceResponse):
            assert_error(error, grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    winner = applied[0]
    i = int(winner.name.removeprefix("renamed"))
    assert (winner.description, list(winner.tags)) == (f"d{i}", [f"x{i}"])
    assert (await get(stub, target.voice_id)).voice == winner
    await expect_error(create(stub, winner.name, small=True), grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN")
    await create(stub, target.name, small=True)  # the old name was released

    # Every voice renamed to one name at once: one wins.
    others = created[1:]
    results = await asyncio.gather(
        *(stub.UpdateVoice(update_request(v, ["name"], name="same"), timeout=30) for v in others),
        return_exceptions=True,
    )
    assert sum(isinstance(r, registry_pb2.UpdateVoiceResponse) for r in results) == 1
    for error in results:
        if not isinstance(error, registry_pb2.UpdateVoiceResponse):
            assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN")

    # Read-modify-write with retries on ABORTED: no update is lost.
    async def add_tag(tag: str):
        while True:
            current = (await get(stub, target.voice_id)).voice
            try:
                await stub.UpdateVoice(update_request(current, ["tags"], tags=[*current.tags, tag]), timeout=30)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise

    await asyncio.gather(*(add_tag(f"tag{i}") for i in range(30)))
    assert set((await get(stub, target.voice_id)).voice.tags) == {f"x{i}", *(f"tag{j}" for j in range(30))}


# ----- durability and Redis failures -----


@contextlib.asynccontextmanager
async def registry_process(redis_url: str, log_path: Path):
    """`python -m services.registry` on a free port until SERVING; SIGTERM after."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "REGISTRY_HOST": "127.0.0.1",
        "REGISTRY_PORT": str(port),
        "REGISTRY_REDIS_URL": redis_url,
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.registry"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with registry_channel(f"127.0.0.1:{port}") as served:
            reply = await served.health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            yield served
        process.terminate()
        assert process.wait(30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def assert_all_there(stub, saved: dict[str, tuple[voices_pb2.Voice, registry_pb2.VoiceAssets]]) -> None:
    for voice_id, (voice, assets) in saved.items():
        full = await get(stub, voice_id, include_assets=True)
        assert full.voice == voice and full.assets == assets
    assert [v.voice_id for page in await list_all(stub, page_size=100) for v in page] == sorted(saved)


async def test_acknowledged_voices_survive_crashes(tmp_path):
    with RedisServer(tmp_path / "redis") as redis_server:
        async with registry_process(redis_server.url, tmp_path / "registry-1.log") as served:
            requests = [
                registry_pb2.CreateVoiceRequest(tenant=TENANT, voice=make_voice(f"v{i}", i), assets=make_assets(i))
                for i in range(30)
            ]
            replies = await asyncio.gather(*(served.stub.CreateVoice(r, timeout=30) for r in requests))
            saved = {reply.voice.voice_id: (reply.voice, request.assets) for reply, request in zip(replies, requests)}

            redis_server.kill(signal.SIGKILL)  # no chance to flush anything
            redis_server.start()  # same directory: the AOF is replayed
            await assert_all_there(served.stub, saved)  # through the same registry, reconnected

        async with registry_process(redis_server.url, tmp_path / "registry-2.log") as served:
            await assert_all_there(served.stub, saved)


async def test_redis_down_answers_unavailable_then_recovers(redis_server):
    async with serve_registry(redis_server.url) as registry:
        voice = await create(registry.stub, "v", small=True)
        await asyncio.gather(*(get(registry.stub, voice.voice_id) for _ in range(10)))  # pooled connections
        redis_server.kill(signal.SIGKILL)
        # A generous deadline: the point is that the registry answers, not how fast.
        await expect_error(get(registry.stub, voice.voice_id), grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
        await expect_error(create(registry.stub, "w", small=True), grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
        await expect_error(
            registry.stub.ListVoices(registry_pb2.ListVoicesRequest(tenant=TENANT), timeout=30),
            grpc.StatusCode.UNAVAILABLE,
            "REDIS_UNAVAILABLE",
        )
        health = await registry.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # the registry is up; Redis is not

        redis_server.start()
        # No registry restart, and no failure on the pooled connections that Redis closed.
        replies = await asyncio.gather(*(get(registry.stub, voice.voice_id) for _ in range(10)))
        assert all(reply.voice == voice for reply in replies)
        await create(registry.stub, "w", small=True)


async def test_hung_redis_answers_unavailable_then_recovers(redis_server):
    async with serve_registry(redis_server.url) as registry:
        voice = await create(registry.stub, "v", small=True)
        redis_server.kill(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            await expect_error(get(registry.stub, voice.voice_id), grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
        finally:
            redis_server.kill(signal.SIGCONT)
        assert (await get(registry.stub, voice.voice_id)).voice == voice


@pytest.mark.parametrize(
    "extra_args, expected",
    [
        ((), None),
        (("--appendfsync", "everysec"), "appendonly yes, appendfsync everysec"),
        (("--rename-command", "CONFIG", ""), "could not check Redis persistence"),
    ],
    ids=["always", "everysec", "config-forbidden"],
)
async def test_persistence_settings_are_checked_at_start(tmp_path, caplog, extra_args, expected):
    with (
        RedisServer(tmp_path / "redis", *extra_args) as redis_server,
        caplog.at_level(logging.INFO, logger="services.registry"),
    ):
        async with serve_registry(redis_server.url) as registry:
            await create(registry.stub, "v", small=True)  # serves either way
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0]


async def test_starts_while_redis_is_down(tmp_path, caplog):
    redis_server = RedisServer(tmp_path / "redis")  # its port is known, nothing listens yet
    with caplog.at_level(logging.WARNING, logger="services.registry"):
        async with serve_registry(redis_server.url) as registry:
            assert "could not check Redis persistence" in caplog.text
            await expect_error(get(registry.stub, "0" * 28), grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE")
            with redis_server:
                await create(registry.stub, "v", small=True)


# ----- bad input -----


def make_preview(**fields) -> registry_pb2.Preview:
    preview = registry_pb2.Preview(
        description="a warm voice",
        text="Hello there.",
        language="english",
        audio_flac=b"fLaC" + bytes(range(256)),
        frames=codec_pb2.Frames(num_frames=2, num_quantizers=16, codes=list(range(32))),
    )
    for field, value in fields.items():
        if isinstance(value, bytes | str):
            setattr(preview, field, value)
        else:
            getattr(preview, field).CopyFrom(value)
    return preview


def _create(tenant=TENANT, name="x", assets=None, **fields):
    if assets is None:
        assets = make_assets(flac_bytes=10, frames=1)
    return "CreateVoice", registry_pb2.CreateVoiceRequest(
        tenant=tenant, voice=make_voice(name, **fields), assets=assets
    )


BAD_REQUESTS = {
    "no tenant": (lambda v: _create(tenant=""), INVALID, "INVALID_TENANT", ["tenant"]),
    "blank name": (lambda v: _create(name=" "), INVALID, "INVALID_VOICE", ["voice.name"]),
    "long name": (lambda v: _create(name="n" * 101), INVALID, "INVALID_VOICE", ["voice.name"]),
    "33 tags": (lambda v: _create(tags=[f"t{i}" for i in range(33)]), INVALID, "INVALID_VOICE", ["voice.tags"]),
    "long tag": (lambda v: _create(tags=["ok", "t" * 65]), INVALID, "INVALID_VOICE", ["voice.tags[1]"]),
    "long texts": (
        lambda v: _create(description="d" * 1001, transcript="t" * 2001, consent_statement="c" * 2001),
        INVALID,
        "INVALID_VOICE",
        ["voice.description", "voice.consent_statement", "voice.transcript"],
    ),
    "preset kind": (lambda v: _create(kind=voices_pb2.VOICE_KIND_PRESET), INVALID, "INVALID_VOICE", ["voice.kind"]),
    "in-context without transcript": (lambda v: _create(transcript=""), INVALID, "INVALID_VOICE", ["voice.transcript"]),
    "no clone mode": (lambda v: _create(clone_mode=0), INVALID, "INVALID_VOICE", ["voice.clone_mode"]),
    "no duration": (
        lambda v: _create(reference_seconds=float("nan")),
        INVALID,
        "INVALID_VOICE",
        ["voice.reference_seconds"],
    ),
    "no assets": (
        lambda v: _create(assets=registry_pb2.VoiceAssets()),
        INVALID,
        "INVALID_VOICE",
        ["assets.reference_flac", "assets.reference_frames"],
    ),
    "frames inconsistent": (
        lambda v: _create(
            assets=registry_pb2.VoiceAssets(
                reference_flac=b"fLaC",
                reference_frames=codec_pb2.Frames(num_frames=2, num_quantizers=16, codes=[1] * 31),
            )
        ),
        INVALID,
        "INVALID_VOICE",
        ["assets.reference_frames.codes"],
    ),
    "bad embedding": (
        lambda v: _create(
            assets=registry_pb2.VoiceAssets(
                reference_flac=b"fLaC",
                reference_frames=codec_pb2.Frames(num_frames=1, num_quantizers=1, codes=[1]),
                speaker_embeddings={"m": registry_pb2.SpeakerEmbedding(values=[float("nan")])},
            )
        ),
        INVALID,
        "INVALID_VOICE",
        ["assets.speaker_embeddings[m].values"],
    ),
    "get without id": (
        lambda v: ("GetVoice", registry_pb2.GetVoiceRequest(tenant=TENANT)),
        INVALID,
        "ID_REQUIRED",
        ["voice_id"],
    ),
    "get unknown id": (
        lambda v: ("GetVoice", registry_pb2.GetVoiceRequest(tenant=TENANT, voice_id="f" * 28)),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
        None,
    ),
    "get malformed id": (
        lambda v: ("GetVoice", registry_pb2.GetVoiceRequest(tenant=TENANT, voice_id="../*")),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
        None,
    ),
    # The message quotes a short prefix only, and the trailers do not overflow (RESOURCE_EXHAUSTED).
    "get a 10k-character id": (
        lambda v: ("GetVoice", registry_pb2.GetVoiceRequest(tenant=TENANT, voice_id="x" * 10_000)),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
        None,
    ),
    "create with a bad request id": (
        lambda v: (
            "CreateVoice",
            registry_pb2.CreateVoiceRequest(
                tenant=TENANT, voice=make_voice("rid"), assets=make_assets(flac_bytes=10, frames=1), request_id="a b"
            ),
        ),
        INVALID,
        "INVALID_VOICE",
        ["request_id"],
    ),
    "bad page token": (
        lambda v: ("ListVoices", registry_pb2.ListVoicesRequest(tenant=TENANT, page_token="x!y")),
        INVALID,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    ),
    "mask of kind": (
        lambda v: ("UpdateVoice", update_request(v, ["name", "kind"], name="y")),
        INVALID,
        "INVALID_UPDATE_MASK",
        ["update_mask"],
    ),
    "empty mask": (lambda v: ("UpdateVoice", update_request(v, [])), INVALID, "INVALID_UPDATE_MASK", ["update_mask"]),
    "update without etag": (
        lambda v: ("UpdateVoice", update_request(voices_pb2.Voice(voice_id=v.voice_id), ["name"], name="y")),
        INVALID,
        "ETAG_REQUIRED",
        ["voice.etag"],
    ),
    "update to a long name": (
        lambda v: ("UpdateVoice", update_request(v, ["name"], name="n" * 101)),
        INVALID,
        "INVALID_VOICE",
        ["voice.name"],
    ),
    "update to a taken name": (
        lambda v: ("UpdateVoice", update_request(v, ["name"], name="taken")),
        grpc.StatusCode.ALREADY_EXISTS,
        "VOICE_NAME_TAKEN",
        None,
    ),
    "create with a taken name": (
        lambda v: (
            "CreateVoice",
            registry_pb2.CreateVoiceRequest(
                tenant=TENANT, voice=make_voice("taken"), assets=make_assets(flac_bytes=10, frames=1)
            ),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "VOICE_NAME_TAKEN",
        None,
    ),
    "empty embedding": (
        lambda v: (
            "PutSpeakerEmbedding",
            registry_pb2.PutSpeakerEmbeddingRequest(tenant=TENANT, voice_id=v.voice_id, model=""),
        ),
        INVALID,
        "INVALID_EMBEDDING",
        ["model", "embedding.values"],
    ),
    "embedding of a deleted voice": (
        lambda v: (
            "PutSpeakerEmbedding",
            registry_pb2.PutSpeakerEmbeddingRequest(
                tenant=TENANT, voice_id="0" * 28, model="m", embedding=registry_pb2.SpeakerEmbedding(values=[1.0])
            ),
        ),
        NOT_FOUND,
        "VOICE_NOT_FOUND",
        None,
    ),
    "preview without audio": (
        lambda v: (
            "SavePreview",
            registry_pb2.SavePreviewRequest(tenant=TENANT, preview=registry_pb2.Preview(text="hi")),
        ),
        INVALID,
        "INVALID_PREVIEW",
        ["preview.audio_flac", "preview.frames"],
    ),
    "preview with long text": (
        lambda v: (
            "SavePreview",
            registry_pb2.SavePreviewRequest(tenant=TENANT, preview=make_preview(text="t" * 2001)),
        ),
        INVALID,
        "INVALID_PREVIEW",
        ["preview.text"],
    ),
    "unknown preview": (
        lambda v: ("GetPreview", registry_pb2.GetPreviewRequest(tenant=TENANT, preview_id="a" * 32)),
        NOT_FOUND,
        "PREVIEW_NOT_FOUND",
        None,
    ),
    "preview without id": (
        lambda v: ("GetPreview", registry_pb2.GetPreviewRequest(tenant=TENANT)),
        INVALID,
        "ID_REQUIRED",
        ["preview_id"],
    ),
}


async def test_bad_requests_get_their_code_reason_and_fields(registry):
    stub = registry.stub
    voice = await create(stub, "target", small=True)
    await create(stub, "taken", small=True)
    for case, (make, code, reason, fields) in BAD_REQUESTS.items():
        method, request = make(voice)
        try:
            await expect_error(getattr(stub, method)(request, timeout=30), code, reason, fields)
        except AssertionError as error:
            raise AssertionError(f"case {case!r}: {error}") from None
    assert (await get(stub, voice.voice_id)).voice == voice  # unchanged, and the server still serves


async def test_a_taken_name_says_which_voice_has_it(registry):
    first = await create(registry.stub, "taken", small=True)
    error = await expect_error(
        create(registry.stub, "taken", small=True), grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN"
    )
    assert error_details(error)[1].metadata["voiceId"] == first.voice_id


async def test_request_ids_make_creates_safe_to_retry(registry):
    stub = registry.stub

    def request(name: str, request_id: str, digest: bytes, tenant: str = TENANT):
        return registry_pb2.CreateVoiceRequest(
            tenant=tenant,
            voice=make_voice(name),
            assets=make_assets(frames=2),
            request_id=request_id,
            request_digest=digest,
        )

    first = (await stub.CreateVoice(request("retried", "req-1", b"d1"), timeout=30)).voice
    # A retry (same id, same content) is answered with the voice the first call created.
    again = (await stub.CreateVoice(request("retried", "req-1", b"d1"), timeout=30)).voice
    assert again == first
    # The same id with other content is refused; another tenant's ids are its own.
    await expect_error(
        stub.CreateVoice(request("other", "req-1", b"d2"), timeout=30), INVALID, "REQUEST_ID_REUSED", ["request_id"]
    )
    other_tenant = (await stub.CreateVoice(request("retried", "req-1", b"d1", tenant=OTHER), timeout=30)).voice
    assert other_tenant.voice_id != first.voice_id
    # Without an id, the name is taken.
    await expect_error(
        stub.CreateVoice(request("retried", "", b""), timeout=30), grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN"
    )
    # Deleted since: the id creates a new voice.
    await stub.DeleteVoice(registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=first.voice_id), timeout=30)
    recreated = (await stub.CreateVoice(request("retried", "req-1", b"d1"), timeout=30)).voice
    assert recreated.voice_id != first.voice_id
    assert (await stub.CreateVoice(request("retried", "req-1", b"d1"), timeout=30)).voice == recreated


async def test_voice_limit_per_tenant(redis_server):
    async with serve_registry(redis_server.url, REGISTRY_MAX_VOICES_PER_TENANT="2") as registry:
        first = await create(registry.stub, "a", small=True)
        await create(registry.stub, "b", small=True)
        await expect_error(
            create(registry.stub, "c", small=True), grpc.StatusCode.RESOURCE_EXHAUSTED, "VOICE_LIMIT_REACHED"
        )
        await create(registry.stub, "c", tenant=OTHER, small=True)  # a limit per tenant
        await registry.stub.DeleteVoice(
            registry_pb2.DeleteVoiceRequest(tenant=TENANT, voice_id=first.voice_id), timeout=30
        )
        await create(registry.stub, "c", small=True)


# ----- previews -----


async def test_previews_are_kept_until_they_expire(registry):
    stub = registry.stub
    preview = make_preview()
    saved = await stub.SavePreview(
        registry_pb2.SavePreviewRequest(tenant=TENANT, preview=preview, ttl_seconds=1), timeout=30
    )
    assert len(saved.preview_id) == 32 and saved.expire_time.seconds > 0
    reply = await stub.GetPreview(
        registry_pb2.GetPreviewRequest(tenant=TENANT, preview_id=saved.preview_id), timeout=30
    )
    assert reply.preview == preview

    now = int(time.time())
    longest = [
        await stub.SavePreview(
            registry_pb2.SavePreviewRequest(tenant=TENANT, preview=preview, ttl_seconds=ttl), timeout=30
        )
        for ttl in (0, 10**6)
    ]  # 0 and too long both get REGISTRY_PREVIEW_TTL_SECONDS
    for other in longest:
        assert other.preview_id != saved.preview_id
        assert now + 3600 <= other.expire_time.seconds <= int(time.time()) + 3600

    await asyncio.sleep(2)  # past the 1 s TTL
    await expect_error(
        stub.GetPreview(registry_pb2.GetPreviewRequest(tenant=TENANT, preview_id=saved.preview_id), timeout=30),
        NOT_FOUND,
        "PREVIEW_NOT_FOUND",
    )
    kept = await stub.GetPreview(
        registry_pb2.GetPreviewRequest(tenant=TENANT, preview_id=longest[0].preview_id), timeout=30
    )
    assert kept.preview == preview


# ----- configuration -----


async def test_config_defaults_and_a_bad_url():
    config = load_config(RegistryConfig, {"REGISTRY_REDIS_PASSWORD": "hunter2"})
    assert (config.host, config.port, config.redis_url) == ("127.0.0.1", 50056, "redis://127.0.0.1:6390/0")
    assert (config.redis_timeout_seconds, config.preview_ttl_seconds, config.max_voices_per_tenant) == (
        2.0,
        3600,
        10000,
    )
    assert "hunter2" not in describe(config)
    with pytest.raises(ConfigError, match="REGISTRY_REDIS_URL"):
        async with build(load_config(RegistryConfig, {"REGISTRY_REDIS_URL": "http://127.0.0.1:1"})):
            pass
