"""The voice catalogue end to end: the whole cluster (Redis, registry, codec, the three tiny
generators, gateway) started by deploy/local.py with API keys, called through the public API.

Synthesis with a saved voice is compared sample for sample (greedy, PCM_F32) with the model core's
offline clone of the same reference audio. Every service exports its spans to an OTLP receiver run
here, and requests carry a trace id chosen by the test, so a test can list the calls one request
made (e.g. that synthesis with a saved voice runs no Encode and no EmbedSpeaker).
"""

from __future__ import annotations

import secrets
import time

import grpc
import numpy as np
import pytest
import redis
from google.protobuf import field_mask_pb2

from deploy.local import LocalCluster
from models.tts import Qwen3TTS
from qwentts.v1 import audio_pb2, tts_pb2, tts_pb2_grpc, voices_pb2, voices_pb2_grpc
from services.gateway.catalogue import Catalogue
from services.gateway.service import GatewayConfig
from services.gateway.tenancy import Tenancy, parse_api_keys
from services.gateway.voices import _page_token, _read_page_token
from shared.audio import decode_audio, encode_flac
from shared.config import ConfigError, describe, load_config
from shared.errors import DOMAIN, FailedPrecondition, InvalidArgument, Unauthenticated, error_details
from tests.helpers.clips import RATE, reference_wav

KEYS = {"tenant-a": "key-a", "tenant-b": "key-b", "tenant-c": "key-c"}
FRAMES = 10  # max_audio_seconds 0.8: the tiny models never stop on their own
SERVER_MAX_SECONDS = 1.6  # GATEWAY_MAX_AUDIO_SECONDS: DesignVoice previews last 20 frames
F32 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_F32)
GREEDY = tts_pb2.SamplingOptions(do_sample=False)
OPTIONS = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
ENCODE = "/qwentts.codec.v1.CodecService/Encode"
EMBED = "/qwentts.generator.v1.GeneratorService/EmbedSpeaker"


# ----- no cluster needed -----


class _Context:
    def __init__(self, *metadata):
        self.metadata = metadata

    def invocation_metadata(self):
        return self.metadata


def test_api_keys():
    tenancy = Tenancy(parse_api_keys(("k1:tenant-a", " k2 : tenant-b ", "k3:tenant-a")))
    assert tenancy.tenant(_Context(("x-api-key", "k1"))) == "tenant-a"
    assert tenancy.tenant(_Context(("authorization", "Bearer k2"))) == "tenant-b"
    assert tenancy.tenant(_Context(("x-api-key", "k3"))) == "tenant-a"
    for metadata in [(), (("x-api-key", "k4"),), (("authorization", "k1"),), (("x-api-key", ""),)]:
        with pytest.raises(Unauthenticated) as raised:
            tenancy.tenant(_Context(*metadata))
        assert raised.value.reason == "API_KEY_INVALID"
    assert Tenancy({}).tenant(_Context()) == "default"
    # More than one credential is refused, whichever they are: which should win is not for us to guess.
    for metadata in [
        (("x-api-key", "k1"), ("x-api-key", "k2")),
        (("x-api-key", "k1"), ("authorization", "Bearer k2")),
        (("x-api-key", "k1"), ("authorization", "Bearer k1")),
        (("x-api-key", "k1"), ("authorization", "k2")),
    ]:
        with pytest.raises(Unauthenticated) as raised:
            tenancy.tenant(_Context(*metadata))
        assert raised.value.reason == "AMBIGUOUS_CREDENTIALS"
    for bad in [("k1",), ("k1:",), (":t",), ("k1:a", "k1:b")]:
        with pytest.raises(ValueError):
            parse_api_keys(bad)


