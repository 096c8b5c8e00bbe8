"""Every code block of README.md runs here, offline, against the README's own fake gateway.

Each fenced block is one test, named after its section (``connecting-a-bot-1``):

* ``python`` blocks are executed as written (as a module not named ``__main__``), with
  ``DISCORD_TOKEN`` set to the fake gateway's token, as the README says a user provides it.
  Then what the block defines is exercised: ``test_*`` functions are called; an async
  ``main(token, api_base, ssl_context)`` bot is run against ``offline_gateway(port=0)`` of the
  "Trying it offline" block (it must handle a MESSAGE_CREATE and close with 1000 when
  stopped); the block that defines ``offline_gateway`` is also run as a script, the way the
  README says to leave it running, and stopped with Ctrl-C (SIGINT).
* ``sh`` blocks run line by line in a scratch directory: ``gateway-proto listen`` lines as
  subprocesses against the "Trying it offline" script (port 8443 replaced by a free one),
  each until it prints a MESSAGE_CREATE, then Ctrl-C; ``gateway-proto demo`` to the end;
  ``echo ... > file`` through the shell. The "Many processes" cluster runs with its ports
  replaced by free ones: ``redis-server`` as the tests start one (skipped without it),
  ``gateway-proto serve`` in the background, the ``gateway-proto run`` nodes side by side until
  each prints a MESSAGE_CREATE, then Ctrl-C for all (exit 0; the server saw no rule
  violation). Any other line fails the test.
* A ``run_node`` coroutine (the cluster's Python API) is run against a real Redis and a
  loopback gateway of two shards, stopped, and must leave both snapshots stored.
* The "Fan-out through Redis Streams" block: ``gateway-proto run --publish`` nodes are
  waited on until they print their sessions, ``gateway-proto consume`` lines until they
  print a MESSAGE_CREATE from the stream, then all get Ctrl-C (exit 0). A ``run_worker``
  coroutine is run against a real Redis and a publishing node of two shards: a dispatch
  must reach it and its command must reach the guild's shard.
* A block that cannot run offline carries ``<!-- not-run: why -->`` on the line above its
  fence: the test is skipped with that reason. Any other block fails, so a new README block
  cannot go untested without saying why.

The helpers (subprocess runs with line-by-line output, a free port, the blocks themselves)
are shared with ``tests/test_first_hour.py``, the rest of the newcomer's trial.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The port the README's offline examples use; the tests substitute a free one.
README_PORT = "8443"
#: Seconds a subprocess may take to print what is awaited (a loaded 2-core CI machine).
WAIT = 60.0
_NOT_RUN = re.compile(r"<!--\s*not-run:(?P<reason>.*?)-->")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<info>.*)$")


# -- the blocks ------------------------------------------------------------------------------


@attrs.frozen
class Block:
    """One fenced code block of README.md."""

    id: str
    lang: str
    code: str
    line: int  # of the first code line
    not_run: str | None  # the reason of a <!-- not-run: ... --> marker above the fence


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced blocks of the README (or of ``text``), in order, with their markers."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    section, count = "top", 0
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                section, count = _slug(line.lstrip("#")), 0
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence["fence"]):
            end += 1
        above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = _NOT_RUN.fullmatch(above.strip())
        count += 1
        blocks.append(
            Block(
                id=f"{section}-{count}",
                lang=fence["info"].strip().split(" ")[0].lower(),
                code="\n".join(lines[i + 1 : end]) + "\n",
                line=i + 2,
                not_run=None if marker is None else marker["reason"].strip(),
            )
        )
        i = end + 1
    return blocks


def block_defining(name: str) -> Block:
    """The python block that defines ``name`` at top level (``def name(`` or ``name =``)."""
    pattern = re.compile(rf"^(?:async def |def |class )?{re.escape(name)}\b", re.MULTILINE)
    found = [b for b in readme_blocks() if b.lang == "python" and pattern.search(b.code)]
    assert found, f"no README python block defines {name}"
    return found[0]


def exec_block(block: Block, *, name: str = "readme_block") -> dict[str, Any]:
    """Execute a python block as a module named ``name``; return its namespace.

    Line numbers in tracebacks are README.md's.
    """
    namespace: dict[str, Any] = {"__name__": name}
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, str(README), "exec"), namespace)
    return namespace


# -- subprocesses ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would leak into a child run (coverage, pytest, token)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COV_CORE_", "PYTEST_")) and key != "DISCORD_TOKEN"
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def command(name: str) -> list[str]:
    """argv for a console script of this environment (``gateway-proto``, ``pytest``)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is not None:
        return [found]
    module = {"gateway-proto": "gateway_proto"}.get(name, name)
    return [sys.executable, "-m", module]


#: Runs argv[1:] with SIGINT at its default: a test run started in the background (bash
#: without job control) ignores SIGINT and children inherit that; this gives them Ctrl-C back
#: (without a ``preexec_fn``, unsafe in a process with threads).
_WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n",
]


