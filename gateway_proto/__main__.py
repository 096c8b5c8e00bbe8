"""The ``gateway-proto`` command line.

``gateway-proto demo`` connects the real client, through the asyncio driver, to the embedded
gateway on loopback and prints what happens: identify, dispatches, a reset connection and a
resume with replay, a server-requested reconnect. ``demo --virtual`` runs a longer scripted
session in virtual time (a zombie connection, an invalidated session too). ``listen``
connects a shard to Discord, or any compatible server, and prints events as JSON lines.
``run`` runs a range of shards as one node of a fleet sharing identify limits, shard leases
and session snapshots through Redis; with ``--publish`` it appends every dispatch to the
bot's Redis stream for workers, and ``consume`` prints that stream as JSON lines.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import (
    CloseTransport,
    Disconnected,
    DispatchReceived,
    GatewayConfig,
    GatewayConnection,
    HeartbeatAcknowledged,
    Intents,
    OpenTransport,
    RequestIdentify,
    SendMessage,
    SessionInvalidated,
    SessionResumed,
    SessionStarted,
    SetTimer,
    Terminated,
    UpdatePresence,
)
from ._version import __version__
from .testing import FakeGateway, Simulator


def describe(item: Any, origin: float = 0.0) -> str | None:
    """One human line for a log entry, or ``None`` for the ones not worth showing.

    Times in the entry (a reconnect deadline) are shown relative to ``origin``.
    """
    match item:
        case SetTimer():
            return None
        case OpenTransport(url=url, transport_id=tid):
            return f"open transport #{tid} -> {url}"
        case RequestIdentify(shard_id=shard):
            return f"ask the identify scheduler for a slot (shard {shard})"
        case CloseTransport(code=code, reason=reason, transport_id=tid):
            return f"close transport #{tid} with {code} ({reason or 'no reason'})"
        case SendMessage(opcode=op, transport_id=tid):
            return f"send {getattr(op, 'name', op)} on #{tid}"
        case SessionStarted(session_id=sid, sequence=seq):
            return f"READY: session {sid} started (seq {seq})"
        case SessionResumed(sequence=seq, replayed=n):
            return f"RESUMED at seq {seq}, {n} missed dispatch(es) replayed"
        case DispatchReceived(name=name, sequence=seq, data=data):
            return f"dispatch {name} seq={seq} {data}"
        case HeartbeatAcknowledged(latency=latency):
            return f"heartbeat ACK, latency {latency * 1000:.0f} ms"
        case SessionInvalidated(resumable=resumable, events_may_be_lost=lost, reason=reason):
            return (
                f"session invalidated ({reason}); resumable={resumable} events_may_be_lost={lost}"
            )
        case Disconnected() as d:
            why = type(d.error).__name__ if d.error else f"code {d.code}"
            mode = "resume" if d.will_resume else "identify"
            return (
                f"disconnected #{d.transport_id} ({why}); {mode} at t={d.reconnect_at - origin:.3f}"
            )
        case Terminated(code=code, error=error):
            return f"terminated (code {code}{', ' + str(error) if error else ''})"
        case _:
            return repr(item)


def run_demo(seed: int, out: Any) -> int:
    """Run the scripted virtual-time session and print its timeline."""
    config = GatewayConfig(
        token="demo-token",
        intents=Intents.GUILDS | Intents.GUILD_MESSAGES,
        rng=random.Random(seed),
    )
    gateway = FakeGateway(token="demo-token")
    sim = Simulator(GatewayConnection(config), gateway, latency=0.04)
    say = gateway.dispatch
    script = [
        (2.0, lambda: say("GUILD_CREATE", {"id": "81384788765712384", "name": "demo guild"})),
        (5.0, lambda: say("MESSAGE_CREATE", {"content": "hello"})),
        (6.0, lambda: sim.connection.send(UpdatePresence(status="idle"), now=sim.now)),
        (30.0, sim.drop_transport),
        (30.01, lambda: say("MESSAGE_CREATE", {"content": "sent while we were away"})),
        (60.0, lambda: gateway.send_raw({"op": 7, "d": None})),
        (90.0, lambda: setattr(gateway, "withhold_acks", True)),
        (200.0, lambda: setattr(gateway, "withhold_acks", False)),
        (230.0, lambda: gateway.send_raw({"op": 9, "d": False})),
        (260.0, lambda: sim.connection.close(1000, now=sim.now)),
    ]
    for when, step in script:
        sim.at(when, step)
    sim.connect()
    sim.run_until(300.0)
    for when, item in sim.log:
        line = describe(item)
        if line is not None:
            print(f"{when:9.3f}s  {line}", file=out)
    violations = gateway.violations
    print(f"\nfake gateway rule violations: {len(violations)}", file=out)
    return 1 if violations else 0


#: argparse quotes the value it refused ("invalid choice: 'x'"); a misplaced token must not be
#: printed back, so the value is left out (the choices are still listed).
_QUOTED_VALUE = re.compile(r"(invalid (?:choice|\w+ value)): '[^']*'")

_LISTEN_EPILOG = """\
The token is read from $DISCORD_TOKEN or --token-file, never from an argument.