def test_config_of_keys_and_catalogue(tmp_path):
    environ = {"GATEWAY_ROUTES_FILE": str(tmp_path / "routes.toml"), "GATEWAY_API_KEYS": "k1:a,secret-key"}
    with pytest.raises(ConfigError) as raised:
        load_config(GatewayConfig, environ)
    assert "GATEWAY_API_KEYS" in str(raised.value) and "secret-key" not in str(raised.value)
    config = load_config(GatewayConfig, {**environ, "GATEWAY_API_KEYS": "k1:a,k2:b"})
    assert (config.registry_address, config.preview_ttl_seconds) == ("", 900)
    assert "k1" not in describe(config)
    with pytest.raises(FailedPrecondition) as raised:  # no GATEWAY_REGISTRY_ADDRESS: no catalogue
        Catalogue(None).check_available()
    assert raised.value.reason == "VOICE_CATALOGUE_UNAVAILABLE"


def test_page_tokens():
    assert _read_page_token("") == ("presets", "0")
    assert _read_page_token(_page_token("presets", 9)) == ("presets", "9")
    assert _read_page_token(_page_token("saved", "abc")) == ("saved", "abc")
    for bad in [
        "x",
        "!!!",
        _page_token("presets", "x"),
        _page_token("other", "1"),
        _page_token("presets", "²"),
        "A" * 100_000,
    ]:
        with pytest.raises(InvalidArgument) as raised:
            _read_page_token(bad)
        assert raised.value.reason == "INVALID_PAGE_TOKEN"


# ----- the cluster -----


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, receiver):
    env = {
        "GATEWAY_API_KEYS": ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items()),
        "GATEWAY_MAX_AUDIO_SECONDS": str(SERVER_MAX_SECONDS),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    models = {"base": None, "custom_voice": None, "voice_design": None}
    with LocalCluster(
        ports="free", run_dir=tmp_path_factory.mktemp("cluster"), extra_env=env, models=models
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(cluster):
    with grpc.insecure_channel(cluster.gateway_address, options=OPTIONS) as channel:
        yield channel


@pytest.fixture(scope="module")
def voices(channel):
    return voices_pb2_grpc.VoiceCatalogServiceStub(channel)


@pytest.fixture(scope="module")
def tts(channel):
    return tts_pb2_grpc.TextToSpeechServiceStub(channel)


@pytest.fixture(scope="module")
def base_model(cluster):
    return Qwen3TTS.from_pretrained(cluster.models["base"])


@pytest.fixture(scope="module")
def offline_clone(base_model):
    """offline_clone(wav bytes, text, transcript=None, language="auto", non_streaming=True) -> greedy
    float32 audio."""

    def clone(
        wav: bytes, text: str, transcript: str | None = None, language: str = "auto", non_streaming: bool = True
    ) -> np.ndarray:
        audio, rate = decode_audio(wav)
        prompt = base_model.create_voice_clone_prompt(audio, rate, transcript)
        [utterance] = base_model.generate_voice_clone(
            [text],
            prompt,
            language=language,
            non_streaming=non_streaming,
            do_sample=False,
            subtalker_do_sample=False,
            max_new_tokens=FRAMES + 1,
        )
        assert len(utterance.codes) == FRAMES
        return utterance.audio

    return clone


def key(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", KEYS[tenant]),)


def create(voices, name: str, wav: bytes, tenant: str = "tenant-a", metadata=(), **fields):
    request = voices_pb2.CreateVoiceRequest(name=name, reference_audio=audio_pb2.AudioInput(content=wav), **fields)
    return voices.CreateVoice(request, metadata=key(tenant) + tuple(metadata), timeout=120)


def synthesize(tts, voice_id: str, text: str, tenant: str = "tenant-a", metadata=(), **fields) -> np.ndarray:
    config = tts_pb2.SynthesisConfig(
        voice=tts_pb2.VoiceSelection(voice_id=voice_id),
        output_format=F32,
        sampling=GREEDY,
        predictor_sampling=GREEDY,
        max_audio_seconds=FRAMES / 12.5,
        **fields,
    )
    reply = tts.Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text=text), metadata=key(tenant) + tuple(metadata), timeout=120
    )
    return np.frombuffer(reply.audio, dtype="<f4")


def expect_error(call, code, reason=None, field=None):
    with pytest.raises(grpc.RpcError) as raised:
        result = call()
        if hasattr(result, "__next__"):  # a response stream
            list(result)
    got, info, bad_request = error_details(raised.value)
    assert got == code, raised.value.details()
    if reason is not None:
        assert (info.reason, info.domain) == (reason, DOMAIN), raised.value.details()
    if field is not None:
        assert field in [v.field for v in bad_request.field_violations], bad_request
    return raised.value


