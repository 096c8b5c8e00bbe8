"""``WebSocketConnection``: the core spoken over raw TCP bytes, driven by hand in virtual time.

Docstrings name the RFC 6455 section of each rule and, where the gateway is involved, the
section of docs/protocol.md (cited as ``docs/protocol.md §N``). A whole session is also
split anywhere; back-pressure (paused reads and writes) closes the file.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from _ws_oracles import (
    BINARY,
    CLOSE,
    CONT,
    FIRST_KEY,
    PING,
    PONG,
    RESUME_BASE,
    SESSION_ID,
    TEXT,
    TOKEN,
    Harness,
    Step,
    client_frames,
    describe,
    dispatch,
    hello,
    identify_payload,
    jframe,
    make_config,
    raw_frame,
    ready,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_proto import (
    AuthenticationFailed,
    ConnectionState,
    ConnectTimeout,
    Disconnected,
    DispatchReceived,
    LocalProtocolError,
    RawCommand,
    RequestIdentify,
    SessionResumed,
    SessionStarted,
    SetTimer,
    Terminated,
    TransportClosed,
    TransportCompression,
)
from gateway_proto.ws import (
    DEFAULT_USER_AGENT,
    CloseTcp,
    FrameReader,
    OpenTcp,
    SendBytes,
    WebSocketProtocolError,
)
from gateway_proto.ws._frames import close_payload, parse_close_payload
from gateway_proto.ws._handshake import (
    MAX_HEAD_SIZE,
    build_request,
    build_response,
)

# == WebSocketConnection: the core over bytes (docs/architecture.md §5) ====================================


@pytest.mark.parametrize(
    ("url", "open_tcp", "host_header", "target"),
    [
        ("wss://gateway.discord.gg", ("gateway.discord.gg", 443, True), "gateway.discord.gg",
         "/?v=10&encoding=json"),
        ("ws://127.0.0.1:9000", ("127.0.0.1", 9000, False), "127.0.0.1:9000",
         "/?v=10&encoding=json"),
        ("ws://localhost/gateway/", ("localhost", 80, False), "localhost",
         "/gateway/?v=10&encoding=json"),
        ("ws://[::1]:9000", ("::1", 9000, False), "[::1]:9000", "/?v=10&encoding=json"),
        ("wss://gateway.example:8443/ws", ("gateway.example", 8443, True),
         "gateway.example:8443", "/ws/?v=10&encoding=json"),
    ],
)  # fmt: skip
def test_connect_opens_tcp_then_sends_the_upgrade(url, open_tcp, host_header, target):
    """docs/protocol.md §1.2 (URL with v=10 and encoding) and RFC 6455 §3/§4.1: wss means TLS on 443,
    ws plain TCP on 80, an explicit port wins; the Host header is the URL's authority and the
    request target its path and query. The key is 16 bytes from ``entropy``."""
    h = Harness(url=url)
    step = h.connect(at=0.0)
    assert step.actions == [OpenTcp(*open_tcp, transport_id=1), SetTimer(deadline=30.0)]
    assert step.events == []
    step = h.tcp_open(at=0.25)
    assert len(step.actions) == 1
    request = step.actions[0]
    assert request.transport_id == 1
    assert request.data == build_request(host_header, target, FIRST_KEY, DEFAULT_USER_AGENT)
    assert h.keys[1] == FIRST_KEY
    assert h.requests[1][1]["host"] == host_header
    assert h.entropy.calls == [16]


def test_custom_user_agent():
    """RFC 7231 §5.5.3: the User-Agent header is the one given to the connection."""
    h = Harness(user_agent="MyBot (https://example.org, 2.0)")
    h.connect(at=0.0)
    h.tcp_open()
    assert h.requests[1][1]["user-agent"] == "MyBot (https://example.org, 2.0)"


def test_upgrade_in_pieces_with_hello_in_the_same_read():
    """RFC 6455 §4.1 and docs/protocol.md §1.3, §3: the 101 may arrive in any pieces and the first frame
    (HELLO) in the same read as its end; the core then sets the hello timeout and the first
    heartbeat (interval x jitter) and asks for an identify slot (docs/protocol.md §8)."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    response = h.upgrade()
    assert h.feed(response[:10], at=0.75) == Step([], [])
    assert h.feed(response[10:40], at=0.8) == Step([], [])
    step = h.feed(response[40:] + jframe(hello()), at=1.0)
    assert step.actions == [
        SetTimer(deadline=21.0),  # hello timeout: 1.0 + 20
        RequestIdentify(shard_id=0),
        SetTimer(deadline=1.0 + 41.25 * 0.5),  # first heartbeat
    ]
    assert step.events == []
    assert h.ws.gateway.state is ConnectionState.IDENTIFYING


def test_identify_is_a_masked_text_frame():
    """docs/protocol.md §4.1, §8 and RFC 6455 §5.1/§5.3/§5.6: after grant_identify the IDENTIFY goes out
    as one masked text frame, its key the next 4 bytes of ``entropy``."""
    h = Harness()
    h.establish()
    mask = h.entropy.peek(4)
    assert mask == bytes([17, 18, 19, 20])
    step = h.grant(at=1.5)
    assert [type(a) for a in step.actions] == [SendBytes]
    data = step.actions[0].data
    assert data[0] == 0x81  # FIN + text
    assert data[1] & 0x80  # masked
    frames = client_frames(data)
    assert len(frames) == 1
    assert frames[0][0] == TEXT
    assert json.loads(frames[0][1]) == identify_payload()
    assert data == raw_frame(TEXT, frames[0][1], mask=mask)


def test_ready_starts_the_session_and_queued_commands_flush():
    """docs/protocol.md §4.2: READY yields SessionStarted with the session id and resume URL; commands
    queued before it go out right after, as masked text frames (docs/protocol.md §8)."""
    h = Harness()
    h.establish()
    assert h.send(RawCommand(op=3, data={"status": "idle"}), at=1.0).actions == []
    h.grant()
    step = h.feed(jframe(ready(1)), at=2.0)
    assert [describe(e) for e in step.events] == [
        describe(
            SessionStarted(
                session_id=SESSION_ID, resume_url=RESUME_BASE, sequence=1, data=ready(1)["d"]
            )
        )
    ]
    assert step.events[0].data == ready(1)["d"]
    assert h.sent_json(step) == [{"op": 3, "d": {"status": "idle"}}]
    step = h.send(RawCommand(op=3, data={"status": "dnd"}), at=2.5)
    assert h.sent_json(step) == [{"op": 3, "d": {"status": "dnd"}}]


def test_dispatches_heartbeats_and_acks():
    """docs/protocol.md §3: the heartbeat timer passes through as SetTimer; at its deadline the heartbeat
    (last sequence) goes out as a masked frame, and the ACK yields the latency."""
    h = Harness()
    h.start_session()
    step = h.feed(
        jframe(dispatch("MESSAGE_CREATE", 2, {"id": "9"}))
        + jframe(dispatch("TYPING_START", 3, {})),
        at=5.0,
    )
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="MESSAGE_CREATE", sequence=2, data={"id": "9"})),
        describe(DispatchReceived(name="TYPING_START", sequence=3, data={})),
    ]
    assert h.timer == 1.0 + 41.25 * 0.5
    step = h.fire(h.timer)
    assert h.sent_json(step) == [{"op": 1, "d": 3}]
    assert step.of(SetTimer) == [SetTimer(deadline=1.0 + 41.25 * 1.5)]
    step = h.feed(jframe({"op": 11}), at=22.0)
    assert [e.latency for e in step.events] == [pytest.approx(22.0 - 21.625)]


