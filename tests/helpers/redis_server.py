"""A real `redis-server` for tests: a free port, its data in a given directory, AOF fsync always.

    with RedisServer(tmp_path / "redis") as server:     # started; PING answered
        client = redis.Redis.from_url(server.url)
        server.kill(signal.SIGKILL)                      # a crash (SIGSTOP/SIGCONT: a hang and back)
        server.restart()                                 # same port, same data directory

Never the Redis on 6379: every server here is the test's own, on a port the OS said was free.
Start and restart block until PING answers (tens of milliseconds), so they are plain functions.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from deploy.local import redis_server_binary

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class RedisServer:
    """`extra_args` are added to the command line (e.g. "--rename-command", "CONFIG", "")."""

    def __init__(self, data_dir: Path, *extra_args: str, start_timeout: float = 20.0):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "redis.log"
        self.popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> RedisServer:
        argv = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not start on port {self.port}; its log:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return client.ping()
        except redis.RedisError:  # refused, or still loading its data (BusyLoadingError)
            return False
        finally:
            client.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig`; for a signal that ends the process, wait until it has exited."""
        self.popen.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            self.popen.wait(10)

    def restart(self) -> RedisServer:
        """Stop it (if running), then start it again on the same port and data directory."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        """SIGTERM (Redis then fsyncs and exits), SIGKILL if that takes over 10 s. Idempotent."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
