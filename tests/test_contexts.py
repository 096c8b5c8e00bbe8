"""Contexts: built from good payloads; every hostile value is an InvalidContext, never a crash.

The interaction token never appears in a repr nor in an error message.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_proto import (
    DispatchReceived,
    GuildCreateContext,
    InteractionContext,
    InvalidContext,
    MembersChunkContext,
    ReadyContext,
    ResumedContext,
    SessionResumed,
    SessionStarted,
)
from gateway_proto.testing.strategies import json_values

TOKEN = "aW50ZXJhY3Rpb24tdG9rZW4tdGhhdC1tdXN0LW5vdC1sZWFr"

READY: dict[str, Any] = {
    "v": 10,
    "user": {"id": "80351110224678912", "username": "bot"},
    "guilds": [{"id": "41771983423143937", "unavailable": True}],
    "session_id": "abc",
    "resume_gateway_url": "wss://resume.example",
    "shard": [1, 4],
    "application": {"id": "80351110224678912", "flags": 0},
}
GUILD: dict[str, Any] = {"id": "41771983423143937", "unavailable": True}
CHUNK: dict[str, Any] = {
    "guild_id": "41771983423143937",
    "members": [{"user": {"id": "1"}}, {"user": {"id": "2"}}],
    "chunk_index": 1,
    "chunk_count": 2,
    "nonce": "req-7",
}
INTERACTION: dict[str, Any] = {
    "id": "1234567890123456789",
    "application_id": 7,  # ETF sends snowflakes as integers
    "type": 2,
    "token": TOKEN,
    "guild_id": "41771983423143937",
}


def ready(data: Any) -> SessionStarted:
    return SessionStarted(
        session_id="abc", resume_url="wss://resume.example", sequence=1, data=data
    )


def dispatch(name: str, data: Any) -> DispatchReceived:
    return DispatchReceived(name=name, sequence=2, data=data)


BUILDERS: list[tuple[Any, Any, dict[str, Any]]] = [
    (ReadyContext, ready, READY),
    (GuildCreateContext, lambda d: dispatch("GUILD_CREATE", d), GUILD),
    (MembersChunkContext, lambda d: dispatch("GUILD_MEMBERS_CHUNK", d), CHUNK),
    (InteractionContext, lambda d: dispatch("INTERACTION_CREATE", d), INTERACTION),
]


def test_good_payloads_become_contexts() -> None:
    r = ReadyContext.from_event(ready(READY))
    assert (r.version, r.user_id, r.application_id, r.shard) == (
        10,
        80351110224678912,
        r.user_id,
        (1, 4),
    )
    assert r.guild_ids == (41771983423143937,)
    assert "1 guilds" in repr(r)
    g = GuildCreateContext.from_event(dispatch("GUILD_CREATE", GUILD))
    assert (g.guild_id, g.unavailable, g.member_count) == (41771983423143937, True, None)
    c = MembersChunkContext.from_event(dispatch("GUILD_MEMBERS_CHUNK", CHUNK))
    assert (c.nonce, c.member_count, c.last) == ("req-7", 2, True)
    i = InteractionContext.from_event(dispatch("INTERACTION_CREATE", INTERACTION))
    assert (i.id, i.application_id, i.type, i.token, i.channel_id) == (
        1234567890123456789,
        7,
        2,
        TOKEN,
        None,
    )
    assert TOKEN not in repr(i)
    assert ResumedContext.from_event(SessionResumed(sequence=5, replayed=3)).replayed == 3


HOSTILE: list[tuple[int, str, Any]] = [
    (0, "user", None),
    (0, "user", {"id": "12a"}),
    (0, "application", {"id": str(2**64)}),
    (0, "guilds", "many"),
    (0, "guilds", [{"id": -1}]),
    (0, "shard", [4, 4]),
    (0, "shard", [0]),
    (0, "v", True),
    (0, "v", 10.0),
    (1, "id", True),
    (1, "id", "1" * 21),
    (1, "id", "١٢٣"),  # Arabic-Indic digits: str.isdigit() alone would accept them
    (1, "unavailable", "yes"),
    (1, "member_count", 2**200),
    (2, "chunk_index", 2),
    (2, "chunk_count", 0),
    (2, "members", {"a": 1}),
    (2, "nonce", 7),
    (2, "nonce", "n" * 5000),
    (3, "type", 0),
    (3, "type", 2**70),
    (3, "token", None),
    (3, "token", ["x"]),
    (3, "guild_id", 1.5),
    (3, "application_id", -5),
]


@pytest.mark.parametrize(("which", "field", "value"), HOSTILE)
def test_hostile_values_are_invalid_contexts(which: int, field: str, value: Any) -> None:
    cls, make, good = BUILDERS[which]
    with pytest.raises(InvalidContext, match=field) as info:
        cls.from_event(make({**good, field: value}))
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(("cls", "make", "good"), BUILDERS)
def test_missing_fields_and_non_objects_are_invalid_contexts(
    cls: Any, make: Any, good: Any
) -> None:
    optional = {
        ReadyContext: {"shard", "session_id", "resume_gateway_url"},  # the last two: the event's
        GuildCreateContext: {"unavailable"},
        MembersChunkContext: {"nonce"},
        InteractionContext: {"guild_id"},
    }[cls]
    for field in good.keys() - optional:
        partial = {k: v for k, v in good.items() if k != field}
        with pytest.raises(InvalidContext):
            cls.from_event(make(partial))
    for payload in (None, [], "x", 5):
        with pytest.raises(InvalidContext):
            cls.from_event(make(payload))


def test_the_wrong_event_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        GuildCreateContext.from_event(dispatch("GUILD_UPDATE", GUILD))
    with pytest.raises(TypeError):
        ReadyContext.from_event(dispatch("READY", READY))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ResumedContext.from_event(ready(READY))  # type: ignore[arg-type]
    with pytest.raises(InvalidContext, match="session_id"):
        ReadyContext.from_event(
            SessionStarted(session_id=None, resume_url=None, sequence=1, data=READY)
        )


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), field=st.text(max_size=20), value=json_values())
def test_any_json_value_anywhere_is_a_context_or_an_invalid_context(
    which: int, field: str, value: Any
) -> None:
    cls, make, good = BUILDERS[which]
    for payload in ({**good, field: value}, value):
        try:
            shown = repr(cls.from_event(make(payload)))
        except InvalidContext as exc:
            shown = str(exc)
        assert TOKEN not in shown
