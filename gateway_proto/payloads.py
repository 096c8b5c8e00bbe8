"""Typed payloads: the ``d`` of every dispatch (op 0) Discord documents for API v10.

These are ``TypedDict`` definitions: they describe the dicts the decoder already builds and
cost nothing at run time (no validation, no conversion). They give ``@router.on("NAME")``
handlers a typed payload under ``mypy --strict``; use :mod:`gateway_proto`'s contexts when a
value must be checked.

The event list and the fields follow the Gateway Events page of Discord's developer
documentation, https://discord.com/developers/docs/events/gateway-events ("Receive Events"),
for API v10, as it stood on 2026-12-06 (the page's source in Discord's discord-api-docs
repository, developers/events/gateway-events.mdx, commit 0012de62), plus the three voice
channel events of the Change Log's 2026-04 entry (CHANNEL_INFO, the answer to op 43,
VOICE_CHANNEL_STATUS_UPDATE and VOICE_CHANNEL_START_TIME_UPDATE; docs/protocol.md §12, §14). Objects the events embed (user, guild member,
channel, message, guild, role, ...) are described on their resource pages; they carry the
fields a bot commonly reads, and every object is open to fields added later: a TypedDict
does not forbid extra keys at run time, and reading an undocumented one is an ordinary
``dict`` access. Field types follow the JSON encoding: snowflakes are decimal strings and
timestamps ISO 8601 strings (ETF sends snowflakes as integers: :data:`Snowflake` is then
an ``int`` at run time; compare with ``int(...)``).

:data:`DISPATCH_PAYLOADS` maps each documented dispatch name to its payload type.
"""

from __future__ import annotations

from typing import Any, Final, NotRequired, TypedDict

Snowflake = str
"""A Discord id: a decimal string in JSON (an integer in ETF)."""
Timestamp = str
"""An ISO 8601 timestamp."""

__all__ = [
    "DISPATCH_PAYLOADS",
    "Activity",
    "ActivityTimestamps",
    "ApplicationCommandPermissionsUpdatePayload",
    "Attachment",
    "AutoModerationAction",
    "AutoModerationActionExecutionPayload",
    "AutoModerationRule",
    "Channel",
    "ChannelInfoChannel",
    "ChannelInfoPayload",
    "ChannelPinsUpdatePayload",
    "ClientStatus",
    "Emoji",
    "Entitlement",
    "Guild",
    "GuildAuditLogEntryCreatePayload",
    "GuildBanPayload",
    "GuildCreatePayload",
    "GuildEmojisUpdatePayload",
    "GuildIdPayload",
    "GuildMember",
    "GuildMemberAddPayload",
    "GuildMemberRemovePayload",
    "GuildMemberUpdatePayload",
    "GuildMembersChunkPayload",
    "GuildRoleDeletePayload",
    "GuildRolePayload",
    "GuildScheduledEventUserPayload",
    "GuildSoundboardSoundDeletePayload",
    "GuildStickersUpdatePayload",
    "Integration",
    "IntegrationDeletePayload",
    "IntegrationPayload",
    "Interaction",
    "InviteCreatePayload",
    "InviteDeletePayload",
    "MentionedUser",
    "Message",
    "MessageCreatePayload",
    "MessageDeleteBulkPayload",
    "MessageDeletePayload",
    "MessagePollVotePayload",
    "MessageReactionAddPayload",
    "MessageReactionRemoveAllPayload",
    "MessageReactionRemoveEmojiPayload",
    "MessageReactionRemovePayload",
    "MessageUpdatePayload",
    "PresenceUpdatePayload",
    "RateLimitedPayload",
    "Reaction",
    "ReadyApplication",
    "ReadyPayload",
    "ResumedPayload",
    "Role",
    "ScheduledEvent",
    "Snowflake",
    "SoundboardSound",
    "SoundboardSoundsPayload",
    "StageInstance",
    "Sticker",
    "Subscription",
    "ThreadCreatePayload",
    "ThreadDeletePayload",
    "ThreadListSyncPayload",
    "ThreadMember",
    "ThreadMemberUpdatePayload",
    "ThreadMembersUpdatePayload",
    "Timestamp",
    "TypingStartPayload",
    "UnavailableGuild",
    "User",
    "VoiceChannelEffectSendPayload",
    "VoiceChannelStartTimeUpdatePayload",
    "VoiceChannelStatusUpdatePayload",
    "VoiceServerUpdatePayload",
    "VoiceState",
    "WebhooksUpdatePayload",
]


# -- shared objects (resource pages) -------------------------------------------------------


