"""The first hour of a new user, replayed: from a fresh clone, no token, no network.

The trial follows the README section by section with the loopback gateway as the server, and
makes the mistakes a newcomer makes on the command line. One test per step:

1. Quickstart: the demo runs, and command 2 is exactly what CI runs (``.ci/run``).
2. Every README code block runs offline: ``tests/test_readme.py`` (in the same test command).
3. The examples run with a plain ``pytest examples/...``: no coverage floor in the way.
4. ``listen`` mistakes each end in one line on stderr, exit status 2 and no traceback:
   an ``http://`` gateway URL, ``--shard 3/2``, ``0/0`` and ``1``, a missing ``--ca-file``,
   zstd-stream without a zstd library, an empty token file, ``--token SECRET`` (no prefix
   matching: it is not ``--token-file``). SIGTERM closes the session like Ctrl-C.
5. A missing optional dependency says how to install it (``gateway_proto.adapters.trio``);
   ``DiscoveryError`` is public where ``discover_gateway`` is.

Replay the whole trial, README blocks included, with ``python tests/test_first_hour.py``.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_readme import (
    README,
    ROOT,
    WAIT,
    clean_env,
    command,
    event_line,
    readme_blocks,
    running,
)

from gateway_proto.testing import FakeGateway, LoopbackGateway

TOKEN = "first-hour-token"
#: Seconds a mistaken command may take to say so (it must not connect and wait).
MISTAKE_TIMEOUT = 30.0
#: Imports that make the zstd codec available; blocking them is "zstandard not installed".
ZSTD_MODULES = ("zstandard", "backports.zstd", "compression.zstd")


def block_imports(*modules: str) -> str:
    """Python source that makes ``import m`` fail for each of ``modules``, as if not installed."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def listen(
    *args: str, cwd: Path, token: str | None = TOKEN, blocked: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``gateway-proto listen ARGS`` to completion (``blocked`` imports made to fail)."""
    argv = [*command("gateway-proto"), "listen", *args]
    if blocked:
        main = "from gateway_proto.__main__ import main\nsys.exit(main())\n"
        argv = [sys.executable, "-c", block_imports(*blocked) + main, "listen", *args]
    env = clean_env() if token is None else clean_env(DISCORD_TOKEN=token)
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=MISTAKE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{shlex.join(argv)} did not stop within {MISTAKE_TIMEOUT} s: it should refuse")


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit status 2, one line on stderr, no traceback; returns the line."""
    shown = f"exit {result.returncode}\n--- stderr\n{result.stderr}--- stdout\n{result.stdout}"
    assert "Traceback" not in result.stderr, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    assert result.returncode == 2, shown
    return lines[0]


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackGateway]:
    """A plain ``ws://`` loopback gateway accepting :data:`TOKEN`."""
    with LoopbackGateway(FakeGateway(token=TOKEN)) as gateway:
        yield gateway


# -- 1. Quickstart ---------------------------------------------------------------------------


def test_step_quickstart_demo_runs(tmp_path: Path) -> None:
    """Quickstart command 1 ends with ``gateway-proto demo``: it runs and exits 0."""
    for extra in ([], ["--virtual"]):
        with running(
            [*command("gateway-proto"), "demo", *extra], cwd=tmp_path, env=clean_env()
        ) as demo:
            assert demo.finish() == 0, demo.describe()
            assert "fake gateway rule violations: 0" in demo.lines, demo.describe()


def test_step_quickstart_test_command_is_what_ci_runs() -> None:
    """Quickstart has exactly two commands; command 2 is .ci/run's install and test lines."""
    quickstart = next(b for b in readme_blocks() if b.id == "quickstart-1")
    commands = [
        line for line in quickstart.code.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert len(commands) == 2, commands
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.startswith((".venv/", "python3 -m venv"))
    ]
    assert commands[1].split(" && ") == [
        part for line in ci if "erlpack" not in line for part in line.split(" && ")
    ]
    assert "--cov-fail-under=95" in ci[-1]


# -- 3. the examples -------------------------------------------------------------------------