@pytest.mark.parametrize("payload", [b"are you there", b"", bytes(range(125))])
def test_ping_is_answered_with_a_masked_pong(payload):
    """RFC 6455 §5.5.2/§5.5.3: a pong carries the ping's application data, masked by the
    client; nothing reaches the core."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(PING, payload), at=2.0)
    assert step.actions == [SendBytes(raw_frame(PONG, payload, mask=mask), 1)]
    assert step.events == []
    assert h.frames(step) == [(PONG, payload)]


def test_unsolicited_pong_is_ignored():
    """RFC 6455 §5.5.3: an unsolicited pong needs no answer."""
    h = Harness()
    h.start_session()
    assert h.feed(raw_frame(PONG, b"beat"), at=2.0) == Step([], [])


def test_fragmented_dispatch_with_ping_between_fragments():
    """RFC 6455 §5.4 and docs/protocol.md §10.1 (JSON as text): a dispatch in three fragments with a ping
    between them: the pong goes out at once, the dispatch arrives when complete."""
    h = Harness()
    h.start_session()
    body = json.dumps(dispatch("GUILD_CREATE", 2, {"id": "1", "name": "x" * 300})).encode()
    stream = (
        raw_frame(TEXT, body[:100], fin=False)
        + raw_frame(PING, b"mid")
        + raw_frame(CONT, body[100:200], fin=False)
        + raw_frame(CONT, body[200:])
    )
    step = h.feed(stream, at=2.0)
    assert h.frames(step) == [(PONG, b"mid")]
    assert [(e.name, e.sequence) for e in step.events] == [("GUILD_CREATE", 2)]


def test_server_close_4000_echoes_and_resumes_on_the_resume_url():
    """RFC 6455 §5.5.1 (answer a close frame with one carrying the same code, then close
    TCP) and docs/protocol.md §5, §7 (4000 is resumable: reconnect to resume_gateway_url with the same
    query, send RESUME with the last seq, RESUMED ends the replay)."""
    h = Harness()
    h.start_session()
    h.feed(jframe(dispatch("X", 2)), at=2.0)
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE, close_payload(4000, "bye")), at=3.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa0", mask=mask), 1),
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=33.0),
    ]
    assert [describe(e) for e in step.events] == [
        describe(
            Disconnected(transport_id=1, code=4000, reason="bye", initiated_locally=False,
                         error=None, will_resume=True, reconnect_at=3.0)
        )
    ]  # fmt: skip
    # The resume connection: same query string (docs/protocol.md §1.2 gotcha, §15 item 2).
    h.tcp_open(at=3.5)
    target, headers = h.requests[2]
    assert (target, headers["host"]) == ("/?v=10&encoding=json", "resume.gateway.test")
    assert h.keys[2] != h.keys[1]
    step = h.feed(h.upgrade() + jframe(hello()), at=4.0)
    assert h.sent_json(step) == [
        {"op": 6, "d": {"token": TOKEN, "session_id": SESSION_ID, "seq": 2}}
    ]
    step = h.feed(jframe(dispatch("Y", 3)) + jframe(dispatch("RESUMED", 4)), at=4.5)
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="Y", sequence=3, data=None)),
        describe(SessionResumed(sequence=4, replayed=1)),
    ]
    # The old transport is gone: its bytes are ignored.
    assert h.feed(jframe(dispatch("OLD", 99)), tid=1, at=5.0) == Step([], [])


def test_server_close_4004_terminates():
    """docs/protocol.md §7: 4004 (authentication failed) is fatal: the close frame is echoed (RFC 6455
    §5.5.1), TCP closed, and the connection ends with AuthenticationFailed; no reconnect."""
    h = Harness()
    h.establish()
    h.grant()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE, close_payload(4004, "Authentication failed.")), at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa4", mask=mask), 1),
        CloseTcp(1, abort=False),
        SetTimer(deadline=None),
    ]
    assert len(step.events) == 1
    event = step.events[0]
    assert isinstance(event, Terminated)
    assert event.code == 4004
    assert isinstance(event.error, AuthenticationFailed)
    assert (event.error.code, event.error.reason) == (4004, "Authentication failed.")
    assert h.ws.gateway.state is ConnectionState.CLOSED


def test_server_close_without_code_reports_1005_and_echoes_an_empty_body():
    """RFC 6455 §5.5.1 and §7.1.5: a close frame with no body has no status code; the echo
    has no body either and the core is told 1005 (docs/protocol.md §7: resumable)."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(CLOSE), at=2.0)
    assert step.actions[:2] == [SendBytes(raw_frame(CLOSE, b"", mask=mask), 1), CloseTcp(1, False)]
    assert [(e.code, e.reason, e.will_resume) for e in step.of(Disconnected)] == [(1005, "", True)]


def test_frames_after_a_close_frame_are_ignored():
    """RFC 6455 §5.5.1: after a close frame the peer sends no more data; whatever follows in
    the same read is dropped (no dispatch, no pong)."""
    h = Harness()
    h.start_session()
    stream = (
        jframe(dispatch("BEFORE", 2))
        + raw_frame(CLOSE, close_payload(4000))
        + jframe(dispatch("AFTER", 3))
        + raw_frame(PING, b"late")
    )
    step = h.feed(stream, at=2.0)
    assert [e.name for e in step.of(DispatchReceived)] == ["BEFORE"]
    assert [op for op, _ in h.frames(step, 1)] == [CLOSE]


def test_server_close_with_invalid_code_is_a_protocol_error():
    """RFC 6455 §7.4.1: 1005 must never be sent in a close frame; receiving it fails the
    connection with 1002 (not an echo of 1005)."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(CLOSE, b"\x03\xed"), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(1002, "close frame with invalid code 1005"))]
    assert CloseTcp(1, abort=False) in step.actions
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [
        (None, "websocket protocol error: close frame with invalid code 1005")
    ]


def test_eof_after_ready_is_1006_and_resumes_at_once():
    """RFC 6455 §7.1.5 (closed without a close frame: 1006) and docs/protocol.md §5 (resume after a
    drop): a live session reconnects at once to the resume URL."""
    h = Harness()
    h.start_session()
    step = h.eof(at=2.0)
    assert step.actions == [
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.0),
    ]
    (event,) = step.events
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=1006,
            reason="connection closed without a close frame",
            initiated_locally=False,
            error=TransportClosed("connection closed without a close frame"),
            will_resume=True,
            reconnect_at=2.0,
        )
    )


def test_eof_before_hello_backs_off():
    """RFC 6455 §7.1.5 and docs/architecture.md §4 (backoff for failed connects): EOF on an open websocket
    before HELLO is 1006; the generation never went live, so the reconnect waits
    ``uniform(0, backoff_base)`` (0.5 s here) and opens at handle_timer."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    h.feed(h.upgrade(), at=1.0)
    step = h.eof(at=2.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=2.5)]
    assert [(e.code, e.reconnect_at, e.will_resume) for e in step.events] == [(1006, 2.5, False)]
    assert h.fire(2.4) == Step([], [])
    step = h.fire(2.5)
    assert step.actions == [OpenTcp("gateway.discord.gg", 443, True, 2), SetTimer(deadline=32.5)]


