"""What the node and the workers of Redis Streams fan-out agree on: keys, entries, commands.

Shared by :mod:`gateway_proto.adapters.streams` (the node: publisher and command reader) and
:mod:`gateway_proto.adapters.workers` (the workers: consumer and command sender), so both
sides encode and parse one format, written once here.

Keys (all in the bot's Redis Cluster hash slot, like :class:`~gateway_proto.KeySpace`;
``<app>`` is the bot's id, never its token)::

    gwp:{<app>}:events               stream  every dispatch, MAXLEN ~ bound
    gwp:{<app>}:events:marks         hash    shard -> "<seq>|<session>" (the high-water marks)
    gwp:{<app>}:commands:<shard>     stream  commands for one shard (group "nodes")
    gwp:{<app>}:reply:<command id>   list    the node's answer to one command; PX 60 s

An event entry has the fields ``shard``, ``session`` (``""``: none), ``seq`` (``""``: the
dispatch had none), ``t`` (the event name, ``""``: none) and ``d`` (the payload's JSON,
encoded once). A command entry has ``op`` (3, 4 or 8) and ``d`` (the command's ``d`` as the
gateway would receive it, JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, final

import attrs

from gateway_proto import (
    Activity,
    ActivityType,
    Command,
    LocalProtocolError,
    RequestGuildMembers,
    StoreProtocolError,
    UpdatePresence,
    UpdateVoiceState,
    shard_for_guild,
)
from gateway_proto._codecs._json import JsonCodec
from gateway_proto._errors import DecodeError

from .cli import printable

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None

_JSON: Final = JsonCodec()

#: The consumer group the nodes read their command streams with.
NODES_GROUP: Final = "nodes"
#: Milliseconds a command's reply waits for its sender.
REPLY_TTL_MS: Final = 60_000

#: The publish script. KEYS: the stream, the marks hash. ARGV: MAXLEN (``""``: no trim),
#: then five per event: shard, session, seq, name, data. An event whose (session, seq) is
#: at or below its shard's mark was added before (a replay after a resume): it is skipped.
#: Returns {added, skipped}. One script call is atomic, so a mark never runs ahead of the
#: stream, nor the stream of a mark.
PUBLISH_SCRIPT: Final = """
local stream, marks, maxlen = KEYS[1], KEYS[2], ARGV[1]
local hw, dirty, added, skipped = {}, {}, 0, 0
for i = 2, #ARGV, 5 do
  local shard, session, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fresh = true
  if seq ~= '' then
    local n = tonumber(seq)
    if n == nil then return redis.error_reply('GWP a sequence is not a number') end
    local mark = hw[shard]
    if mark == nil then
      mark = false
      local stored = redis.call('HGET', marks, shard)
      if stored then
        local sep = string.find(stored, '|', 1, true)
        local s = sep and tonumber(string.sub(stored, 1, sep - 1))
        if not s then return redis.error_reply('GWP a stored mark is not seq|session') end
        mark = {s, string.sub(stored, sep + 1)}
      end
    end
    if mark and mark[2] == session and mark[1] >= n then
      fresh = false
    else
      hw[shard] = {n, session}
      dirty[shard] = true
    end
  end
  if fresh then
    if maxlen == '' then
      redis.call('XADD', stream, '*', 'shard', shard, 'session', session, 'seq', seq,
                 't', ARGV[i + 3], 'd', ARGV[i + 4])
    else
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'shard', shard,
                 'session', session, 'seq', seq, 't', ARGV[i + 3], 'd', ARGV[i + 4])
    end
    added = added + 1
  else
    skipped = skipped + 1
  end
end
for shard in pairs(dirty) do
  redis.call('HSET', marks, shard, string.format('%d', hw[shard][1]) .. '|' .. hw[shard][2])
end
return {added, skipped}
"""


@final
@attrs.frozen
class StreamKeys:
    """The Redis keys of one bot's event stream and command streams (see the module doc)."""

    app: str
    prefix: str = "gwp"

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "{" + self.app + "}", *map(str, parts)])

    @property
    def events(self) -> str:
        """The stream of every dispatch of the bot."""
        return self._key("events")

    @property
    def marks(self) -> str:
        """Each shard's high-water mark: the last (sequence, session) in the stream."""
        return self._key("events", "marks")

    def commands(self, shard_id: int) -> str:
        """The commands for one shard, read by the node that runs it."""
        return self._key("commands", shard_id)

    def reply(self, command_id: str) -> str:
        """The node's answer to one command (a list its sender pops)."""
        return self._key("reply", command_id)