def new_trace() -> tuple[bytes, tuple[tuple[str, str]]]:
    """A trace id, and the W3C traceparent metadata that makes a request part of that trace."""
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return trace_id, (("traceparent", f"00-{trace_id.hex()}-{span_id.hex()}-01"),)


def trace_spans(receiver, trace_id: bytes, last: tuple[str, str]) -> set[tuple[str, str]]:
    """(service, span name) of the trace, once `last` (the gateway's server span, which ends after
    everything the gateway called) has arrived."""
    servicer, _ = receiver
    for _ in range(200):  # batched every 200 ms; allow up to 20 s
        spans = {(service, name) for service, name, t in servicer.snapshot() if t == trace_id}
        if last in spans:
            return spans
        time.sleep(0.1)
    pytest.fail(f"the trace never got {last}; it has {spans}")


# ----- the lifecycle of a voice -----


def test_lifecycle(voices, tts):
    tenant, md = "tenant-c", key("tenant-c")
    first = create(
        voices,
        "Narrator",
        reference_wav(4.0),
        tenant,
        transcript="The quick brown fox.",
        language="english",
        description="warm",
        tags=["calm", "en"],
        consent_statement="recorded by me",
    )
    voice = first.voice
    assert (voice.kind, voice.clone_mode, voice.transcript) == (
        voices_pb2.VOICE_KIND_CLONED,
        voices_pb2.CLONE_MODE_IN_CONTEXT,
        "The quick brown fox.",
    )
    assert (voice.name, voice.language, list(voice.tags), voice.consent_statement) == (
        "Narrator",
        "english",
        ["calm", "en"],
        "recorded by me",
    )
    assert voice.reference_seconds == pytest.approx(4.0) and voice.etag and not voice.read_only
    assert not first.warnings
    short = create(voices, "Short", reference_wav(2.0, seed=1), tenant)
    assert short.voice.clone_mode == voices_pb2.CLONE_MODE_SPEAKER_EMBEDDING and not short.voice.transcript
    assert len(short.warnings) == 1 and "3 s" in short.warnings[0]
    expect_error(lambda: create(voices, "Narrator", reference_wav(2.0), tenant), grpc.StatusCode.ALREADY_EXISTS)

    got = voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id=voice.voice_id), metadata=md, timeout=60).voice
    assert got == voice

    # Presets first, then the saved voices in creation order; pages of 3 cover the same list.
    everything = voices.ListVoices(voices_pb2.ListVoicesRequest(), metadata=md, timeout=60)
    presets = [v for v in everything.voices if v.kind == voices_pb2.VOICE_KIND_PRESET]
    assert presets and all(v.read_only and v.voice_id.startswith("preset:") for v in presets)
    assert [v.voice_id for v in everything.voices] == [v.voice_id for v in presets] + [
        voice.voice_id,
        short.voice.voice_id,
    ]
    assert not everything.next_page_token
    paged, token = [], ""
    while True:
        page = voices.ListVoices(voices_pb2.ListVoicesRequest(page_size=3, page_token=token), metadata=md, timeout=60)
        assert len(page.voices) <= 3
        paged += page.voices
        token = page.next_page_token
        if not token:
            break
    assert [v.voice_id for v in paged] == [v.voice_id for v in everything.voices]
    by_kind = voices.ListVoices(
        voices_pb2.ListVoicesRequest(kind=voices_pb2.VOICE_KIND_PRESET), metadata=md, timeout=60
    )
    assert list(by_kind.voices) == presets
    cloned = voices.ListVoices(voices_pb2.ListVoicesRequest(kind=voices_pb2.VOICE_KIND_CLONED), metadata=md, timeout=60)
    assert [v.voice_id for v in cloned.voices] == [voice.voice_id, short.voice.voice_id]
    tagged = voices.ListVoices(voices_pb2.ListVoicesRequest(tag="calm"), metadata=md, timeout=60)
    assert [v.voice_id for v in tagged.voices] == [voice.voice_id]
    expect_error(
        lambda: voices.ListVoices(voices_pb2.ListVoicesRequest(page_token="nope"), metadata=md, timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
        "page_token",
    )

    # Presets: readable, not writable.
    preset = presets[0]
    assert (
        voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id=preset.voice_id), metadata=md, timeout=60).voice == preset
    )
    mask = field_mask_pb2.FieldMask(paths=["name"])
    expect_error(
        lambda: voices.UpdateVoice(
            voices_pb2.UpdateVoiceRequest(voice=voices_pb2.Voice(voice_id=preset.voice_id, name="x"), update_mask=mask),
            metadata=md,
            timeout=60,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VOICE_READ_ONLY",
    )
    expect_error(
        lambda: voices.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id=preset.voice_id), metadata=md, timeout=60),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VOICE_READ_ONLY",
    )
    expect_error(
        lambda: voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id="preset:nope:nobody"), metadata=md, timeout=60),
        grpc.StatusCode.NOT_FOUND,
        "VOICE_NOT_FOUND",
    )

    # Update with the etag; the old etag is then stale.
    change = voices_pb2.Voice(voice_id=voice.voice_id, etag=voice.etag, name="Storyteller", tags=["calm"])
    mask = field_mask_pb2.FieldMask(paths=["name", "tags"])
    updated = voices.UpdateVoice(
        voices_pb2.UpdateVoiceRequest(voice=change, update_mask=mask), metadata=md, timeout=60
    ).voice
    assert (updated.name, list(updated.tags), updated.description) == ("Storyteller", ["calm"], "warm")
    assert updated.etag != voice.etag
    expect_error(
        lambda: voices.UpdateVoice(
            voices_pb2.UpdateVoiceRequest(voice=change, update_mask=mask), metadata=md, timeout=60
        ),
        grpc.StatusCode.ABORTED,
    )
    expect_error(
        lambda: voices.UpdateVoice(
            voices_pb2.UpdateVoiceRequest(
                voice=voices_pb2.Voice(voice_id=voice.voice_id, etag=updated.etag, language="klingon"),
                update_mask=field_mask_pb2.FieldMask(paths=["language"]),
            ),
            metadata=md,
            timeout=60,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_LANGUAGE",
        "language",
    )

    # Delete: a stale etag is refused; then the voice is gone.
    expect_error(
        lambda: voices.DeleteVoice(
            voices_pb2.DeleteVoiceRequest(voice_id=voice.voice_id, etag=voice.etag), metadata=md, timeout=60
        ),
        grpc.StatusCode.ABORTED,
    )
    voices.DeleteVoice(
        voices_pb2.DeleteVoiceRequest(voice_id=voice.voice_id, etag=updated.etag), metadata=md, timeout=60
    )
    voices.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id=short.voice.voice_id), metadata=md, timeout=60)
    for voice_id in (voice.voice_id, short.voice.voice_id):
        expect_error(
            lambda: voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id=voice_id), metadata=md, timeout=60),
            grpc.StatusCode.NOT_FOUND,
            "VOICE_NOT_FOUND",
        )
        expect_error(lambda: synthesize(tts, voice_id, "Gone.", tenant), grpc.StatusCode.NOT_FOUND, "VOICE_NOT_FOUND")
    left = voices.ListVoices(voices_pb2.ListVoicesRequest(), metadata=md, timeout=60).voices
    assert list(left) == presets


