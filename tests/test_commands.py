"""Application commands (docs/protocol.md §12): exact payloads, validation, immutability."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_proto._commands import (
    Activity,
    ActivityType,
    RawCommand,
    RequestChannelInfo,
    RequestGuildMembers,
    RequestSoundboardSounds,
    Status,
    UpdatePresence,
    UpdateVoiceState,
    snowflake,
)
from gateway_proto._errors import LocalProtocolError
from gateway_proto._opcodes import Opcode

MAX_SNOWFLAKE = 2**64 - 1


def raises(build: Callable[[], object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


# --- snowflakes (docs/protocol.md §10.1, §11: unsigned 64-bit ids, strings in JSON) ----------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0"), (MAX_SNOWFLAKE, str(MAX_SNOWFLAKE)), ("123", "123"), ("007", "7")],
)
def test_snowflake_accepts(value: int | str, expected: str) -> None:
    assert snowflake(value) == expected


@pytest.mark.parametrize(
    "value",
    [True, False, -1, 2**64, "-1", "+1", " 1", "1 ", "1.0", "0x10", "", "١٢", "1" * 21, 1.0, None],
)
def test_snowflake_rejects(value: Any) -> None:
    raises(lambda: snowflake(value, "Thing.id"), r"^Thing\.id must be a snowflake")


@given(st.integers(0, MAX_SNOWFLAKE), st.booleans())
def test_snowflake_round_trips(number: int, as_text: bool) -> None:
    assert snowflake(str(number) if as_text else number) == str(number)


# --- op 3 Update Presence and activities (docs/protocol.md §12 op 3, §9) ---------------------------------


def test_activity_payload_omits_unset_fields() -> None:
    assert Activity(name="chess").payload_data() == {"name": "chess", "type": 0}
    custom = Activity(name="Custom Status", type=ActivityType.CUSTOM, state="brb")
    assert custom.payload_data() == {"name": "Custom Status", "type": 4, "state": "brb"}
    stream = Activity(
        name="speedrun", type=ActivityType.STREAMING, url="https://www.twitch.tv/someone"
    )
    assert stream.payload_data() == {
        "name": "speedrun",
        "type": 1,
        "url": "https://www.twitch.tv/someone",
    }
    assert type(stream.payload_data()["type"]) is int


@pytest.mark.parametrize(
    "url", ["https://twitch.tv/x", "http://youtube.com/watch?v=1", "https://m.youtube.com/live"]
)
def test_activity_accepts_streaming_urls(url: str) -> None:
    Activity(name="live", type=ActivityType.STREAMING, url=url)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, r"^Activity\.name must not be empty"),
        ({"name": 5}, r"^Activity\.name must be str"),
        ({"name": "x", "type": 1}, r"^Activity\.type must be ActivityType"),
        ({"name": "x", "state": 3}, r"^Activity\.state must be str or None"),
        # docs/protocol.md §9: url only for streaming, and only twitch.tv / youtube.com
        ({"name": "x", "url": "https://twitch.tv/x"}, r"^Activity\.url is only allowed"),
        (
            {"name": "x", "type": ActivityType.STREAMING, "url": "https://example.com/x"},
            r"^Activity\.url must be an http\(s\) twitch\.tv",
        ),
        (
            {"name": "x", "type": ActivityType.STREAMING, "url": "https://twitch.tv.evil.com"},
            r"^Activity\.url must be",
        ),
        (
            {"name": "x", "type": ActivityType.STREAMING, "url": "https://nottwitch.tv/x"},
            r"^Activity\.url must be",
        ),
        (
            {"name": "x", "type": ActivityType.STREAMING, "url": "ftp://twitch.tv/x"},
            r"^Activity\.url must be",
        ),
        (
            {"name": "x", "type": ActivityType.STREAMING, "url": "https://[::1"},
            r"^Activity\.url must be",
        ),
    ],
)
def test_activity_rejects(kwargs: dict[str, Any], match: str) -> None:
    raises(lambda: Activity(**kwargs), match)


def test_update_presence_default_payload_has_all_four_keys() -> None:
    command = UpdatePresence()
    assert command.opcode is Opcode.PRESENCE_UPDATE
    assert command.payload_data() == {
        "since": None,
        "activities": [],
        "status": "online",
        "afk": False,
    }


def test_update_presence_full_payload() -> None:
    command = UpdatePresence(
        status=Status.IDLE,
        activities=[Activity(name="a"), Activity(name="b", type=ActivityType.WATCHING)],
        since=1_700_000_000_000,
        afk=True,
    )
    assert command.activities == (Activity(name="a"), Activity(name="b", type=ActivityType(3)))
    assert command.payload_data() == {
        "since": 1_700_000_000_000,
        "activities": [{"name": "a", "type": 0}, {"name": "b", "type": 3}],
        "status": "idle",
        "afk": True,
    }
    assert type(command.payload_data()["status"]) is str


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"status": "away"}, r"^UpdatePresence\.status must be Status"),
        ({"activities": "playing"}, r"^UpdatePresence\.activities must be a list or tuple"),
        ({"activities": 3}, r"^UpdatePresence\.activities must be a list or tuple"),
        ({"activities": [{"name": "x"}]}, r"^UpdatePresence\.activities\[0\] must be Activity"),
        ({"since": -1}, r"^UpdatePresence\.since must be >= 0"),
        ({"since": True}, r"^UpdatePresence\.since must be int or None"),
        ({"since": 1.5}, r"^UpdatePresence\.since must be int or None"),
        ({"afk": 1}, r"^UpdatePresence\.afk must be bool"),
    ],
)
def test_update_presence_rejects(kwargs: dict[str, Any], match: str) -> None:
    raises(lambda: UpdatePresence(**kwargs), match)


# --- op 4 Update Voice State (docs/protocol.md §12 op 4) -------------------------------------------------


def test_update_voice_state_payloads() -> None:
    join = UpdateVoiceState(guild_id=41771983423143937, channel_id="127121515262115840")
    assert join.opcode is Opcode.VOICE_STATE_UPDATE
    assert join.payload_data() == {
        "guild_id": "41771983423143937",
        "channel_id": "127121515262115840",
        "self_mute": False,
        "self_deaf": False,
    }
    leave = UpdateVoiceState(guild_id="1", channel_id=None, self_mute=True, self_deaf=True)
    assert leave.payload_data() == {
        "guild_id": "1",
        "channel_id": None,
        "self_mute": True,
        "self_deaf": True,
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"guild_id": -1, "channel_id": None}, r"^UpdateVoiceState\.guild_id must be a snowflake"),
        ({"guild_id": True, "channel_id": None}, r"^UpdateVoiceState\.guild_id must be a"),
        ({"guild_id": 1, "channel_id": 2**64}, r"^UpdateVoiceState\.channel_id must be a"),
        ({"guild_id": 1, "channel_id": "abc"}, r"^UpdateVoiceState\.channel_id must be a"),
        ({"guild_id": 1, "channel_id": None, "self_mute": 0}, r"\.self_mute must be bool"),
        ({"guild_id": 1, "channel_id": None, "self_deaf": "no"}, r"\.self_deaf must be bool"),
    ],
)
def test_update_voice_state_rejects(kwargs: dict[str, Any], match: str) -> None:
    raises(lambda: UpdateVoiceState(**kwargs), match)


# --- op 8 Request Guild Members (docs/protocol.md §12 op 8, limits §9, rate limit §8) ---------------------


def test_request_guild_members_query_payload() -> None:
    command = RequestGuildMembers(guild_id=1, query="ab", limit=10)
    assert command.opcode is Opcode.REQUEST_GUILD_MEMBERS
    assert command.payload_data() == {
        "guild_id": "1",
        "query": "ab",
        "limit": 10,
        "presences": False,
    }
    assert not command.requests_all_members


def test_request_guild_members_all_members() -> None:
    command = RequestGuildMembers(guild_id="5", query="", limit=0, presences=True, nonce="n1")
    assert command.requests_all_members
    assert command.payload_data() == {
        "guild_id": "5",
        "query": "",
        "limit": 0,
        "presences": True,
        "nonce": "n1",
    }


def test_request_guild_members_user_ids_payload() -> None:
    command = RequestGuildMembers(guild_id=1, user_ids=[2, "3"], nonce="x" * 32)
    assert command.user_ids == (2, "3")
    assert not command.requests_all_members
    assert command.payload_data() == {
        "guild_id": "1",
        "user_ids": ["2", "3"],
        "presences": False,
        "nonce": "x" * 32,
    }
    RequestGuildMembers(guild_id=1, user_ids=range(1, 101))  # exactly 100 is fine


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"^RequestGuildMembers needs exactly one of query or user_ids, got neither"),
        (
            {"query": "", "limit": 0, "user_ids": [1]},
            r"^RequestGuildMembers needs exactly one of query or user_ids, got both",
        ),
        ({"query": "a"}, r"^RequestGuildMembers\.limit is required with query"),
        ({"query": "a", "limit": -1}, r"^RequestGuildMembers\.limit must be >= 0"),
        ({"query": "a", "limit": True}, r"^RequestGuildMembers\.limit must be int or None"),
        ({"user_ids": [1], "limit": 5}, r"^RequestGuildMembers\.limit is only allowed with query"),
        ({"user_ids": []}, r"^RequestGuildMembers\.user_ids needs at least 1"),
        ({"user_ids": range(101)}, r"^RequestGuildMembers\.user_ids takes at most 100 items"),
        ({"user_ids": "123"}, r"^RequestGuildMembers\.user_ids must be a list or tuple"),
        ({"user_ids": 123}, r"^RequestGuildMembers\.user_ids must be a list or tuple"),
        ({"user_ids": [1, -2]}, r"^RequestGuildMembers\.user_ids\[1\] must be a snowflake"),
        ({"query": 1, "limit": 1}, r"^RequestGuildMembers\.query must be str or None"),
        ({"query": "", "limit": 0, "presences": None}, r"\.presences must be bool"),
        ({"query": "", "limit": 0, "nonce": "x" * 33}, r"\.nonce must be at most 32 bytes"),
        ({"query": "", "limit": 0, "nonce": "é" * 17}, r"\.nonce must be at most 32 bytes"),
        ({"query": "", "limit": 0, "nonce": "\udc80"}, r"\.nonce must be valid text"),
        ({"query": "", "limit": 0, "nonce": 7}, r"\.nonce must be str or None"),
    ],
)
def test_request_guild_members_rejects(kwargs: dict[str, Any], match: str) -> None:
    raises(lambda: RequestGuildMembers(guild_id=kwargs.pop("guild_id", 1), **kwargs), match)


def test_request_guild_members_rejects_bad_guild_id() -> None:
    raises(
        lambda: RequestGuildMembers(guild_id="1e3", query="", limit=0),
        r"^RequestGuildMembers\.guild_id must be a snowflake",
    )


snowflakes = st.integers(-2, 2**64 + 1) | st.integers(0, MAX_SNOWFLAKE).map(str)


@given(
    query=st.none() | st.text(max_size=5),
    limit=st.none() | st.integers(-2, 200),
    user_ids=st.none() | st.lists(snowflakes, max_size=110),
    nonce=st.none() | st.text(max_size=40),
    presences=st.booleans(),
)
def test_request_guild_members_valid_objects_give_valid_payloads(
    query: str | None,
    limit: int | None,
    user_ids: list[int | str] | None,
    nonce: str | None,
    presences: bool,
) -> None:
    """Whatever the inputs, construction either refuses or yields a payload within docs/protocol.md §9."""
    try:
        command = RequestGuildMembers(
            guild_id=1,
            query=query,
            limit=limit,
            user_ids=user_ids,
            nonce=nonce,
            presences=presences,
        )
    except LocalProtocolError:
        return
    data = command.payload_data()
    json.dumps(data)
    assert ("query" in data) != ("user_ids" in data)
    assert len(data.get("nonce", "").encode()) <= 32
    if "user_ids" in data:
        assert 1 <= len(data["user_ids"]) <= 100
        assert all(s.isdecimal() and int(s) <= MAX_SNOWFLAKE for s in data["user_ids"])
        assert "limit" not in data
    else:
        assert data["limit"] >= 0


@given(
    user_ids=st.lists(st.integers(0, MAX_SNOWFLAKE), min_size=1, max_size=100),
    nonce=st.text(max_size=8),  # at most 4 bytes per character
)
def test_request_guild_members_accepts_every_valid_input(user_ids: list[int], nonce: str) -> None:
    data = RequestGuildMembers(guild_id=1, user_ids=user_ids, nonce=nonce).payload_data()
    assert data["user_ids"] == [str(user_id) for user_id in user_ids]


# --- op 31 Request Soundboard Sounds (docs/protocol.md §12 op 31) ----------------------------------------


def test_request_soundboard_sounds_payload() -> None:
    command = RequestSoundboardSounds(guild_ids=[1, "2"])
    assert command.opcode is Opcode.REQUEST_SOUNDBOARD_SOUNDS
    assert command.payload_data() == {"guild_ids": ["1", "2"]}


@pytest.mark.parametrize(
    ("guild_ids", "match"),
    [
        ([], r"^RequestSoundboardSounds\.guild_ids needs at least 1"),
        ("12", r"^RequestSoundboardSounds\.guild_ids must be a list or tuple"),
        ([1, None], r"^RequestSoundboardSounds\.guild_ids\[1\] must be a snowflake"),
    ],
)
def test_request_soundboard_sounds_rejects(guild_ids: Any, match: str) -> None:
    raises(lambda: RequestSoundboardSounds(guild_ids=guild_ids), match)


# --- op 43 Request Channel Info (docs/protocol.md §12 op 43) ---------------------------------------------


def test_request_channel_info_payloads() -> None:
    command = RequestChannelInfo(guild_id=9)
    assert command.opcode is Opcode.REQUEST_CHANNEL_INFO
    assert command.payload_data() == {"guild_id": "9", "fields": ["status", "voice_start_time"]}
    only = RequestChannelInfo(guild_id="9", fields=["voice_start_time"])
    assert only.payload_data() == {"guild_id": "9", "fields": ["voice_start_time"]}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fields": []}, r"^RequestChannelInfo\.fields needs at least 1"),
        ({"fields": "status"}, r"^RequestChannelInfo\.fields must be a list or tuple"),
        ({"fields": ["status", "status"]}, r"^RequestChannelInfo\.fields must not repeat"),
        ({"fields": ["topic"]}, r"^RequestChannelInfo\.fields\[0\] must be one of"),
        ({"fields": [["status"]]}, r"^RequestChannelInfo\.fields\[0\] must be one of"),
        ({"guild_id": None}, r"^RequestChannelInfo\.guild_id must be a snowflake"),
    ],
)
def test_request_channel_info_rejects(kwargs: dict[str, Any], match: str) -> None:
    raises(lambda: RequestChannelInfo(**{"guild_id": 1, **kwargs}), match)


# --- RawCommand: the escape hatch (docs/protocol.md §2 opcode table) -------------------------------------


def test_raw_command_payload_and_opcode() -> None:
    command = RawCommand(op=3, data={"since": None, "activities": (), "ratio": 0.5})
    assert command.opcode is Opcode.PRESENCE_UPDATE
    assert command.payload_data() == {"since": None, "activities": [], "ratio": 0.5}
    future = RawCommand(op=99, data=None)
    assert future.opcode == 99
    assert not isinstance(future.opcode, Opcode)
    assert future.payload_data() is None


def test_raw_command_copies_data() -> None:
    data: dict[str, Any] = {"ids": ["1"]}
    command = RawCommand(op=44, data=data)
    data["ids"].append("2")
    command.payload_data()["ids"].append("3")
    assert command.payload_data() == {"ids": ["1"]}


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (1, r"^RawCommand\.op 1 \(HEARTBEAT\) is sent by the connection itself"),
        (2, r"^RawCommand\.op 2 \(IDENTIFY\) is sent by the connection itself"),
        (6, r"^RawCommand\.op 6 \(RESUME\) is sent by the connection itself"),
        (0, r"^RawCommand\.op 0 \(DISPATCH\) is receive-only"),
        (7, r"^RawCommand\.op 7 \(RECONNECT\) is receive-only"),
        (9, r"^RawCommand\.op 9 \(INVALID_SESSION\) is receive-only"),
        (10, r"^RawCommand\.op 10 \(HELLO\) is receive-only"),
        (11, r"^RawCommand\.op 11 \(HEARTBEAT_ACK\) is receive-only"),
        (-1, r"^RawCommand\.op must be in 0\.\.255"),
        (256, r"^RawCommand\.op must be in 0\.\.255"),
        (True, r"^RawCommand\.op must be int"),
        ("3", r"^RawCommand\.op must be int"),
    ],
)
def test_raw_command_rejects_opcodes(op: Any, match: str) -> None:
    raises(lambda: RawCommand(op=op, data=None), match)


def _cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({1: "x"}, r"^RawCommand\.data keys must be strings"),
        ({"a": [{1, 2}]}, r"^RawCommand\.data\['a'\]\[0\] must hold only dict, list"),
        (b"bytes", r"^RawCommand\.data must hold only"),
        ({"x": math.nan}, r"^RawCommand\.data\['x'\] must be a finite number"),
        (math.inf, r"^RawCommand\.data must be a finite number"),
        (_cyclic(), r"^RawCommand\.data is nested too deeply or contains itself"),
    ],
)
def test_raw_command_rejects_data(data: Any, match: str) -> None:
    raises(lambda: RawCommand(op=44, data=data), match)


# --- every command: frozen, slotted, hashable when its fields are ----------------------------

VALUES: list[Any] = [
    Activity(name="x", state="y"),
    UpdatePresence(activities=[Activity(name="x")], since=0),
    UpdateVoiceState(guild_id=1, channel_id=None),
    RequestGuildMembers(guild_id=1, user_ids=[1, 2]),
    RequestSoundboardSounds(guild_ids=[1]),
    RequestChannelInfo(guild_id=1),
    RawCommand(op=50, data="text"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda value: type(value).__name__)
def test_commands_are_frozen_and_hashable(value: Any) -> None:
    field = attrs.fields(type(value))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, None)
    assert not hasattr(value, "__dict__")
    assert hash(value) == hash(attrs.evolve(value))
    assert value == attrs.evolve(value)


def test_raw_command_with_list_data_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(RawCommand(op=50, data=[1]))


def test_update_presence_accepts_status_by_wire_name():
    """docs/protocol.md §12 op 3: status is one of the documented strings; the wire name is accepted."""
    assert UpdatePresence(status="idle").status is Status.IDLE