def test_step_examples_pass_with_plain_pytest() -> None:
    """``pytest examples/test_reconnect_example.py``, as its docstring says, exits 0."""
    argv = [*command("pytest"), "examples/test_reconnect_example.py"]
    result = subprocess.run(
        argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout, result.stdout[-3000:]


# -- 4. command-line mistakes ----------------------------------------------------------------


def test_step_cli_http_gateway_url(tmp_path: Path) -> None:
    """``--gateway-url http://...`` is not a websocket URL."""
    assert_one_line_error(listen("--gateway-url", "http://127.0.0.1:1", cwd=tmp_path))


@pytest.mark.parametrize("shard", ["3/2", "0/0", "1"])
def test_step_cli_bad_shard(shard: str, tmp_path: Path, server: LoopbackGateway) -> None:
    """An impossible or incomplete ``--shard``."""
    assert_one_line_error(listen("--gateway-url", server.url, "--shard", shard, cwd=tmp_path))


def test_step_cli_missing_ca_file(tmp_path: Path) -> None:
    """``--ca-file`` naming no file."""
    line = assert_one_line_error(
        listen("--gateway-url", "wss://localhost:1", "--ca-file", "missing.pem", cwd=tmp_path)
    )
    assert "missing.pem" in line


def test_step_cli_zstd_stream_without_zstandard(tmp_path: Path, server: LoopbackGateway) -> None:
    """zstd-stream where no zstd library is installed says what to install."""
    result = listen(
        "--gateway-url",
        server.url,
        "--compression",
        "zstd-stream",
        cwd=tmp_path,
        blocked=ZSTD_MODULES,
    )
    assert "zstd" in assert_one_line_error(result)


def test_step_cli_empty_token_file(tmp_path: Path, server: LoopbackGateway) -> None:
    """An empty ``--token-file`` says the file is empty (not "pass --token-file")."""
    (tmp_path / "token.txt").write_text("\n", encoding="utf-8")
    line = assert_one_line_error(
        listen("--token-file", "token.txt", "--gateway-url", server.url, cwd=tmp_path, token=None)
    )
    assert "empty" in line
    assert "pass --token-file" not in line


def test_step_cli_token_is_not_token_file(tmp_path: Path, server: LoopbackGateway) -> None:
    """``--token SECRET`` is refused, never read as ``--token-file SECRET`` (no prefix matching)."""
    (tmp_path / "SECRET").write_text(TOKEN, encoding="utf-8")  # would connect if read as a file
    result = listen("--token", "SECRET", "--gateway-url", server.url, cwd=tmp_path, token=None)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "SessionStarted" not in result.stdout, result.stdout
    assert "SECRET" not in result.stderr, result.stderr  # a token typed there is not echoed


def test_step_cli_sigterm_closes_the_session(tmp_path: Path) -> None:
    """SIGTERM ends ``listen`` as Ctrl-C does: the session is closed with 1000."""
    with LoopbackGateway(FakeGateway(token=TOKEN)) as gateway:
        argv = [*command("gateway-proto"), "listen", "--gateway-url", gateway.url]
        with running(argv, cwd=tmp_path, env=clean_env(DISCORD_TOKEN=TOKEN)) as cli:
            cli.wait_for_line(
                lambda line: (event_line(line) or {}).get("event") == "SessionStarted"
            )
            code = cli.interrupt(signal.SIGTERM)
            assert code in (0, 128 + signal.SIGTERM), cli.describe()
            assert "Traceback" not in cli.stderr, cli.describe()
        assert gateway.call(lambda gw: list(gw.client_close_codes)) == [1000], cli.describe()
        assert gateway.call(lambda gw: [s.ended for s in gw.sessions]) == [
            "the client closed with 1000"
        ]


def test_step_readme_never_pairs_ca_file_with_ws() -> None:
    """``--ca-file`` checks a certificate: it goes with wss:// or https://, never ws://."""
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if "--ca-file" in line and "gateway-proto" in line:
            assert "ws://" not in line.replace("wss://", ""), f"README.md line {number}: {line}"


# -- 5. optional dependencies and public names -----------------------------------------------


def test_step_trio_missing_says_how_to_install(tmp_path: Path) -> None:
    """``import gateway_proto.adapters.trio`` without trio names the extra to install."""
    source = block_imports("trio") + "import gateway_proto.adapters.trio\n"
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "pip install" in last, result.stderr
    assert "[trio]" in last, result.stderr


@pytest.mark.parametrize("driver", ["asyncio", "trio", "threads"])
def test_step_discovery_error_is_public(driver: str) -> None:
    """``DiscoveryError`` is exported beside each driver's discovery function."""
    module = __import__(f"gateway_proto.adapters.{driver}", fromlist=["DiscoveryError"])
    assert "DiscoveryError" in module.__all__
    from gateway_proto.adapters._common import DiscoveryError

    assert module.DiscoveryError is DiscoveryError


def test_step_discovery_error_is_what_a_wrong_token_raises(server: LoopbackGateway) -> None:
    """A newcomer's wrong token: ``discover_gateway`` raises the public ``DiscoveryError``."""
    import asyncio

    from gateway_proto.adapters.asyncio import DiscoveryError, discover_gateway

    with pytest.raises(DiscoveryError, match="401"):
        asyncio.run(discover_gateway("wrong-token", api_base=server.api_url))


if __name__ == "__main__":
    # The whole trial: the README blocks and the steps above.
    here = Path(__file__).resolve().parent
    raise SystemExit(
        pytest.main(["-p", "no:cacheprovider", str(here / "test_readme.py"), str(Path(__file__))])
    )
