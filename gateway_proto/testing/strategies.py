"""Hypothesis strategies for gateway tests: server payloads, dispatch streams, fault schedules.

This module needs hypothesis, the ``[testing]`` extra::

    pip install 'gateway-proto[testing]'    # from PyPI
    pip install '.[testing]'                # from a checkout

(:mod:`gateway_proto.testing` itself does not import it.) Every strategy draws values a real
gateway could send, so a client must handle them without raising:

* :func:`gateway_payloads` — one server → client payload of any opcode (0, 1, 7, 9, 10, 11),
  as the dict before encoding; the per-opcode strategies are public too.
* :func:`dispatch_streams` — lists of ``(name, data)`` for :meth:`FakeGateway.dispatch`.
* :func:`faults` and :func:`fault_schedules` — what to inflict and when, for
  :meth:`Simulator.inject`: drops, close codes (resumable, new-session, optionally fatal),
  op 7, op 9 ``true``/``false``, op 1, withheld and late ACKs, outages and session expiry.

The *hostile* strategies draw what a broken or malicious peer could send instead, for
robustness tests ("no peer value may make an input raise"):

* :func:`extreme_numbers`, :func:`extreme_strings`, :func:`hostile_urls` and
  :func:`extreme_values` — subnormal, huge, negative and non-finite floats, ints of thousands
  of digits and the ±2**63 / 2**64 boundaries, bools where numbers belong, huge and
  non-ASCII strings, lone surrogates and control characters, URLs no socket can open, nested
  lists and objects, ``None``.
* :func:`hostile_payloads` — server → client payloads whose every field the client reads
  (``op``, ``s``, ``t``, ``d``; HELLO's ``heartbeat_interval``; READY's ``session_id`` and
  ``resume_gateway_url``; RATE_LIMITED's ``opcode``, ``retry_after`` and ``meta``; op 9's
  ``d``) is either plausible or drawn from the extreme values. Some of them (NaN, infinities,
  lone surrogates, ints past 4300 digits) cannot be written by a strict JSON encoder; see
  :func:`hostile_payloads` for how to put them on the wire.

Example::

    @given(schedule=fault_schedules(max_faults=10, horizon=300.0), stream=dispatch_streams())
    def test_my_bot_survives(schedule, stream):
        sim = Simulator(GatewayConnection(config), FakeGateway(token=config.token))
        for when, fault in schedule:
            sim.inject(when, fault)
        ...
"""

from __future__ import annotations

from typing import Any, Literal

from .._errors import install_hint

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"gateway_proto.testing.strategies needs hypothesis: {install_hint('testing')}"
    ) from exc

from ._faults import (
    FATAL_CLOSE_CODES,
    NEW_SESSION_CLOSE_CODES,
    RESUMABLE_CLOSE_CODES,
    AnyFault,
    CloseConnection,
    DelayAcks,
    DropConnection,
    ExpireSession,
    InvalidateSession,
    Outage,
    RequestHeartbeat,
    RequestReconnect,
    WithholdAcks,
)

__all__ = [
    "DISPATCH_NAMES",
    "EXTREME_FLOATS",
    "EXTREME_INTS",
    "EXTREME_STRINGS",
    "HOSTILE_URLS",
    "HUGE_INT_DIGITS",
    "LONG_STRING_SHAPES",
    "CloseKind",
    "HostileKind",
    "Payload",
    "close_codes",
    "dispatch_data",
    "dispatch_payloads",
    "dispatch_streams",
    "extreme_numbers",
    "extreme_strings",
    "extreme_values",
    "fault_schedules",
    "faults",
    "gateway_payloads",
    "guild_members_chunk_payloads",
    "heartbeat_ack_payloads",
    "heartbeat_request_payloads",
    "hello_payloads",
    "hostile_payloads",
    "hostile_urls",
    "invalid_session_payloads",
    "json_values",
    "rate_limited_payloads",
    "ready_payloads",
    "reconnect_payloads",
    "resumed_payloads",
    "sequences",
    "snowflakes",
]

