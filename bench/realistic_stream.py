"""A realistic gateway stream for benchmarks: what a mid-sized bot sees after connecting.

One READY, ``guilds`` GUILD_CREATEs (most small, a few of several MB), then ``dispatches``
small MESSAGE_CREATE / PRESENCE_UPDATE / TYPING_START events. Deterministic for a seed.
"""

from __future__ import annotations

import random
from typing import Any


def _snowflake(rng: random.Random) -> str:
    return str(rng.getrandbits(63))


def _member(rng: random.Random) -> dict[str, Any]:
    return {
        "user": {
            "id": _snowflake(rng),
            "username": f"user{rng.randrange(10**6)}",
            "global_name": None,
            "avatar": f"{rng.getrandbits(128):032x}",
            "bot": False,
        },
        "roles": [_snowflake(rng) for _ in range(rng.randrange(4))],
        "joined_at": "2024-05-01T12:00:00.000000+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def _guild(rng: random.Random, members: int) -> dict[str, Any]:
    return {
        "id": _snowflake(rng),
        "name": f"guild {rng.randrange(10**6)}",
        "member_count": members,
        "large": members > 250,
        "roles": [
            {"id": _snowflake(rng), "name": f"role{i}", "permissions": str(rng.getrandbits(40))}
            for i in range(20)
        ],
        "channels": [
            {"id": _snowflake(rng), "type": rng.choice([0, 2, 4]), "name": f"channel-{i}"}
            for i in range(40)
        ],
        "members": [_member(rng) for _ in range(members)],
        "presences": [],
        "voice_states": [],
    }


def _small(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.random()
    if kind < 0.6:
        return "MESSAGE_CREATE", {
            "id": _snowflake(rng),
            "channel_id": _snowflake(rng),
            "guild_id": _snowflake(rng),
            "author": {"id": _snowflake(rng), "username": "someone", "bot": False},
            "content": "hello " * rng.randrange(1, 30),
            "timestamp": "2026-11-29T09:00:00.000000+00:00",
            "mentions": [],
            "attachments": [],
            "embeds": [],
            "tts": False,
        }
    if kind < 0.85:
        return "PRESENCE_UPDATE", {
            "user": {"id": _snowflake(rng)},
            "guild_id": _snowflake(rng),
            "status": rng.choice(["online", "idle", "dnd"]),
            "activities": [],
            "client_status": {"desktop": "online"},
        }
    return "TYPING_START", {
        "channel_id": _snowflake(rng),
        "guild_id": _snowflake(rng),
        "user_id": _snowflake(rng),
        "timestamp": 1764406800,
    }


def payloads(
    *, guilds: int = 300, big_guilds: int = 3, dispatches: int = 30_000, seed: int = 1
) -> list[dict[str, Any]]:
    """The stream as payload objects, in arrival order (HELLO first)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [{"op": 10, "d": {"heartbeat_interval": 41250}}]
    ready = {
        "v": 10,
        "session_id": f"{rng.getrandbits(128):032x}",
        "resume_gateway_url": "wss://gateway-us-east1-b.discord.gg",
        "user": {"id": _snowflake(rng), "username": "bench-bot", "bot": True},
        "guilds": [{"id": _snowflake(rng), "unavailable": True} for _ in range(guilds)],
        "application": {"id": _snowflake(rng), "flags": 0},
    }
    out.append({"op": 0, "s": 1, "t": "READY", "d": ready})
    seq = 1
    for index in range(guilds):
        seq += 1
        # A few guilds of ~20,000 members are several MB each; the rest are small.
        members = 20_000 if index < big_guilds else rng.randrange(5, 120)
        out.append({"op": 0, "s": seq, "t": "GUILD_CREATE", "d": _guild(rng, members)})
    for _ in range(dispatches):
        seq += 1
        name, data = _small(rng)
        out.append({"op": 0, "s": seq, "t": name, "d": data})
    return out