class User(TypedDict):
    """A user object."""

    id: Snowflake
    username: str
    discriminator: str
    global_name: str | None
    avatar: str | None
    bot: NotRequired[bool]
    system: NotRequired[bool]
    mfa_enabled: NotRequired[bool]
    banner: NotRequired[str | None]
    accent_color: NotRequired[int | None]
    locale: NotRequired[str]
    verified: NotRequired[bool]
    email: NotRequired[str | None]
    flags: NotRequired[int]
    premium_type: NotRequired[int]
    public_flags: NotRequired[int]
    avatar_decoration_data: NotRequired[dict[str, Any] | None]
    collectibles: NotRequired[dict[str, Any] | None]
    primary_guild: NotRequired[dict[str, Any] | None]


class GuildMember(TypedDict):
    """A guild member object (``user`` is absent where the event carries the user apart)."""

    user: NotRequired[User]
    nick: NotRequired[str | None]
    avatar: NotRequired[str | None]
    banner: NotRequired[str | None]
    roles: list[Snowflake]
    joined_at: Timestamp | None
    premium_since: NotRequired[Timestamp | None]
    deaf: bool
    mute: bool
    flags: int
    pending: NotRequired[bool]
    permissions: NotRequired[str]
    communication_disabled_until: NotRequired[Timestamp | None]
    avatar_decoration_data: NotRequired[dict[str, Any] | None]
    collectibles: NotRequired[dict[str, Any] | None]


class UnavailableGuild(TypedDict):
    """An unavailable guild: its id, and ``unavailable`` (absent: the bot left or was removed)."""

    id: Snowflake
    unavailable: NotRequired[bool]


class Role(TypedDict):
    """A role object."""

    id: Snowflake
    name: str
    color: int
    colors: NotRequired[dict[str, Any]]
    hoist: bool
    icon: NotRequired[str | None]
    unicode_emoji: NotRequired[str | None]
    position: int
    permissions: str
    managed: bool
    mentionable: bool
    tags: NotRequired[dict[str, Any]]
    flags: int


class Emoji(TypedDict):
    """An emoji object (partial in reactions: ``id`` and ``name`` only)."""

    id: Snowflake | None
    name: str | None
    roles: NotRequired[list[Snowflake]]
    user: NotRequired[User]
    require_colons: NotRequired[bool]
    managed: NotRequired[bool]
    animated: NotRequired[bool]
    available: NotRequired[bool]


class Sticker(TypedDict):
    """A sticker object."""

    id: Snowflake
    pack_id: NotRequired[Snowflake]
    name: str
    description: str | None
    tags: str
    type: int
    format_type: int
    available: NotRequired[bool]
    guild_id: NotRequired[Snowflake]
    user: NotRequired[User]
    sort_value: NotRequired[int]


class ThreadMember(TypedDict):
    """A thread member object."""

    id: NotRequired[Snowflake]
    user_id: NotRequired[Snowflake]
    join_timestamp: Timestamp
    flags: int
    member: NotRequired[GuildMember]


class Channel(TypedDict):
    """A channel object (a guild channel, a DM or a thread)."""

    id: Snowflake
    type: int
    guild_id: NotRequired[Snowflake]
    position: NotRequired[int]
    permission_overwrites: NotRequired[list[dict[str, Any]]]
    name: NotRequired[str | None]
    topic: NotRequired[str | None]
    nsfw: NotRequired[bool]
    last_message_id: NotRequired[Snowflake | None]
    bitrate: NotRequired[int]
    user_limit: NotRequired[int]
    rate_limit_per_user: NotRequired[int]
    recipients: NotRequired[list[User]]
    icon: NotRequired[str | None]
    owner_id: NotRequired[Snowflake]
    application_id: NotRequired[Snowflake]
    managed: NotRequired[bool]
    parent_id: NotRequired[Snowflake | None]
    last_pin_timestamp: NotRequired[Timestamp | None]
    rtc_region: NotRequired[str | None]
    video_quality_mode: NotRequired[int]
    message_count: NotRequired[int]
    member_count: NotRequired[int]
    thread_metadata: NotRequired[dict[str, Any]]
    member: NotRequired[ThreadMember]
    default_auto_archive_duration: NotRequired[int]
    permissions: NotRequired[str]
    flags: NotRequired[int]
    total_message_sent: NotRequired[int]
    available_tags: NotRequired[list[dict[str, Any]]]
    applied_tags: NotRequired[list[Snowflake]]
    default_reaction_emoji: NotRequired[dict[str, Any] | None]
    default_thread_rate_limit_per_user: NotRequired[int]
    default_sort_order: NotRequired[int | None]
    default_forum_layout: NotRequired[int]


class ThreadCreatePayload(Channel):
    """THREAD_CREATE: a thread channel; ``newly_created`` when it was just created."""

    newly_created: NotRequired[bool]


class ThreadDeletePayload(TypedDict):
    """THREAD_DELETE: the subset of the thread's channel object that identifies it."""

    id: Snowflake
    guild_id: Snowflake
    parent_id: Snowflake | None
    type: int