def test_tcp_failure_reconnects_after_backoff():
    """docs/architecture.md §4 (capped exponential backoff with full jitter) and docs/protocol.md §15 item 6: a refused
    TCP connection ends the attempt (CloseTcp abort), Disconnected names the reason, and the
    next OpenTcp comes at the reconnect deadline via handle_timer."""
    h = Harness()
    h.connect(at=0.0)
    step = h.tcp_failed("connection refused", at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=1.5)]
    (event,) = step.events
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=None,
            reason="connection refused",
            initiated_locally=False,
            error=TransportClosed("could not connect: connection refused"),
            will_resume=False,
            reconnect_at=1.5,
        )
    )
    assert h.fire(1.49) == Step([], [])
    step = h.fire(1.5)
    assert step.actions == [OpenTcp("gateway.discord.gg", 443, True, 2), SetTimer(deadline=31.5)]
    # A second failure doubles the backoff ceiling: uniform(0, 2) = 1.0.
    step = h.tcp_failed("connection reset", at=2.0)
    assert [e.reconnect_at for e in step.events] == [3.0]
    # Late reports about the first transport change nothing.
    h.ws.handle_tcp_failed(1, "late", now=2.0)
    h.ws.handle_tcp_open(1, now=2.0)
    assert h.drain() == Step([], [])


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("401 Unauthorized", "HTTP 401 Unauthorized"),
        ("503 Service Unavailable", "HTTP 503 Service Unavailable"),
    ],
)
def test_refused_upgrade_aborts_and_reconnects_later(status, reason):
    """RFC 6455 §4.1 (anything but 101 fails the connection) and docs/architecture.md §3 (peer input never
    raises): the socket is aborted, Disconnected carries the HTTP status in its error, and
    the reconnect comes after backoff."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode(), at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=1.5)]
    (event,) = step.events
    message = f"server answered {reason} instead of switching to websocket"
    assert describe(event) == describe(
        Disconnected(
            transport_id=1,
            code=None,
            reason=message,
            initiated_locally=False,
            error=TransportClosed(f"could not connect: {message}"),
            will_resume=False,
            reconnect_at=1.5,
        )
    )
    assert status[:3] in str(event.error)
    assert h.feed(jframe(hello()), tid=1, at=1.2) == Step([], [])  # the link is gone
    assert h.fire(1.5).actions[0] == OpenTcp("gateway.discord.gg", 443, True, 2)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         "wrong Sec-WebSocket-Accept in the server's answer"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH_9.6'"),
        (b"HTTP/1.1 101 OK\r\nbroken header\r\n\r\n", "malformed HTTP header line 'broken header'"),
        (b"\x00" * (MAX_HEAD_SIZE + 4), f"HTTP head longer than {MAX_HEAD_SIZE} bytes"),
    ],
)  # fmt: skip
def test_bad_upgrade_answers_fail_the_attempt(answer, reason):
    """RFC 6455 §4.1 (the accept key must match), §10.4 (bounded head) and docs/architecture.md §3: a bad
    answer or garbage aborts the socket and ends the attempt with a reconnect."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(answer, at=1.0)
    assert step.non_timer == [CloseTcp(1, abort=True)]
    assert [(e.code, e.reason, e.reconnect_at) for e in step.events] == [(None, reason, 1.5)]


def test_superscript_status_line_does_not_raise():
    """docs/architecture.md §3 (peer input never raises) and RFC 7230 §3.1.2: a status line with Latin-1
    superscript digits is garbage; the attempt fails like any bad answer."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.feed(b"HTTP/1.1 \xb201 OK\r\n\r\n", at=1.0)
    assert step.non_timer == [CloseTcp(1, abort=True)]
    assert len(step.of(Disconnected)) == 1


def test_eof_during_upgrade():
    """RFC 6455 §4.1: the server hung up before answering: the attempt fails (no close code:
    the websocket never opened) and the client backs off."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    h.feed(b"HTTP/1.1 101 Switching", at=0.75)
    step = h.eof(at=1.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=1.5)]
    assert [(e.code, e.reason, str(e.error)) for e in step.events] == [
        (
            None,
            "connection closed while upgrading to websocket",
            "could not connect: connection closed while upgrading to websocket",
        )
    ]


def test_connect_timeout_during_upgrade_aborts():
    """docs/architecture.md §3 (connect timeout) and RFC 6455 §4.1: a server that accepts TCP but never
    answers the upgrade is dropped at connect_timeout; its late answer is ignored."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.fire(29.9) == Step([], [])
    step = h.fire(30.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=30.5)]
    (event,) = step.events
    assert (event.code, event.reason, type(event.error)) == (
        None,
        "connect timeout",
        ConnectTimeout,
    )
    assert h.feed(build_response(FIRST_KEY), tid=1, at=30.1) == Step([], [])


def test_data_before_tcp_open_and_for_unknown_transports_is_ignored():
    """docs/architecture.md §3 (generations): bytes, EOF, opens and failures naming a transport that does
    not exist, or a socket not reported open yet, change nothing."""
    h = Harness()
    h.connect(at=0.0)
    assert h.feed(b"HTTP/1.1 101 early\r\n\r\n", tid=1, at=0.1) == Step([], [])
    for tid in (7, 0, -1):
        h.ws.receive_data(tid, b"\x81\x02hi", now=0.2)
        h.ws.receive_data(tid, None, now=0.2)
        h.ws.handle_tcp_open(tid, now=0.2)
        h.ws.handle_tcp_failed(tid, "x", now=0.2)
        assert h.drain() == Step([], [])
    # The real transport still works afterwards.
    h.tcp_open(at=0.5)
    step = h.feed(h.upgrade() + jframe(hello()), at=1.0)
    assert RequestIdentify(shard_id=0) in step.actions
    # A second handle_tcp_open for a link past its TCP phase sends nothing.
    h.ws.handle_tcp_open(1, now=1.0)
    assert h.drain() == Step([], [])


def test_framing_error_sends_1002_and_closes():
    """RFC 6455 §7.1.7 (fail the connection: a close frame with the code, then close TCP),
    §5.2 (RSV bits): the core reconnects and resumes (docs/protocol.md §5)."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(raw_frame(TEXT, b"{}", rsv=0x40), at=2.0)
    body = close_payload(1002, "reserved bits set without a negotiated extension")
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, body, mask=mask), 1),
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.0),
    ]
    (event,) = step.events
    reason = "websocket protocol error: reserved bits set without a negotiated extension"
    assert describe(event) == describe(
        Disconnected(transport_id=1, code=None, reason=reason, initiated_locally=False,
                     error=TransportClosed(reason), will_resume=True, reconnect_at=2.0)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        (raw_frame(TEXT, b"x", mask=b"abcd"), 1002, "masked frame from the server"),
        (raw_frame(PING, b"", fin=False), 1002, "fragmented control frame"),
        (raw_frame(CONT, b"x"), 1002, "continuation frame with nothing to continue"),
        (raw_frame(0x3, b""), 1002, "unknown opcode 0x3"),
        (raw_frame(CLOSE, b"\x03"), 1002, "close frame with a one-byte body"),
        (raw_frame(CLOSE, b"\x03\xe8\xc3"), 1007, "close reason is not valid UTF-8"),
    ],
)
def test_each_framing_error_closes_with_its_code(frame, code, message):
    """RFC 6455 §7.1.7, §7.4.1: the close frame sent carries the reader's code and message."""
    h = Harness()
    h.start_session()
    step = h.feed(frame, at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(code, message))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {message}"]


