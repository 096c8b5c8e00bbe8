"""Messages a user reads: install hints, fatal close descriptions, the send queue's hint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Driver, make_config

from gateway_proto import GatewayConnection, SendQueueFull, UpdatePresence
from gateway_proto._errors import fatal_error_for

ROOT = Path(__file__).resolve().parent.parent


def test_every_install_hint_names_pypi_and_a_checkout():
    """``pip install 'gateway-proto[x]'`` is for PyPI; from a checkout it is ``'.[x]'``."""
    lonely = []
    for folder in ("gateway_proto", "adapters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for extra in re.findall(r"gateway-proto\[([\w-]+)\]", text):
                if f"'.[{extra}]'" not in text and "install_hint(" not in text:
                    lonely.append(f"{path.relative_to(ROOT)}: [{extra}]")
            if re.search(r"pip install (?!['\"]?(?:gateway-proto\[|\.\[|-e|mypy|--no))", text):
                lonely.append(f"{path.relative_to(ROOT)}: a bare 'pip install <package>'")
    assert not lonely, lonely


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("trio", "gateway_proto.adapters.trio", "trio"),
        ("hypothesis", "gateway_proto.testing.strategies", "testing"),
        ("redis", "gateway_proto.adapters.redis", "redis"),
    ],
)
def test_an_optional_import_says_how_to_install_it(blocked: str, module: str, extra: str):
    code = f"import sys; sys.modules[{blocked!r}] = None; import {module}"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    assert f"pip install 'gateway-proto[{extra}]' (from PyPI)" in last
    assert f"pip install '.[{extra}]' (from a checkout)" in last


def test_the_websockets_connector_says_how_to_install_websockets():
    code = (
        "import sys; sys.modules['websockets'] = None\n"
        "from gateway_proto.adapters.asyncio import websockets_connector\n"
        "try:\n    websockets_connector()\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "pip install '.[websockets]' (from a checkout)" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (4004, "Authentication failed.", "authentication failed (the token was rejected)"),
        (4004, "authentication failed", "authentication failed (the token was rejected)"),
        (4004, "", "authentication failed (the token was rejected)"),
        (4014, "Disallowed intent(s).", "disallowed intents (enable them in the developer portal)"),
        (4013, "bits 30, 31", "invalid intents (bits 30, 31)"),
    ],
)
def test_a_fatal_close_is_described_once(code: int, reason: str, expected: str):
    message = str(fatal_error_for(code, reason))
    assert message == f"gateway closed with fatal code {code}: {expected}"


def test_send_queue_full_before_the_session_says_to_wait_for_it():
    conn = GatewayConnection(make_config(max_queued_commands=2))
    conn.connect(now=0.0)
    for _ in range(2):
        conn.send(UpdatePresence(status="idle"), now=0.0)
    with pytest.raises(SendQueueFull) as caught:
        conn.send(UpdatePresence(status="idle"), now=0.0)
    assert caught.value.live is False
    assert "after SessionStarted/SessionResumed" in str(caught.value)


def test_send_queue_full_in_a_live_session_points_at_the_rate_limit():
    d = Driver(max_queued_commands=2)
    d.start_session()
    # The limiter lets a window's share of commands out; the next two queue, the third is refused.
    for _ in range(200):
        if d.conn.queued_commands == 2:
            break
        d.conn.send(UpdatePresence(status="idle"), now=d.now)
    with pytest.raises(SendQueueFull) as caught:
        d.conn.send(UpdatePresence(status="idle"), now=d.now)
    assert caught.value.live is True
    assert "rate limit" in str(caught.value)
    assert "SessionStarted" not in str(caught.value)