SIGINT (Ctrl-C) and SIGTERM close the session with code 1000 and exit with status 0.
Exit status: 0 closed on request; 1 discovery failed, or no connection could be made
(three attempts before any session); 2 a mistake in the options (one line on stderr) or a
fatal close by the gateway (4004 authentication failed, 4014 disallowed intents, ...).
"""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with abbreviations off and every mistake as one line on stderr (status 2)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` as one line, never quoting a refused value."""
        message = _QUOTED_VALUE.sub(r"\1", " ".join(message.split()))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unrecognized(extras: Sequence[str]) -> str:
    """Name the unknown options of ``extras``, never their values (one may be the token)."""
    options = [item.split("=", 1)[0] for item in extras if item.startswith("-")]
    if not options:
        return "unexpected argument: the commands take options only"
    message = f"unrecognized option{'s' if len(options) > 1 else ''}: {', '.join(options)}"
    if any(option.startswith("--token") for option in options):
        message += " (the token is read from $DISCORD_TOKEN or --token-file PATH)"
    return message


def _count(*, allow_zero: bool = False) -> Any:
    """An argparse type: a whole number at least 1 (or 0 when allowed)."""

    def parse(value: str) -> int:
        lowest = 0 if allow_zero else 1
        if not (value.isascii() and value.isdecimal() and len(value) <= 12):
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lowest}")
        if int(value) < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}")
        return int(value)

    return parse