@final
class CommandRejected(LocalProtocolError):
    """A node refused a command from the command stream; the shard was never sent it.

    ``kind`` names the check that failed (``"invalid"``: not a valid command;
    ``"wrong-shard"``: the guild belongs to another shard; ``"refused"``: the shard's core
    refused it, e.g. its queue is full). The shard stays connected: a bad command never
    reaches the gateway, so it never costs a 4002 close.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- payloads --------------------------------------------------------------------------------


def encode_json(value: Any) -> bytes:
    """``value`` as compact JSON bytes, once; what JSON cannot hold is marked (``printable``).

    orjson when installed (what it refuses goes the slow way). A payload that plain JSON
    cannot hold (an ETF map with integer keys, an integer past 64 bits, a lone surrogate)
    is written in ``listen``'s marked form. One loss: orjson writes NaN and infinities
    (which only a non-standard JSON payload can hold) as ``null``.
    """
    if _orjson is not None:
        try:
            return bytes(_orjson.dumps(value))
        except TypeError:
            pass
    return json.dumps(printable(value), separators=(",", ":"), allow_nan=False).encode()


def decode_json(raw: bytes | str) -> Any:
    """Parse JSON (the core's codec); anything else is a :class:`~gateway_proto.StoreProtocolError`.

    As in the core, orjson reads an integer past 64 bits as the nearest float.
    """
    try:
        return _JSON.loads(raw)
    except DecodeError as exc:
        raise StoreProtocolError(f"a stream entry's JSON does not parse: {exc!s:.120}") from None


def text(value: object) -> str:
    """A Redis string as ``str``; anything else is a :class:`~gateway_proto.StoreProtocolError`."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreProtocolError("a Redis string is not UTF-8") from None
    if isinstance(value, str):
        return value
    raise StoreProtocolError(f"expected a string from Redis, got {type(value).__name__}")


def field_map(raw: object) -> dict[str, bytes]:
    """An entry's fields (a flat list or a mapping from the client) as ``str -> bytes``."""
    items: list[tuple[object, object]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list) and len(raw) % 2 == 0:
        items = list(zip(raw[::2], raw[1::2], strict=True))
    else:
        raise StoreProtocolError(f"a stream entry's fields are not pairs: {raw!r:.60}")
    fields: dict[str, bytes] = {}
    for key, value in items:
        if not isinstance(value, bytes):
            raise StoreProtocolError("a stream entry's value is not a string")
        fields[text(key)] = value
    return fields


# -- commands --------------------------------------------------------------------------------

#: The commands a worker may send through the command streams, by opcode.
COMMAND_TYPES: Final[dict[int, type[Any]]] = {
    int(UpdatePresence.opcode): UpdatePresence,
    int(UpdateVoiceState.opcode): UpdateVoiceState,
    int(RequestGuildMembers.opcode): RequestGuildMembers,
}

_ALLOWED_KEYS: Final = {
    UpdatePresence: {"since", "activities", "status", "afk"},
    UpdateVoiceState: {"guild_id", "channel_id", "self_mute", "self_deaf"},
    RequestGuildMembers: {"guild_id", "query", "limit", "presences", "user_ids", "nonce"},
}


def command_fields(command: Command) -> dict[str, bytes]:
    """The command entry of ``command`` (one of :data:`COMMAND_TYPES`)."""
    if type(command) not in _ALLOWED_KEYS:
        raise TypeError(
            "only UpdatePresence, UpdateVoiceState and RequestGuildMembers go through the "
            f"command stream, not {type(command).__name__}"
        )
    return {"op": str(int(command.opcode)).encode(), "d": encode_json(command.payload_data())}


def _activity(value: Any) -> Activity:
    if not isinstance(value, dict) or not set(value) <= {"name", "type", "state", "url"}:
        raise LocalProtocolError("an activity is an object of name, type, state, url")
    kind = value.get("type", 0)
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise LocalProtocolError("an activity type is an integer")
    try:
        activity_type = ActivityType(kind)
    except ValueError:
        raise LocalProtocolError(f"unknown activity type {kind}") from None
    name: Any = value.get("name")
    return Activity(
        name=name,
        type=activity_type,
        state=value.get("state"),
        url=value.get("url"),
    )


def parse_command(fields: Mapping[str, bytes]) -> Command:
    """The command an entry holds, checked by the command types themselves.

    Raises:
        CommandRejected: (``kind="invalid"``) an unknown opcode, JSON that does not parse,
            a key the command does not have, or a value its type refuses.

    """
    try:
        op = int(fields["op"])
        kind = COMMAND_TYPES[op]
        data = decode_json(fields["d"])
        if not isinstance(data, dict):
            raise LocalProtocolError("d is not an object")
        unknown = set(data) - _ALLOWED_KEYS[kind]
        if unknown:
            raise LocalProtocolError(f"unknown keys in d: {sorted(unknown)!r:.80}")
        if kind is UpdatePresence:
            activities = data.get("activities", [])
            if not isinstance(activities, list):
                raise LocalProtocolError("activities is not a list")
            data = {**data, "activities": [_activity(item) for item in activities]}
        command: Command = kind(**data)
    except KeyError as exc:
        raise CommandRejected("invalid", f"not a command entry (no {exc})") from None
    except (LocalProtocolError, StoreProtocolError, TypeError, ValueError) as exc:
        raise CommandRejected("invalid", f"not a valid command: {exc!s:.200}") from None
    return command


def check_shard(command: Command, shard_id: int, shard_count: int) -> None:
    """Refuse a guild's command on a shard other than the guild's (docs/protocol.md §11)."""
    guild_id = getattr(command, "guild_id", None)
    if guild_id is not None and shard_for_guild(guild_id, shard_count) != shard_id:
        raise CommandRejected(
            "wrong-shard",
            f"guild {guild_id} is on shard {shard_for_guild(guild_id, shard_count)} of "
            f"{shard_count}, not {shard_id}",
        )


def reply_body(shard_id: int, error: CommandRejected | None) -> bytes:
    """A node's answer to one command, as the sender reads it back."""
    if error is None:
        return encode_json({"ok": True, "shard": shard_id})
    return encode_json({"ok": False, "shard": shard_id, "kind": error.kind, "error": str(error)})