def test_bad_reference_audio(voices):
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    field = "reference_audio.content"
    cases = [
        (lambda: create(voices, "Silent", reference_wav(3.0, silent=True)), "SILENT_AUDIO", field),
        (lambda: create(voices, "Tiny", reference_wav(0.5)), "AUDIO_TOO_SHORT", field),
        (lambda: create(voices, "Long", reference_wav(61.0)), "AUDIO_TOO_LONG", field),
        (lambda: create(voices, "Garbage", b"RIFF not really a wav"), "AUDIO_UNDECODABLE", field),
        (lambda: create(voices, "Huge", b"\0" * 10_000_001), "AUDIO_TOO_LARGE", field),
        (lambda: create(voices, "", reference_wav(2.0)), "NAME_REQUIRED", "name"),
        (
            lambda: create(voices, "Wordy", reference_wav(2.0), transcript="a" * 2001),
            "TRANSCRIPT_TOO_LONG",
            "transcript",
        ),
        (lambda: create(voices, "Klingon", reference_wav(2.0), language="klingon"), "UNSUPPORTED_LANGUAGE", "language"),
        (
            lambda: voices.CreateVoice(
                voices_pb2.CreateVoiceRequest(name="Nothing"), metadata=key("tenant-a"), timeout=60
            ),
            "SOURCE_REQUIRED",
            "reference_audio",
        ),
        (
            lambda: voices.DesignVoice(
                voices_pb2.DesignVoiceRequest(preview_text="Hi."), metadata=key("tenant-a"), timeout=60
            ),
            "DESCRIPTION_REQUIRED",
            "description",
        ),
        (
            lambda: voices.DesignVoice(
                voices_pb2.DesignVoiceRequest(description="deep"), metadata=key("tenant-a"), timeout=60
            ),
            "EMPTY_TEXT",
            "preview_text",
        ),
        # Refused before a preview is rendered.
        (
            lambda: voices.DesignVoice(
                voices_pb2.DesignVoiceRequest(description="deep " * 20_000, preview_text="Hi."),
                metadata=key("tenant-a"),
                timeout=60,
            ),
            "DESCRIPTION_TOO_LONG",
            "description",
        ),
        (lambda: create(voices, "N" * 101, reference_wav(2.0)), "INVALID_VOICE", "name"),
        (lambda: create(voices, "Tags", reference_wav(2.0), tags=["t" * 65]), "INVALID_VOICE", "tags[0]"),
        (lambda: create(voices, "Rid", reference_wav(2.0), request_id="not a uuid!"), "INVALID_VOICE", "request_id"),
        (
            lambda: voices.GetVoice(
                voices_pb2.GetVoiceRequest(voice_id="v" * 10_000), metadata=key("tenant-a"), timeout=60
            ),
            "INVALID_ID",
            "voice_id",
        ),
    ]
    for call, reason, field_path in cases:
        expect_error(call, invalid, reason, field_path)
    # Raw PCM works as well as files.
    pcm = (decode_audio(reference_wav(1.5, seed=2))[0] * 32767).astype("<i2").tobytes()
    request = voices_pb2.CreateVoiceRequest(
        name="From PCM", reference_audio=audio_pb2.AudioInput(content=pcm, pcm_sample_rate_hz=RATE)
    )
    reply = voices.CreateVoice(request, metadata=key("tenant-a"), timeout=120)
    assert reply.voice.reference_seconds == pytest.approx(1.5)