class Attachment(TypedDict):
    """An attachment object."""

    id: Snowflake
    filename: str
    size: int
    url: str
    proxy_url: str
    title: NotRequired[str]
    description: NotRequired[str]
    content_type: NotRequired[str]
    height: NotRequired[int | None]
    width: NotRequired[int | None]
    ephemeral: NotRequired[bool]
    duration_secs: NotRequired[float]
    waveform: NotRequired[str]
    flags: NotRequired[int]


class Reaction(TypedDict):
    """A reaction object (in a message)."""

    count: int
    count_details: dict[str, int]
    me: bool
    me_burst: bool
    emoji: Emoji
    burst_colors: list[str]


class MentionedUser(User):
    """A mentioned user, with the partial member when mentioned in a guild."""

    member: NotRequired[GuildMember]


class Message(TypedDict):
    """A message object."""

    id: Snowflake
    channel_id: Snowflake
    author: User
    content: str
    timestamp: Timestamp
    edited_timestamp: Timestamp | None
    tts: bool
    mention_everyone: bool
    mentions: list[MentionedUser]
    mention_roles: list[Snowflake]
    mention_channels: NotRequired[list[dict[str, Any]]]
    attachments: list[Attachment]
    embeds: list[dict[str, Any]]
    reactions: NotRequired[list[Reaction]]
    nonce: NotRequired[int | str]
    pinned: bool
    webhook_id: NotRequired[Snowflake]
    type: int
    activity: NotRequired[dict[str, Any]]
    application: NotRequired[dict[str, Any]]
    application_id: NotRequired[Snowflake]
    flags: NotRequired[int]
    message_reference: NotRequired[dict[str, Any]]
    message_snapshots: NotRequired[list[dict[str, Any]]]
    referenced_message: NotRequired[Message | None]
    interaction_metadata: NotRequired[dict[str, Any]]
    thread: NotRequired[Channel]
    components: NotRequired[list[dict[str, Any]]]
    sticker_items: NotRequired[list[dict[str, Any]]]
    position: NotRequired[int]
    role_subscription_data: NotRequired[dict[str, Any]]
    resolved: NotRequired[dict[str, Any]]
    poll: NotRequired[dict[str, Any]]
    call: NotRequired[dict[str, Any]]


class MessageCreatePayload(Message):
    """MESSAGE_CREATE: a message, with ``guild_id`` and ``member`` when sent in a guild."""

    guild_id: NotRequired[Snowflake]
    member: NotRequired[GuildMember]


class MessageUpdatePayload(MessageCreatePayload):
    """MESSAGE_UPDATE: the message as edited, with MESSAGE_CREATE's extra fields."""


class VoiceState(TypedDict):
    """A voice state object."""

    guild_id: NotRequired[Snowflake]
    channel_id: Snowflake | None
    user_id: Snowflake
    member: NotRequired[GuildMember]
    session_id: str
    deaf: bool
    mute: bool
    self_deaf: bool
    self_mute: bool
    self_stream: NotRequired[bool]
    self_video: bool
    suppress: bool
    request_to_speak_timestamp: Timestamp | None


class ActivityTimestamps(TypedDict, total=False):
    """When an activity started and ends (Unix milliseconds)."""

    start: int
    end: int


class Activity(TypedDict):
    """An activity object (in presences)."""

    name: str
    type: int
    url: NotRequired[str | None]
    created_at: int
    timestamps: NotRequired[ActivityTimestamps]
    application_id: NotRequired[Snowflake]
    status_display_type: NotRequired[int | None]
    details: NotRequired[str | None]
    details_url: NotRequired[str | None]
    state: NotRequired[str | None]
    state_url: NotRequired[str | None]
    emoji: NotRequired[dict[str, Any] | None]
    party: NotRequired[dict[str, Any]]
    assets: NotRequired[dict[str, str]]
    secrets: NotRequired[dict[str, str]]
    instance: NotRequired[bool]
    flags: NotRequired[int]
    buttons: NotRequired[list[str]]


class ClientStatus(TypedDict, total=False):
    """A user's status per platform; absent where the user is offline or invisible."""

    desktop: str
    mobile: str
    web: str


class PresenceUpdatePayload(TypedDict, total=False):
    """PRESENCE_UPDATE: the docs warn that no field is guaranteed but ``user.id``."""

    user: dict[str, Any]
    guild_id: Snowflake
    status: str
    activities: list[Activity]
    client_status: ClientStatus


class StageInstance(TypedDict):
    """A stage instance object."""

    id: Snowflake
    guild_id: Snowflake
    channel_id: Snowflake
    topic: str
    privacy_level: int
    discoverable_disabled: bool
    guild_scheduled_event_id: Snowflake | None


