"""The ``gateway-proto`` command as a user meets it, through real subprocesses.

Every ordinary mistake prints exactly one line on stderr and exits with status 2, with no
traceback and never the token; SIGINT and SIGTERM close the session (the server sees close
code 1000) and exit with status 0.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "cli-test-SECRET-token"
#: Blocks the zstd backends before gateway_proto is imported, as on a machine without them.
_WITHOUT_ZSTD = (
    "import sys; sys.modules['zstandard'] = None; sys.modules['compression.zstd'] = None; "
    "from gateway_proto.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def _run(
    argv: list[str], cwd: Path, *, token: str | None = TOKEN, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    if token is not None:
        env["DISCORD_TOKEN"] = token
    command = (
        [sys.executable, "-m", "gateway_proto"] if code is None else [sys.executable, "-c", code]
    )
    return subprocess.run(
        [*command, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "empty-token").write_text("")
    (tmp / "two-tokens").write_text(f"{TOKEN}\n{TOKEN}\n")
    (tmp / "not-utf8").write_bytes(b"\xff\xfe\x00")
    (tmp / "bad-ca.pem").write_text("this is not a certificate\n")
    return {"tmp": str(tmp)}


_REDIS = "redis://127.0.0.1:1/0"  # never reached: each mistake is found before any network use
# (argv, a piece of the one line on stderr); "{tmp}" is the test's folder.
MISTAKES: list[tuple[list[str], str]] = [
    (["listen", "--gateway-url", "http://127.0.0.1:1"], "ws:// or wss:// URL"),
    (["listen", "--gateway-url", "ws://"], "ws:// or wss:// URL"),
    (["listen", "--shard", "3/2"], "--shard 3/2"),
    (["listen", "--shard", "0/0"], "--shard 0/0"),
    (["listen", "--shard", "1"], "--shard must be ID/COUNT"),
    (["listen", "--shard", "one/two"], "--shard must be ID/COUNT"),
    (["listen", "--shard=-1/2"], "--shard must be ID/COUNT"),
    (
        ["listen", "--gateway-url", "wss://127.0.0.1:1", "--ca-file", "{tmp}/missing.pem"],
        "cannot read --ca-file",
    ),
    (
        ["listen", "--gateway-url", "wss://127.0.0.1:1", "--ca-file", "{tmp}/bad-ca.pem"],
        "holds no usable CA certificate",
    ),
    (["listen", "--gateway-url", "wss://127.0.0.1:1", "--ca-file", "{tmp}"], "--ca-file"),
    (
        ["listen", "--gateway-url", "ws://127.0.0.1:1", "--ca-file", "{tmp}/bad-ca.pem"],
        "--ca-file is for TLS",
    ),
    (["listen", "--api-base", "not-a-url"], "--api-base must be"),
    (["listen", "--intents", "NOPE"], "unknown intent 'NOPE'"),
    (["listen", "--intents", "99999999999"], "has bits no intent defines"),
    (["listen", "--token-file", "{tmp}/empty-token"], "empty-token is empty"),
    (["listen", "--token-file", "{tmp}/two-tokens"], "more than one word or line"),
    (["listen", "--token-file", "{tmp}/not-utf8"], "is not UTF-8 text"),
    (["listen", "--token-file", "{tmp}/missing"], "cannot read the token file"),
    (["listen", "--token-file", "{tmp}"], "cannot read the token file"),
    # argparse: abbreviations are off, and a refused value is never printed back.
    (["listen", "--token", TOKEN], "unrecognized option: --token"),
    (["listen", f"--token={TOKEN}"], "unrecognized option: --token"),
    (["listen", "--tok", "token.txt"], "unrecognized option: --tok"),
    (["--token", TOKEN, "listen"], "invalid choice"),
    (["listen", TOKEN], "unexpected argument"),
    (["listen", "--encoding", TOKEN], "invalid choice"),
    (["listen", "--intents"], "expected one argument"),
    (["run", "--redis", _REDIS], "pass one of --shards"),
    (["run", "--redis", _REDIS, "--shards", "0-1/2", "--node", "0/2"], "pass one of --shards"),
    (["run", "--redis", _REDIS, "--shards", "5-3/4"], "--shards 5-3/4"),
    (["run", "--redis", _REDIS, "--shards", "0-1/0"], "--shards 0-1/0"),
    (["run", "--redis", _REDIS, "--node", "2/2"], "--node 2/2"),
    (["run", "--redis", _REDIS, "--node", "x"], "--node x"),
    (["run", "--redis", "http://127.0.0.1:1", "--node", "0/2"], "--redis must be"),
    (["run", "--shards", "0-1/2"], "required: --redis"),
    (
        ["run", "--redis", _REDIS, "--shards", "0-1/2", "--ca-file", "{tmp}/missing.pem"],
        "cannot read --ca-file",
    ),
    (["run", "--redis", _REDIS, "--shards", "0-1/2", "--api-base", "nope"], "--api-base must be"),
    (["run", "--redis", _REDIS, "--shards", "0-1/2", "--token", TOKEN], "unrecognized option"),
    (["run", "--redis", _REDIS, "--node", "0/2", "--intents", "NOPE"], "unknown intent 'NOPE'"),
    (["serve", "--port", "x"], "invalid int value"),
    (["demo", "--seed", "x"], "invalid int value"),
    ([], "required: command"),
]


def _check_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    where = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 2, where
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1, where
    assert expected in lines[0], where
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize(("argv", "expected"), MISTAKES, ids=lambda v: str(v)[:40])
def test_a_mistake_is_one_line_and_status_2(tmp_path: Path, argv: list[str], expected: str) -> None:
    names = _files(tmp_path)
    result = _run([arg.format(**names) for arg in argv], tmp_path)
    _check_one_line(result, expected.format(**names))


def test_no_token_is_one_line(tmp_path: Path) -> None:
    _check_one_line(_run(["listen"], tmp_path, token=None), "set DISCORD_TOKEN")


def test_zstd_without_an_encoder_is_one_line(tmp_path: Path) -> None:
    result = _run(
        ["listen", "--compression", "zstd-stream", "--gateway-url", "ws://127.0.0.1:1"],
        tmp_path,
        code=_WITHOUT_ZSTD,
    )
    _check_one_line(result, "zstd-stream")
    assert "pip install 'gateway-proto[zstd]'" in result.stderr
    assert "pip install '.[zstd]'" in result.stderr


def test_run_without_the_redis_package_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None; "
        "from gateway_proto.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    result = _run(["run", "--redis", _REDIS, "--shards", "0-1/2"], tmp_path, code=code)
    _check_one_line(result, "needs the redis package")
    assert "pip install '.[redis]'" in result.stderr


def test_the_entry_point_reports_mistakes_the_same_way(tmp_path: Path) -> None:
    script = shutil.which("gateway-proto", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the gateway-proto entry point is not installed next to this interpreter")
    env = {**os.environ, "DISCORD_TOKEN": TOKEN}
    result = subprocess.run(
        [script, "listen", "--shard", "0/0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _check_one_line(result, "--shard 0/0")


def test_version_and_help(tmp_path: Path) -> None:
    import gateway_proto

    result = _run(["--version"], tmp_path)
    assert (
        result.returncode == 0
        and result.stdout.strip() == f"gateway-proto {gateway_proto.__version__}"
    )
    listen_help = _run(["listen", "--help"], tmp_path)
    assert listen_help.returncode == 0
    assert "SIGTERM close the session" in listen_help.stdout


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from gateway-proto listen"
    return process.stdout.readline()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_the_session(tmp_path: Path, signum: int) -> None:
    """``listen`` against a LoopbackGateway: the signal closes with 1000, exit status 0."""
    env: dict[str, Any] = {**os.environ, "DISCORD_TOKEN": TOKEN}
    with LoopbackGateway(FakeGateway(token=TOKEN)) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_proto", "listen", "--gateway-url", server.url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = json.loads(_read_line(process, 30.0))
            assert first["event"] == "SessionStarted"
            process.send_signal(signum)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        deadline = time.monotonic() + 5.0
        codes: list[int] = []
        while time.monotonic() < deadline:
            codes = server.call(lambda gw: list(gw.client_close_codes))
            if codes:
                break
            time.sleep(0.05)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert codes == [1000]
    last = json.loads(out.splitlines()[-1])
    assert (last["event"], last["code"], last["error"]) == ("Terminated", 1000, None)
    assert TOKEN not in out + err
