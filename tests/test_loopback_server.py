"""LoopbackGateway: the FakeGateway over real websocket sockets on loopback.

Two tiny clients live here: ``Client`` drives a real :class:`WebSocketConnection` over a
blocking socket (the library's own client, end to end), and ``RawWs`` speaks frames by hand
so a test can see exact bytes, close codes, EOF and resets. Every wait is bounded by a socket
timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import math
import os
import socket
import ssl
import time
from collections import deque
from typing import Any

import pytest
import trustme
from conftest import TOKEN, make_config

from gateway_proto import (
    Disconnected,
    DispatchReceived,
    Encoding,
    GatewayConnection,
    RequestIdentify,
    SessionStarted,
    SetTimer,
    Terminated,
    TransportCompression,
)
from gateway_proto._codecs import make_codec
from gateway_proto.testing import FakeGateway, LoopbackGateway, Violation
from gateway_proto.testing import _fake_gateway as fake_gateway_module
from gateway_proto.ws import CloseTcp, OpenTcp, SendBytes, WebSocketConnection, WsOpcode
from gateway_proto.ws._frames import FrameReader, close_payload, encode_frame, parse_close_payload
from gateway_proto.ws._handshake import build_request, build_response, check_response, split_head

HELLO = {"op": 10, "d": {"heartbeat_interval": 41250}}
HELLO_TEXT = json.dumps(HELLO, separators=(",", ":")).encode()
WS_TARGET = "/?v=10&encoding=json"
TIMEOUT = 5.0


#: Client sockets of the running test, closed after it.
OPEN_SOCKETS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_client_sockets():
    yield
    while OPEN_SOCKETS:
        OPEN_SOCKETS.pop().close()


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    OPEN_SOCKETS.append(sock)
    return sock


def server_for(**options: Any) -> LoopbackGateway:
    return LoopbackGateway(FakeGateway(token=TOKEN), **options)


class Client:
    """The library's WebSocketConnection, driven over a blocking socket on this thread."""

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None, **config: Any):
        self.ws = WebSocketConnection(GatewayConnection(make_config(url=url, **config)))
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.tid = 0
        self.timer: float | None = None
        self.events: list[Any] = []
        self.seen = 0
        self.ws.connect(now=time.monotonic())

    def _perform(self) -> None:
        actions = self.ws.next_actions()
        while actions:
            for action in actions:
                self._do(action)
            actions = self.ws.next_actions()
        self.events.extend(self.ws.next_events())

    def _do(self, action: Any) -> None:
        now = time.monotonic()
        if isinstance(action, OpenTcp):
            try:
                sock = connect(action.port, action.host)
                if action.tls:
                    assert self.ssl_context is not None
                    # A reset under TLS reads as a ragged EOF; make it an error, as RST is.
                    sock = self.ssl_context.wrap_socket(
                        sock, server_hostname=action.host, suppress_ragged_eofs=False
                    )
                    OPEN_SOCKETS.append(sock)
            except OSError as exc:
                self.ws.handle_tcp_failed(action.transport_id, repr(exc), now=now)
                return
            self.sock, self.tid = sock, action.transport_id
            self.ws.handle_tcp_open(action.transport_id, now=now)
        elif isinstance(action, SendBytes):
            assert self.sock is not None
            self.sock.sendall(action.data)
        elif isinstance(action, CloseTcp):
            if self.sock is not None:
                self.sock.close()
                self.sock = None
        elif isinstance(action, SetTimer):
            self.timer = action.deadline
        else:
            assert isinstance(action, RequestIdentify)  # no scheduler here: identify at once
            self.ws.grant_identify(now=now)

    def run_until(self, kind: type, timeout: float = TIMEOUT) -> Any:
        """Drive I/O until an event of ``kind`` newer than the last one returned arrives."""
        end = time.monotonic() + timeout
        while True:
            self._perform()
            for index in range(self.seen, len(self.events)):
                if isinstance(self.events[index], kind):
                    self.seen = index + 1
                    return self.events[index]
            now = time.monotonic()
            assert now < end, f"no {kind.__name__} within {timeout} s: {self.events}"
            if self.timer is not None and self.timer <= now:
                self.ws.handle_timer(now=now)
                continue
            assert self.sock is not None, f"waiting for {kind.__name__} without a socket"
            self.sock.settimeout(min(end, self.timer or end) - now)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                self.ws.handle_tcp_failed(self.tid, repr(exc), now=time.monotonic())
                continue
            self.ws.receive_data(self.tid, data or None, now=time.monotonic())


