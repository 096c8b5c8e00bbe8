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


# -- the headline stream: one shard of a mid-sized bot, as a reviewer measured it -----------

#: Members of the five large guilds: about 0.5, 1, 2, 3 and 4 MB of JSON each.
BIG_GUILD_MEMBERS = (1_530, 3_060, 6_130, 9_200, 12_270)


def _full_member(rng: random.Random) -> dict[str, Any]:
    member = _member(rng)
    member.update({"nick": None, "avatar": None, "premium_since": None, "pending": False})
    return member


def _steady(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """One steady-state dispatch as Discord sends it: the fields a v10 event carries."""
    kind = rng.random()
    guild_id = _snowflake(rng)
    if kind < 0.5:
        author = {
            "id": _snowflake(rng),
            "username": f"user{rng.randrange(10**6)}",
            "global_name": f"User {rng.randrange(10**4)}",
            "avatar": f"{rng.getrandbits(128):032x}",
            "discriminator": "0",
            "public_flags": 0,
            "avatar_decoration_data": None,
        }
        return "MESSAGE_CREATE", {
            "type": 0,
            "tts": False,
            "timestamp": "2026-11-29T09:00:00.000000+00:00",
            "pinned": False,
            "nonce": _snowflake(rng),
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "member": {
                "roles": [_snowflake(rng) for _ in range(rng.randrange(4))],
                "premium_since": None,
                "pending": False,
                "nick": None,
                "mute": False,
                "joined_at": "2024-05-01T12:00:00.000000+00:00",
                "flags": 0,
                "deaf": False,
                "communication_disabled_until": None,
                "avatar": None,
            },
            "id": _snowflake(rng),
            "flags": 0,
            "embeds": [],
            "edited_timestamp": None,
            "content": "hello there " * rng.randrange(0, 8),
            "components": [],
            "channel_id": _snowflake(rng),
            "author": author,
            "attachments": [],
            "guild_id": guild_id,
        }
    if kind < 0.8:
        activities = [
            {
                "type": 0,
                "name": f"game {rng.randrange(1000)}",
                "id": f"{rng.getrandbits(64):016x}",
                "created_at": 1764406800000 + rng.randrange(10**6),
                "timestamps": {"start": 1764400000000},
                "application_id": _snowflake(rng),
            }
            for _ in range(rng.randrange(4))
        ]
        return "PRESENCE_UPDATE", {
            "user": {"id": _snowflake(rng)},
            "status": rng.choice(["online", "idle", "dnd"]),
            "guild_id": guild_id,
            "client_status": {"desktop": "online", "mobile": "idle"},
            "activities": activities,
        }
    return "TYPING_START", {
        "user_id": _snowflake(rng),
        "timestamp": 1764406800,
        "member": {
            "user": {
                "username": f"user{rng.randrange(10**6)}",
                "public_flags": 0,
                "id": _snowflake(rng),
                "global_name": None,
                "discriminator": "0",
                "avatar": f"{rng.getrandbits(128):032x}",
            },
            "roles": [_snowflake(rng) for _ in range(rng.randrange(4))],
            "premium_since": None,
            "pending": False,
            "nick": None,
            "mute": False,
            "joined_at": "2024-05-01T12:00:00.000000+00:00",
            "flags": 0,
            "deaf": False,
            "communication_disabled_until": None,
            "avatar": None,
        },
        "channel_id": _snowflake(rng),
        "guild_id": guild_id,
    }


def shard_session(
    *,
    guilds: int = 200,
    dispatches: int = 50_000,
    big_guilds: tuple[int, ...] = BIG_GUILD_MEMBERS,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """The headline stream's payloads in arrival order: HELLO, READY, GUILD_CREATEs, dispatches.

    ``guilds`` GUILD_CREATEs, one large guild per entry of ``big_guilds`` (its member count;
    by default :data:`BIG_GUILD_MEMBERS`, 0.5 to 4 MB of JSON each, spread over the startup
    burst), the rest of 5 to 120 members; then ``dispatches`` steady-state events (MESSAGE_CREATE, PRESENCE_UPDATE,
    TYPING_START with the fields a v10 event carries; median about 700 bytes of JSON).
    """
    rng = random.Random(seed)
    user = {"id": _snowflake(rng), "username": "bench-bot", "discriminator": "0", "bot": True}
    ready = {
        "v": 10,
        "session_id": f"{rng.getrandbits(128):032x}",
        "resume_gateway_url": "wss://gateway-us-east1-b.discord.gg",
        "user": user,
        "guilds": [{"id": _snowflake(rng), "unavailable": True} for _ in range(guilds)],
        "application": {"id": _snowflake(rng), "flags": 0},
    }
    out: list[dict[str, Any]] = [
        {"op": 10, "d": {"heartbeat_interval": 41250}},
        {"op": 0, "s": 1, "t": "READY", "d": ready},
    ]
    big_at = {guilds * (i + 1) // (len(big_guilds) + 1): m for i, m in enumerate(big_guilds)}
    seq = 1
    for index in range(guilds):
        seq += 1
        members = big_at.get(index, rng.randrange(5, 120))
        guild = _guild(rng, 0)
        guild["member_count"] = members
        guild["large"] = members > 250
        guild["members"] = [_full_member(rng) for _ in range(members)]
        out.append({"op": 0, "s": seq, "t": "GUILD_CREATE", "d": guild})
    for _ in range(dispatches):
        seq += 1
        name, data = _steady(rng)
        out.append({"op": 0, "s": seq, "t": name, "d": data})
    return out