class ScheduledEvent(TypedDict):
    """A guild scheduled event object."""

    id: Snowflake
    guild_id: Snowflake
    channel_id: Snowflake | None
    creator_id: NotRequired[Snowflake | None]
    name: str
    description: NotRequired[str | None]
    scheduled_start_time: Timestamp
    scheduled_end_time: Timestamp | None
    privacy_level: int
    status: int
    entity_type: int
    entity_id: Snowflake | None
    entity_metadata: dict[str, Any] | None
    creator: NotRequired[User]
    user_count: NotRequired[int]
    image: NotRequired[str | None]
    recurrence_rule: NotRequired[dict[str, Any] | None]


class SoundboardSound(TypedDict):
    """A soundboard sound object."""

    name: str
    sound_id: Snowflake
    volume: float
    emoji_id: Snowflake | None
    emoji_name: str | None
    guild_id: NotRequired[Snowflake]
    available: bool
    user: NotRequired[User]


class Guild(TypedDict):
    """A guild object."""

    id: Snowflake
    name: str
    icon: str | None
    icon_hash: NotRequired[str | None]
    splash: str | None
    discovery_splash: str | None
    owner: NotRequired[bool]
    owner_id: Snowflake
    permissions: NotRequired[str]
    region: NotRequired[str | None]
    afk_channel_id: Snowflake | None
    afk_timeout: int
    widget_enabled: NotRequired[bool]
    widget_channel_id: NotRequired[Snowflake | None]
    verification_level: int
    default_message_notifications: int
    explicit_content_filter: int
    roles: list[Role]
    emojis: list[Emoji]
    features: list[str]
    mfa_level: int
    application_id: Snowflake | None
    system_channel_id: Snowflake | None
    system_channel_flags: int
    rules_channel_id: Snowflake | None
    max_presences: NotRequired[int | None]
    max_members: NotRequired[int]
    vanity_url_code: str | None
    description: str | None
    banner: str | None
    premium_tier: int
    premium_subscription_count: NotRequired[int]
    preferred_locale: str
    public_updates_channel_id: Snowflake | None
    max_video_channel_users: NotRequired[int]
    max_stage_video_channel_users: NotRequired[int]
    approximate_member_count: NotRequired[int]
    approximate_presence_count: NotRequired[int]
    welcome_screen: NotRequired[dict[str, Any]]
    nsfw_level: int
    stickers: NotRequired[list[Sticker]]
    premium_progress_bar_enabled: bool
    safety_alerts_channel_id: Snowflake | None
    incidents_data: NotRequired[dict[str, Any] | None]


class GuildCreatePayload(TypedDict):
    """GUILD_CREATE: a guild with the extra fields below, or an unavailable guild (id only).

    Every field but ``id`` is absent when ``unavailable`` is true, so all but ``id`` are
    not required here; the guild object's own fields are those of :class:`Guild`.
    """

    id: Snowflake
    unavailable: NotRequired[bool]
    name: NotRequired[str]
    owner_id: NotRequired[Snowflake]
    roles: NotRequired[list[Role]]
    emojis: NotRequired[list[Emoji]]
    stickers: NotRequired[list[Sticker]]
    features: NotRequired[list[str]]
    joined_at: NotRequired[Timestamp]
    large: NotRequired[bool]
    member_count: NotRequired[int]
    voice_states: NotRequired[list[VoiceState]]
    members: NotRequired[list[GuildMember]]
    channels: NotRequired[list[Channel]]
    threads: NotRequired[list[Channel]]
    presences: NotRequired[list[PresenceUpdatePayload]]
    stage_instances: NotRequired[list[StageInstance]]
    guild_scheduled_events: NotRequired[list[ScheduledEvent]]
    soundboard_sounds: NotRequired[list[SoundboardSound]]


class AutoModerationAction(TypedDict):
    """An auto moderation action object."""

    type: int
    metadata: NotRequired[dict[str, Any]]


class AutoModerationRule(TypedDict):
    """An auto moderation rule object."""

    id: Snowflake
    guild_id: Snowflake
    name: str
    creator_id: Snowflake
    event_type: int
    trigger_type: int
    trigger_metadata: dict[str, Any]
    actions: list[AutoModerationAction]
    enabled: bool
    exempt_roles: list[Snowflake]
    exempt_channels: list[Snowflake]


class Entitlement(TypedDict):
    """An entitlement object."""

    id: Snowflake
    sku_id: Snowflake
    application_id: Snowflake
    user_id: NotRequired[Snowflake]
    type: int
    deleted: bool
    starts_at: Timestamp | None
    ends_at: Timestamp | None
    guild_id: NotRequired[Snowflake]
    consumed: NotRequired[bool]


class Subscription(TypedDict):
    """A subscription object (premium apps)."""

    id: Snowflake
    user_id: Snowflake
    sku_ids: list[Snowflake]
    entitlement_ids: list[Snowflake]
    renewal_sku_ids: list[Snowflake] | None
    current_period_start: Timestamp
    current_period_end: Timestamp
    status: int
    canceled_at: Timestamp | None
    country: NotRequired[str]