class RawWs:
    """A hand-driven websocket client: exact frames, close codes, EOF and resets."""

    def __init__(self, port: int, target: str = WS_TARGET) -> None:
        self.sock = connect(port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(build_request(f"127.0.0.1:{port}", target, key, "raw-test"))
        head = b""
        while (parsed := split_head(head)) is None:
            head += self.recv_bytes()
        start_line, headers, rest = parsed
        check_response(start_line, headers, key)
        self.reader = FrameReader(max_message_size=1 << 26)
        self.frames = deque(self.reader.feed(rest))

    def recv_bytes(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        return data

    def send(self, opcode: int, payload: bytes = b"") -> None:
        self.sock.sendall(encode_frame(opcode, payload, os.urandom(4)))

    def send_json(self, payload: Any) -> None:
        self.send(WsOpcode.TEXT, json.dumps(payload).encode())

    def recv_frame(self) -> tuple[int, bytes]:
        while not self.frames:
            self.frames.extend(self.reader.feed(self.recv_bytes()))
        return self.frames.popleft()

    def recv_json(self) -> Any:
        opcode, payload = self.recv_frame()
        assert opcode == WsOpcode.TEXT
        return json.loads(payload)

    def read_until_reset(self) -> bytes:
        """Every byte that arrives before the connection is reset (RST, not FIN)."""
        received = b""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return received
            assert data, f"clean EOF instead of a reset after {received!r}"
            received += data

    def assert_eof(self) -> None:
        """The server closed TCP cleanly (FIN, not RST) and sent nothing more."""
        assert not self.frames
        assert self.sock.recv(1 << 16) == b""


def http_get(
    server: LoopbackGateway,
    path: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, str | None]:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    else:
        conn = http.client.HTTPSConnection(
            "localhost", server.port, timeout=TIMEOUT, context=context
        )
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Connection")
    finally:
        conn.close()


# -- lifecycle and the gateway session ---------------------------------------------------


def test_upgrade_then_hello_arrives():
    """RFC 6455 §4.2.2 (101 answer), docs/protocol.md §1.3 step 2: HELLO is the first message."""
    with server_for() as server:
        raw = RawWs(server.port)
        assert raw.recv_frame() == (WsOpcode.TEXT, HELLO_TEXT)
        assert server.connections_accepted == 1
        assert server.call(lambda gw: gw.open_transports) == [1]
        assert server.url == f"ws://127.0.0.1:{server.port}"


def test_identify_gets_ready_and_a_dispatch_arrives():
    """Spec §4 (IDENTIFY → READY) and §2 (dispatches with sequence numbers), end to end."""
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        started = client.run_until(SessionStarted)
        assert started.session_id == "session-1"
        seq = server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "hi"}))
        assert seq == 2
        event = client.run_until(DispatchReceived)
        assert (event.name, event.sequence, event.data) == ("MESSAGE_CREATE", 2, {"content": "hi"})
        assert server.call(lambda gw: list(gw.violations)) == []


def test_zlib_stream_is_sent_as_binary_frames():
    """Spec §10.3: with compress=zlib-stream every message is a BINARY frame of the stream."""
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.ZLIB_STREAM)
        assert client.run_until(SessionStarted).session_id == "session-1"
        raw = RawWs(server.port, WS_TARGET + "&compress=zlib-stream")
        opcode, payload = raw.recv_frame()
        assert opcode == WsOpcode.BINARY
        assert payload.endswith(b"\x00\x00\xff\xff")


def test_a_five_megabyte_dispatch_arrives_whole():
    """Spec §9: inbound messages have no documented cap (READY reaches several MB)."""
    data = {"content": "x" * 5_000_000}
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        client.run_until(SessionStarted)
        server.call(lambda gw: gw.dispatch("BIG", data))
        event = client.run_until(DispatchReceived)
        assert (event.name, event.sequence) == ("BIG", 2)
        assert event.data == data