def test_invalid_utf8_text_closes_with_1007():
    """RFC 6455 §8.1 (a text message that is not UTF-8 fails the connection) and §7.4.1
    (1007): close frame 1007, TCP closed, the core reconnects."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(TEXT, b'{"op": 11, "x": "\xff"}'), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(1007, "text message is not valid UTF-8"))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [
        (None, "websocket protocol error: text message is not valid UTF-8")
    ]
    assert step.of(OpenTcp) == [OpenTcp("resume.gateway.test", 443, True, 2)]


def test_oversize_message_closes_with_1009():
    """RFC 6455 §7.4.1 (1009) and docs/protocol.md §9 / docs/field-bugs.md #20: config.max_message_size bounds
    a websocket message too; an oversize one is refused from its header."""
    h = Harness(max_message_size=1000)
    h.start_session()
    step = h.feed(bytes([0x82, 127]) + (1 << 32).to_bytes(8, "big"), at=2.0)
    message = "message larger than the bound of 1000 bytes"
    assert h.frames(step, 1) == [(CLOSE, close_payload(1009, message))]
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {message}"]


def test_op7_reconnect_closes_with_4000_and_resumes_without_backoff():
    """docs/protocol.md §6 (op 7: close with a non-1000/1001 code, reconnect and resume at once) and
    RFC 6455 §5.5.1/§7.1.2: the client's close frame carries 4000 and the reason; the
    server's echo closes TCP and the resume connection opens in the same step."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.feed(jframe({"op": 7, "d": None}), at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x0f\xa0reconnect requested", mask=mask), 1),
        SetTimer(deadline=7.0),
    ]
    assert h.feed(raw_frame(PING, b"ignored"), at=2.2) == Step([], [])  # closing: no pong
    step = h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.5)
    assert step.actions == [
        CloseTcp(1, abort=False),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=32.5),
    ]
    assert [describe(e) for e in step.events] == [
        describe(
            Disconnected(transport_id=1, code=4000, reason="reconnect requested",
                         initiated_locally=True, error=None, will_resume=True, reconnect_at=2.5)
        )
    ]  # fmt: skip


def test_zombie_connection_closes_4000_then_aborts_at_close_timeout():
    """docs/protocol.md §3 (zombie: no ACK before the next beat; close with a code other than 1000/1001)
    and docs/field-bugs.md #9 (the close handshake has a deadline): the heartbeat and the close
    frame go out masked; a peer that never answers is aborted after close_timeout and the
    session resumes."""
    h = Harness()
    h.start_session()
    step = h.fire(21.625)
    assert h.sent_json(step) == [{"op": 1, "d": 1}]
    assert step.of(SetTimer) == [SetTimer(deadline=62.875)]
    step = h.fire(62.875)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0zombie")]
    assert step.of(SetTimer) == [SetTimer(deadline=67.875)]
    step = h.fire(67.875)
    assert step.actions == [
        CloseTcp(1, abort=True),
        OpenTcp("resume.gateway.test", 443, True, 2),
        SetTimer(deadline=97.875),
    ]
    (event,) = step.events
    assert (event.code, event.reason, event.initiated_locally, event.will_resume) == (
        4000,
        "zombie",
        True,
        True,
    )
    assert str(event.error) == "no heartbeat ACK within one interval"