class Proc:
    """A subprocess whose stdout is read line by line as it comes; stderr is kept whole."""

    def __init__(self, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str]):
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            [*_WITH_CTRL_C, *self.argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        self._stderr.append(self.popen.stderr.read())

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        """The first new stdout line ``predicate`` accepts; fails on exit or timeout."""
        give_up = time.monotonic() + timeout
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"{self.describe()}: nothing awaited within {timeout} s")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.finish(timeout=5)
                pytest.fail(f"{self.describe()}: exited before printing what was awaited")
            self.lines.append(line)
            if predicate(line):
                return line

    def interrupt(self, sig: signal.Signals = signal.SIGINT, timeout: float = WAIT) -> int:
        """Send ``sig`` (Ctrl-C by default) and wait for the exit status."""
        self.popen.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the exit (killing it after ``timeout``), then for its output."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.describe()}: still running after {timeout} s")
        for reader in self._readers:
            reader.join(10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        """Kill it now (idempotent)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    @property
    def stderr(self) -> str:
        """Everything it wrote on stderr (complete once :meth:`finish` returned)."""
        return "".join(self._stderr)

    def describe(self) -> str:
        """The command and what it printed so far, for failure messages."""
        out = "\n".join(self.lines[-20:])
        return f"{shlex.join(self.argv)}\n--- stdout\n{out}\n--- stderr\n{self.stderr[-3000:]}"


@contextlib.contextmanager
def running(argv: Sequence[str], **kwargs: Any) -> Iterator[Proc]:
    """A :class:`Proc` that is killed when the block exits, whatever happened."""
    proc = Proc(argv, **kwargs)
    try:
        yield proc
    finally:
        proc.kill()


def event_line(line: str) -> dict[str, Any] | None:
    """A ``listen`` JSON line as a dict (``None`` for anything else)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def is_message(line: str) -> bool:
    """Whether ``line`` is ``listen``'s record of a MESSAGE_CREATE dispatch."""
    record = event_line(line)
    return record is not None and record.get("name") == "MESSAGE_CREATE"


def is_session(line: str) -> bool:
    """Whether ``line`` is the record of a session that started or resumed."""
    record = event_line(line)
    return record is not None and record.get("event") in ("SessionStarted", "SessionResumed")


# -- the offline gateway of "Trying it offline" ------------------------------------------------


@contextlib.contextmanager
def offline_script(directory: Path) -> Iterator[tuple[Proc, int]]:
    """The README's offline gateway script, running in ``directory`` on a free port.

    Yields the process (its "serving ..." line read) and the port; on exit it is stopped with
    Ctrl-C, which must end it cleanly.
    """
    block = block_defining("offline_gateway")
    port = free_port()
    script = directory / "offline_gateway.py"
    script.write_text(block.code.replace(README_PORT, str(port)), encoding="utf-8")
    with running([sys.executable, str(script)], cwd=directory, env=clean_env()) as server:
        server.wait_for_line(lambda line: line.startswith("serving "))
        yield server, port
        code = server.interrupt()
        assert code == 0, server.describe()
        assert server.stderr == "", server.describe()


def _client_context(directory: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(directory / "ca.pem"))


def run_bot(main: Callable[..., Any], offline: dict[str, Any], directory: Path) -> None:
    """Run the README's bot ``main`` against ``offline_gateway(port=0)`` and check what it did.

    The bot must discover the gateway, start a session, answer a MESSAGE_CREATE with a
    presence update (op 3), and close with 1000 when it is stopped (cancelled: Ctrl-C).
    """
    received: list[int] = []

    def record_ops(gw: Any) -> None:
        receive = gw.receive

        def recording(tid: int, data: str | bytes, *, now: float) -> None:
            with contextlib.suppress(ValueError, TypeError):
                received.append(json.loads(data)["op"])
            receive(tid, data, now=now)

        gw.receive = recording

    async def until(condition: Callable[[], bool], what: str) -> None:
        give_up = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > give_up:
                pytest.fail(f"the README bot never {what}")
            await asyncio.sleep(0.02)

    with offline["offline_gateway"](port=0) as server:
        server.call(record_ops)

        async def scenario() -> None:
            bot = asyncio.create_task(
                main(offline["TOKEN"], server.api_url, _client_context(directory))
            )
            await until(lambda: bot.done() or server.call(lambda gw: gw.has_session()), "started")
            assert not bot.done(), bot.exception()
            server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))
            await until(lambda: bot.done() or 3 in received, "sent a presence update")
            assert not bot.done(), bot.exception()
            bot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bot

        asyncio.run(scenario())
        assert server.call(lambda gw: list(gw.client_close_codes)) == [1000]
        assert server.call(lambda gw: list(gw.violations)) == []


