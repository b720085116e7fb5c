"""A real ``redis-server`` for tests: 127.0.0.1, an ephemeral port, a random key,
no persistence; stopped (and waited for) when its ``with`` block ends."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"redis://:{self.key}@127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """Kill the server at once (as a crash would), and wait for it."""
        self.process.kill()
        self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _options(port: int, key: str) -> list[str]:
    options = {
        "bind": "127.0.0.1",
        "port": str(port),
        "requirepass": key,
        "save": "",
        "appendonly": "no",
        "protected-mode": "yes",
        "loglevel": "warning",
    }
    return [item for name, value in options.items() for item in (f"--{name}", value)]


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start a ``redis-server`` of its own (Redis takes no port 0: a free port is
    picked, and another is tried if it was taken meanwhile)."""
    import redis

    program = shutil.which("redis-server")
    if program is None:
        import pytest

        pytest.skip("redis-server is not installed (make redis installs it)")
    key = secrets.token_urlsafe(24)
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [program, *_options(port, key)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(process, port, key)
        try:
            client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
            deadline = time.monotonic() + 20
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
            if process.poll() is None:
                yield server
                return
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
    raise RuntimeError("could not start redis-server on a free port")