def test_hello_timeout_closes_the_websocket():
    """docs/protocol.md §1.3/§3 (HELLO is the first message) and docs/architecture.md §3 (hello timeout): an upgraded
    socket without HELLO is closed with a close frame 4000 after hello_timeout (20 s)."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.feed(h.upgrade(), at=1.0).actions == [SetTimer(deadline=21.0)]
    step = h.fire(21.0)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0hello timeout")]
    step = h.eof(at=21.2)  # backoff was drawn at 21.0: uniform(0, 1) = 0.5
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=21.5)]
    assert [(e.code, e.reason, str(e.error)) for e in step.events] == [
        (4000, "hello timeout", "no HELLO after the transport opened")
    ]


def test_client_close_1000_handshake():
    """RFC 6455 §5.5.1, §7.1.2 (start the closing handshake, wait for the echo, then close
    TCP) and docs/protocol.md §7 (1000 ends the session): frames between our close and the echo are
    dropped, pings unanswered; the echo ends everything with Terminated."""
    h = Harness()
    h.start_session()
    mask = h.entropy.peek(4)
    step = h.close(1000, at=2.0)
    assert step.actions == [
        SendBytes(raw_frame(CLOSE, b"\x03\xe8", mask=mask), 1),
        SetTimer(deadline=7.0),  # close_timeout
    ]
    assert step.events == []
    assert h.feed(jframe(dispatch("LATE", 2)) + raw_frame(PING, b"p"), at=2.5) == Step([], [])
    step = h.feed(raw_frame(CLOSE, close_payload(1000)), at=3.0)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]
    assert h.ws.gateway.session_id is None
    assert h.feed(raw_frame(CLOSE, close_payload(1000)), tid=1, at=3.5) == Step([], [])


def test_client_close_4000_keeps_the_session_and_sends_the_reason():
    """docs/protocol.md §7 (client-initiated close rule: non-1000 keeps the session) and RFC 6455 §5.5.1
    (the reason follows the code); EOF instead of an echo also completes the close."""
    h = Harness()
    h.start_session()
    step = h.close(4000, "restart", at=2.0)
    assert h.frames(step) == [(CLOSE, b"\x0f\xa0restart")]
    step = h.eof(at=2.5)
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=4000, error=None))]
    assert h.ws.gateway.session_id == SESSION_ID


def test_close_timeout_aborts():
    """RFC 6455 §7.1.1 and docs/field-bugs.md #9 (a close handshake never holds the connection
    hostage): no echo within close_timeout (5 s) aborts the socket and terminates."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    assert h.fire(6.9) == Step([], [])
    step = h.fire(7.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


def test_close_during_upgrade_aborts():
    """RFC 6455 §7.1.1: before the websocket is open there is no close handshake; the socket
    is aborted and the connection terminates."""
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    step = h.close(1000, at=1.0)
    assert step.actions == [CloseTcp(1, abort=True), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


def test_framing_error_after_our_close_sends_no_second_close_frame():
    """RFC 6455 §5.5.1/§7.1.7: an endpoint sends one close frame; once ours is out, a framing
    error from the peer only closes TCP."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(TEXT, b"x", rsv=0x40), at=2.5)
    assert step.bytes_for(1) == b""
    assert CloseTcp(1, abort=False) in step.actions


def test_framing_error_after_our_close_still_terminates():
    """RFC 6455 §7.1.7 and docs/architecture.md §3: after our close frame a framing error from the peer
    ends the handshake at once (TCP closed) and the connection terminates as asked."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(TEXT, b"x", rsv=0x40), at=2.5)
    assert step.non_timer[-1] == CloseTcp(1, abort=False)
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


@pytest.mark.parametrize(
    "bad_url",
    [
        "http://x",
        "wss://:443",
        "ws://host:99999",
        "wss://host:port",
        "wss://[",
        "wss://gateway.discord.gg/ré",
        "wss://gateway.discord.gg/a b",
        "wss://gateway.discord.gg/\r\nX-Injected: 1",
    ],
)
def test_unusable_resume_url_is_ignored_and_main_url_used(bad_url):
    """docs/protocol.md §4.2/§5 and docs/field-bugs.md #3/#4: resume_gateway_url is the peer's data. One a
    websocket cannot be opened to (not ws(s), no host, a bad port, unparsable, or anything
    but printable ASCII, which would break or inject into the request line) is not kept:
    the event shows None and the resume goes to the main URL at once."""
    h = Harness()
    step = h.start_session(resume_url=bad_url)
    assert step.events[0].resume_url is None
    step = h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.0)
    assert step.of(OpenTcp) == [OpenTcp("gateway.discord.gg", 443, True, 2)]
    h.tcp_open(at=2.5)
    step = h.feed(h.upgrade() + jframe(hello()), at=3.0)
    assert h.sent_json(step) == [
        {"op": 6, "d": {"token": TOKEN, "session_id": SESSION_ID, "seq": 1}}
    ]


@pytest.mark.parametrize("url", ["ws://:80", "wss://:443/", "ws://host:0", "ws://host:99999"])
def test_unusable_main_url_is_refused_up_front(url):
    """docs/architecture.md §3 (misuse raises at once): a main URL the TCP layer cannot use (no host, port
    0 or out of range) is refused when the config is built, so ``connect`` can never fail
    synchronously and loop (with a zero backoff draw) or retry forever."""
    with pytest.raises(LocalProtocolError, match="URL with a host"):
        make_config(url=url)


def test_zlib_stream_binary_frames():
    """docs/protocol.md §10.3: with compress=zlib-stream every server message is a binary frame of one
    shared deflate stream ending in 00 00 ff ff; a gateway message may span several websocket
    messages, and a websocket message may be fragmented (RFC 6455 §5.4)."""
    h = Harness(compression=TransportCompression.ZLIB_STREAM)
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    assert h.requests[1][0] == "/?v=10&encoding=json&compress=zlib-stream"
    deflate = zlib.compressobj()

    def z(obj: Any) -> bytes:
        data = deflate.compress(json.dumps(obj).encode()) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data

    step = h.feed(h.upgrade() + raw_frame(BINARY, z(hello())), at=1.0)
    assert RequestIdentify(shard_id=0) in step.actions
    h.grant()
    packed = z(ready(1))
    step = h.feed(raw_frame(BINARY, packed[:7]), at=1.5)  # first half: no suffix yet
    assert step.events == []
    step = h.feed(raw_frame(BINARY, packed[7:]), at=1.6)
    assert [type(e) for e in step.events] == [SessionStarted]
    packed = z(dispatch("MESSAGE_CREATE", 2, {"content": "hi" * 100}))
    stream = (
        raw_frame(BINARY, packed[:5], fin=False)
        + raw_frame(PING, b"z")
        + raw_frame(CONT, packed[5:20], fin=False)
        + raw_frame(CONT, packed[20:])
    )
    step = h.feed(stream, at=2.0)
    assert h.frames(step) == [(PONG, b"z")]
    assert [describe(e) for e in step.events] == [
        describe(DispatchReceived(name="MESSAGE_CREATE", sequence=2, data={"content": "hi" * 100}))
    ]


def test_token_never_appears_in_action_reprs():
    """Credential hygiene (docs/protocol.md §4.1: IDENTIFY and RESUME carry the token): SendBytes shows
    its size and transport only; no action of a whole session shows the token, though the
    frames on the wire do carry it."""
    h = Harness()
    h.start_session()
    h.feed(raw_frame(CLOSE, close_payload(4000)), at=2.0)
    h.tcp_open(at=2.5)
    h.feed(h.upgrade() + jframe(hello()), at=3.0)
    carried = [a for a in h.actions if isinstance(a, SendBytes)]
    decoded = b"".join(p for a in carried if a.data[:3] != b"GET" for _, p in client_frames(a.data))
    assert decoded.count(TOKEN.encode()) == 2  # IDENTIFY, RESUME
    for action in h.actions:
        assert TOKEN not in repr(action)
    for action in carried:
        assert (
            repr(action)
            == f"SendBytes(<{len(action.data)} bytes>, transport_id={action.transport_id})"
        )
    assert TOKEN not in repr(h.ws.gateway)
    assert TOKEN not in repr(h.ws.gateway.config)


def test_entropy_is_used_only_for_keys_and_masks():
    """RFC 6455 §4.1 (16-byte nonce) and §5.3 (a fresh 4-byte key per frame): the injected
    entropy is called with 16 for each handshake and 4 for each frame, and nothing else, so
    a run replays exactly."""
    h = Harness()
    h.start_session()  # key, IDENTIFY
    h.feed(raw_frame(PING, b""), at=2.0)  # pong
    h.close(4000, at=3.0)  # close frame
    assert h.entropy.calls == [16, 4, 4, 4]


# -- a whole session, split anywhere -------------------------------------------------------


def _session_stream(key: str, sizes: list[int], fragment: list[bool]) -> bytes:
    stream = build_response(key) + jframe(hello()) + jframe(ready(1))
    for i, size in enumerate(sizes):
        body = json.dumps(dispatch(f"EVENT_{i}", i + 2, {"pad": "p" * size})).encode()
        if fragment[i % len(fragment)] and len(body) > 10:
            stream += raw_frame(TEXT, body[:10], fin=False) + raw_frame(PING, str(i).encode())
            stream += raw_frame(CONT, body[10:])
        else:
            stream += raw_frame(TEXT, body)
    return stream + raw_frame(CLOSE, close_payload(4000, "go away"))


def _run_session(chunks: list[bytes]) -> tuple[Any, ...]:
    h = Harness()
    h.connect(at=0.0)
    h.tcp_open(at=0.5)
    for chunk in chunks:
        h.feed(chunk, tid=1, at=1.0)
    # TCP work and the core's requests are compared as two sequences: in one read the core's
    # RequestIdentify (emitted at HELLO) is pumped after the close echo's CloseTcp, in many
    # reads before it; both orders are valid (the core ignores the late grant).
    tcp = [a for a in h.actions if isinstance(a, OpenTcp | CloseTcp)]
    requests = [a for a in h.actions if isinstance(a, RequestIdentify)]
    sent = b"".join(a.data for a in h.actions if isinstance(a, SendBytes))
    return [describe(e) for e in h.events], tcp, requests, sent, h.timer


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    fragment=st.lists(st.booleans(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=25),
)
def test_whole_session_split_anywhere(sizes, fragment, cuts):
    """RFC 6455 §5.2/§5.4 and docs/architecture.md §6 (split invariance): the server's bytes of a whole
    session (101 head, HELLO, READY, N dispatches some fragmented around pings, close 4000)
    cut at any points, the head included, give exactly the events, TCP actions, bytes
    written and final timer of a single read."""
    stream = _session_stream(FIRST_KEY, sizes, fragment)
    whole = _run_session([stream])
    events = whole[0]
    assert [e.get("name") for e in events if "name" in e] == [
        f"EVENT_{i}" for i in range(len(sizes))
    ]
    assert events[-1]["code"] == 4000
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert _run_session(chunks) == whole


def test_whole_session_in_one_byte_reads():
    """RFC 6455 §5.2 and docs/architecture.md §6: the extreme split, every byte its own read."""
    stream = _session_stream(FIRST_KEY, [0, 5, 200, 130], [True, False])
    whole = _run_session([stream])
    assert _run_session([stream[i : i + 1] for i in range(len(stream))]) == whole
    assert len(whole[0]) == 1 + 4 + 1  # SessionStarted, 4 dispatches, Disconnected


# == Strictness (the Autobahn client suite's cases, built here) ===========

#: Autobahn's small text message ("Hello, world!") and its parts for the 6.4.x cases: PART1
#: and PART3 are valid UTF-8 on their own, PART2 makes the sequence invalid.
HELLO_TEXT = b"Hello, world!"
KOSME = "κόσμε".encode()
UTF8_CASE_PARTS = {
    "6.4.1": (KOSME, b"\xf4\x90\x80\x80", b"edited"),  # U+110000: beyond the code space
    "6.4.2": (KOSME + b"\xf4", b"\x90", b"\x80\x80edited"),  # F4 90 is already invalid
}


def _good_then_bad_cases() -> list[Any]:
    """Autobahn 3.2-3.4, 4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15: a valid message, then a bad frame,
    then more, all in one read; ``(good frames, bad frame + the rest, message delivered)``."""
    good = raw_frame(TEXT, HELLO_TEXT)
    ping = raw_frame(PING, b"")
    cases = [
        pytest.param(good, raw_frame(TEXT, HELLO_TEXT, rsv=rsv << 4) + ping, HELLO_TEXT,
                     "reserved bits set without a negotiated extension", id=case)
        for case, rsv in (("3.2", 2), ("3.3", 3), ("3.4", 4))
    ] + [
        pytest.param(good, raw_frame(op, body) + ping, HELLO_TEXT, f"unknown opcode {op:#x}",
                     id=case)
        for case, op, body in (
            ("4.1.3", 5, b""), ("4.1.4", 6, b"reserved"), ("4.1.5", 7, b"reserved"),
            ("4.2.3", 0xD, b""), ("4.2.4", 0xE, b"reserved"),
        )
    ]  # fmt: skip
    cases.append(
        pytest.param(
            raw_frame(TEXT, b"fragment1", fin=False) + raw_frame(CONT, b"fragment2"),
            raw_frame(CONT, b"fragment3", fin=False) + raw_frame(TEXT, b"fragment4"),
            b"fragment1fragment2",
            "continuation frame with nothing to continue",
            id="5.15",
        )
    )
    return cases


@pytest.mark.parametrize(("good", "bad", "message", "error"), _good_then_bad_cases())
def test_frames_before_an_error_ride_on_it(good, bad, message, error):
    """RFC 6455 §7.1.7 (fail the connection at the error, not before it), Autobahn 3.2-3.4,
    4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15: what the read completed before the bad frame is handed
    over on the error (``frames``), nothing after it; read byte by byte, the message comes
    out of its own read and the error still comes with the bad frame."""
    reader = FrameReader(max_message_size=1000)
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(good + bad)
    assert (info.value.code, str(info.value)) == (1002, error)
    assert info.value.frames == [(TEXT, message)]
    reader = FrameReader(max_message_size=1000)
    stream = good + bad
    out: list[tuple[int, bytes]] = []
    fed = 0

    def byte_by_byte() -> None:
        nonlocal fed, out
        for i in range(len(stream)):
            fed = i + 1
            out += reader.feed(stream[i : i + 1])

    with pytest.raises(WebSocketProtocolError) as info:
        byte_by_byte()
    assert out == [(TEXT, message)]
    assert info.value.frames == []
    assert fed < len(stream)  # refused at the bad frame, not at the end of the stream


def test_error_frames_are_empty_for_errors_raised_elsewhere():
    """A WebSocketProtocolError not raised by ``feed`` (a close body, RFC 6455 §5.5.1) has no
    frames, and an error at the very first frame has none either."""
    with pytest.raises(WebSocketProtocolError) as info:
        parse_close_payload(b"\x03")
    assert info.value.frames == []
    with pytest.raises(WebSocketProtocolError) as info:
        FrameReader(max_message_size=100).feed(raw_frame(TEXT, b"x", rsv=0x40) + raw_frame(PING))
    assert info.value.frames == []


def test_error_frames_keep_control_frames_and_a_split_frame_completed_first():
    """RFC 6455 §5.4/§7.1.7: a ping, a close frame and a frame whose start came in an
    earlier read, all completed in the read that then fails, are all on the error, in order."""
    reader = FrameReader(max_message_size=1000)
    split = raw_frame(BINARY, bytes(300))
    assert reader.feed(split[:100]) == []
    stream = split[100:] + raw_frame(PING, b"p") + raw_frame(CLOSE, b"\x03\xe8") + bytes([0x83, 0])
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(stream)
    assert info.value.frames == [(BINARY, bytes(300)), (PING, b"p"), (CLOSE, b"\x03\xe8")]


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fails_at_the_fragment_that_makes_it_invalid(case):
    """RFC 6455 §8.1 (fail at once on invalid UTF-8) and §7.4.1 (1007), Autobahn 6.4.1 and
    6.4.2: a text message in three fragments, each its own read; the first is accepted, the
    second fails with 1007 before the third arrives."""
    part1, part2, part3 = UTF8_CASE_PARTS[case]
    assert _valid_prefix(part1)  # the case is about the second part
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(raw_frame(TEXT, part1, fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(raw_frame(CONT, part2, fin=False))
    assert (info.value.code, str(info.value)) == (1007, "text message is not valid UTF-8")
    with pytest.raises(UnicodeDecodeError):
        (part1 + part2 + part3).decode()


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fails_at_the_read_that_makes_a_split_frame_invalid(case):
    """RFC 6455 §8.1 and §7.4.1, Autobahn 6.4.3 and 6.4.4: one unfragmented text frame in
    three reads; the read carrying PART2 fails with 1007, before the frame is complete."""
    part1, part2, part3 = UTF8_CASE_PARTS[case]
    frame = raw_frame(TEXT, part1 + part2 + part3)
    head = len(frame) - len(part1 + part2 + part3)
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(frame[: head + len(part1)]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(part2)
    assert info.value.code == 1007


def test_valid_utf8_split_anywhere_passes_and_a_truncated_end_fails():
    """RFC 6455 §5.4/§8.1: a character may be split across fragments and reads (Autobahn
    6.2.x): no error until the message ends; a message ending inside a character is 1007,
    at the frame that ends it, also for a single frame that came in several reads."""
    text = "κόσμε 𝄞 ∑ ok".encode()
    for cut in range(1, len(text)):
        reader = FrameReader(max_message_size=1000)
        frame = raw_frame(TEXT, text)
        assert reader.feed(frame[: 2 + cut]) == []
        assert reader.feed(frame[2 + cut :]) == [(TEXT, text)]
        reader = FrameReader(max_message_size=1000)
        assert reader.feed(raw_frame(TEXT, text[:cut], fin=False)) == []
        assert reader.feed(raw_frame(CONT, text[cut:])) == [(TEXT, text)]
    reader = FrameReader(max_message_size=1000)
    assert reader.feed(raw_frame(TEXT, b"ok\xe2\x82", fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(raw_frame(CONT, b""))
    assert info.value.code == 1007
    reader = FrameReader(max_message_size=1000)
    frame = raw_frame(TEXT, b"ok\xe2\x82")
    assert reader.feed(frame[:4]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        reader.feed(frame[4:])
    assert info.value.code == 1007


def test_binary_and_masked_split_frames_are_not_checked_as_text():
    """RFC 6455 §5.6: binary data is arbitrary; a masked (server-role) text frame split over
    reads is checked when it completes, after unmasking."""
    reader = FrameReader(max_message_size=1000)
    frame = raw_frame(BINARY, b"\xff\xfe" * 20, fin=False)
    assert reader.feed(frame[:5]) == []
    assert reader.feed(frame[5:] + raw_frame(CONT, b"\xc0")) == [
        (BINARY, b"\xff\xfe" * 20 + b"\xc0")
    ]
    server = FrameReader(max_message_size=1000, expect_masked=True)
    frame = raw_frame(TEXT, b"ok\xff", fin=False, mask=b"abcd")
    assert server.feed(frame[:8]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        server.feed(frame[8:])
    assert info.value.code == 1007


def _valid_prefix(data: bytes) -> bool:
    """Whether ``data`` can still become valid UTF-8: the one-shot decoder fails, if at all,
    only for want of more bytes at the end."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data" and exc.end == len(data)
    return True


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
    ),
    fragment_cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
    read_cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=6),
)
def test_utf8_error_comes_with_the_first_read_that_makes_the_text_invalid(
    text, fragment_cuts, read_cuts
):
    """RFC 6455 §8.1, §5.4: a text message cut into fragments, the stream cut into reads:
    the reader fails with 1007 at exactly the read after which the text bytes received so
    far can no longer become valid UTF-8 (or, if the end is merely truncated, at the read
    that ends the message), and otherwise returns the message whole."""
    cuts = sorted({min(c, len(text)) for c in fragment_cuts})
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    stream = b""
    owner: list[int] = []  # for each stream byte: how many text bytes are in by its end
    got = 0
    for index, piece in enumerate(pieces):
        frame = raw_frame(TEXT if index == 0 else CONT, piece, fin=index == len(pieces) - 1)
        head = len(frame) - len(piece)
        owner += [got] * head
        owner += range(got + 1, got + len(piece) + 1)
        got += len(piece)
        stream += frame
    points = sorted({min(c, len(stream)) for c in read_cuts})
    reads = [(a, b) for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    # An unfragmented frame whose payload comes in the read that completes its header is
    # handed over unchecked: the caller decodes it whole (Harness tests: 1007 there).
    read_of = [n for n, (a, b) in enumerate(reads) for _ in range(a, b)]
    head = len(stream) - len(text)
    if len(pieces) == 1 and read_of[head - 1] == read_of[-1]:
        assert FrameReader(max_message_size=1000).feed(stream) == [(TEXT, text)]
        return
    reader = FrameReader(max_message_size=1000)
    out: list[tuple[int, bytes]] = []
    failed_at = None
    codes = []
    for number, (a, b) in enumerate(reads):
        try:
            out += reader.feed(stream[a:b])
        except WebSocketProtocolError as exc:
            codes.append(exc.code)
            failed_at = number
            break
    assert codes in ([], [1007])
    try:
        text.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    if valid:
        assert failed_at is None
        assert out == [(TEXT, text)]
        return
    assert failed_at is not None
    assert out == []
    end = reads[failed_at][1]
    seen = owner[end - 1] if end else 0
    if _valid_prefix(text):
        # Only truncated: the error comes with the end of the message.
        assert end == len(stream)
    else:
        assert not _valid_prefix(text[:seen])
        before = owner[reads[failed_at][0] - 1] if reads[failed_at][0] else 0
        assert _valid_prefix(text[:before])


@pytest.mark.parametrize(("good", "bad", "message", "error"), _good_then_bad_cases())
def test_message_before_a_bad_frame_is_delivered_then_the_connection_fails(
    good, bad, message, error
):
    """RFC 6455 §7.1.7 and Autobahn 3.2-3.4, 4.1.3-4.1.5, 4.2.3, 4.2.4, 5.15 over the whole
    layer: the gateway message before the bad frame reaches the core (docs/protocol.md §10.1: a
    dispatch in a text frame), then the connection fails with 1002; the ping after the bad
    frame is not answered."""
    h = Harness()
    h.start_session()
    body = json.dumps(dispatch("BEFORE", 2)).encode()
    # The same frame layout as the case, the gateway payload in place of its text.
    if message == HELLO_TEXT:
        good = raw_frame(TEXT, body)
        bad = bad.replace(HELLO_TEXT, body)
    else:
        good = raw_frame(TEXT, body[:7], fin=False) + raw_frame(CONT, body[7:])
    step = h.feed(good + bad, at=2.0)
    assert [(e.name, e.sequence) for e in step.of(DispatchReceived)] == [("BEFORE", 2)]
    assert h.frames(step, 1) == [(CLOSE, close_payload(1002, error))]
    assert step.actions[1] == CloseTcp(1, abort=False)
    assert [e.reason for e in step.of(Disconnected)] == [f"websocket protocol error: {error}"]
    assert h.ws.gateway.sequence == 2


def test_ping_and_reply_before_a_bad_frame_go_out_before_the_close_frame():
    """RFC 6455 §5.5.2, §7.1.7 and docs/protocol.md §3 (op 1: heartbeat at once): a heartbeat request
    and a ping before a bad frame in one read are answered, in order, then the 1002 close."""
    h = Harness()
    h.start_session()
    stream = jframe({"op": 1, "d": None}) + raw_frame(PING, b"p") + bytes([0x83, 0])
    step = h.feed(stream, at=2.0)
    frames = h.frames(step, 1)
    assert [op for op, _ in frames] == [TEXT, PONG, CLOSE]
    assert json.loads(frames[0][1]) == {"op": 1, "d": 1}
    assert frames[1:] == [(PONG, b"p"), (CLOSE, close_payload(1002, "unknown opcode 0x3"))]


def test_close_frame_before_a_bad_frame_is_honoured():
    """RFC 6455 §5.5.1/§7.1.7: a close frame completed before a bad frame in the same read
    is echoed with its code and reported (docs/protocol.md §7: 4000 resumes); the bad frame after it is
    never looked at (no 1002)."""
    h = Harness()
    h.start_session()
    step = h.feed(raw_frame(CLOSE, close_payload(4000, "bye")) + bytes([0x83, 0]), at=2.0)
    assert h.frames(step, 1) == [(CLOSE, close_payload(4000))]
    assert [(e.code, e.reason) for e in step.of(Disconnected)] == [(4000, "bye")]


def test_close_frame_before_a_bad_frame_after_our_close_completes_the_handshake():
    """RFC 6455 §5.5.1: after our close frame, the peer's close frame followed by garbage in
    the same read still completes the closing handshake (docs/protocol.md §7: 1000 terminates)."""
    h = Harness()
    h.start_session()
    h.close(1000, at=2.0)
    step = h.feed(raw_frame(CLOSE, close_payload(1000)) + bytes([0x83, 0]), at=2.5)
    assert step.bytes_for(1) == b""
    assert step.actions == [CloseTcp(1, abort=False), SetTimer(deadline=None)]
    assert [describe(e) for e in step.events] == [describe(Terminated(code=1000, error=None))]


@pytest.mark.parametrize("case", sorted(UTF8_CASE_PARTS))
def test_invalid_utf8_fragment_closes_with_1007_at_once(case):
    """RFC 6455 §8.1, §7.4.1, Autobahn 6.4.1-6.4.4 over the whole layer: the 1007 close goes
    out on the read that makes the text invalid, fragmented or split over reads."""
    part1, part2, _ = UTF8_CASE_PARTS[case]
    close = (CLOSE, close_payload(1007, "text message is not valid UTF-8"))
    h = Harness()
    h.start_session()
    assert h.feed(raw_frame(TEXT, part1, fin=False), at=2.0) == Step([], [])
    step = h.feed(raw_frame(CONT, part2, fin=False), at=3.0)
    assert h.frames(step, 1) == [close]
    assert CloseTcp(1, abort=False) in step.actions
    h = Harness()
    h.start_session()
    frame = raw_frame(TEXT, part1 + part2 + b"edited")
    assert h.feed(frame[: 2 + len(part1)], at=2.0) == Step([], [])
    step = h.feed(part2, at=3.0)
    assert h.frames(step, 1) == [close]


def test_replies_before_a_close_frame_go_out_before_its_echo():
    """RFC 6455 §5.5.1 (answer the close frame last: nothing may follow it) and docs/protocol.md §3
    (op 1 is answered at once): a heartbeat request, a ping and a close frame in one read
    give the heartbeat, the pong and the close echo, in that order."""
    h = Harness()
    h.start_session()
    stream = (
        jframe({"op": 1, "d": None})
        + raw_frame(PING, b"p")
        + jframe({"op": 1, "d": None})
        + raw_frame(CLOSE, close_payload(4000))
    )
    step = h.feed(stream, at=2.0)
    frames = h.frames(step, 1)
    assert [op for op, _ in frames] == [TEXT, PONG, TEXT, CLOSE]
    assert [json.loads(p) for op, p in frames if op == TEXT] == [{"op": 1, "d": 1}] * 2
    assert frames[3] == (CLOSE, close_payload(4000))
    first_close = next(i for i, a in enumerate(step.actions) if isinstance(a, CloseTcp))
    assert all(not isinstance(a, SendBytes) for a in step.actions[first_close:])


def test_core_close_in_answer_to_a_message_stops_replies_in_the_same_read():
    """RFC 6455 §5.5.1 (after our close frame only the peer's close frame matters) and docs/protocol.md
    §6 (op 7: close 4000 and resume): a ping after an op 7 in the same read is not answered
    after our close frame; the peer's close frame that follows completes the close."""
    h = Harness()
    h.start_session()
    stream = jframe({"op": 7, "d": None}) + raw_frame(PING, b"late") + raw_frame(CLOSE)
    step = h.feed(stream, at=2.0)
    assert [op for op, _ in h.frames(step, 1)] == [CLOSE]
    assert CloseTcp(1, abort=False) in step.actions
    assert step.of(OpenTcp) == [OpenTcp("resume.gateway.test", 443, True, 2)]


# -- back-pressure: set_writing_paused, set_reading_paused, handle_tcp_failed(error=) ------


def test_ping_flood_while_writes_are_paused_gets_one_pong_on_resume():
    """RFC 6455 §5.5.3 (a pong may answer only the most recent ping):
    10,000 pings while the driver's write buffer is over its high-water mark produce no
    pong; resuming sends exactly one, with the latest ping's payload."""
    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    assert h.drain() == Step([], [])
    sent: list[Any] = []
    for batch in range(100):
        stream = b"".join(raw_frame(PING, b"%d" % (batch * 100 + i)) for i in range(100))
        sent += h.feed(stream, at=2.0).of(SendBytes)
    assert sent == []
    mask = h.entropy.peek(4)
    h.ws.set_writing_paused(1, False, now=3.0)
    step = h.drain()
    assert step == Step([SendBytes(raw_frame(PONG, b"9999", mask=mask), 1)], [])
    # Nothing left over: a second resume, or a pause and resume with no ping, sends nothing.
    h.ws.set_writing_paused(1, False, now=3.0)
    h.ws.set_writing_paused(1, True, now=3.0)
    h.ws.set_writing_paused(1, False, now=3.0)
    assert h.drain() == Step([], [])
    # Unpaused, pings are answered one by one again.
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING) * 2, at=4.0))] == [PONG, PONG]


def test_gateway_payloads_and_close_frames_go_out_while_writes_are_paused():
    """docs/protocol.md §3/§7: while writes are paused, heartbeat replies, the
    application's commands and the close frame still go out (the core's send limiter bounds
    them); the pending pong is dropped once our close frame is out (RFC 6455 §5.5.1)."""
    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    step = h.feed(raw_frame(PING, b"a") + jframe({"op": 1, "d": None}), at=2.0)
    assert [json.loads(p) for _, p in h.frames(step)] == [{"op": 1, "d": 1}]
    step = h.send(RawCommand(op=3, data={"status": "idle"}), at=2.0)
    assert [json.loads(p)["op"] for _, p in h.frames(step)] == [3]
    step = h.close(4000, at=2.0)
    assert h.frames(step) == [(CLOSE, close_payload(4000))]
    h.ws.set_writing_paused(1, False, now=3.0)
    assert h.drain() == Step([], [])


def test_set_writing_paused_ignores_unknown_transports_and_refuses_non_bools():
    """docs/architecture.md §3: an unknown, old or non-int transport id is ignored; a ``paused`` that is
    not a bool is the caller's misuse: LocalProtocolError, and nothing changes."""
    h = Harness()
    h.start_session()
    for tid in (0, 2, 99, "1", None, [1]):
        h.ws.set_writing_paused(tid, True, now=2.0)  # type: ignore[arg-type]
    for paused in (1, 0, None, "yes"):
        with pytest.raises(LocalProtocolError):
            h.ws.set_writing_paused(1, paused, now=2.0)  # type: ignore[arg-type]
    assert h.drain() == Step([], [])
    # Still unpaused: a ping is answered at once.
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING), at=2.0))] == [PONG]


def test_ping_flood_while_writes_are_paused_holds_no_memory_per_ping():
    """With writes paused, a ping flood grows nothing in the ws layer (one
    pending payload of at most 125 bytes) nor in what it hands the driver."""
    import tracemalloc

    h = Harness()
    h.start_session()
    h.ws.set_writing_paused(1, True, now=2.0)
    stream = b"".join(raw_frame(PING, bytes([i % 256]) * 125) for i in range(200))
    h.feed(stream, at=2.0)  # warm up
    tracemalloc.start()
    try:
        h.ws.receive_data(1, stream, now=2.0)
        assert h.ws.next_actions() == []
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):  # 20,000 more pings
            h.ws.receive_data(1, stream, now=2.0)
            assert h.ws.next_actions() == []
            assert h.ws.next_events() == []
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096


