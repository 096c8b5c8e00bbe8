"""A :data:`~gateway_proto.adapters._common.Connector` over aiohttp, for the asyncio driver.

Exported as :func:`gateway_proto.adapters.asyncio.aiohttp_connector`; installed with the
``aiohttp`` extra (``pip install 'gateway-proto[aiohttp]'``). aiohttp is imported when the
connector is made, never when the asyncio driver is.

What aiohttp's ``ClientWebSocketResponse.receive()`` returns, and what it becomes here:

* ``TEXT`` / ``BINARY``: the message.
* ``CLOSE``: the peer started the close handshake. ``autoclose`` is off, so this transport
  answers with the peer's own code (RFC 6455 §5.5.1; 1000 for a frame without one) and
  reports the peer's code and reason (1005 when the frame had no code, as the built-in
  transport does: RFC 6455 §7.1.5). A 4000 close from the gateway is thus resumed
  (docs/protocol.md §7).
* ``CLOSING``: our own :meth:`close` has started. aiohttp hands it to a waiting
  ``receive()`` to free the connection for the close handshake. It is not the end: the
  reader waits for that handshake to finish (the peer's answer, or the close timeout), then
  reports the code the peer answered with. Treating it as the end (the old README recipe)
  made the asyncio driver cancel the handshake: no close frame went out, the session stayed
  alive on the gateway, and aiohttp warned "Unclosed client session".
* ``CLOSED`` / ``ERROR`` during our close: the same as ``CLOSING``. Otherwise the
  connection is gone without a close frame (EOF, a reset, a protocol error): reported
  with code ``None``, like the other transports.

The connector owns one ``aiohttp.ClientSession`` per connection (unless ``session=`` is
given, which it never closes) and closes it whenever the connection ends, however it ends:
a failed or cancelled connect, our close, the peer's close, a lost connection, or an abort
(the driver cancels :meth:`close` after its grace period; the connection is then dropped).

aiohttp logs neither frames nor payloads, and this module logs nothing, so the IDENTIFY
payload (which carries the token) never reaches a log record.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final, final

from gateway_proto import CloseCode
from gateway_proto._errors import install_hint

from ._common import Connector, MessageTransport, TransportClosedError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["aiohttp_connector"]

#: RFC 6455 §7.1.5: the code reported for a close frame that carried none.
_NO_STATUS: Final = 1005


def aiohttp_connector(*, session: aiohttp.ClientSession | None = None, **options: Any) -> Connector:
    """A :data:`Connector` over aiohttp (``pip install 'gateway-proto[aiohttp]'``).

    ``Shard(config, connector=aiohttp_connector())`` runs the asyncio driver over aiohttp's
    websocket client.

    Args:
        session: an ``aiohttp.ClientSession`` of yours to connect with; it is used as it
            is and never closed here. By default every connection gets a session of its
            own, closed when the connection ends.
        **options: passed to ``ClientSession.ws_connect`` (for example ``ssl=``,
            ``proxy=``, ``timeout=aiohttp.ClientWSTimeout(ws_close=...)``). The defaults turn
            off permessage-deflate (``compress=0``) and the message size limit
            (``max_msg_size=0``: the core bounds messages, ``config.max_message_size``);
            the gateway protocol has its own compression and heartbeats. ``autoclose`` is
            always off and ``autoping`` always on: the close handshake is this module's.

    Raises:
        ImportError: aiohttp is not installed; the message says how to install it.

    """
    try:
        import aiohttp  # noqa: PLC0415 - an optional dependency, imported on use
    except ImportError as exc:
        raise ImportError(
            f"aiohttp_connector() needs aiohttp: {install_hint('aiohttp')}", name="aiohttp"
        ) from exc

    settings: dict[str, Any] = {
        "compress": 0,
        "max_msg_size": 0,
        **options,
        "autoclose": False,
        "autoping": True,
    }

    async def connect_to(url: str) -> MessageTransport:
        owned = aiohttp.ClientSession() if session is None else None
        client = owned if owned is not None else session
        assert client is not None
        try:
            ws = await client.ws_connect(url, **settings)
        except BaseException:
            # A refused or cancelled connect must not leave the session open.
            if owned is not None:
                await asyncio.shield(owned.close())
            raise
        return _AiohttpTransport(ws, owned, aiohttp.WSMsgType)

    return connect_to


@final
class _AiohttpTransport:
    """One aiohttp websocket as a :class:`MessageTransport` (see the module doc)."""

    __slots__ = ("_closing", "_kind", "_session", "_ws")

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession | None,
        kind: type[aiohttp.WSMsgType],
    ) -> None:
        self._ws = ws
        self._kind = kind
        #: The session to close when the connection ends (``None``: not ours, or closed).
        self._session = session
        #: The close handshake, once started (by us or by the peer's close frame).
        self._closing: asyncio.Task[None] | None = None

    async def send(self, data: str | bytes) -> None:
        # Once the connection is closing or gone aiohttp refuses writes with a
        # ConnectionResetError; recv() reports how it ended.
        with contextlib.suppress(ConnectionError):
            if isinstance(data, str):
                await self._ws.send_str(data)
            else:
                await self._ws.send_bytes(data)

    async def recv(self) -> str | bytes:
        kinds = self._kind
        while True:
            try:
                message = await self._ws.receive()
            except Exception:
                # A receive timeout from the options (or a bug): the driver takes the
                # transport as lost and will not close it, so it is closed here, with 4000
                # as the driver's abort does (the session stays resumable).
                self._start_close(CloseCode.UNKNOWN_ERROR, "")
                raise
            kind = message.type
            if kind is kinds.TEXT or kind is kinds.BINARY:
                data: str | bytes = message.data
                return data
            if kind is kinds.CLOSE and self._closing is None:
                # The peer's close: answer with its code, then report it.
                code: int = message.data or _NO_STATUS
                reason: str = message.extra or ""
                answer = code if code != _NO_STATUS else CloseCode.NORMAL
                await asyncio.wait((self._start_close(answer, ""),))
                raise TransportClosedError(code, reason)
            if self._closing is not None:
                # CLOSING (aiohttp freeing the connection for our close), or what follows
                # it: the end is when our handshake ends, with the code the peer answered.
                await asyncio.wait((self._closing,))
                raise TransportClosedError(_peer_code(self._ws.close_code), "")
            if kind is kinds.CLOSED or kind is kinds.ERROR:
                # Gone without a close frame: EOF, a reset, a protocol error.
                why = "connection lost" if kind is kinds.CLOSED else f"error: {message.data}"
                await self._release()
                raise TransportClosedError(None, why)
            # PING / PONG are answered by aiohttp (autoping) and never returned.

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and wait for the peer's answer (or aiohttp's close timeout).

        A second call waits for the first handshake. Cancelling the call drops the
        connection at once (the driver's abort) and still closes the session.
        """
        await self._start_close(code, reason)

    def _start_close(self, code: int, reason: str) -> asyncio.Task[None]:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._handshake(code, reason))
        return self._closing

    async def _handshake(self, code: int, reason: str) -> None:
        try:
            # aiohttp limits the wait for the peer's answer (ClientWSTimeout.ws_close).
            await self._ws.close(code=code, message=reason.encode())
        finally:
            await self._release()

    async def _release(self) -> None:
        """Close the session this transport owns (once; also after a cancellation)."""
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())


def _peer_code(code: int | None) -> int | None:
    """The close code aiohttp recorded, as the core takes it (1006, no close frame: ``None``)."""
    return None if code is None or code == CloseCode.ABNORMAL else code