class Integration(TypedDict):
    """An integration object, as the integration events send it (``user`` omitted)."""

    id: Snowflake
    name: str
    type: str
    enabled: bool
    syncing: NotRequired[bool]
    role_id: NotRequired[Snowflake]
    enable_emoticons: NotRequired[bool]
    expire_behavior: NotRequired[int]
    expire_grace_period: NotRequired[int]
    account: dict[str, Any]
    synced_at: NotRequired[Timestamp]
    subscriber_count: NotRequired[int]
    revoked: NotRequired[bool]
    application: NotRequired[dict[str, Any]]
    scopes: NotRequired[list[str]]


class ApplicationCommandPermissionsUpdatePayload(TypedDict):
    """APPLICATION_COMMAND_PERMISSIONS_UPDATE: a command's permissions in a guild."""

    id: Snowflake
    application_id: Snowflake
    guild_id: Snowflake
    permissions: list[dict[str, Any]]


# -- the dispatches the core consumes ------------------------------------------------------


class ReadyApplication(TypedDict):
    """READY's partial application: its id and flags."""

    id: Snowflake
    flags: int


class ReadyPayload(TypedDict):
    """READY: the new session's state."""

    v: int
    user: User
    guilds: list[UnavailableGuild]
    session_id: str
    resume_gateway_url: str
    shard: NotRequired[list[int]]
    application: ReadyApplication


class ResumedPayload(TypedDict):
    """RESUMED: Discord documents no field (the router passes an empty dict)."""


class RateLimitedPayload(TypedDict):
    """RATE_LIMITED: the gateway refused a command; ``meta`` depends on ``opcode``."""

    opcode: int
    retry_after: float
    meta: dict[str, Any]


# -- event fields (gateway events page) -----------------------------------------------------


class AutoModerationActionExecutionPayload(TypedDict):
    """AUTO_MODERATION_ACTION_EXECUTION: a rule was triggered and an action executed."""

    guild_id: Snowflake
    action: AutoModerationAction
    rule_id: Snowflake
    rule_trigger_type: int
    user_id: Snowflake
    channel_id: NotRequired[Snowflake]
    message_id: NotRequired[Snowflake]
    alert_system_message_id: NotRequired[Snowflake]
    content: str
    matched_keyword: str | None
    matched_content: str | None


class ChannelPinsUpdatePayload(TypedDict):
    """CHANNEL_PINS_UPDATE: a message was pinned or unpinned."""

    guild_id: NotRequired[Snowflake]
    channel_id: Snowflake
    last_pin_timestamp: NotRequired[Timestamp | None]


class ThreadListSyncPayload(TypedDict):
    """THREAD_LIST_SYNC: the active threads of channels the bot gained access to."""

    guild_id: Snowflake
    channel_ids: NotRequired[list[Snowflake]]
    threads: list[Channel]
    members: list[ThreadMember]


class ThreadMemberUpdatePayload(ThreadMember):
    """THREAD_MEMBER_UPDATE: the bot's own thread member, with the guild id."""

    guild_id: Snowflake


class ThreadMembersUpdatePayload(TypedDict):
    """THREAD_MEMBERS_UPDATE: users were added to or removed from a thread."""

    id: Snowflake
    guild_id: Snowflake
    member_count: int
    added_members: NotRequired[list[ThreadMember]]
    removed_member_ids: NotRequired[list[Snowflake]]


class GuildAuditLogEntryCreatePayload(TypedDict):
    """GUILD_AUDIT_LOG_ENTRY_CREATE: an audit log entry, with the guild id."""

    guild_id: Snowflake
    id: Snowflake
    target_id: Snowflake | None
    changes: NotRequired[list[dict[str, Any]]]
    user_id: Snowflake | None
    action_type: int
    options: NotRequired[dict[str, Any]]
    reason: NotRequired[str]


class GuildBanPayload(TypedDict):
    """GUILD_BAN_ADD and GUILD_BAN_REMOVE: the user (un)banned."""

    guild_id: Snowflake
    user: User


class GuildEmojisUpdatePayload(TypedDict):
    """GUILD_EMOJIS_UPDATE: the guild's emojis, all of them."""

    guild_id: Snowflake
    emojis: list[Emoji]


class GuildStickersUpdatePayload(TypedDict):
    """GUILD_STICKERS_UPDATE: the guild's stickers, all of them."""

    guild_id: Snowflake
    stickers: list[Sticker]


class GuildIdPayload(TypedDict):
    """GUILD_INTEGRATIONS_UPDATE: only the guild's id."""

    guild_id: Snowflake


class GuildMemberAddPayload(GuildMember):
    """GUILD_MEMBER_ADD: the new member, with the guild id."""

    guild_id: Snowflake