#: docs/protocol.md §14: the documented dispatch names, except READY, RESUMED and RATE_LIMITED (the
#: session dispatches have their own strategies).
DISPATCH_NAMES: tuple[str, ...] = (
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    "AUTO_MODERATION_RULE_CREATE",
    "AUTO_MODERATION_RULE_UPDATE",
    "AUTO_MODERATION_RULE_DELETE",
    "AUTO_MODERATION_ACTION_EXECUTION",
    "CHANNEL_CREATE",
    "CHANNEL_UPDATE",
    "CHANNEL_DELETE",
    "CHANNEL_INFO",
    "CHANNEL_PINS_UPDATE",
    "THREAD_CREATE",
    "THREAD_UPDATE",
    "THREAD_DELETE",
    "THREAD_LIST_SYNC",
    "THREAD_MEMBER_UPDATE",
    "THREAD_MEMBERS_UPDATE",
    "ENTITLEMENT_CREATE",
    "ENTITLEMENT_UPDATE",
    "ENTITLEMENT_DELETE",
    "GUILD_CREATE",
    "GUILD_UPDATE",
    "GUILD_DELETE",
    "GUILD_AUDIT_LOG_ENTRY_CREATE",
    "GUILD_BAN_ADD",
    "GUILD_BAN_REMOVE",
    "GUILD_EMOJIS_UPDATE",
    "GUILD_STICKERS_UPDATE",
    "GUILD_INTEGRATIONS_UPDATE",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_REMOVE",
    "GUILD_MEMBER_UPDATE",
    "GUILD_MEMBERS_CHUNK",
    "GUILD_ROLE_CREATE",
    "GUILD_ROLE_UPDATE",
    "GUILD_ROLE_DELETE",
    "GUILD_SCHEDULED_EVENT_CREATE",
    "GUILD_SCHEDULED_EVENT_UPDATE",
    "GUILD_SCHEDULED_EVENT_DELETE",
    "GUILD_SCHEDULED_EVENT_USER_ADD",
    "GUILD_SCHEDULED_EVENT_USER_REMOVE",
    "GUILD_SOUNDBOARD_SOUND_CREATE",
    "GUILD_SOUNDBOARD_SOUND_UPDATE",
    "GUILD_SOUNDBOARD_SOUND_DELETE",
    "GUILD_SOUNDBOARD_SOUNDS_UPDATE",
    "SOUNDBOARD_SOUNDS",
    "INTEGRATION_CREATE",
    "INTEGRATION_UPDATE",
    "INTEGRATION_DELETE",
    "INTERACTION_CREATE",
    "INVITE_CREATE",
    "INVITE_DELETE",
    "MESSAGE_CREATE",
    "MESSAGE_UPDATE",
    "MESSAGE_DELETE",
    "MESSAGE_DELETE_BULK",
    "MESSAGE_REACTION_ADD",
    "MESSAGE_REACTION_REMOVE",
    "MESSAGE_REACTION_REMOVE_ALL",
    "MESSAGE_REACTION_REMOVE_EMOJI",
    "PRESENCE_UPDATE",
    "STAGE_INSTANCE_CREATE",
    "STAGE_INSTANCE_UPDATE",
    "STAGE_INSTANCE_DELETE",
    "SUBSCRIPTION_CREATE",
    "SUBSCRIPTION_UPDATE",
    "SUBSCRIPTION_DELETE",
    "TYPING_START",
    "USER_UPDATE",
    "VOICE_CHANNEL_EFFECT_SEND",
    "VOICE_CHANNEL_START_TIME_UPDATE",
    "VOICE_CHANNEL_STATUS_UPDATE",
    "VOICE_STATE_UPDATE",
    "VOICE_SERVER_UPDATE",
    "WEBHOOKS_UPDATE",
    "MESSAGE_POLL_VOTE_ADD",
    "MESSAGE_POLL_VOTE_REMOVE",
)

Payload = dict[str, Any]
CloseKind = Literal["any", "resumable", "new_session", "fatal"]