def test_call_returns_the_result_and_reraises():
    """The test kit's contract: call() runs on the server thread and behaves like a call."""
    with server_for() as server:
        assert server.call(lambda gw: gw.token) == TOKEN
        with pytest.raises(ZeroDivisionError):
            server.call(lambda gw: 1 // 0)
        assert server.call(lambda gw: gw.identifies) == 0


def test_stop_closes_the_port_and_the_thread():
    """After the with-block the port refuses connections and the server refuses calls."""
    server = server_for()
    with server:
        port = server.port
        with pytest.raises(RuntimeError):
            server.start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with pytest.raises(RuntimeError):
        server.call(lambda gw: gw.token)
    server.stop()  # idempotent


def test_an_asyncio_client_on_its_own_loop():
    """The server's loop is its own: an asyncio test awaits HELLO and a restart future."""

    async def scenario(server: LoopbackGateway) -> tuple[bytes, bytes]:
        key = base64.b64encode(os.urandom(16)).decode()
        hellos = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(build_request("127.0.0.1", WS_TARGET, key, "asyncio-test"))
            await reader.readuntil(b"\r\n\r\n")
            hellos.append(await reader.readexactly(2 + len(HELLO_TEXT)))
            if len(hellos) == 1:
                await asyncio.wrap_future(server.restart(0.05))
                with pytest.raises(ConnectionResetError):
                    await reader.read()
            writer.close()
        return hellos[0], hellos[1]

    with server_for() as server:
        first, second = asyncio.run(asyncio.wait_for(scenario(server), TIMEOUT))
        assert first == second == encode_frame(WsOpcode.TEXT, HELLO_TEXT)
        assert (server.connections_accepted, server.resets) == (2, 1)


# -- websocket framing and closing ---------------------------------------------------------


def test_ping_is_answered_with_a_pong():
    """RFC 6455 §5.5.2: a pong carries the ping's application data."""
    with server_for() as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        raw.send(WsOpcode.PING, b"abc")
        assert raw.recv_frame() == (WsOpcode.PONG, b"abc")


def test_client_close_frame_is_echoed_then_tcp_closes():
    """RFC 6455 §5.5.1 (echo the code) and §7.1.1 (the server closes TCP first)."""
    with server_for() as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        raw.send(WsOpcode.CLOSE, close_payload(4000, "reconnecting"))
        assert raw.recv_frame() == (WsOpcode.CLOSE, close_payload(4000))
        raw.assert_eof()
        assert server.call(lambda gw: (gw.client_close_codes, gw.open_transports)) == ([4000], [])


def test_client_close_1000_ends_the_session():
    """Spec §7: a 1000 close from the client ends its session; the client terminates."""
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        client.run_until(SessionStarted)
        client.ws.close(1000, now=time.monotonic())
        assert client.run_until(Terminated) == Terminated(code=1000, error=None)
        sessions = server.call(lambda gw: gw.sessions)
        assert [(s.alive, s.ended) for s in sessions] == [(False, "the client closed with 1000")]
        assert server.call(lambda gw: gw.client_close_codes) == [1000]


def test_zombie_then_server_close_waits_for_the_echo_timeout():
    """Spec §3 (withheld ACKs), §4.1 (a command before IDENTIFY → 4003), RFC 6455 §7.1.1.

    The heartbeat gets no ACK: the next frame is the 4003 close. The client never echoes,
    so the server closes TCP after ``close_timeout``.
    """
    with server_for(close_timeout=0.2) as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        server.call(lambda gw: setattr(gw, "withhold_acks", True))
        raw.send_json({"op": 1, "d": None})
        raw.send_json({"op": 3, "d": {"status": "online", "afk": False}})
        assert raw.recv_frame() == (WsOpcode.CLOSE, close_payload(4003, "not authenticated"))
        started = time.monotonic()
        raw.assert_eof()
        assert time.monotonic() - started >= 0.15


def test_server_close_then_echo_closes_tcp_at_once():
    """RFC 6455 §7.1.1: the server closes TCP when the client's close frame arrives."""
    with server_for(close_timeout=30.0) as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        server.call(lambda gw: gw.close(None, 4000, "bye"))
        assert raw.recv_frame() == (WsOpcode.CLOSE, close_payload(4000, "bye"))
        raw.send(WsOpcode.CLOSE, close_payload(4000))
        started = time.monotonic()
        raw.assert_eof()
        assert time.monotonic() - started < 5.0


def test_server_close_code_reaches_the_client():
    """Spec §7: 4000 is resumable; the close code and reason arrive through the echo."""
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        client.run_until(SessionStarted)
        server.call(lambda gw: gw.close(None, 4000, "bye"))
        event = client.run_until(Disconnected)
        assert (event.code, event.reason, event.initiated_locally, event.will_resume) == (
            4000,
            "bye",
            False,
            True,
        )


def test_a_long_non_ascii_close_reason_is_cut_at_a_character():
    """RFC 6455 §5.5 (125-byte control frames) and §7.1.6 (the reason is UTF-8).

    ``close_payload`` must shorten the reason to 123 bytes without splitting a character;
    today it slices the bytes, the frame carries invalid UTF-8 and the client fails the
    connection with 1007 instead of seeing close 4000.
    """
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        client.run_until(SessionStarted)
        server.call(lambda gw: gw.close(None, 4000, "é" * 100))
        event = client.run_until(Disconnected)
        assert (event.code, event.reason) == (4000, "é" * 61)


def test_heartbeat_ack_delay_runs_on_the_server_timer():
    """Spec §3: a late ACK (``ack_delay``) is sent by the server's real-time timer."""
    with server_for() as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        raw.send_json({"op": 1, "d": None})
        assert raw.recv_json() == {"op": 11}
        server.call(lambda gw: setattr(gw, "ack_delay", 0.1))
        started = time.monotonic()
        raw.send_json({"op": 1, "d": None})
        assert raw.recv_json() == {"op": 11}
        assert time.monotonic() - started >= 0.09


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (encode_frame(WsOpcode.TEXT, b'{"op":1}'), 1002, "unmasked frame from a client"),
        (encode_frame(WsOpcode.TEXT, b"\xff", b"abcd"), 1007, "text message is not valid UTF-8"),
        (
            encode_frame(WsOpcode.BINARY, bytes(2000), b"abcd"),
            1009,
            "message larger than the bound of 1024 bytes",
        ),
    ],
)
def test_framing_errors_fail_the_connection(frame, code, reason):
    """RFC 6455 §5.1 (clients mask), §8.1 (UTF-8), §7.4.1 (1009): close with the code."""
    with server_for(max_message_size=1024) as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        raw.sock.sendall(frame)
        opcode, payload = raw.recv_frame()
        assert (opcode, parse_close_payload(payload)) == (WsOpcode.CLOSE, (code, reason))
        raw.assert_eof()
        violations = server.call(lambda gw: list(gw.violations))
        assert [(v.transport_id, v.rule) for v in violations] == [(1, f"websocket: {reason}")]
        assert isinstance(violations[0], Violation)