class GuildMemberRemovePayload(TypedDict):
    """GUILD_MEMBER_REMOVE: the user who left or was removed."""

    guild_id: Snowflake
    user: User


class GuildMemberUpdatePayload(TypedDict):
    """GUILD_MEMBER_UPDATE: the member as it is now."""

    guild_id: Snowflake
    roles: list[Snowflake]
    user: User
    nick: NotRequired[str | None]
    avatar: str | None
    banner: str | None
    joined_at: Timestamp | None
    premium_since: NotRequired[Timestamp | None]
    deaf: NotRequired[bool]
    mute: NotRequired[bool]
    pending: NotRequired[bool]
    communication_disabled_until: NotRequired[Timestamp | None]
    avatar_decoration_data: NotRequired[dict[str, Any] | None]
    collectibles: NotRequired[dict[str, Any] | None]


class GuildMembersChunkPayload(TypedDict):
    """GUILD_MEMBERS_CHUNK: one chunk of the answer to a Request Guild Members."""

    guild_id: Snowflake
    members: list[GuildMember]
    chunk_index: int
    chunk_count: int
    not_found: NotRequired[list[Snowflake]]
    presences: NotRequired[list[PresenceUpdatePayload]]
    nonce: NotRequired[str]


class GuildRolePayload(TypedDict):
    """GUILD_ROLE_CREATE and GUILD_ROLE_UPDATE: the role."""

    guild_id: Snowflake
    role: Role


class GuildRoleDeletePayload(TypedDict):
    """GUILD_ROLE_DELETE: the deleted role's id."""

    guild_id: Snowflake
    role_id: Snowflake


class GuildScheduledEventUserPayload(TypedDict):
    """GUILD_SCHEDULED_EVENT_USER_ADD and _REMOVE: a user (un)subscribed to an event."""

    guild_scheduled_event_id: Snowflake
    user_id: Snowflake
    guild_id: Snowflake


class GuildSoundboardSoundDeletePayload(TypedDict):
    """GUILD_SOUNDBOARD_SOUND_DELETE: the deleted sound's id."""

    sound_id: Snowflake
    guild_id: Snowflake


class SoundboardSoundsPayload(TypedDict):
    """GUILD_SOUNDBOARD_SOUNDS_UPDATE and SOUNDBOARD_SOUNDS: a guild's sounds."""

    soundboard_sounds: list[SoundboardSound]
    guild_id: Snowflake


class IntegrationPayload(Integration):
    """INTEGRATION_CREATE and INTEGRATION_UPDATE: the integration, with the guild id."""

    guild_id: Snowflake


class IntegrationDeletePayload(TypedDict):
    """INTEGRATION_DELETE: the deleted integration."""

    id: Snowflake
    guild_id: Snowflake
    application_id: NotRequired[Snowflake]


class Interaction(TypedDict):
    """INTERACTION_CREATE: an interaction; ``token`` answers it (keep it out of logs)."""

    id: Snowflake
    application_id: Snowflake
    type: int
    data: NotRequired[dict[str, Any]]
    guild: NotRequired[dict[str, Any]]
    guild_id: NotRequired[Snowflake]
    channel: NotRequired[Channel]
    channel_id: NotRequired[Snowflake]
    member: NotRequired[GuildMember]
    user: NotRequired[User]
    token: str
    version: int
    message: NotRequired[Message]
    app_permissions: str
    locale: NotRequired[str]
    guild_locale: NotRequired[str]
    entitlements: list[Entitlement]
    authorizing_integration_owners: dict[str, Any]
    context: NotRequired[int]
    attachment_size_limit: int


class InviteCreatePayload(TypedDict):
    """INVITE_CREATE: a new invite to a channel."""

    channel_id: Snowflake
    code: str
    created_at: Timestamp
    guild_id: NotRequired[Snowflake]
    inviter: NotRequired[User]
    max_age: int
    max_uses: int
    target_type: NotRequired[int]
    target_user: NotRequired[User]
    target_application: NotRequired[dict[str, Any]]
    temporary: bool
    uses: int
    expires_at: Timestamp | None
    role_ids: NotRequired[list[Snowflake]]


class InviteDeletePayload(TypedDict):
    """INVITE_DELETE: a deleted invite."""

    channel_id: Snowflake
    guild_id: NotRequired[Snowflake]
    code: str


class MessageDeletePayload(TypedDict):
    """MESSAGE_DELETE: a deleted message's ids."""

    id: Snowflake
    channel_id: Snowflake
    guild_id: NotRequired[Snowflake]


class MessageDeleteBulkPayload(TypedDict):
    """MESSAGE_DELETE_BULK: messages deleted at once."""

    ids: list[Snowflake]
    channel_id: Snowflake
    guild_id: NotRequired[Snowflake]