def snowflakes() -> st.SearchStrategy[str]:
    """Snowflakes as JSON carries them: decimal strings of unsigned 64-bit ints (docs/protocol.md §10.1)."""
    return st.integers(min_value=0, max_value=2**64 - 1).map(str)


def sequences() -> st.SearchStrategy[int]:
    """Dispatch sequence numbers (``s``), from 1."""
    return st.integers(min_value=1, max_value=2**31 - 1)


def json_values(*, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (finite numbers; nested lists and objects)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**53), max_value=2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def dispatch_data() -> st.SearchStrategy[dict[str, Any]]:
    """A dispatch's ``d``: an object (with an ``id`` snowflake, as most events have)."""
    return st.builds(
        lambda ident, extra: {"id": ident, **extra},
        snowflakes(),
        st.dictionaries(st.text(min_size=1, max_size=8), json_values(), max_size=4),
    )


def hello_payloads(
    *, min_interval_ms: int = 1000, max_interval_ms: int = 60_000
) -> st.SearchStrategy[Payload]:
    """Op 10 HELLO with an interval in ms, sometimes with ``_trace`` and null ``s``/``t`` (§3)."""
    return st.builds(
        lambda interval, trace, nulls: {
            "op": 10,
            "d": {"heartbeat_interval": interval, **({"_trace": trace} if trace else {})},
            **({"s": None, "t": None} if nulls else {}),
        },
        st.integers(min_value=min_interval_ms, max_value=max_interval_ms),
        st.lists(st.text(max_size=12), max_size=2),
        st.booleans(),
    )


def heartbeat_request_payloads() -> st.SearchStrategy[Payload]:
    """Op 1: the server asks for an immediate heartbeat (docs/protocol.md §3)."""
    return st.sampled_from([{"op": 1, "d": None}, {"op": 1, "d": None, "s": None, "t": None}])


def heartbeat_ack_payloads() -> st.SearchStrategy[Payload]:
    """Op 11, with or without ``d`` (docs/protocol.md §15 item 14)."""
    return st.sampled_from([{"op": 11}, {"op": 11, "d": None}, {"op": 11, "s": None, "t": None}])


def reconnect_payloads() -> st.SearchStrategy[Payload]:
    """Op 7 Reconnect (docs/protocol.md §6)."""
    return st.sampled_from([{"op": 7, "d": None}, {"op": 7, "d": None, "s": None, "t": None}])


def invalid_session_payloads(resumable: bool | None = None) -> st.SearchStrategy[Payload]:
    """Op 9 with ``d`` ``true``/``false`` (any when ``resumable`` is ``None``) (docs/protocol.md §6)."""
    values = st.booleans() if resumable is None else st.just(resumable)
    return values.map(lambda d: {"op": 9, "d": d})


def ready_payloads(seq: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Payload]:
    """A READY dispatch (docs/protocol.md §4.2) with a session id and a ``wss://`` resume URL."""
    return st.builds(
        lambda s, session_id, host, user_id, guilds, shard: {
            "op": 0,
            "s": s,
            "t": "READY",
            "d": {
                "v": 10,
                "session_id": session_id,
                "resume_gateway_url": f"wss://{host}.gateway.test",
                "user": {"id": user_id, "username": "bot", "bot": True},
                "guilds": [{"id": g, "unavailable": True} for g in guilds],
                **({"shard": list(shard)} if shard else {}),
                "application": {"id": user_id, "flags": 0},
            },
        },
        seq if seq is not None else st.just(1),
        st.text(alphabet="0123456789abcdef", min_size=8, max_size=32),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
        snowflakes(),
        st.lists(snowflakes(), max_size=3),
        st.none()
        | st.integers(1, 16).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
    )


def resumed_payloads() -> st.SearchStrategy[Payload]:
    """The RESUMED dispatch (docs/protocol.md §5): no documented fields; ``s`` null or absent."""
    return st.sampled_from(
        [{"op": 0, "s": None, "t": "RESUMED", "d": {}}, {"op": 0, "t": "RESUMED", "d": None}]
    )