def test_request_ids_make_create_voice_safe_to_retry(voices):
    wav = reference_wav(2.0, seed=5)
    first = create(voices, "Retried", wav, request_id="4f1c2a9e-retry").voice
    # The retry of a call whose outcome was unknown: the same voice, not VOICE_NAME_TAKEN.
    assert create(voices, "Retried", wav, request_id="4f1c2a9e-retry").voice == first
    expect_error(lambda: create(voices, "Retried", wav), grpc.StatusCode.ALREADY_EXISTS, "VOICE_NAME_TAKEN")
    expect_error(
        lambda: create(voices, "Other content", wav, request_id="4f1c2a9e-retry"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
        "request_id",
    )


# ----- synthesis with saved voices -----


@pytest.mark.parametrize("transcript", ["This is the reference.", None], ids=["in-context", "embedding"])
def test_saved_voice_synthesis_equals_offline_clone(receiver, voices, tts, offline_clone, transcript):
    wav = reference_wav(3.5, seed=3)
    create_trace, traced = new_trace()
    voice = create(voices, f"Clone {transcript is None}", wav, metadata=traced, transcript=transcript or "").voice
    assert voice.clone_mode == (
        voices_pb2.CLONE_MODE_IN_CONTEXT if transcript else voices_pb2.CLONE_MODE_SPEAKER_EMBEDDING
    )
    text = "Speaking with a saved voice."
    synthesis_trace, traced = new_trace()
    audio = synthesize(tts, voice.voice_id, text, metadata=traced)
    np.testing.assert_allclose(audio, offline_clone(wav, text, transcript), atol=1e-4)
    # The same again, now from the gateway's cache.
    np.testing.assert_allclose(synthesize(tts, voice.voice_id, text), audio, atol=0)
    # Text streaming in: the generator's streaming mode, the same as offline.
    config = tts_pb2.SynthesisConfig(
        voice=tts_pb2.VoiceSelection(voice_id=voice.voice_id),
        output_format=F32,
        sampling=GREEDY,
        predictor_sampling=GREEDY,
        max_audio_seconds=FRAMES / 12.5,
    )
    requests = [
        tts_pb2.StreamingSynthesizeRequest(config=config),
        *(
            tts_pb2.StreamingSynthesizeRequest(input=tts_pb2.TextInput(text=piece))
            for piece in ("Speaking with ", "a saved voice.")
        ),
    ]
    streamed = b"".join(
        m.audio.audio
        for m in tts.StreamingSynthesize(iter(requests), metadata=key("tenant-a"), timeout=120)
        if m.HasField("audio")
    )
    np.testing.assert_allclose(
        np.frombuffer(streamed, dtype="<f4"), offline_clone(wav, text, transcript, non_streaming=False), atol=1e-4
    )

    # Saving the voice encoded and embedded it; synthesis did neither, even the first time.
    created = trace_spans(receiver, create_trace, ("gateway", "/qwentts.v1.VoiceCatalogService/CreateVoice"))
    assert {("gateway", ENCODE), ("codec", ENCODE), ("gateway", EMBED), ("generator", EMBED)} <= created
    spans = trace_spans(receiver, synthesis_trace, ("gateway", "/qwentts.v1.TextToSpeechService/Synthesize"))
    assert {
        ("gateway", "/qwentts.registry.v1.RegistryService/GetVoice"),
        ("gateway", "/qwentts.generator.v1.GeneratorService/Generate"),
        ("gateway", "/qwentts.codec.v1.CodecService/StreamDecode"),
    } <= spans
    assert not [span for span in spans if span[1] in (ENCODE, EMBED)], spans


def test_update_and_delete_are_seen_by_the_next_synthesis(voices, tts, offline_clone):
    wav, text = reference_wav(3.0, seed=4), "Which language now?"
    voice = create(voices, "Changing", wav, language="english").voice
    english = synthesize(tts, voice.voice_id, text)  # no config.language: the voice's
    np.testing.assert_allclose(english, offline_clone(wav, text, None, "english"), atol=1e-4)
    change = voices_pb2.Voice(voice_id=voice.voice_id, etag=voice.etag, language="german")
    voices.UpdateVoice(
        voices_pb2.UpdateVoiceRequest(voice=change, update_mask=field_mask_pb2.FieldMask(paths=["language"])),
        metadata=key("tenant-a"),
        timeout=60,
    )
    german = synthesize(tts, voice.voice_id, text)
    np.testing.assert_allclose(german, offline_clone(wav, text, None, "german"), atol=1e-4)
    assert np.abs(german - english).max() > 1e-3
    voices.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id=voice.voice_id), metadata=key("tenant-a"), timeout=60)
    error = expect_error(lambda: synthesize(tts, voice.voice_id, text), grpc.StatusCode.NOT_FOUND, "VOICE_NOT_FOUND")
    assert error_details(error)[1].metadata["field"] == "config.voice.voice_id"