def run_cluster_node(run_node: Callable[..., Any]) -> None:
    """Run the README's ``run_node`` with a real Redis against a loopback gateway of 2 shards.

    Each shard must start a session and deliver a MESSAGE_CREATE; once ``stop`` is set the
    node must return with both sessions closed resumably (4000) and their snapshots stored.
    """
    import redis
    from _redis_server import redis_server

    from gateway_proto.testing import FakeGateway, LoopbackGateway

    with redis_server() as (url, _), LoopbackGateway(FakeGateway(token="offline-token")) as server:
        server.recommended_shards = 2

        async def scenario() -> list[str]:
            stop = asyncio.Event()
            node = asyncio.create_task(
                run_node("offline-token", [0, 1], 2, url, stop, api_base=server.api_url)
            )
            give_up = time.monotonic() + WAIT
            while server.call(lambda gw: gw.identifies) < 2:
                assert not node.done(), node.exception()
                assert time.monotonic() < give_up, "the README node never started both shards"
                await asyncio.sleep(0.05)
            for shard in (0, 1):
                server.call(lambda gw, s=shard: gw.dispatch("MESSAGE_CREATE", {}, shard=s))
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.wait_for(node, WAIT)
            client = redis.Redis.from_url(url)
            try:
                return sorted(key.decode() for key in client.scan_iter("gwp:*:session:*"))
            finally:
                client.close()

        stored = asyncio.run(scenario())
        assert len(stored) == 2, stored
        assert server.call(lambda gw: sorted(gw.client_close_codes)) == [4000, 4000]
        assert server.call(lambda gw: list(gw.violations)) == []


def run_stream_worker(run_worker: Callable[..., Any]) -> None:
    """Run the README's ``run_worker`` against a real Redis and a publishing node of 2 shards.

    The node is a ShardGroup with a NodeFanout (what ``run --publish`` runs). A "!members"
    MESSAGE_CREATE must reach the worker through the stream, and the worker's
    RequestGuildMembers must reach the guild's shard (the gateway answers with a
    GUILD_MEMBERS_CHUNK); once ``stop`` is set the worker must return.
    """
    from _redis_server import redis_server
    from gateway_proto.adapters.asyncio import ShardGroup
    from gateway_proto.adapters.streams import NodeFanout, StreamKeys, redis_client

    from gateway_proto import GatewayConfig, Intents, app_key, shard_for_guild
    from gateway_proto.testing import FakeGateway, LoopbackGateway

    token, guild = "offline-token", "81384788765712384"
    fake = FakeGateway(token=token)
    fake.members[guild] = [{"user": {"id": "1", "username": "someone"}}]

    def chunks(gw: Any) -> int:
        return sum(name == "GUILD_MEMBERS_CHUNK" for r in gw.sessions for _, name, _ in r.log)

    with redis_server() as (url, _), LoopbackGateway(fake) as server:

        async def scenario() -> None:
            configs = [
                GatewayConfig(
                    token=token, intents=Intents.GUILDS, shard=(i, 2), url=server.url,
                    commit_on_ack=True,
                )
                for i in range(2)
            ]  # fmt: skip
            async with ShardGroup(configs) as group:
                fanout = NodeFanout(
                    redis_client(url), StreamKeys(app_key(token=token)), group.shards,
                    shard_count=2, node="readme",
                )  # fmt: skip
                fanout.start()

                async def pump() -> None:
                    async for shard_id, event in group:
                        await fanout.handle(shard_id, event)

                pumping = asyncio.ensure_future(pump())
                stop = asyncio.Event()
                worker = asyncio.ensure_future(run_worker(url, token, 2, stop))
                give_up = time.monotonic() + WAIT
                while server.call(lambda gw: gw.identifies) < 2:
                    assert time.monotonic() < give_up, "the node never started both shards"
                    await asyncio.sleep(0.05)
                data = {"content": "!members", "guild_id": guild}
                shard = shard_for_guild(guild, 2)
                server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", data, shard=shard))
                while server.call(chunks) < 1:
                    assert not worker.done(), worker.exception()
                    assert time.monotonic() < give_up, "the worker's command never arrived"
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.wait_for(worker, WAIT)
                assert await fanout.stop()
                pumping.cancel()

        asyncio.run(scenario())
        assert server.call(lambda gw: list(gw.violations)) == []