def _seconds(value: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < seconds < 86_400:
        raise argparse.ArgumentTypeError("must be above 0 and below a day")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway-proto`` console script."""
    parser = _ArgumentParser(prog="gateway-proto", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="connect the real client to the embedded loopback gateway, with faults"
    )
    demo.add_argument(
        "--virtual", action="store_true", help="run the scripted session in virtual time instead"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the virtual session")
    listen = commands.add_parser(
        "listen",
        help="connect a shard and print events as JSON lines",
        description="Connect a shard and print one JSON line per event on stdout.",
        epilog=_LISTEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen.add_argument("--token-file", help="file holding the bot token (default: $DISCORD_TOKEN)")
    listen.add_argument(
        "--intents", default="GUILDS", help="names (GUILDS,GUILD_MESSAGES) or a number"
    )
    listen.add_argument("--shard", default="0/1", help="shard as ID/COUNT (default 0/1)")
    listen.add_argument("--encoding", choices=["json", "etf"], default="json")
    listen.add_argument(
        "--compression", choices=["zlib-stream", "zstd-stream", "none"], default="zlib-stream"
    )
    listen.add_argument("--gateway-url", help="connect here instead of asking GET /gateway/bot")
    listen.add_argument("--api-base", default="https://discord.com/api/v10", help="REST API base")
    listen.add_argument(
        "--ca-file", help="trust this CA bundle instead of the system store (wss://, https://)"
    )
    run = commands.add_parser(
        "run", help="run a range of shards as one node of many processes (needs Redis)"
    )
    run.add_argument("--shards", help="FIRST-LAST/COUNT, e.g. 0-15/32")
    run.add_argument(
        "--node",
        help="INDEX/NODES: this node's share of the recommended shard count (instead of --shards)",
    )
    run.add_argument("--redis", required=True, help="redis://host:port/db shared by the nodes")
    run.add_argument("--token-file", help="file holding the bot token (default: $DISCORD_TOKEN)")
    run.add_argument("--app-id", help="the bot's id to file its Redis keys under")
    run.add_argument(
        "--intents", default="GUILDS", help="names (GUILDS,GUILD_MESSAGES) or a number"
    )
    run.add_argument("--encoding", choices=["json", "etf"], default="json")
    run.add_argument(
        "--compression", choices=["zlib-stream", "zstd-stream", "none"], default="zlib-stream"
    )
    run.add_argument("--gateway-url", help="connect here instead of the discovered URL")
    run.add_argument("--api-base", default="https://discord.com/api/v10", help="REST API base")
    run.add_argument("--ca-file", help="trust this CA bundle instead of the system store")
    run.add_argument("--reserve", type=int, default=0, help="session starts never spent")
    run.add_argument("--lease-ttl", type=float, default=15.0, help="seconds a shard lease lasts")
    run.add_argument(
        "--lease-wait",
        type=float,
        default=20.0,
        help="seconds to wait for a shard another process holds before failing",
    )
    run.add_argument("--quiet", action="store_true", help="print no event lines")
    run.add_argument(
        "--publish",
        metavar="REDIS_URL",
        help="append every dispatch to the bot's Redis stream (acknowledged once Redis has it) "
        "and run the workers' commands, instead of printing dispatches",
    )
    run.add_argument(
        "--stream-maxlen",
        type=_count(allow_zero=True),
        default=1_000_000,
        help="the event stream's MAXLEN ~ bound (0: never trimmed; default 1000000)",
    )
    run.add_argument(
        "--max-pending",
        type=_count(),
        default=10_000,
        help="dispatches held unpublished before the node stops reading (default 10000)",
    )
    consume = commands.add_parser(
        "consume",
        help="print the Redis event stream's dispatches as JSON lines (a consumer group member)",
    )
    consume.add_argument("--redis", required=True, help="redis://host:port/db of the stream")
    consume.add_argument("--group", required=True, help="the consumer group to read in")
    consume.add_argument("--consumer", help="this consumer's name (default: host-pid-random)")
    consume.add_argument(
        "--token-file", help="the bot token, to name its keys (default: $DISCORD_TOKEN)"
    )
    consume.add_argument("--app-id", help="the bot's id its keys are filed under (no token)")
    consume.add_argument(
        "--from",
        dest="start",
        choices=["start", "new"],
        default="start",
        help="where a new group starts: the stream's first entry or its next one",
    )
    consume.add_argument("--count", type=_count(), default=100, help="entries per read")
    consume.add_argument(
        "--claim-idle",
        type=_seconds,
        default=30.0,
        help="seconds before a dead consumer's entries are claimed (default 30)",
    )
    serve = commands.add_parser(
        "serve", help="serve the test kit's gateway on loopback (to try `run` without Discord)"
    )
    serve.add_argument("--port", type=int, default=8080, help="loopback port (default 8080)")
    serve.add_argument("--shards", type=int, default=4, help="the recommended shard count")
    serve.add_argument("--max-concurrency", type=int, default=1, help="identify buckets")
    args, extras = parser.parse_known_args(argv)
    if extras:
        {"listen": listen, "run": run, "serve": serve, "consume": consume}.get(
            args.command, demo
        ).error(_unrecognized(extras))
    if args.command == "demo" and args.virtual:
        return run_demo(args.seed, sys.stdout)
    import asyncio  # noqa: PLC0415 - the I/O half is only loaded when it runs
    import importlib  # noqa: PLC0415

    # adapters/ installs as gateway_proto.adapters; imported by name so that the pure
    # package never depends on the drivers statically.
    cli = importlib.import_module("gateway_proto.adapters.cli")

    if args.command == "listen":
        return int(cli.listen_main(args))
    if args.command == "run":
        return int(cli.run_main(args))
    if args.command == "serve":
        return int(cli.serve_main(args))
    if args.command == "consume":
        return int(cli.consume_main(args))
    try:
        return int(asyncio.run(cli.run_demo(sys.stdout)))
    except KeyboardInterrupt:  # before the demo's signal handlers were installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
