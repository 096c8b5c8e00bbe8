"""The I/O half of the ``gateway-proto`` command: ``listen`` and the live ``demo``.

``run`` runs a range of shards as one node of many processes, coordinated through Redis
(``--publish``: its dispatches go to the bot's Redis stream); ``consume`` prints that
stream as JSON lines, one consumer of a group.
``listen`` connects a real shard (to Discord or any compatible server) through the asyncio
driver and prints one JSON line per event. ``demo`` starts the embedded loopback gateway
from :mod:`gateway_proto.testing`, connects the real client to it over TCP, and scripts a
few faults so that identify, dispatches, a dropped connection, a resume with replay and a
server-requested reconnect show up within seconds, with no token and no network.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import math
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit

import attrs

from gateway_proto import (
    CoordinationError,
    Disconnected,
    DispatchReceived,
    Encoding,
    Event,
    GatewayConfig,
    HeartbeatAcknowledged,
    Intents,
    LocalProtocolError,
    SessionResumed,
    SessionStarted,
    SessionStartLimit,
    Terminated,
    TransportCompression,
    parse_shard_range,
    split_shards,
)
from gateway_proto.__main__ import describe
from gateway_proto._config import DEFAULT_GATEWAY_URL, usable_ws_url
from gateway_proto._coordination import DEFAULT_LEASE_TTL, KeySpace, ShardRange, app_key
from gateway_proto._errors import install_hint
from gateway_proto.testing import FakeGateway, LoopbackGateway

from ._common import DiscoveryError
from .asyncio import Shard, ShardGroup, discover_gateway
from .cluster import Coordinator, SessionStore

__all__ = [
    "DEMO_TOKEN",
    "EXIT_FATAL_CLOSE",
    "EXIT_INTERRUPTED",
    "EXIT_NO_CONNECTION",
    "EXIT_USAGE",
    "MARKERS",
    "MAX_DECIMAL_INT_BITS",
    "UsageError",
    "consume_main",
    "event_record",
    "json_line",
    "listen_config",
    "listen_main",
    "parse_intents",
    "parse_shard",
    "printable",
    "read_token",
    "run_demo",
    "run_listen",
    "run_main",
    "run_node",
    "serve_main",
]

#: The exit statuses of ``listen`` (``gateway-proto listen --help`` lists them).
EXIT_USAGE = 2
EXIT_FATAL_CLOSE = 2
EXIT_NO_CONNECTION = 1
#: Ctrl-C before the session started (nothing to close): the shell's status for SIGINT.
EXIT_INTERRUPTED = 130
#: The most a token file is read: a token is about 70 characters.
_MAX_TOKEN_FILE = 64 * 1024


class UsageError(Exception):
    """Bad command-line input; the message is printed as it is (it never holds the token)."""


def read_token(token_file: str | None, environ: dict[str, str] | os._Environ[str]) -> str:
    """The token from ``--token-file`` or ``DISCORD_TOKEN``; never from an argument.

    Every mistake is a :class:`UsageError` that names the source, never the token: a file
    that cannot be read, is not UTF-8, is empty, or holds more than one word.
    """
    if token_file is not None:
        source = f"the token file {token_file}"
        try:
            with open(token_file, "rb") as handle:
                raw = handle.read(_MAX_TOKEN_FILE + 1)
        except OSError as exc:
            raise UsageError(
                f"cannot read {source}: {exc.strerror or type(exc).__name__}"
            ) from None
        if len(raw) > _MAX_TOKEN_FILE:
            raise UsageError(f"{source} is too large to hold a token")
        try:
            token = raw.decode("utf-8").removeprefix("\ufeff").strip()
        except UnicodeDecodeError:
            raise UsageError(f"{source} is not UTF-8 text") from None
        if not token:
            raise UsageError(f"{source} is empty: write the bot token in it")
    else:
        source = "DISCORD_TOKEN"
        token = environ.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise UsageError("no token: set DISCORD_TOKEN or pass --token-file PATH")
    if not token.isprintable() or any(char.isspace() for char in token):
        raise UsageError(f"{source} holds more than one word or line: it must hold the token only")
    return token


def parse_shard(text: str) -> tuple[int, int]:
    """``ID/COUNT`` (``0/1``, ``3/8``) with ``0 <= ID < COUNT``; else a :class:`UsageError`."""
    index, slash, count = text.strip().partition("/")
    if not (
        slash
        and all(part.isascii() and part.isdecimal() and len(part) <= 9 for part in (index, count))
    ):
        raise UsageError(f"--shard must be ID/COUNT, like 0/1 or 3/8 (got {text[:20]!r})")
    shard_id, shard_count = int(index), int(count)
    if not 0 <= shard_id < shard_count:
        raise UsageError(
            f"--shard {shard_id}/{shard_count}: COUNT must be at least 1 and ID from 0 to COUNT - 1"
        )
    return shard_id, shard_count


def parse_intents(text: str) -> Intents:
    """``GUILDS,GUILD_MESSAGES`` (names of :class:`Intents`, any case) or a number.

    A number must be plain ASCII digits and set only bits :class:`Intents` defines (docs/protocol.md
    §13: the gateway closes with 4013 otherwise); anything else is a :class:`UsageError`.
    """
    number = text.strip()
    if number.isascii() and number.isdecimal():
        # More digits than Intents.all() has cannot be a valid bitfield (and int() refuses
        # strings past 4300 digits): refuse without converting.
        value = int(number) if len(number) <= 20 else 1 << 64
        if value & ~int(Intents.all()):
            raise UsageError(
                f"--intents {number[:24]}{'...' if len(number) > 24 else ''} has bits no "
                f"intent defines (the gateway would close with 4013); the known intents "
                f"make {int(Intents.all())}"
            )
        return Intents(value)
    value = Intents.NONE
    for name in filter(None, (part.strip().upper() for part in text.split(","))):
        member = Intents.__members__.get(name)
        if member is None:
            known = ", ".join(Intents.__members__)
            raise UsageError(f"unknown intent {name!r}; known: {known}")
        value |= member
    return value


#: Integers wider than this many bits are written as ``{"$int": "0x…"}``: 2,000 bits is about
#: 600 digits, under any int-to-str limit Python allows (640 digits at the least; 4,300 by
#: default), and converting to hex costs linear time whatever the size.
MAX_DECIMAL_INT_BITS = 2000
#: The marker objects of :func:`printable` (each is an object with exactly this one key).
MARKERS = frozenset({"$int", "$float", "$map", "$bytes", "$repr", "$error"})


def printable(value: Any) -> Any:
    """``value`` as plain JSON data: lossless, with what JSON cannot hold clearly marked.

    The decoders (JSON and ETF) produce ``dict``, ``list``, ``str``, ``int``, ``float``,
    ``bool`` and ``None``; JSON text cannot hold all of them as they are, so:

    * an integer wider than :data:`MAX_DECIMAL_INT_BITS` → ``{"$int": "0x…"}`` (hex, signed;
      ``json.dumps`` would raise on one past Python's int-to-str limit);
    * NaN and infinities (the stdlib JSON decoder reads ``NaN`` and ``Infinity``) →
      ``{"$float": "nan" | "inf" | "-inf"}``;
    * a map with a non-string key (ETF maps may have integer or float keys) → ``{"$map":
      [[key, value], …]}``, keys and values rendered the same way; so is a map that would
      read as a marker (one key, a marker name), so every marker is unambiguous;
    * ``bytes`` → ``{"$bytes": "<base64>"}``; a tuple → a list; anything else →
      ``{"$repr": repr(value)}``.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if value.bit_length() <= MAX_DECIMAL_INT_BITS else {"$int": hex(value)}
    if kind is float:
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if kind is dict:
        if all(type(key) is str for key in value) and not (
            len(value) == 1 and next(iter(value)) in MARKERS
        ):
            return {key: printable(item) for key, item in value.items()}
        return {"$map": [[printable(key), printable(item)] for key, item in value.items()]}
    if kind is list or kind is tuple:
        return [printable(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    # Subclasses (an IntEnum, a str enum…) print as their base type; others by repr.
    if isinstance(value, int):  # bool cannot be subclassed
        return printable(int.__index__(value))
    if isinstance(value, float):
        return printable(float.__float__(value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dict | list | tuple):
        return printable(dict(value) if isinstance(value, dict) else list(value))
    try:
        return {"$repr": repr(value)}
    except Exception as exc:  # a repr may fail in any way; the line may not
        return {"$repr": f"<{kind.__name__} whose repr raised {type(exc).__name__}>"}


def json_line(record: dict[str, Any]) -> str:
    r"""``record`` (from :func:`event_record`) as one line of JSON text, never an exception.

    The line is ASCII (non-ASCII and lone surrogates are ``\u`` escapes) and strict JSON
    (no ``NaN``). A record that still cannot be written — nested deeper than the
    interpreter's recursion limit — becomes ``{"time", "event", "name", "$error"}``.
    """
    try:
        return json.dumps(printable(record), allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        brief: dict[str, Any] = {k: record[k] for k in ("time", "event", "name") if k in record}
        brief["$error"] = f"this event cannot be printed as JSON ({type(exc).__name__})"
        return json.dumps(printable(brief), allow_nan=False)


def event_record(event: Event, now: float) -> dict[str, Any]:
    """One object per event (``listen``'s output line, written by :func:`json_line`).

    ``data`` is the payload as decoded; :func:`json_line` renders what JSON cannot hold.
    """
    record: dict[str, Any] = {"time": round(now, 6), "event": type(event).__name__}
    match event:
        case DispatchReceived(name=name, sequence=seq, data=data):
            record.update(name=name, seq=seq, data=data)
        case SessionStarted(session_id=sid, sequence=seq):
            record.update(session_id=sid, seq=seq)
        case SessionResumed(sequence=seq, replayed=replayed):
            record.update(seq=seq, replayed=replayed)
        case HeartbeatAcknowledged(latency=latency):
            record.update(latency=round(latency, 6))
        case Disconnected() as d:
            record.update(
                code=d.code,
                reason=d.reason,
                error=None if d.error is None else str(d.error),
                will_resume=d.will_resume,
            )
        case Terminated(code=code, error=error):
            record.update(code=code, error=None if error is None else str(error))
        case _:
            try:
                record.update(repr=repr(event))
            except ValueError:  # an int past the int-to-str limit somewhere inside
                record.update(repr=f"<{type(event).__name__}: too large to show>")
    return record


class _Status:
    """The live status line on a terminal's stderr: state, shard, sequence, latency, rate."""

    def __init__(self, shard: Shard, out: TextIO) -> None:
        self._shard = shard
        self._out = out
        self._count = 0
        self._window_start = time.monotonic()
        self._rate = 0.0

    def saw_event(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._rate = self._count / (now - self._window_start)
            self._count = 0
            self._window_start = now
            self.draw()

    def draw(self) -> None:
        gateway = self._shard.gateway
        latency = gateway.latency
        shard = gateway.config.shard
        text = (
            f"{gateway.state.value:<12} shard {shard[0]}/{shard[1]}  seq {gateway.sequence}  "
            f"latency {'-' if latency is None else f'{latency * 1000:.0f} ms'}  "
            f"{self._rate:.1f} events/s"
        )
        self._out.write(f"\r\x1b[2K{text}")
        self._out.flush()


async def run_listen(
    config: GatewayConfig,
    *,
    out: TextIO,
    err: TextIO,
    ssl_context: ssl.SSLContext | None = None,
    give_up_after: int = 3,
) -> int:
    """Print every event as a JSON line until a fatal close or a signal; return an exit code.

    SIGINT (Ctrl-C) and SIGTERM close the session (code 1000): the ``Terminated`` event is
    printed and the exit status is 0, as for any close the user asked for.
    """
    failures = 0
    live = False
    async with Shard(config, ssl_context=ssl_context) as shard:
        with _close_on_signals(shard):
            status = _Status(shard, err) if err.isatty() else None
            start = time.monotonic()
            async for event in shard:
                out.write(json_line(event_record(event, time.monotonic() - start)))
                out.write("\n")
                out.flush()
                if status is not None:
                    status.saw_event()
                if isinstance(event, SessionStarted | SessionResumed):
                    live, failures = True, 0
                elif isinstance(event, Disconnected) and event.error is not None:
                    failures += 1
                    err.write(f"\nconnection failed: {event.error}\n")
                    if not live and failures >= give_up_after:
                        err.write(f"error: giving up after {failures} failed connection attempts\n")
                        return EXIT_NO_CONNECTION
                elif isinstance(event, Terminated):
                    if event.error is not None:
                        err.write(f"\nerror: the gateway ended the connection: {event.error}\n")
                        return EXIT_FATAL_CLOSE
                    return 0
    return 0


@contextlib.contextmanager
def _close_on_signals(shard: Shard) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM close ``shard`` gracefully instead of killing us.

    The first signal starts ``shard.close()`` (close 1000, bounded by the config's
    ``close_timeout``); later ones are ignored while it runs. Where the loop cannot take
    signal handlers (Windows, a thread other than the main one) nothing is installed.
    """
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[object]] = []

    def request_close() -> None:
        if not closing:
            closing.append(loop.create_task(shard.close()))

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, request_close)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _usable_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        return False


def _ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS context trusting ``ca_file`` (``None``: the system store, chosen by the driver)."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        raise UsageError(
            f"--ca-file {ca_file} holds no usable CA certificate ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read --ca-file {ca_file}: {exc.strerror or type(exc).__name__}"
        ) from None


def listen_config(
    args: Any, environ: dict[str, str] | os._Environ[str]
) -> tuple[GatewayConfig, ssl.SSLContext | None]:
    """Check every ``listen`` option before any network use; a mistake is a :class:`UsageError`.

    Without ``--gateway-url`` the config's URL is a placeholder that discovery replaces.
    """
    token = read_token(args.token_file, environ)
    intents = parse_intents(args.intents)
    shard = parse_shard(args.shard)
    gateway_url: str | None = args.gateway_url
    if gateway_url is not None and not usable_ws_url(gateway_url):
        raise UsageError(
            "--gateway-url must be a ws:// or wss:// URL with a host, like wss://gateway.discord.gg"
        )
    if gateway_url is None and not _usable_http_url(args.api_base):
        raise UsageError(
            "--api-base must be an http:// or https:// URL with a host, "
            "like https://discord.com/api/v10"
        )
    if args.ca_file is not None and gateway_url is not None and gateway_url[:5].lower() == "ws://":
        raise UsageError(
            "--ca-file is for TLS, but --gateway-url is ws:// (no TLS): use wss://, or drop --ca-file"
        )
    context = _ssl_context(args.ca_file)
    try:
        config = GatewayConfig(
            token=token,
            intents=intents,
            shard=shard,
            url=gateway_url or DEFAULT_GATEWAY_URL,
            encoding=Encoding(args.encoding),
            compression=TransportCompression(args.compression),
        )
    except (LocalProtocolError, ValueError) as exc:  # the library's messages omit the token
        raise UsageError(str(exc)) from None
    return config, context


async def _discover_url(token: str, api_base: str, context: ssl.SSLContext | None) -> str:
    info = await discover_gateway(token, api_base=api_base, ssl_context=context)
    return info.url


def listen_main(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``gateway-proto listen``: check ``args``, discover, run :func:`run_listen`; exit status.

    0: closed on request (SIGINT, SIGTERM); 1: discovery failed, or no connection could be
    made; 2: a usage mistake (one line on ``err``) or a fatal close; 130: interrupted before
    the session started.
    """
    try:
        config, context = listen_config(args, os.environ)
    except UsageError as exc:
        err.write(f"gateway-proto listen: error: {exc}\n")
        return EXIT_USAGE
    try:
        if args.gateway_url is None:
            try:
                url = asyncio.run(_discover_url(config.token, args.api_base, context))
                config = attrs.evolve(config, url=url)
            except DiscoveryError as exc:
                err.write(f"error: {exc}\n")
                return EXIT_NO_CONNECTION
            except LocalProtocolError:
                err.write("error: GET /gateway/bot answered a URL that is not ws:// or wss://\n")
                return EXIT_NO_CONNECTION
        return asyncio.run(run_listen(config, out=out, err=err, ssl_context=context))
    except KeyboardInterrupt:  # before the signal handlers were installed
        return EXIT_INTERRUPTED


# -- the live demo ---------------------------------------------------------------------

DEMO_TOKEN = "demo-token"


def _demo_script(server: LoopbackGateway) -> list[tuple[float, str, Callable[[], object]]]:
    """(second, what the server does, how) — realistic traffic and a few faults."""

    def say(name: str, data: dict[str, Any]) -> Callable[[], object]:
        return lambda: server.call(lambda gw: gw.dispatch(name, data))

    guild = {"id": "81384788765712384", "name": "demo guild", "member_count": 3}
    return [
        (0.6, "a guild becomes available", say("GUILD_CREATE", guild)),
        (0.8, "a message", say("MESSAGE_CREATE", {"content": "hello from loopback"})),
        (1.5, "restarts: connections reset, port closed for 0.3 s", lambda: server.restart(0.3)),
        (1.6, "a message while the bot is away", say("MESSAGE_CREATE", {"content": "missed?"})),
        (
            4.0,
            "op 7: the server asks for a reconnect",
            lambda: server.call(lambda gw: gw.request_reconnect()),
        ),
        (4.5, "a typing event", say("TYPING_START", {"channel_id": "1"})),
    ]


def _announce_then_run(
    loop: asyncio.AbstractEventLoop,
    note: Callable[[str], None],
    text: str,
    step: Callable[[], object],
) -> None:
    """Print what the server is about to do, then do it off the loop (it blocks)."""
    note(text)
    loop.run_in_executor(None, step)


async def run_demo(out: TextIO) -> int:
    """Serve the loopback gateway, connect the real client, print what happens; 0 if clean."""
    fake = FakeGateway(token=DEMO_TOKEN, heartbeat_interval_ms=1000)
    with LoopbackGateway(fake) as server:
        config = GatewayConfig(
            token=DEMO_TOKEN,
            intents=Intents.GUILDS | Intents.GUILD_MESSAGES,
            url=server.url,
            compression=TransportCompression.ZLIB_STREAM,
        )
        server.call(lambda gw: setattr(gw, "resume_url", server.url))
        out.write(f"embedded gateway listening on {server.url} (zlib-stream, JSON)\n")
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        origin = loop.time()

        def note(text: str) -> None:
            out.write(f"{time.monotonic() - start:7.3f}s  server: {text}\n")

        async with Shard(config) as shard:
            with _close_on_signals(shard):
                for when, text, step in _demo_script(server):
                    loop.call_at(loop.time() + when, _announce_then_run, loop, note, text, step)
                loop.call_at(loop.time() + 5.5, lambda: loop.create_task(shard.close()))
                async for event in shard:
                    line = describe(event, origin)
                    if line is not None:
                        out.write(f"{time.monotonic() - start:7.3f}s  client: {line}\n")
        violations = server.call(lambda gw: list(gw.violations))
    out.write(f"\nfake gateway rule violations: {len(violations)}\n")
    return 1 if violations else 0


# -- a node of many processes ---------------------------------------------------------------


async def run_node(
    configs: list[GatewayConfig],
    *,
    redis_url: str,
    app: str,
    limit: SessionStartLimit | None,
    out: TextIO,
    err: TextIO,
    reserve: int = 0,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    lease_wait: float = DEFAULT_LEASE_TTL + 5.0,
    debounce: float = 1.0,
    ssl_context: ssl.SSLContext | None = None,
    quiet: bool = False,
    publish: str | None = None,
    stream_maxlen: int | None = None,
    max_pending: int | None = None,
) -> int:
    """Run ``configs`` as one node (docs/protocol.md §8, §11) until SIGINT/SIGTERM; an exit code.

    Shard leases, identify slots and the budget are shared through Redis; each shard starts
    from its stored snapshot when there is one. Every event is a JSON line with its
    ``shard``; a dispatch is acknowledged once its line is written (``commit_on_ack``), so a
    stored snapshot never runs ahead of what was printed. On a signal every shard closes
    resumably (4000) and its snapshot is stored: a replacement resumes them.

    With ``publish`` (a Redis URL) dispatches go to the bot's event stream instead of
    stdout, each acknowledged once Redis accepted it, and the workers' commands are read
    from the shards' command streams (:class:`~gateway_proto.adapters.streams.NodeFanout`).
    """
    from .redis import AsyncRedisStore  # noqa: PLC0415 - needs the [redis] extra
    from .streams import NodeFanout, StreamKeys, redis_client  # noqa: PLC0415 - likewise

    store = AsyncRedisStore.from_url(redis_url, KeySpace(app))
    coordinator = Coordinator(
        store, limit=limit, reserve=reserve, lease_ttl=lease_ttl, lease_wait=lease_wait
    )
    sessions = SessionStore(store, debounce=debounce)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    group = ShardGroup(configs, coordinator=coordinator, store=sessions, ssl_context=ssl_context)
    try:
        await group.__aenter__()
    except CoordinationError as exc:
        err.write(f"error: {exc}\n")
        await store.aclose()
        return 1
    first, last = configs[0].shard, configs[-1].shard
    err.write(
        f"node {coordinator.node}: shards {first[0]}-{last[0]}/{first[1]}, "
        f"{len(group.restored)} from stored snapshots\n"
    )
    err.flush()
    by_id = {shard.gateway.config.shard[0]: shard for shard in group.shards}
    fanout: NodeFanout | None = None
    if publish is not None:
        options: dict[str, Any] = {"maxlen": stream_maxlen}
        if max_pending is not None:
            options["max_pending"] = max_pending
        fanout = NodeFanout(
            redis_client(publish),
            StreamKeys(app),
            group.shards,
            shard_count=first[1],
            node=coordinator.node,
            **options,
        )
        fanout.start()
    status = 0
    start = time.monotonic()

    async def consume() -> None:
        nonlocal status
        live = set(by_id)
        async for shard_id, event in group:
            if fanout is not None and await fanout.handle(shard_id, event):
                continue  # published; acknowledged once Redis has it
            if not quiet:
                record = event_record(event, time.monotonic() - start)
                record["shard"] = shard_id
                out.write(json_line(record) + "\n")
                out.flush()
            if isinstance(event, DispatchReceived) and event.sequence is not None:
                with contextlib.suppress(LocalProtocolError):  # a session that has ended
                    by_id[shard_id].gateway.acknowledge(event.sequence)
            elif isinstance(event, Terminated):
                live.discard(shard_id)
                if event.error is not None:
                    err.write(f"error: shard {shard_id}: {event.error}\n")
                    status = 2
                if not live:
                    stop.set()

    consumer = loop.create_task(consume())
    await stop.wait()
    if fanout is not None:
        # Take no more events; what Redis accepts now is acknowledged before the snapshots
        # are stored, and the rest is replayed by the next resume.
        consumer.cancel()
        if not await fanout.stop():
            err.write("warning: some dispatches were not published; the next resume replays them\n")
    snapshots = await group.close(resumable=True)
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await store.aclose()
    kept = sum(snapshot is not None for snapshot in snapshots)
    err.write(f"stopped: {kept} resumable session snapshots stored\n")
    return status


def _node_options(args: Any) -> tuple[ShardRange | None, tuple[int, int] | None]:
    """Check ``--shards`` / ``--node`` before any network use: a range, or (index, nodes)."""
    if (args.shards is None) == (args.node is None):
        raise UsageError("pass one of --shards FIRST-LAST/COUNT or --node INDEX/NODES")
    if args.shards is not None:
        try:
            return parse_shard_range(args.shards), None
        except (ValueError, LocalProtocolError) as exc:
            raise UsageError(f"--shards {args.shards}: {exc}") from None
    index, slash, nodes = args.node.partition("/")
    if not (slash and index.isdigit() and nodes.isdigit() and int(index) < int(nodes)):
        raise UsageError(f"--node {args.node}: expected INDEX/NODES with 0 <= INDEX < NODES")
    return None, (int(index), int(nodes))


def run_main(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``gateway-proto run``: check the options, discover, pick the shard range, run the node.

    Exit status as ``listen``'s: 2 for a mistake in the options (one line on ``err``), 1 when
    discovery fails.
    """
    logging.basicConfig(level=logging.WARNING, stream=err, format="%(levelname)s %(message)s")
    try:
        for option, url in (("--redis", args.redis), ("--publish", args.publish)):
            if url is not None and not _usable_redis_url(url):
                raise UsageError(f"{option} must be a redis://, rediss:// or unix:// URL")
        fixed, node = _node_options(args)
        token = read_token(args.token_file, os.environ)
        intents = parse_intents(args.intents)
        if importlib.util.find_spec("redis") is None:
            raise UsageError(f"--redis needs the redis package: {install_hint('redis')}")
        if args.gateway_url is not None and not usable_ws_url(args.gateway_url):
            raise UsageError("--gateway-url must be a ws:// or wss:// URL with a host")
        if not _usable_http_url(args.api_base):
            raise UsageError("--api-base must be an http:// or https:// URL with a host")
        context = _ssl_context(args.ca_file)
        app = app_key(application_id=args.app_id) if args.app_id else app_key(token=token)
    except (UsageError, ValueError) as exc:  # the messages never hold the token
        err.write(f"gateway-proto run: error: {exc}\n")
        return EXIT_USAGE
    try:
        info = asyncio.run(discover_gateway(token, api_base=args.api_base, ssl_context=context))
    except DiscoveryError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_NO_CONNECTION
    limit = info.session_start_limit
    if fixed is None:
        index, nodes = node or (0, 1)
        ranges = split_shards(info.shards, nodes, limit.max_concurrency)
        if index >= len(ranges):
            err.write(f"error: --node {args.node}: only {len(ranges)} ranges to share\n")
            return EXIT_USAGE
        fixed = ranges[index]
    try:
        configs = [
            GatewayConfig(
                token=token,
                intents=intents,
                shard=(shard_id, fixed.count),
                url=args.gateway_url or info.url,
                encoding=Encoding(args.encoding),
                compression=TransportCompression(args.compression),
                commit_on_ack=True,
            )
            for shard_id in fixed.ids
        ]
    except (LocalProtocolError, ValueError) as exc:  # the library's messages omit the token
        err.write(f"gateway-proto run: error: {exc}\n")
        return EXIT_USAGE
    return asyncio.run(
        run_node(
            configs,
            redis_url=args.redis,
            app=app,
            limit=limit,
            out=out,
            err=err,
            reserve=args.reserve,
            lease_ttl=args.lease_ttl,
            lease_wait=args.lease_wait,
            ssl_context=context,
            quiet=args.quiet,
            publish=args.publish,
            stream_maxlen=None if args.stream_maxlen == 0 else args.stream_maxlen,
            max_pending=args.max_pending,
        )
    )


def _usable_redis_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme == "unix" or (
            parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        )
    except ValueError:  # a malformed port or IPv6 address
        return False


def consume_main(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``gateway-proto consume``: print the event stream's dispatches as JSON lines.

    One consumer of ``--group`` (created at the stream's start, or at its end with
    ``--from new``); each line is acknowledged once written. SIGINT/SIGTERM stop it with
    status 0; a usage mistake is one line and status 2.
    """
    logging.basicConfig(level=logging.WARNING, stream=err, format="%(levelname)s %(message)s")
    try:
        if not _usable_redis_url(args.redis):
            raise UsageError("--redis must be a redis://, rediss:// or unix:// URL")
        if not args.group.strip():
            raise UsageError("--group must name a consumer group")
        if args.app_id:
            app = app_key(application_id=args.app_id)
        else:
            app = app_key(token=read_token(args.token_file, os.environ))
    except (UsageError, ValueError, LocalProtocolError) as exc:
        err.write(f"gateway-proto consume: error: {exc}\n")
        return EXIT_USAGE
    return asyncio.run(_consume(args, app, out))


async def _consume(args: Any, app: str, out: TextIO) -> int:
    from .streams import StreamKeys, redis_client  # noqa: PLC0415 - needs the [redis] extra
    from .workers import Consumer  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    consumer = Consumer(
        redis_client(args.redis),
        StreamKeys(app),
        group=args.group,
        name=args.consumer,
        start="$" if args.start == "new" else "0",
        count=args.count,
        claim_idle=args.claim_idle,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, consumer.stop)
    start = time.monotonic()
    try:
        async for delivery in consumer:
            record = event_record(delivery.event, time.monotonic() - start)
            record.update(shard=delivery.shard_id, session_id=delivery.session_id)
            record.update(id=delivery.entry_id, redelivered=delivery.redelivered)
            out.write(json_line(record) + "\n")
            out.flush()
            consumer.ack_later(delivery)
    finally:
        await consumer.aclose()
        await consumer.client.aclose()
    return 0


def serve_main(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``gateway-proto serve``: the test kit's gateway on loopback, for trying a fleet.

    Serves discovery (``/api/v10/gateway/bot``) and the gateway on one port, enforces the
    identify buckets and the session start limit, and sends one ``MESSAGE_CREATE`` per
    second to every shard with a session. Ctrl-C (or SIGTERM) prints what it saw.
    """
    token = os.environ.get("DISCORD_TOKEN", "").strip() or DEMO_TOKEN
    fake = FakeGateway(token=token, max_concurrency=args.max_concurrency)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LoopbackGateway(fake, host="127.0.0.1", port=args.port) as server:
        server.recommended_shards = args.shards
        out.write(
            f"gateway on {server.url}, discovery at {server.api_url} ({args.shards} shards, "
            f"max_concurrency {args.max_concurrency}, token from $DISCORD_TOKEN or "
            f"{DEMO_TOKEN!r})\n"
        )
        out.flush()
        count = 0
        while not stop.wait(1.0):
            count += 1

            def tick(gw: FakeGateway, n: int = count) -> None:
                for shard in range(args.shards):
                    if gw.has_session(shard):
                        gw.dispatch("MESSAGE_CREATE", {"content": f"tick {n}"}, shard=shard)

            server.call(tick)
        starts, resumes, violations = server.call(
            lambda gw: (gw.identifies, gw.resumes, list(gw.violations))
        )
    out.write(f"session starts {starts}, resumes {resumes}, rule violations {len(violations)}\n")
    for violation in violations:
        out.write(f"  {violation.rule}\n")
    return 1 if violations else 0