class MessageReactionAddPayload(TypedDict):
    """MESSAGE_REACTION_ADD: a user reacted to a message."""

    user_id: Snowflake
    channel_id: Snowflake
    message_id: Snowflake
    guild_id: NotRequired[Snowflake]
    member: NotRequired[GuildMember]
    emoji: Emoji
    message_author_id: NotRequired[Snowflake]
    burst: bool
    burst_colors: NotRequired[list[str]]
    type: int


class MessageReactionRemovePayload(TypedDict):
    """MESSAGE_REACTION_REMOVE: a user removed a reaction."""

    user_id: Snowflake
    channel_id: Snowflake
    message_id: Snowflake
    guild_id: NotRequired[Snowflake]
    emoji: Emoji
    burst: bool
    type: int


class MessageReactionRemoveAllPayload(TypedDict):
    """MESSAGE_REACTION_REMOVE_ALL: every reaction was removed from a message."""

    channel_id: Snowflake
    message_id: Snowflake
    guild_id: NotRequired[Snowflake]


class MessageReactionRemoveEmojiPayload(TypedDict):
    """MESSAGE_REACTION_REMOVE_EMOJI: every reaction of one emoji was removed."""

    channel_id: Snowflake
    guild_id: NotRequired[Snowflake]
    message_id: Snowflake
    emoji: Emoji


class TypingStartPayload(TypedDict):
    """TYPING_START: a user started typing (``timestamp`` in Unix seconds)."""

    channel_id: Snowflake
    guild_id: NotRequired[Snowflake]
    user_id: Snowflake
    timestamp: int
    member: NotRequired[GuildMember]


class VoiceChannelEffectSendPayload(TypedDict):
    """VOICE_CHANNEL_EFFECT_SEND: an effect in a voice channel the bot is connected to."""

    channel_id: Snowflake
    guild_id: Snowflake
    user_id: Snowflake
    emoji: NotRequired[Emoji | None]
    animation_type: NotRequired[int | None]
    animation_id: NotRequired[int]
    sound_id: NotRequired[Snowflake | int]
    sound_volume: NotRequired[float]


class VoiceServerUpdatePayload(TypedDict):
    """VOICE_SERVER_UPDATE: the voice server; a null ``endpoint`` means it is reallocated."""

    token: str
    guild_id: Snowflake
    endpoint: str | None


class WebhooksUpdatePayload(TypedDict):
    """WEBHOOKS_UPDATE: a channel's webhooks changed."""

    guild_id: Snowflake
    channel_id: Snowflake


class ChannelInfoChannel(TypedDict):
    """One channel of CHANNEL_INFO: only the fields op 43 asked for are present."""

    id: Snowflake
    status: NotRequired[str | None]
    voice_start_time: NotRequired[int | None]


class ChannelInfoPayload(TypedDict):
    """CHANNEL_INFO: the answer to op 43 (Request Channel Info) for one guild."""

    guild_id: Snowflake
    channels: list[ChannelInfoChannel]


class VoiceChannelStatusUpdatePayload(TypedDict):
    """VOICE_CHANNEL_STATUS_UPDATE: a voice channel's status text changed."""

    id: Snowflake
    guild_id: Snowflake
    status: str | None


class VoiceChannelStartTimeUpdatePayload(TypedDict):
    """VOICE_CHANNEL_START_TIME_UPDATE: a voice channel's session started or ended."""

    id: Snowflake
    guild_id: Snowflake
    voice_start_time: NotRequired[int | None]


class MessagePollVotePayload(TypedDict):
    """MESSAGE_POLL_VOTE_ADD and _REMOVE: one vote on one answer."""

    user_id: Snowflake
    channel_id: Snowflake
    message_id: Snowflake
    guild_id: NotRequired[Snowflake]
    answer_id: int