def test_set_reading_paused_is_forwarded_to_the_core():
    """Back-pressure: the driver's read pause reaches the core, which
    validates it (LocalProtocolError for a non-bool)."""
    h = Harness()
    h.start_session()
    h.ws.set_reading_paused(True, now=2.0)
    assert h.ws.gateway.reading_paused is True
    h.ws.set_reading_paused(False, now=3.0)
    assert h.ws.gateway.reading_paused is False
    with pytest.raises(LocalProtocolError):
        h.ws.set_reading_paused(1, now=3.0)  # type: ignore[arg-type]
    assert h.ws.gateway.reading_paused is False


def test_handle_tcp_failed_forwards_the_drivers_error():
    """A driver that aborted a peer that stopped reading reports a
    WriteBufferOverflow, and that is the Disconnected's error; a non-GatewayError error is
    the caller's misuse and changes nothing."""
    from gateway_proto import WriteBufferOverflow

    h = Harness()
    h.start_session()
    with pytest.raises(LocalProtocolError):
        h.ws.handle_tcp_failed(1, "x", now=2.0, error=ValueError("no"))  # type: ignore[arg-type]
    assert h.drain() == Step([], [])
    assert [op for op, _ in h.frames(h.feed(raw_frame(PING), at=2.0))] == [PONG]  # still up
    error = WriteBufferOverflow(5 << 20, 4 << 20)
    step = h.tcp_failed_with(error, at=3.0)
    assert step.actions[0] == CloseTcp(1, abort=True)
    (event,) = step.of(Disconnected)
    assert event.error is error
    assert event.will_resume


