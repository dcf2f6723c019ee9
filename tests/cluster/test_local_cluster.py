"""deploy/local.py, the CLI (qwentts_cli) and the Node.js client (clients/node) against a local
cluster of real processes: Redis, codec, the three tiny generators and the gateway, on free ports.

The last test stops the module's cluster, so it must stay last.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import soundfile

from deploy.local import (
    KINDS,
    REPO_ROOT,
    ClusterError,
    LocalCluster,
    grpc_serving,
    http_ready,
    pick_ports,
    redis_answers,
)

NODE_DIR = REPO_ROOT / "clients" / "node"
SAMPLES_PER_FRAME = 1920  # 80 ms at 24 kHz


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # models named explicitly: the tiny checkpoints whatever QWENTTS_MODEL_* say.
    models = dict.fromkeys(KINDS)
    with LocalCluster(models=models, ports="free", run_dir=tmp_path_factory.mktemp("local-cluster")) as running:
        yield running


def cli(cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qwentts_cli", *args, "--address", cluster.gateway_address, "--timeout", "120"],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=180,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_free_ports_are_distinct_and_taken_ports_refused():
    ports = pick_ports("free")
    assert len(set(ports.values())) == len(ports)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {taken} \\(gateway\\) is not free"):
            pick_ports({"gateway": taken})


def test_a_process_that_dies_early_is_reported_with_its_log(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    failing = LocalCluster(models={"base": missing}, ports="free", run_dir=tmp_path)
    with pytest.raises(ClusterError, match="exited with status") as raised:
        failing.start()
    assert str(missing) in str(raised.value)  # from the tail of the log
    assert not any(alive(pid) for pid in failing.pids.values())


def test_every_process_is_ready(cluster):
    assert set(cluster.generator_addresses) == set(KINDS)
    for address in (cluster.gateway_address, cluster.codec_address, *cluster.generator_addresses.values()):
        assert grpc_serving(address), address
    assert redis_answers(cluster.redis_port)
    assert http_ready(f"{cluster.web_url}/readyz")


def test_node_client_streams_bidirectionally(cluster):
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm must be on PATH to test the Node.js client (clients/node): install Node.js 18+")
    if not (NODE_DIR / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)
    done = subprocess.run(
        [node, "bidi.mjs", cluster.gateway_address], cwd=NODE_DIR, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["chunks"] > 0
    assert result["sequences_in_order"]
    assert result["first_audio_before_last_text"]
    assert result["finish_reason"] not in (None, "FINISH_REASON_UNSPECIFIED")
    assert result["usage"]["audio_frames"] > 0
    assert result["bytes"] == result["usage"]["audio_frames"] * SAMPLES_PER_FRAME * 2  # PCM16 at 24 kHz


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_cli_synthesize_writes_a_wav_file(cluster, tmp_path, stream):
    out = tmp_path / "hello.wav"
    done = cli(
        cluster,
        "synthesize",
        "--text",
        "Hello there.",
        "--out",
        str(out),
        "--speaker",
        "vivian",
        "--greedy",
        "--max-seconds",
        "1",
        "--sample-rate",
        "16000",
        *(["--stream"] if stream else []),
    )
    assert done.returncode == 0, done.stderr
    audio, rate = soundfile.read(out)
    assert rate == 16000
    assert len(audio) > 0
    assert int.from_bytes(out.read_bytes()[4:8], "little") == out.stat().st_size - 8  # RIFF size set


def test_cli_reports_errors(cluster, tmp_path):
    done = cli(cluster, "synthesize", "--text", "Hello.", "--out", str(tmp_path / "x.wav"), "--speaker", "nobody")
    assert done.returncode == 1
    assert "error: INVALID_ARGUMENT" in done.stderr
    assert "reason: " in done.stderr


def test_cli_models_lists_the_three_models(cluster):
    names = {checkpoint.name for checkpoint in cluster.models.values()}  # the default model names
    table = cli(cluster, "models")
    assert table.returncode == 0, table.stderr
    assert all(name in table.stdout for name in names)
    listed = cli(cluster, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {model["name"] for model in json.loads(listed.stdout)["models"]} == names


def test_cli_stream_stdin_speaks_each_line(cluster, tmp_path):
    out = tmp_path / "talk.pcm"
    done = cli(
        cluster,
        "stream-stdin",
        "--speaker",
        "vivian",
        "--greedy",
        "--max-seconds",
        "2",
        "--out",
        str(out),
        stdin="Hello there.\nThis is the second line.\nAnd the third one.\n",
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    assert out.stat().st_size % 2 == 0


def test_stop_leaves_no_process_behind(cluster):  # keep last: it stops the module's cluster
    pids = cluster.pids
    assert set(pids) == {"redis", "registry", "codec", "gateway", "web", *(f"generator-{kind}" for kind in KINDS)}
    cluster.stop()
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert not redis_answers(cluster.redis_port)
    assert not grpc_serving(cluster.gateway_address)
