"""A throwaway ``redis-server`` on a free loopback port, for the tests that need a real one.

Every test that uses the ``redis_url`` fixture gets its own server (no persistence:
``--save '' --appendonly no``), stopped afterwards. Without a ``redis-server`` binary
(``apt-get install redis-server``) or the ``redis`` package (``pip install redis``) the test
skips, saying which is missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_redis() -> str:
    """The redis-server binary, or skip the test with the reason."""
    pytest.importorskip("redis", reason="the redis package is not installed (pip install redis)")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start a server; yield its URL and process; stop it."""
    binary = require_redis()
    import redis

    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("redis-server did not start on a loopback port")
                time.sleep(0.02)
        client.close()
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