def test_an_idle_link_keeps_no_upgrade_state_and_shards_share_their_urls():
    """Memory per idle shard (bench/bench_memory.py): once upgraded, a link drops the host,
    target and key only the upgrade needed, and its frame reader holds no empty buffers after
    a frame split over reads and a fragmented message; shards share their main and resume
    URL strings (interned) rather than holding a copy each."""
    harnesses = [Harness(), Harness()]
    for h in harnesses:
        h.start_session()
        body = json.dumps(dispatch("GUILD_CREATE", 2, {"id": "1", "name": "x" * 300})).encode()
        split = jframe(dispatch("X", 3))
        stream = raw_frame(TEXT, body[:100], fin=False) + raw_frame(CONT, body[100:])
        events = h.feed(stream + split[:10], at=2.0).events + h.feed(split[10:], at=2.1).events
        assert [(e.name, e.sequence) for e in events] == [("GUILD_CREATE", 2), ("X", 3)]
        link = h.ws._links[1]
        assert (link.host, link.target, link.key, link.head) == ("", "", "", b"")
        assert link.reader._parts is None and link.reader._fragments is None
        assert link.reader.buffered == 0
    first, second = (h.ws.gateway for h in harnesses)
    assert first.resume_url == second.resume_url == RESUME_BASE
    assert first.resume_url is second.resume_url
    assert first._main_url is second._main_url
