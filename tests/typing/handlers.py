"""Handler examples checked by mypy --strict (tests/test_router_typing.py); never run.

Each ``assert_type`` is a check mypy fails on when the overloads of ``Router.on`` drift, and
each ``# type: ignore[code]`` is an error that must keep happening: mypy's
``warn_unused_ignores`` (part of ``--strict``) fails on one that no longer fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_type, reveal_type

from gateway_proto import (
    Event,
    HandlerFailed,
    InteractionContext,
    On,
    ReadyContext,
    Router,
    SessionStarted,
)
from gateway_proto.payloads import (
    GuildMembersChunkPayload,
    MessageCreatePayload,
    MessageDeletePayload,
    ReadyPayload,
)

router = Router()

assert_type(router.on("MESSAGE_CREATE"), On[MessageCreatePayload])
assert_type(router.on("READY"), On[ReadyPayload])
assert_type(router.on("SOMETHING_NEW"), On[Mapping[str, Any]])
assert_type(router.on(SessionStarted), On[SessionStarted])
assert_type(router.on(InteractionContext), On[InteractionContext])
reveal_type(router.on("GUILD_ROLE_DELETE"))


@router.on("MESSAGE_CREATE")
def on_message(message: MessageCreatePayload) -> None:
    assert_type(message["content"], str)
    assert_type(message["author"]["id"], str)
    assert_type(message.get("guild_id"), str | None)
    message["no_such_field"]  # type: ignore[typeddict-item]


@router.on("MESSAGE_CREATE")
async def on_message_async(message: MessageCreatePayload) -> None:
    assert_type(message["mentions"][0]["username"], str)


@router.on("GUILD_MEMBERS_CHUNK")
def on_chunk(chunk: GuildMembersChunkPayload) -> None:
    assert_type(chunk["chunk_index"], int)


@router.on("MESSAGE_DELETE")  # type: ignore[arg-type]
def wrong_payload(message: MessageCreatePayload) -> None:
    """MESSAGE_DELETE carries a MessageDeletePayload, not a message."""


@router.on("MESSAGE_DELETE")
def deleted(message: MessageDeletePayload) -> None:
    assert_type(message["id"], str)


@router.on("SOMETHING_NEW")
def unknown(data: Mapping[str, Any]) -> None:
    assert_type(data["anything"], Any)


@router.on(ReadyContext)
def ready(ctx: ReadyContext) -> None:
    assert_type(ctx.session_id, str)
    assert_type(ctx.guild_ids, tuple[int, ...])


@router.on(InteractionContext)
def interaction(ctx: InteractionContext) -> None:
    assert_type(ctx.token, str)


@router.on(HandlerFailed)
def failed(failure: HandlerFailed) -> None:
    assert_type(failure.error, BaseException)


@router.on_any
def every(event: Event) -> None:
    assert_type(event, Event)


router.on("MESSAGE_CREATE")(lambda message: assert_type(message, MessageCreatePayload))
router.on(SessionStarted)(lambda event: assert_type(event.session_id, str | None))
router.on(42)  # type: ignore[call-overload]