def dispatch_payloads(
    *, names: st.SearchStrategy[str] | None = None, seq: st.SearchStrategy[int] | None = None
) -> st.SearchStrategy[Payload]:
    """An op 0 dispatch of an ordinary event (docs/protocol.md §14)."""
    return st.builds(
        lambda s, t, d: {"op": 0, "s": s, "t": t, "d": d},
        seq if seq is not None else sequences(),
        names if names is not None else st.sampled_from(DISPATCH_NAMES),
        dispatch_data(),
    )


def guild_members_chunk_payloads(
    seq: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[Payload]:
    """A GUILD_MEMBERS_CHUNK dispatch (docs/protocol.md §12): ``0 <= chunk_index < chunk_count``."""

    def build(  # noqa: PLR0917 - st.builds passes the drawn values positionally
        s: int, guild: str, count: int, index: int, users: list[str], nonce: Any
    ) -> Payload:
        d: dict[str, Any] = {
            "guild_id": guild,
            "members": [{"user": {"id": u, "username": f"user{u[-4:]}"}} for u in users],
            "chunk_index": index % count,
            "chunk_count": count,
        }
        if nonce is not None:
            d["nonce"] = nonce
        return {"op": 0, "s": s, "t": "GUILD_MEMBERS_CHUNK", "d": d}

    return st.builds(
        build,
        seq if seq is not None else sequences(),
        snowflakes(),
        st.integers(min_value=1, max_value=50),
        st.integers(min_value=0, max_value=49),
        st.lists(snowflakes(), max_size=5),
        st.none() | st.text(alphabet="abcdefghij0123456789", max_size=32),
    )


def rate_limited_payloads() -> st.SearchStrategy[Payload]:
    """A RATE_LIMITED dispatch for op 8 (docs/protocol.md §8): ``retry_after`` in seconds, no ``s``."""
    return st.builds(
        lambda retry, guild, nonce: {
            "op": 0,
            "s": None,
            "t": "RATE_LIMITED",
            "d": {
                "opcode": 8,
                "retry_after": retry,
                "meta": {"guild_id": guild, **({"nonce": nonce} if nonce is not None else {})},
            },
        },
        st.floats(min_value=0.0, max_value=30.0, allow_nan=False),
        snowflakes(),
        st.none() | st.text(alphabet="abcdefghij0123456789", max_size=32),
    )


def gateway_payloads() -> st.SearchStrategy[Payload]:
    """One server → client payload of any opcode the gateway sends (0, 1, 7, 9, 10, 11)."""
    return st.one_of(
        hello_payloads(),
        heartbeat_request_payloads(),
        heartbeat_ack_payloads(),
        reconnect_payloads(),
        invalid_session_payloads(),
        ready_payloads(),
        resumed_payloads(),
        dispatch_payloads(),
        guild_members_chunk_payloads(),
        rate_limited_payloads(),
    )


def dispatch_streams(
    *,
    min_size: int = 0,
    max_size: int = 30,
    names: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[list[tuple[str, dict[str, Any]]]]:
    """A list of ``(name, data)`` for :meth:`FakeGateway.dispatch`, in emission order."""
    return st.lists(
        st.tuples(names if names is not None else st.sampled_from(DISPATCH_NAMES), dispatch_data()),
        min_size=min_size,
        max_size=max_size,
    )


def close_codes(kind: CloseKind = "any") -> st.SearchStrategy[int]:
    """Close codes a server sends (docs/protocol.md §7): ``resumable``, ``new_session``, ``fatal`` or any."""
    pools = {
        "resumable": RESUMABLE_CLOSE_CODES,
        "new_session": NEW_SESSION_CLOSE_CODES,
        "fatal": FATAL_CLOSE_CODES,
        "any": RESUMABLE_CLOSE_CODES + NEW_SESSION_CLOSE_CODES + FATAL_CLOSE_CODES,
    }
    return st.sampled_from(pools[kind])


def faults(
    *, include_fatal: bool = False, max_duration: float = 120.0
) -> st.SearchStrategy[AnyFault]:
    """One fault (the fault classes of :mod:`gateway_proto.testing` say what each does).

    Drop, close (resumable / new-session / fatal if asked), op 1, op 7, op 9, withheld or
    late ACKs, an outage, or session expiry.
    """
    durations = st.floats(min_value=0.5, max_value=max_duration, allow_nan=False)
    codes = close_codes("any" if include_fatal else "resumable") | close_codes("new_session")
    options: list[st.SearchStrategy[Any]] = [
        st.just(DropConnection()),
        codes.map(CloseConnection),
        st.just(RequestReconnect()),
        st.booleans().map(InvalidateSession),
        st.just(RequestHeartbeat()),
        durations.map(WithholdAcks),
        st.builds(DelayAcks, st.floats(min_value=0.01, max_value=10.0), durations),
        durations.map(Outage),
        st.just(ExpireSession()),
    ]
    return st.one_of(options)


def fault_schedules(
    *,
    min_faults: int = 0,
    max_faults: int = 20,
    horizon: float = 600.0,
    include_fatal: bool = False,
    max_duration: float = 120.0,
) -> st.SearchStrategy[list[tuple[float, AnyFault]]]:
    """``(time, fault)`` pairs in time order within ``[0, horizon)`` for :meth:`Simulator.inject`."""
    entry = st.tuples(
        st.floats(min_value=0.0, max_value=horizon, exclude_max=True, allow_nan=False),
        faults(include_fatal=include_fatal, max_duration=max_duration),
    )
    return st.lists(entry, min_size=min_faults, max_size=max_faults).map(
        lambda pairs: sorted(pairs, key=lambda pair: pair[0])
    )


# ---------------------------------------------------------------------------------------------
# Hostile values: what a broken or malicious peer may send in any field.

#: Floats that break naive arithmetic: the smallest subnormal (``5e-324``) and others that
#: overflow when divided into, the smallest normal, the largest finite, both zeros, and the
#: non-finite values.
EXTREME_FLOATS: tuple[float, ...] = (
    5e-324,
    1e-320,
    2.2250738585072014e-308,
    1e-300,
    1e-3,
    0.5,
    0.0,
    -0.0,
    -1.0,
    -5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    float("nan"),
    float("inf"),
    float("-inf"),
)

#: Ints around every boundary a client may assume (31, 53, 63 and 64 bits), and ints too
#: large for ``float()`` (``10**400``), of both signs. :func:`extreme_numbers` adds ints of
#: :data:`HUGE_INT_DIGITS` digits (kept out of this tuple: past 4300 digits ``repr`` raises).
EXTREME_INTS: tuple[int, ...] = (
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    10**30,
    10**400,
    -(10**400),
)

#: Digit counts of the huge ints :func:`extreme_numbers` draws: past the float range, just
#: under and past Python's default 4300-digit limit of ``int``/``str`` conversions.
HUGE_INT_DIGITS: tuple[int, ...] = (400, 4200, 5000)


def _huge_int(digits: int, negative: bool) -> int:
    value: int = 10 ** (digits - 1) + 7
    return -value if negative else value


#: Lone surrogates: valid in a Python ``str``, in no UTF-8 text.
_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")

#: Short strings that are empty, not ASCII, not text (lone surrogates), or not printable.
#: :func:`extreme_strings` adds long ones (see :data:`LONG_STRING_SHAPES`).
EXTREME_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "\x7f",
    "\n\r\t",
    "\u2028",
    "é",
    "\U0001f600",
    *_SURROGATES,
    "a\ud800b",
)

#: ``(character, count)`` of the long strings :func:`extreme_strings` draws: just past a
#: 128-character bound, and 5000 characters of 1-, 2- and 4-byte UTF-8 (over 4096 bytes
#: once encoded), digits included. Built when drawn, so reprs stay short.
LONG_STRING_SHAPES: tuple[tuple[str, int], ...] = (
    ("x", 129),
    ("x", 5000),
    ("ü", 5000),
    ("\U0001f600", 1100),
    ("9", 5000),
)


def _long_string(shape: tuple[str, int]) -> str:
    return shape[0] * shape[1]


def extreme_numbers() -> st.SearchStrategy[int | float | bool]:
    """Numbers a client must not trust.

    :data:`EXTREME_INTS`, :data:`EXTREME_FLOATS`, bools (an ``int`` subclass in Python, never
    a number on the wire), and any int or float.
    """
    return st.one_of(
        st.sampled_from(EXTREME_INTS),
        st.builds(_huge_int, st.sampled_from(HUGE_INT_DIGITS), st.booleans()),
        st.sampled_from(EXTREME_FLOATS),
        st.booleans(),
        st.integers(),
        st.floats(),
    )


def extreme_strings() -> st.SearchStrategy[str]:
    """Strings a client must not trust.

    :data:`EXTREME_STRINGS`, and any text, lone surrogates and control characters included.
    """
    alphabet = st.characters() | st.sampled_from(_SURROGATES) | st.sampled_from("\x00\x1f\x7f")
    return (
        st.sampled_from(EXTREME_STRINGS)
        | st.sampled_from(LONG_STRING_SHAPES).map(_long_string)
        | st.text(alphabet, max_size=40)
    )


#: URLs no websocket can be opened to, or only by trusting the peer too much (docs/protocol.md §4.2: the
#: resume URL comes from the peer): a host label IDNA refuses (over 63 characters, or empty),
#: no host, a port out of range, non-ASCII, spaces and control characters, other schemes, an
#: unclosed IPv6 bracket, a URL longer than a request line should be.
HOSTILE_URLS: tuple[str, ...] = (
    "wss://" + "a" * 70 + ".example.test",
    "wss://a..b.example.test",
    "wss://.example.test",
    "wss://",
    "wss://:443",
    "wss://host.test:0",
    "wss://host.test:65536",
    "wss://host.test:-1",
    "wss://host.test:99999999999999999999",
    "wss://hôst.test",
    "wss://host test",
    "wss://host.test/\x00",
    "wss://host.test/\ud800",
    "wss://[::1",
    "wss://[zz]",
    "http://host.test",
    "file:///etc/passwd",
    "wss://" + "a" * 3000 + ".test",
    "wss://" + "a." * 1100 + "test",
)


def hostile_urls() -> st.SearchStrategy[str]:
    """:data:`HOSTILE_URLS`, and arbitrary strings behind ``wss://``."""
    return st.sampled_from(HOSTILE_URLS) | extreme_strings().map(lambda text: "wss://" + text)


def extreme_values(*, max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any value a decoder can produce, built from extreme leaves.

    Numbers, strings, bools, ``None``, nested lists and objects (string keys, extreme ones
    included).
    """
    leaves = st.none() | extreme_numbers() | extreme_strings()
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(extreme_strings() | st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def _plausible_or_extreme(
    plausible: st.SearchStrategy[Any], extreme: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[Any]:
    """A plausible value, an extreme one of the expected kind (most often), or any value."""
    if extreme is None:
        return plausible | extreme_values(max_leaves=3)
    return _weighted(extreme, plausible | extreme_values(max_leaves=3))


def _with_key(
    payload: st.SearchStrategy[Payload], key: str, value: st.SearchStrategy[Any]
) -> st.SearchStrategy[Payload]:
    """``payload`` with ``key`` set to a drawn value (3 draws in 4), or absent altogether."""
    missing = object()
    return st.builds(
        lambda p, v: p if v is missing else {**p, key: v},
        payload,
        _weighted(value, st.just(missing)),
    )


def _weighted(
    often: st.SearchStrategy[Any], rarely: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``often`` three draws in four, else ``rarely`` (``one_of`` drops repeated branches)."""
    return st.integers(0, 3).flatmap(lambda pick: rarely if pick == 0 else often)


HostileKind = Literal[
    "any", "hello", "ready", "dispatch", "rate_limited", "resumed", "invalid_session", "other"
]


def hostile_payloads(kind: HostileKind = "any") -> st.SearchStrategy[Any]:
    r"""Server → client payloads from a broken or hostile peer, as decoded values.

    Every field the client reads is either plausible or extreme (see the module docstring),
    or absent; sometimes the payload is not an object at all. A robust client turns each
    into a normal event, an ignored message, or a typed error and a reconnect — never an
    exception from its input method.

    ``kind`` narrows the draw to one shape (``"hello"``: op 10; ``"ready"``, ``"dispatch"``,
    ``"rate_limited"``, ``"resumed"``: op 0 with that ``t``; ``"invalid_session"``: op 9;
    ``"other"``: any ``op``, or not an object), to aim a test at the state that reads it.

    To send one over JSON, write it as a lenient peer would: ``json.dumps(payload,
    allow_nan=True)`` (``NaN``/``Infinity`` literals; lone surrogates become ``\uXXXX``
    escapes) with ``sys.set_int_max_str_digits(0)`` for ints past 4300 digits. Over ETF,
    what the client's own encoder refuses (non-finite floats, lone surrogates) cannot be
    sent as such.
    """
    ops = st.sampled_from([0, 1, 7, 9, 10, 11]) | extreme_numbers() | extreme_values(max_leaves=2)
    seqs = _plausible_or_extreme(sequences() | st.sampled_from([0, 1, 2]), extreme_numbers())
    # The interval is divided into and added to deadlines: extreme numbers twice as often.
    intervals = _plausible_or_extreme(
        st.integers(1000, 60_000) | st.sampled_from([1, 41250]),
        extreme_numbers() | st.sampled_from(EXTREME_FLOATS),
    )
    session_ids = _plausible_or_extreme(
        st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)
        | st.just(128).map(lambda n: "s" * n),
        extreme_strings(),
    )
    urls = _plausible_or_extreme(st.just("wss://resume.gateway.test"), hostile_urls())
    names = _plausible_or_extreme(
        st.sampled_from(["MESSAGE_CREATE", "GUILD_CREATE"]), extreme_strings()
    )

    hello_data = _with_key(st.just({}), "heartbeat_interval", intervals)
    hello = _with_key(st.just({"op": 10}), "d", _plausible_or_extreme(hello_data, hello_data))
    ready_data = _with_key(
        _with_key(st.just({"v": 10, "user": {"id": "1"}}), "session_id", session_ids),
        "resume_gateway_url",
        urls,
    )
    ready = _with_key(
        _with_key(st.just({"op": 0, "t": "READY"}), "s", seqs),
        "d",
        _plausible_or_extreme(ready_data, ready_data),
    )
    dispatch = _with_key(
        _with_key(_with_key(st.just({"op": 0}), "s", seqs), "t", names),
        "d",
        extreme_values(max_leaves=4),
    )
    limited_data = _with_key(
        _with_key(
            _with_key(st.just({}), "opcode", _plausible_or_extreme(st.just(8), extreme_numbers())),
            "retry_after",
            _plausible_or_extreme(st.floats(0.0, 30.0), extreme_numbers()),
        ),
        "meta",
        extreme_values(max_leaves=3),
    )
    rate_limited = _with_key(
        _with_key(st.just({"op": 0, "t": "RATE_LIMITED"}), "s", seqs),
        "d",
        _plausible_or_extreme(limited_data, limited_data),
    )
    resumed = _with_key(st.just({"op": 0, "t": "RESUMED", "d": {}}), "s", seqs)
    invalid_session = _with_key(st.just({"op": 9}), "d", _plausible_or_extreme(st.booleans()))
    anything = _with_key(
        _with_key(_with_key(st.just({}), "op", ops), "s", seqs), "d", extreme_values()
    )
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "hello": hello,
        "ready": ready,
        "dispatch": dispatch,
        "rate_limited": rate_limited,
        "resumed": resumed,
        "invalid_session": invalid_session,
        "other": anything | extreme_values(max_leaves=3),
    }
    if kind == "any":
        return st.one_of(*kinds.values())
    return kinds[kind]
