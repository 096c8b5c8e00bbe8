"""The typed handlers: every documented dispatch has a payload type and a ``Router.on`` overload.

``tests/typing/handlers.py`` is a file of handler examples run through ``mypy --strict``:
its ``assert_type`` lines fail when an overload drifts and its ``# type: ignore[code]`` lines
are errors that must keep happening (``--strict`` warns on unused ignores), so the overloads
cannot rot silently.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gateway_proto import payloads

ROOT = Path(__file__).resolve().parent.parent
ROUTER = ROOT / "gateway_proto" / "_router.py"

#: The receive events of Discord's Gateway Events page (API v10, read 2026-12-06), less the
#: three that are not dispatches (Hello is op 10, Reconnect op 7, Invalid Session op 9), and
#: the three the Change Log added in 2026-04: the 79 names of docs/protocol.md §14.
DOCUMENTED_DISPATCHES = [
    "READY",
    "RESUMED",
    "RATE_LIMITED",
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    "AUTO_MODERATION_RULE_CREATE",
    "AUTO_MODERATION_RULE_UPDATE",
    "AUTO_MODERATION_RULE_DELETE",
    "AUTO_MODERATION_ACTION_EXECUTION",
    "CHANNEL_CREATE",
    "CHANNEL_UPDATE",
    "CHANNEL_DELETE",
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
    "VOICE_STATE_UPDATE",
    "VOICE_SERVER_UPDATE",
    "WEBHOOKS_UPDATE",
    "MESSAGE_POLL_VOTE_ADD",
    "MESSAGE_POLL_VOTE_REMOVE",
    # The Change Log's 2026-04 voice channel events (docs/protocol.md §12, §14).
    "CHANNEL_INFO",
    "VOICE_CHANNEL_STATUS_UPDATE",
    "VOICE_CHANNEL_START_TIME_UPDATE",
]


def test_every_documented_dispatch_has_a_typed_payload() -> None:
    assert len(DOCUMENTED_DISPATCHES) == len(set(DOCUMENTED_DISPATCHES)) == 79
    assert set(payloads.DISPATCH_PAYLOADS) == set(DOCUMENTED_DISPATCHES)
    for name, kind in payloads.DISPATCH_PAYLOADS.items():
        assert typing.is_typeddict(kind), name


def _overloaded_names() -> dict[str, str]:
    """The ``Literal`` name of each ``Router.on`` overload and the payload type it returns."""
    found = {}
    for node in ast.walk(ast.parse(ROUTER.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == "on" and node.returns is not None:
            match = re.fullmatch(
                r"Literal\[['\"](\w+)['\"]\]", ast.unparse(node.args.args[1].annotation)
            )
            if match:
                returned = re.fullmatch(r"On\[p\.(\w+)\]", ast.unparse(node.returns))
                assert returned, ast.unparse(node.returns)
                found[match.group(1)] = returned.group(1)
    return found


def test_the_list_is_docs_protocol_section_14() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text[text.index("## §14") : text.index("## §15")]
    listed = section[section.index("READY, RESUMED") : section.index("MESSAGE_POLL_VOTE_REMOVE.")]
    names = re.findall(r"[A-Z][A-Z_]+[A-Z]", listed + "MESSAGE_POLL_VOTE_REMOVE")
    assert sorted(names) == sorted(DOCUMENTED_DISPATCHES)


def test_router_on_has_one_overload_per_documented_dispatch() -> None:
    expected = {name: kind.__name__ for name, kind in payloads.DISPATCH_PAYLOADS.items()}
    assert _overloaded_names() == expected


def test_handler_examples_pass_mypy_strict() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.fail("mypy is not installed in this environment: pip install -e '.[dev]'")
    result = subprocess.run(
        [mypy, "--strict", "--no-incremental", "tests/typing/handlers.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Revealed type is "gateway_proto._router.On[TypedDict(' in result.stdout
    assert "GuildRoleDeletePayload, {'guild_id': str, 'role_id': str}" in result.stdout