# -- faults ----------------------------------------------------------------------------


def test_drop_connections_resets_every_socket():
    """Spec §5: a dropped TCP connection (RST) leaves the session resumable."""
    with server_for() as server:
        client = Client(server.url, compression=TransportCompression.NONE)
        client.run_until(SessionStarted)
        raw = RawWs(server.port)
        raw.recv_frame()
        assert server.drop_connections() == 2
        with pytest.raises(ConnectionResetError):
            raw.sock.recv(1 << 16)
        disconnected = client.run_until(Disconnected)
        assert (disconnected.code, disconnected.will_resume) == (None, True)
        assert server.resets == 2
        # The client may already be reconnecting (no backoff after a live session): only the
        # two dropped transports must be gone, and the session alive for its resume.
        opened, alive = server.call(lambda gw: (gw.open_transports, [s.alive for s in gw.sessions]))
        assert not {1, 2} & set(opened)
        assert alive == [True]


def test_reset_mid_message_cuts_one_frame_then_resets():
    """A message cut by a reset (docs/protocol.md §5 resume after a drop): exact bytes, then RST; one-shot."""
    with server_for() as server:
        raw = RawWs(server.port)
        raw.recv_frame()
        server.reset_mid_message(5)
        server.call(lambda gw: gw.request_heartbeat())
        frame = encode_frame(WsOpcode.TEXT, b'{"op":1,"d":null}')
        assert raw.read_until_reset() == frame[:5]
        assert server.resets == 1
        assert server.call(lambda gw: gw.open_transports) == []
        assert RawWs(server.port).recv_frame() == (WsOpcode.TEXT, HELLO_TEXT)


