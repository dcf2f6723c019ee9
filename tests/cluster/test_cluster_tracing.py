"""One synthesis is one trace: every service exports OTLP to a receiver this test runs, and the
spans of gateway, generator and codec for the request share one trace id. The services' metrics
(what autoscaling reads) reach the same receiver."""

from __future__ import annotations

import time

import grpc

from deploy.local import LocalCluster
from qwentts.v1 import tts_pb2, tts_pb2_grpc


def test_one_synthesis_is_one_trace_across_services(receiver, tmp_path):
    servicer, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }
    with LocalCluster(ports="free", run_dir=tmp_path, extra_env=env, models={"custom_voice": None}) as cluster:
        with grpc.insecure_channel(cluster.gateway_address) as channel:
            stub = tts_pb2_grpc.TextToSpeechServiceStub(channel)
            config = tts_pb2.SynthesisConfig(
                voice=tts_pb2.VoiceSelection(preset_speaker="Vivian"), max_audio_seconds=0.4
            )
            request = tts_pb2.StreamSynthesizeRequest(config=config, text="Traced.")
            assert any(m.HasField("summary") for m in stub.StreamSynthesize(request, timeout=120))

        def request_trace():
            gateway = [
                s
                for s in servicer.snapshot()
                if s[0] == "gateway" and s[1].endswith("TextToSpeechService/StreamSynthesize")
            ]
            if not gateway:
                return None
            trace_id = gateway[0][2]
            return {(service, name) for service, name, t in servicer.snapshot() if t == trace_id}

        expected = {
            ("gateway", "/qwentts.v1.TextToSpeechService/StreamSynthesize"),
            ("gateway", "/qwentts.generator.v1.GeneratorService/Generate"),
            ("gateway", "/qwentts.codec.v1.CodecService/StreamDecode"),
            ("generator", "/qwentts.generator.v1.GeneratorService/Generate"),
            ("codec", "/qwentts.codec.v1.CodecService/StreamDecode"),
        }
        for _ in range(100):  # exports are batched every 200 ms; allow up to 10 s
            spans = request_trace()
            if spans is not None and expected <= spans:
                break
            time.sleep(0.1)
        assert spans is not None and expected <= spans, spans

        autoscaling = {
            ("generator", "qwentts.generator.active_streams"),
            ("generator", "qwentts.generator.queued_streams"),
            ("generator", "qwentts.generator.frames"),
            ("codec", "qwentts.codec.open_streams"),
        }
        for _ in range(100):  # metrics are exported every 300 ms
            if autoscaling <= servicer.metrics.names:
                break
            time.sleep(0.1)
        assert autoscaling <= servicer.metrics.names, servicer.metrics.names
    # Health checks are never traced (probes would drown real traffic).
    assert not [s for s in servicer.snapshot() if "Health" in s[1]]