# -- running one block -----------------------------------------------------------------------


def run_python_block(block: Block, directory: Path) -> None:
    """Execute a python block, then exercise what it defines (see the module docstring)."""
    namespace = exec_block(block)
    if "offline_gateway" in namespace:
        with offline_script(directory):
            pass
    main = namespace.get("main")
    if inspect.iscoroutinefunction(main):
        run_bot(main, exec_block(block_defining("offline_gateway")), directory)
    if inspect.iscoroutinefunction(namespace.get("run_node")):
        run_cluster_node(namespace["run_node"])
    if inspect.iscoroutinefunction(namespace.get("run_worker")):
        run_stream_worker(namespace["run_worker"])
    for name, value in namespace.items():
        if name.startswith("test_") and callable(value):
            value()


def shell_lines(code: str) -> list[str]:
    """The commands of an ``sh`` block: continuations joined, comments and blanks dropped."""
    joined = code.replace("\\\n", " ")
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=value ... argv`` (comments dropped) as the assignments and the argv."""
    words = shlex.split(line, comments=True)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


#: The ports of the README's "Many processes" cluster (redis-server, gateway-proto serve).
README_REDIS_PORT = "6379"
README_SERVE_PORT = "8080"


def run_shell_block(block: Block, directory: Path) -> None:
    """Run an ``sh`` block line by line in ``directory`` (see the module docstring)."""
    lines = [line.replace(README_PORT, "{port}") for line in shell_lines(block.code)]
    needs_server = any(split_command(line)[1][1:2] == ["listen"] for line in lines)
    ports = {README_SERVE_PORT: str(free_port())}
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(offline_script(directory))[1] if needs_server else 0
        serve: Proc | None = None
        nodes: list[Proc] = []
        consumers: list[Proc] = []
        publishing: list[Proc] = []
        for text in lines:
            line = text.replace("{port}", str(port))
            for readme_port, ours in ports.items():
                line = line.replace(f":{readme_port}", f":{ours}").replace(
                    f"--port {readme_port}", f"--port {ours}"
                )
            assignments, argv = split_command(line.rstrip().removesuffix("&"))
            where = f"README.md line {block.line}: {line}"
            if argv[:1] == ["redis-server"]:
                from _redis_server import redis_server

                url, _ = stack.enter_context(redis_server())
                ports[README_REDIS_PORT] = url.rsplit(":", 1)[1].split("/")[0]
            elif argv[:2] == ["gateway-proto", "serve"]:
                env = clean_env(**assignments)
                serve = stack.enter_context(
                    running(command("gateway-proto") + argv[1:], cwd=directory, env=env)
                )
                serve.wait_for_line(lambda out: out.startswith("gateway on "))
            elif argv[:2] in (["gateway-proto", "run"], ["gateway-proto", "consume"]):
                env = clean_env(**assignments)
                proc = stack.enter_context(
                    running(command("gateway-proto") + argv[1:], cwd=directory, env=env)
                )
                (consumers if argv[1] == "consume" else nodes).append(proc)
                if "--publish" in argv:
                    publishing.append(proc)
            elif argv[:1] == ["echo"] and ">" in line:
                subprocess.run(["bash", "-c", line], cwd=directory, check=True, env=clean_env())
            elif argv[:2] == ["gateway-proto", "listen"]:
                env = clean_env(**assignments)
                with running(command("gateway-proto") + argv[1:], cwd=directory, env=env) as cli:
                    cli.wait_for_line(is_message)
                    code = cli.interrupt()
                    assert code == 0, f"{where}\n{cli.describe()}"
                    assert "Traceback" not in cli.stderr, f"{where}\n{cli.describe()}"
            elif argv[:2] == ["gateway-proto", "demo"]:
                env = clean_env(**assignments)
                with running(command("gateway-proto") + argv[1:], cwd=directory, env=env) as cli:
                    assert cli.finish() == 0, f"{where}\n{cli.describe()}"
            else:
                pytest.fail(
                    f"{where}\ntest_readme cannot run this line: teach it, or mark the block "
                    "with <!-- not-run: why --> on the line above its fence"
                )
        # Side by side, as in their own terminals: a node prints its MESSAGE_CREATEs, or
        # with --publish its sessions (the dispatches go to the stream, which consume prints).
        for node in nodes:
            node.wait_for_line(is_session if node in publishing else is_message)
        for consumer in consumers:
            consumer.wait_for_line(is_message)
        for proc in consumers + nodes:
            assert proc.interrupt() == 0, proc.describe()
            assert "Traceback" not in proc.stderr, proc.describe()
        if serve is not None:
            assert serve.interrupt() == 0, serve.describe()
            assert any("rule violations 0" in out for out in serve.lines), serve.describe()


# -- the tests -------------------------------------------------------------------------------

BLOCKS = readme_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block runs offline as written, or the README says why it cannot."""
    if block.not_run is not None:
        assert block.not_run, f"README.md line {block.line}: a not-run marker needs a reason"
        pytest.skip(f"README.md line {block.line} is marked not-run: {block.not_run}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "offline-token")
    if block.lang == "python":
        run_python_block(block, tmp_path)
    elif block.lang in ("sh", "bash", "console", "shell"):
        run_shell_block(block, tmp_path)
    else:
        pytest.fail(
            f"README.md line {block.line}: a {block.lang or 'plain'} block cannot run; mark it "
            "with <!-- not-run: why --> on the line above its fence"
        )


def test_every_not_run_marker_sits_on_a_block() -> None:
    """A marker that is not right above a fence marks nothing: it is a mistake."""
    text = README.read_text(encoding="utf-8")
    markers = len(_NOT_RUN.findall(text))
    assert markers == sum(b.not_run is not None for b in BLOCKS)


def test_blocks_are_found() -> None:
    """The parser sees the README's blocks (a broken fence would hide them all)."""
    langs = [b.lang for b in BLOCKS]
    assert langs.count("python") >= 4, langs
    assert langs.count("sh") >= 3, langs


def test_the_offline_script_is_the_readme_block() -> None:
    """examples/offline_gateway.py is the README's "Trying it offline" block, word for word."""
    example = (ROOT / "examples" / "offline_gateway.py").read_text(encoding="utf-8")
    assert example == block_defining("offline_gateway").code


def test_the_parser_sees_markers_and_sections() -> None:
    """The block parser on a small sample: ids, languages, markers, line numbers."""
    sample = (
        "# Top\n\n## Two words\n\n<!-- not-run: needs a real token -->\n```sh\necho x\n```\n\n"
        "```python\nx = 1\n```\n"
    )
    first, second = readme_blocks(sample)
    assert (first.id, first.lang, first.not_run, first.line) == (
        "two-words-1",
        "sh",
        "needs a real token",
        7,
    )
    assert (second.id, second.lang, second.not_run, second.code) == (
        "two-words-2",
        "python",
        None,
        "x = 1\n",
    )


def test_an_unmarked_block_that_cannot_run_fails(tmp_path: Path) -> None:
    """The guard itself: a block nobody can run, and not marked, is a failure, not a pass."""
    text = "## S\n\n```text\nsome output\n```\n\n```sh\nmake install\n```\n"
    plain, shell = readme_blocks(text)
    with (
        pytest.MonkeyPatch.context() as patch,
        pytest.raises(pytest.fail.Exception, match="cannot run"),
    ):
        test_readme_block(plain, tmp_path, patch)
    with (
        pytest.MonkeyPatch.context() as patch,
        pytest.raises(pytest.fail.Exception, match="cannot run this line"),
    ):
        test_readme_block(shell, tmp_path, patch)
