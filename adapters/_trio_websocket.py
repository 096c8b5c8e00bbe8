"""A :data:`~gateway_proto.adapters._common.Connector` over trio-websocket, for the trio driver.

Exported as :func:`gateway_proto.adapters.trio.trio_websocket_connector`; installed with
the ``trio-websocket`` extra (``pip install 'gateway-proto[trio-websocket]'``).
trio-websocket is imported when the connector is made, never when the trio driver is.

A connector must return an open websocket, so trio-websocket's ``open_websocket_url``
(an ``async with`` block that closes the websocket when it ends) cannot be one. Its
``connect_websocket_url(nursery, url)`` returns the websocket and runs the websocket's
reader task in ``nursery``. Here that nursery belongs to a small task started (with
``nursery.start``) in the nursery of the task that opens the connection: for the trio
``Shard``, the shard's own nursery, so a connection never outlives its shard. That small
task keeps what the reader task raises (an HTTP refusal of the upgrade, a bug) inside the
connection: before the websocket is open it is the connector's error (a failed open,
reported by the driver, then a backoff); afterwards the connection ends and ``recv``
reports it lost. It also closes the socket once the reader ends (trio-websocket leaves it
open after the peer's close or an EOF, for the garbage collector).

How it ends, as the core takes it:

* the peer's close frame: its code and reason (trio-websocket has answered it), so a 4000
  from the gateway is resumed (docs/protocol.md §7);
* our :meth:`close`: trio-websocket ends ``get_message`` as soon as our close frame is out;
  the reader waits for the handshake to finish (the peer's answer, the driver's close
  deadline) and reports the code the peer answered with;
* no close frame (EOF, a reset, a protocol error): code ``None``.

trio-websocket logs the sizes of frames, never their contents, and this module logs no
payload, so the IDENTIFY payload (which carries the token) never reaches a log record.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, final

import trio

from gateway_proto import CloseCode
from gateway_proto._errors import install_hint

from ._common import Connector, MessageTransport, TransportClosedError, logger

if TYPE_CHECKING:
    import trio_websocket

__all__ = ["trio_websocket_connector"]


def trio_websocket_connector(**options: Any) -> Connector:
    """A :data:`Connector` over trio-websocket (``pip install 'gateway-proto[trio-websocket]'``).

    ``Shard(config, connector=trio_websocket_connector())`` runs the trio driver over
    trio-websocket (with ``ShardGroup`` too). No nursery is needed: each connection runs in
    the shard's own (see the module doc).

    Args:
        **options: passed to ``trio_websocket.connect_websocket_url`` (for example
            ``ssl_context=``, ``extra_headers=``). The default lifts its 1 MiB message
            size limit (``max_message_size``): the core bounds messages itself
            (``config.max_message_size``); ``message_queue_size`` stays 1, so a shard whose
            application is behind stops reading the socket.

    Raises:
        ImportError: trio-websocket is not installed; the message says how to install it.

    """
    try:
        import trio_websocket  # noqa: PLC0415 - an optional dependency, imported on use
    except ImportError as exc:
        raise ImportError(
            f"trio_websocket_connector() needs trio-websocket: {install_hint('trio-websocket')}",
            name="trio_websocket",
        ) from exc

    settings: dict[str, Any] = {"max_message_size": sys.maxsize, **options}

    async def connect_to(url: str) -> MessageTransport:
        nursery = trio.lowlevel.current_task().parent_nursery
        if nursery is None:  # pragma: no cover - only the init task has no parent
            raise RuntimeError("trio_websocket_connector() needs to be called from a task")
        ws: trio_websocket.WebSocketConnection = await nursery.start(_serve, url, settings)
        return _TrioWebsocketTransport(ws, trio_websocket.ConnectionClosed)

    return connect_to


async def _serve(
    url: str,
    settings: dict[str, Any],
    *,
    task_status: trio.TaskStatus[trio_websocket.WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the websocket, hand it over, and host its reader task until the reader ends."""
    from trio_websocket import connect_websocket_url  # noqa: PLC0415 - optional dependency

    ws: trio_websocket.WebSocketConnection | None = None
    try:
        async with trio.open_nursery() as connection:
            ws = await connect_websocket_url(connection, url, **settings)
            task_status.started(ws)
    except BaseExceptionGroup as group:
        errors, others = group.split(Exception)
        if errors is None:
            raise
        if ws is None:
            # Not open yet: the connector's own error (a failed open), unwrapped.
            raise _sole(errors) from None
        # Open: the reader task failed. The connection is over; recv reports it lost.
        logger.debug("trio-websocket's reader failed: %r", _sole(errors))
        if others is not None:
            raise others from None
    finally:
        if ws is not None:
            await _close_socket(ws)


async def _close_socket(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the websocket's stream once its reader has ended.

    After the peer's close frame, an EOF or a reset, trio-websocket's reader stops without
    closing its stream, and ``aclose()`` does nothing once the websocket is closed: the
    socket would wait for the garbage collector (a ``ResourceWarning``). The stream has no
    public name, hence the lookup; closing a closed stream does nothing.
    """
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await stream.aclose()


def _sole(group: BaseExceptionGroup[Exception]) -> BaseException:
    """The only leaf of ``group``, or the group itself when there are more."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else group


@final
class _TrioWebsocketTransport:
    """One trio-websocket connection as a :class:`MessageTransport` (see the module doc)."""

    __slots__ = ("_closed", "_closing", "_connection_closed", "_ws")

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        connection_closed: type[trio_websocket.ConnectionClosed],
    ) -> None:
        self._ws = ws
        self._connection_closed = connection_closed
        #: Whether our close handshake has started, and when it has ended.
        self._closing = False
        self._closed = trio.Event()

    async def send(self, data: str | bytes) -> None:
        # Closing or gone: recv() reports how it ended.
        with contextlib.suppress(self._connection_closed):
            await self._ws.send_message(data)

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except self._connection_closed as exc:
            reason = exc.reason
            if self._closing:
                # Our close frame is out; the end is when the handshake ends.
                await self._closed.wait()
                reason = _answer(reason, self._ws.closed)
            if reason is None or reason.code == CloseCode.ABNORMAL:
                raise TransportClosedError(None, "connection lost") from exc
            raise TransportClosedError(reason.code, reason.reason or "") from exc

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and wait for the peer's answer; a second call waits for it.

        Cancelling the call (the driver's close deadline) closes the socket at once.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._ws.aclose(code, reason)
        finally:
            self._closed.set()


def _answer(
    first: trio_websocket.CloseReason | None, final: trio_websocket.CloseReason | None
) -> trio_websocket.CloseReason | None:
    """The peer's answer to our close frame, or ``None`` when it never came.

    trio-websocket records our own close as ``CloseReason(1000, None)`` (``first``, what
    ``get_message`` raised with) and replaces it with the peer's close frame when that
    arrives (``final``). Still the same object afterwards: the peer never answered.
    """
    if final is first and first is not None and first.reason is None:
        return None if first.code == CloseCode.NORMAL else first
    return final