def test_restart_refuses_then_accepts_on_the_same_port():
    """An outage: connections are reset and refused, then the same URL works again."""
    with server_for() as server:
        port = server.port
        raw = RawWs(port)
        raw.recv_frame()
        reopened = server.restart(0.3)
        with pytest.raises(ConnectionResetError):
            raw.sock.recv(1 << 16)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        assert reopened.result(timeout=TIMEOUT) is None
        assert server.port == port
        assert RawWs(port).recv_frame() == (WsOpcode.TEXT, HELLO_TEXT)
        assert (server.connections_accepted, server.resets) == (2, 1)


def test_write_chunk_splits_and_spaces_every_write():
    """Partial reads: the 101 answer and HELLO arrive in 16-byte pieces 10 ms apart."""
    chunk, delay = 16, 0.01
    with server_for(write_chunk=chunk, write_delay=delay) as server:
        sock = connect(server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        response = build_response(key)
        hello = encode_frame(WsOpcode.TEXT, HELLO_TEXT)
        started = time.monotonic()
        sock.sendall(build_request("127.0.0.1", WS_TARGET, key, "raw-test"))
        reads: list[bytes] = []
        while sum(map(len, reads)) < len(response + hello):
            reads.append(sock.recv(1 << 16))
        elapsed = time.monotonic() - started
        assert b"".join(reads) == response + hello
        pieces = math.ceil(len(response) / chunk) + math.ceil(len(hello) / chunk)
        assert elapsed >= (pieces - 1) * delay
        assert len(reads) > 1


def test_the_client_reaches_ready_through_seven_byte_writes():
    """Spec §4 through partial reads: every frame and the 101 arrive in 7-byte pieces."""
    with server_for(write_chunk=7) as server:
        client = Client(server.url, compression=TransportCompression.ZLIB_STREAM)
        assert client.run_until(SessionStarted).session_id == "session-1"
        server.call(lambda gw: gw.dispatch("MESSAGE_CREATE", {"content": "slow"}))
        assert client.run_until(DispatchReceived).data == {"content": "slow"}


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def test_tls_websocket_and_discovery(tls):
    """Spec §1.1 (discovery over https) and §1.3 over wss:// with a trusted certificate."""
    server_context, client_context = tls
    with server_for(ssl_context=server_context) as server:
        assert server.url == f"wss://localhost:{server.port}"
        assert server.api_url == f"https://localhost:{server.port}/api/v10"
        client = Client(server.url, ssl_context=client_context)
        assert client.run_until(SessionStarted).session_id == "session-1"
        status, body, _ = http_get(
            server, "/api/v10/gateway/bot", {"Authorization": f"Bot {TOKEN}"}, client_context
        )
        assert (status, body["url"]) == (200, server.url)
        server.drop_connections()
        disconnected = client.run_until(Disconnected)
        assert (disconnected.code, disconnected.will_resume) == (None, True)


# -- HTTP: discovery and refusals -----------------------------------------------------------


def test_discovery_answers_with_the_token():
    """Spec §1.1: Get Gateway Bot returns url, shards and session_start_limit."""
    with LoopbackGateway(FakeGateway(token=TOKEN, max_concurrency=16)) as server:
        server.recommended_shards = 3
        status, body, connection = http_get(
            server, "/api/v10/gateway/bot", {"Authorization": f"Bot {TOKEN}"}
        )
        assert (status, connection) == (200, "close")
        assert body == {
            "url": server.url,
            "shards": 3,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000,  # no session started yet
                "reset_after": 14_400_000,
                "max_concurrency": 16,
            },
        }


@pytest.mark.parametrize("authorization", [None, "Bot wrong", TOKEN, f"Bearer {TOKEN}"])
def test_discovery_without_the_bot_token_is_401(authorization):
    """Spec §1.1: /gateway/bot requires ``Authorization: Bot <token>``."""
    headers = {} if authorization is None else {"Authorization": authorization}
    with server_for() as server:
        status, body, _ = http_get(server, "/api/v10/gateway/bot", headers)
        assert (status, body) == (401, {"message": "401: Unauthorized", "code": 0})