def test_an_embedding_missing_for_a_model_is_computed_once(cluster, receiver, voices, tts, base_model):
    """A Base model that joined after the voice was saved has no stored embedding: the first
    synthesis computes it from the stored reference audio and stores it; later ones reuse it."""
    voice = create(voices, "Older than the model", reference_wav(2.5, seed=5)).voice
    model = tts.ListModels(tts_pb2.ListModelsRequest(), metadata=key("tenant-a"), timeout=60)
    base = next(m.name for m in model.models if m.kind == tts_pb2.MODEL_KIND_BASE)
    # The registry's layout (services/registry/store.py): one hash per voice, a field per embedding.
    store = redis.Redis(host="127.0.0.1", port=cluster.redis_port)
    voice_key, field = f"qwentts:{{tenant-a}}:voice:{voice.voice_id}", f"embedding:{base}"
    assert store.hdel(voice_key, field) == 1
    first, traced = new_trace()
    synthesize(tts, voice.voice_id, "First use.", metadata=traced)
    assert store.hexists(voice_key, field)
    spans = trace_spans(receiver, first, ("gateway", "/qwentts.v1.TextToSpeechService/Synthesize"))
    assert (
        ("gateway", EMBED) in spans
        and ("gateway", "/qwentts.registry.v1.RegistryService/PutSpeakerEmbedding") in spans
        and ("gateway", ENCODE) not in spans
    )
    second, traced = new_trace()
    synthesize(tts, voice.voice_id, "Second use.", metadata=traced)
    spans = trace_spans(receiver, second, ("gateway", "/qwentts.v1.TextToSpeechService/Synthesize"))
    assert ("gateway", EMBED) not in spans
    store.close()