#: Every documented dispatch and the type of its ``d``, in the docs' order.
DISPATCH_PAYLOADS: Final[dict[str, type[Any]]] = {
    "READY": ReadyPayload,
    "RESUMED": ResumedPayload,
    "RATE_LIMITED": RateLimitedPayload,
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE": ApplicationCommandPermissionsUpdatePayload,
    "AUTO_MODERATION_RULE_CREATE": AutoModerationRule,
    "AUTO_MODERATION_RULE_UPDATE": AutoModerationRule,
    "AUTO_MODERATION_RULE_DELETE": AutoModerationRule,
    "AUTO_MODERATION_ACTION_EXECUTION": AutoModerationActionExecutionPayload,
    "CHANNEL_CREATE": Channel,
    "CHANNEL_UPDATE": Channel,
    "CHANNEL_DELETE": Channel,
    "CHANNEL_PINS_UPDATE": ChannelPinsUpdatePayload,
    "THREAD_CREATE": ThreadCreatePayload,
    "THREAD_UPDATE": Channel,
    "THREAD_DELETE": ThreadDeletePayload,
    "THREAD_LIST_SYNC": ThreadListSyncPayload,
    "THREAD_MEMBER_UPDATE": ThreadMemberUpdatePayload,
    "THREAD_MEMBERS_UPDATE": ThreadMembersUpdatePayload,
    "ENTITLEMENT_CREATE": Entitlement,
    "ENTITLEMENT_UPDATE": Entitlement,
    "ENTITLEMENT_DELETE": Entitlement,
    "GUILD_CREATE": GuildCreatePayload,
    "GUILD_UPDATE": Guild,
    "GUILD_DELETE": UnavailableGuild,
    "GUILD_AUDIT_LOG_ENTRY_CREATE": GuildAuditLogEntryCreatePayload,
    "GUILD_BAN_ADD": GuildBanPayload,
    "GUILD_BAN_REMOVE": GuildBanPayload,
    "GUILD_EMOJIS_UPDATE": GuildEmojisUpdatePayload,
    "GUILD_STICKERS_UPDATE": GuildStickersUpdatePayload,
    "GUILD_INTEGRATIONS_UPDATE": GuildIdPayload,
    "GUILD_MEMBER_ADD": GuildMemberAddPayload,
    "GUILD_MEMBER_REMOVE": GuildMemberRemovePayload,
    "GUILD_MEMBER_UPDATE": GuildMemberUpdatePayload,
    "GUILD_MEMBERS_CHUNK": GuildMembersChunkPayload,
    "GUILD_ROLE_CREATE": GuildRolePayload,
    "GUILD_ROLE_UPDATE": GuildRolePayload,
    "GUILD_ROLE_DELETE": GuildRoleDeletePayload,
    "GUILD_SCHEDULED_EVENT_CREATE": ScheduledEvent,
    "GUILD_SCHEDULED_EVENT_UPDATE": ScheduledEvent,
    "GUILD_SCHEDULED_EVENT_DELETE": ScheduledEvent,
    "GUILD_SCHEDULED_EVENT_USER_ADD": GuildScheduledEventUserPayload,
    "GUILD_SCHEDULED_EVENT_USER_REMOVE": GuildScheduledEventUserPayload,
    "GUILD_SOUNDBOARD_SOUND_CREATE": SoundboardSound,
    "GUILD_SOUNDBOARD_SOUND_UPDATE": SoundboardSound,
    "GUILD_SOUNDBOARD_SOUND_DELETE": GuildSoundboardSoundDeletePayload,
    "GUILD_SOUNDBOARD_SOUNDS_UPDATE": SoundboardSoundsPayload,
    "SOUNDBOARD_SOUNDS": SoundboardSoundsPayload,
    "INTEGRATION_CREATE": IntegrationPayload,
    "INTEGRATION_UPDATE": IntegrationPayload,
    "INTEGRATION_DELETE": IntegrationDeletePayload,
    "INTERACTION_CREATE": Interaction,
    "INVITE_CREATE": InviteCreatePayload,
    "INVITE_DELETE": InviteDeletePayload,
    "MESSAGE_CREATE": MessageCreatePayload,
    "MESSAGE_UPDATE": MessageUpdatePayload,
    "MESSAGE_DELETE": MessageDeletePayload,
    "MESSAGE_DELETE_BULK": MessageDeleteBulkPayload,
    "MESSAGE_REACTION_ADD": MessageReactionAddPayload,
    "MESSAGE_REACTION_REMOVE": MessageReactionRemovePayload,
    "MESSAGE_REACTION_REMOVE_ALL": MessageReactionRemoveAllPayload,
    "MESSAGE_REACTION_REMOVE_EMOJI": MessageReactionRemoveEmojiPayload,
    "PRESENCE_UPDATE": PresenceUpdatePayload,
    "STAGE_INSTANCE_CREATE": StageInstance,
    "STAGE_INSTANCE_UPDATE": StageInstance,
    "STAGE_INSTANCE_DELETE": StageInstance,
    "SUBSCRIPTION_CREATE": Subscription,
    "SUBSCRIPTION_UPDATE": Subscription,
    "SUBSCRIPTION_DELETE": Subscription,
    "TYPING_START": TypingStartPayload,
    "USER_UPDATE": User,
    "VOICE_CHANNEL_EFFECT_SEND": VoiceChannelEffectSendPayload,
    "VOICE_STATE_UPDATE": VoiceState,
    "VOICE_SERVER_UPDATE": VoiceServerUpdatePayload,
    "WEBHOOKS_UPDATE": WebhooksUpdatePayload,
    "CHANNEL_INFO": ChannelInfoPayload,
    "VOICE_CHANNEL_STATUS_UPDATE": VoiceChannelStatusUpdatePayload,
    "VOICE_CHANNEL_START_TIME_UPDATE": VoiceChannelStartTimeUpdatePayload,
    "MESSAGE_POLL_VOTE_ADD": MessagePollVotePayload,
    "MESSAGE_POLL_VOTE_REMOVE": MessagePollVotePayload,
}