def test_discovery_status_forces_an_outage():
    """Spec §1.1: the client must survive a 5xx from discovery; the attribute forces one."""
    with server_for() as server:
        server.discovery_status = 503
        status, body, _ = http_get(
            server, "/api/v10/gateway/bot", {"Authorization": f"Bot {TOKEN}"}
        )
        assert (status, body) == (503, {"message": "503: Service Unavailable", "code": 0})


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v10/users/@me", 404), ("/api/v10/gateway", 404), ("/?v=10&encoding=json", 400)],
)
def test_other_requests_are_refused(path, status):
    """RFC 6455 §4.2.1: a GET without the upgrade headers is 400; unknown API paths 404."""
    with server_for() as server:
        answer, body, connection = http_get(server, path)
        assert (answer, body["code"], connection) == (status, 0, "close")
        assert server.call(lambda gw: gw.open_transports) == []


# -- wire formats over the socket -----------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
needs_zstd = pytest.mark.skipif(
    not fake_gateway_module.zstd_available(), reason="zstd-stream needs a zstd encoder installed"
)


@pytest.mark.parametrize(
    ("query", "code", "reason"),
    [
        ("v=9&encoding=json", 4012, "invalid API version"),
        ("v=10&encoding=xml", 4002, "unsupported encoding"),
        ("v=10&encoding=json&compress=brotli", 4002, "unsupported compression"),
    ],
)
def test_an_unsupported_query_is_closed_before_hello(query, code, reason):
    """Spec §1.2, §7: the close frame is the first frame; the rule breach is recorded."""
    with server_for() as server:
        raw = RawWs(server.port, f"/?{query}")
        assert raw.recv_frame() == (WsOpcode.CLOSE, close_payload(code, reason))
        raw.send(WsOpcode.CLOSE, close_payload(code))
        raw.assert_eof()
        assert server.call(lambda gw: len(gw.violations)) == 1


def test_etf_is_sent_and_read_as_binary_frames():
    """Spec §10.1: ETF both ways in BINARY frames; a heartbeat in ETF is ACKed in ETF."""
    etf = make_codec(Encoding.ETF)
    with server_for() as server:
        raw = RawWs(server.port, "/?v=10&encoding=etf")
        opcode, payload = raw.recv_frame()
        assert (opcode, etf.loads(payload)) == (WsOpcode.BINARY, HELLO)
        raw.send(WsOpcode.BINARY, etf.dumps({"op": 1, "d": None}))
        opcode, payload = raw.recv_frame()
        assert (opcode, etf.loads(payload)) == (WsOpcode.BINARY, {"op": 11})
        assert server.call(lambda gw: gw.violations) == []


@needs_zstd
@pytest.mark.parametrize("framing", ["stream", "message"])
def test_zstd_framing_is_a_server_option(framing):
    """Spec §10.4: ``zstd_framing`` picks one endless frame or one frame per message."""
    with server_for(zstd_framing=framing) as server:
        assert server.call(lambda gw: gw.zstd_framing) == framing
        client = Client(server.url, compression=TransportCompression.ZSTD_STREAM)
        client.run_until(SessionStarted)
        raw = RawWs(server.port, WS_TARGET + "&compress=zstd-stream")
        raw.send(WsOpcode.TEXT, json.dumps({"op": 1, "d": None}).encode())
        (op1, hello), (op2, ack) = raw.recv_frame(), raw.recv_frame()
        assert op1 == op2 == WsOpcode.BINARY
        assert hello.startswith(ZSTD_MAGIC)
        assert ack.startswith(ZSTD_MAGIC) == (framing == "message")
    with pytest.raises(ValueError, match="zstd_framing"):
        server_for(zstd_framing="frames")


def test_zstd_without_an_encoder_is_closed_1011_and_raised(monkeypatch):
    """A zstd-stream request never gets plain frames: 1011 with the cause, then an error."""
    monkeypatch.setattr(fake_gateway_module, "_stdlib_zstd", None)
    monkeypatch.setattr(fake_gateway_module, "_zstandard", None)
    server = server_for().start()
    try:
        raw = RawWs(server.port, WS_TARGET + "&compress=zstd-stream")
        opcode, payload = raw.recv_frame()
        assert opcode == WsOpcode.CLOSE
        code, reason = parse_close_payload(payload)
        assert code == 1011
        assert "zstd-stream" in reason
        assert len(server.errors) == 1
    except BaseException:
        server.stop()
        raise
    # Leaving the ``with`` block (here by hand) raises what the server thread met.
    with pytest.raises(RuntimeError, match=r"the loopback gateway failed: .*zstandard"):
        server.__exit__(None, None, None)