def test_design_save_and_synthesize(voices, tts, offline_clone):
    description, preview_text = "A bright, quick voice.", "Hello, this is my new voice."
    design = voices.DesignVoice(
        voices_pb2.DesignVoiceRequest(
            description=description, preview_text=preview_text, language="english", output_format=F32, seed=1
        ),
        metadata=key("tenant-a"),
        timeout=120,
    )
    preview = np.frombuffer(design.audio, dtype="<f4")
    assert len(preview) == SERVER_MAX_SECONDS * 12.5 * 1920  # the tiny model never stops on its own
    assert design.preview_id and design.expire_time.seconds > time.time() + 600
    assert design.output_format.sample_rate_hz == RATE
    saved = voices.CreateVoice(
        voices_pb2.CreateVoiceRequest(name="Designed", preview_id=design.preview_id),
        metadata=key("tenant-a"),
        timeout=120,
    )
    voice = saved.voice
    assert (voice.kind, voice.clone_mode, voice.transcript, voice.description, voice.language) == (
        voices_pb2.VOICE_KIND_DESIGNED,
        voices_pb2.CLONE_MODE_IN_CONTEXT,
        preview_text,
        description,
        "english",
    )
    # The preview is kept as 16-bit FLAC: the clone's reference is exactly that.
    reference = encode_flac(preview, RATE)
    text = "And now I say something else."
    np.testing.assert_allclose(
        synthesize(tts, voice.voice_id, text), offline_clone(reference, text, preview_text, "english"), atol=1e-4
    )
    expect_error(
        lambda: voices.CreateVoice(
            voices_pb2.CreateVoiceRequest(name="Again", preview_id="nope"), metadata=key("tenant-a"), timeout=60
        ),
        grpc.StatusCode.NOT_FOUND,
        "PREVIEW_NOT_FOUND",
    )


def test_preset_voice_ids_synthesize_the_preset_speaker(voices, tts):
    presets = voices.ListVoices(
        voices_pb2.ListVoicesRequest(kind=voices_pb2.VOICE_KIND_PRESET), metadata=key("tenant-a"), timeout=60
    ).voices
    preset = presets[0]
    config = tts_pb2.SynthesisConfig(
        voice=tts_pb2.VoiceSelection(preset_speaker=preset.name),
        output_format=F32,
        sampling=GREEDY,
        predictor_sampling=GREEDY,
        max_audio_seconds=FRAMES / 12.5,
    )
    reply = tts.Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text="A preset."), metadata=key("tenant-a"), timeout=120
    )
    np.testing.assert_array_equal(
        synthesize(tts, preset.voice_id, "A preset."), np.frombuffer(reply.audio, dtype="<f4")
    )


# ----- tenants and keys -----


def test_tenants_never_see_each_others_voices(voices, tts):
    mine = create(voices, "Mine", reference_wav(2.0, seed=6), "tenant-a").voice
    design = voices.DesignVoice(
        voices_pb2.DesignVoiceRequest(description="a low voice", preview_text="Hi there."),
        metadata=key("tenant-a"),
        timeout=120,
    )
    other, not_found = key("tenant-b"), grpc.StatusCode.NOT_FOUND
    mask = field_mask_pb2.FieldMask(paths=["name"])
    calls = [
        lambda: voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id=mine.voice_id), metadata=other, timeout=60),
        lambda: voices.UpdateVoice(
            voices_pb2.UpdateVoiceRequest(
                voice=voices_pb2.Voice(voice_id=mine.voice_id, etag=mine.etag, name="Taken"), update_mask=mask
            ),
            metadata=other,
            timeout=60,
        ),
        lambda: voices.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id=mine.voice_id), metadata=other, timeout=60),
        lambda: voices.CreateVoice(
            voices_pb2.CreateVoiceRequest(name="Stolen", preview_id=design.preview_id), metadata=other, timeout=60
        ),
        lambda: synthesize(tts, mine.voice_id, "Not yours.", "tenant-b"),
        lambda: tts.StreamSynthesize(
            tts_pb2.StreamSynthesizeRequest(
                config=tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(voice_id=mine.voice_id)), text="Not yours."
            ),
            metadata=other,
            timeout=60,
        ),
    ]
    for call in calls:
        expect_error(call, not_found)
    listed = voices.ListVoices(
        voices_pb2.ListVoicesRequest(kind=voices_pb2.VOICE_KIND_CLONED), metadata=other, timeout=60
    ).voices
    assert mine.voice_id not in [v.voice_id for v in listed]
    # Names are per tenant too; and tenant-a's voice is untouched.
    create(voices, "Mine", reference_wav(2.0, seed=7), "tenant-b")
    again = voices.GetVoice(
        voices_pb2.GetVoiceRequest(voice_id=mine.voice_id), metadata=key("tenant-a"), timeout=60
    ).voice
    assert again == mine


def test_every_public_rpc_needs_a_valid_key(voices, tts):
    config = tts_pb2.SynthesisConfig(voice=tts_pb2.VoiceSelection(preset_speaker="Vivian"))
    calls = [
        lambda md: tts.Synthesize(tts_pb2.SynthesizeRequest(config=config, text="Hi."), metadata=md, timeout=60),
        lambda md: tts.StreamSynthesize(
            tts_pb2.StreamSynthesizeRequest(config=config, text="Hi."), metadata=md, timeout=60
        ),
        lambda md: tts.StreamingSynthesize(
            iter([tts_pb2.StreamingSynthesizeRequest(config=config)]), metadata=md, timeout=60
        ),
        lambda md: tts.ListModels(tts_pb2.ListModelsRequest(), metadata=md, timeout=60),
        lambda md: voices.CreateVoice(voices_pb2.CreateVoiceRequest(name="x"), metadata=md, timeout=60),
        lambda md: voices.DesignVoice(voices_pb2.DesignVoiceRequest(), metadata=md, timeout=60),
        lambda md: voices.GetVoice(voices_pb2.GetVoiceRequest(voice_id="x"), metadata=md, timeout=60),
        lambda md: voices.ListVoices(voices_pb2.ListVoicesRequest(), metadata=md, timeout=60),
        lambda md: voices.UpdateVoice(voices_pb2.UpdateVoiceRequest(), metadata=md, timeout=60),
        lambda md: voices.DeleteVoice(voices_pb2.DeleteVoiceRequest(voice_id="x"), metadata=md, timeout=60),
    ]
    for call in calls:
        for metadata in [(), (("x-api-key", "wrong"),), (("authorization", "Bearer wrong"),)]:
            expect_error(lambda: call(metadata), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert tts.ListModels(tts_pb2.ListModelsRequest(), metadata=(("authorization", "Bearer key-b"),), timeout=60).models
    assert voices.ListVoices(
        voices_pb2.ListVoicesRequest(), metadata=(("authorization", "Bearer key-b"),), timeout=60
    ).voices
