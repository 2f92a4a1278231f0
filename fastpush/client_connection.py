"""A client's WebSocket as picows sees it: the listener that turns frames into hub operations."""
from __future__ import annotations

import logging

from picows import WSFrame, WSMsgType, WSTransport

from . import _fanout
from ._fanout import Connection
from .handshake import Accept
from .hub import Hub, Permission, allowed, close
from .protocol.close_codes import CloseCode
from .protocol.json_protocol import (
    Ignored, InvalidRequest, Invoke, JoinGroup, LeaveGroup, Ping, ProtocolViolation, SendEvent,
    SendToGroup, SequenceAck, encode_ack, encode_connected, encode_invoke_error, encode_pong,
    parse_request,
)
from .protocol.names import group_error, is_valid_group
from .protocol.payload import DataType, Payload

__all__ = ["ClientConnection"]

log = logging.getLogger("fastpush.ws")


class ClientConnection(Connection):
    """Everything per connection lives in the compiled base; this adds the frame handling."""

    __slots__ = ("_hub", "_token_groups", "_raw_group", "_raw_no_echo", "_fragments", "_fragment_type")

    def __init__(self, hub: Hub, accept: Accept, connection_id: str):
        super().__init__(connection_id, accept.claims.user_id, hub.name, accept.subprotocol, accept.variant)
        self._hub = hub
        self.roles.update(accept.claims.roles)
        self._token_groups = accept.claims.groups
        self._raw_group = accept.raw_send_group
        self._raw_no_echo = accept.raw_no_echo
        self._fragments: list[bytes] | None = None
        self._fragment_type = WSMsgType.TEXT

    # --- picows callbacks ---------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._hub.add_connection(self, self._token_groups)
        self._token_groups = ()
        if self.variant != _fanout.RAW:
            token = self.connection_id if self.variant == _fanout.JSON_RELIABLE else None
            transport.send(WSMsgType.TEXT, encode_connected(self.connection_id, self.user_id, token))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._hub.remove_connection(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            transport.send_close(CloseCode.NORMAL)
            transport.disconnect()
            return
        if msg_type == WSMsgType.PING or msg_type == WSMsgType.PONG:
            return
        data = self._assemble(msg_type, frame)
        if data is None:
            return
        if self._fragments is None and msg_type == WSMsgType.CONTINUATION:
            msg_type = self._fragment_type
        if self.variant == _fanout.RAW:
            self._on_raw(msg_type, data)
        elif msg_type != WSMsgType.TEXT:
            close(self, CloseCode.UNSUPPORTED_DATA, "Binary frames are not supported by the JSON subprotocol.")
        else:
            self._on_json(data)

    def _assemble(self, msg_type: WSMsgType, frame: WSFrame) -> bytes | None:
        """Return a whole message, joining fragmented frames; None while a message is incomplete."""
        if msg_type == WSMsgType.CONTINUATION:
            if self._fragments is None:
                close(self, CloseCode.INVALID_PAYLOAD, "A continuation frame without a first fragment.")
                return None
            self._fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return None
            data, self._fragments = b"".join(self._fragments), None
            return data
        if not frame.fin:
            self._fragments = [frame.get_payload_as_bytes()]
            self._fragment_type = msg_type
            return None
        return frame.get_payload_as_bytes()

    # --- raw clients --------------------------------------------------------------------------
    def _on_raw(self, msg_type: WSMsgType, data: bytes) -> None:
        payload = Payload(DataType.BINARY if msg_type == WSMsgType.BINARY else DataType.TEXT, data)
        group = self._raw_group
        if group is None:
            close(self, CloseCode.INTERNAL_ERROR, "No event handler is configured for event 'message'.")
        elif not allowed(self, Permission.SEND_TO_GROUP, group):
            close(self, CloseCode.POLICY_VIOLATION, f"No permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if self._raw_no_echo else None
            self._hub.send_to_group(group, payload, excluded, from_user_id=self.user_id)

    # --- JSON subprotocols --------------------------------------------------------------------
    def _on_json(self, data: bytes) -> None:
        try:
            request = parse_request(data)
        except ProtocolViolation as exc:
            close(self, exc.code, exc.reason)
            return
        except InvalidRequest as exc:
            self._ack(exc.ack_id, exc.name, exc.message)
            return
        kind = type(request)
        if kind is SendToGroup:
            self._send_to_group(request)
        elif kind is JoinGroup or kind is LeaveGroup:
            self._join_or_leave(request)
        elif kind is SequenceAck or kind is Ignored:
            pass
        elif kind is Ping:
            self.transport.send(WSMsgType.TEXT, encode_pong())
        elif kind is SendEvent:
            # No event handler is configured (upstream events are a separate feature): the event is
            # accepted and dropped, as the service does for events no handler subscribes to.
            self._ack(request.ack_id)
        elif kind is Invoke:
            self.transport.send(WSMsgType.TEXT, encode_invoke_error(
                request.invocation_id, "BadRequest", "No event handler is configured for invocations."))

    def _send_to_group(self, request: SendToGroup) -> None:
        group = request.group
        if not is_valid_group(group):
            self._ack(request.ack_id, "BadRequest", group_error(group))
        elif not allowed(self, Permission.SEND_TO_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if request.no_echo else None
            self._hub.send_to_group(group, request.payload, excluded, from_user_id=self.user_id)
            self._ack(request.ack_id)

    def _join_or_leave(self, request: JoinGroup | LeaveGroup) -> None:
        group = request.group
        verb = "join" if type(request) is JoinGroup else "leave"
        if not is_valid_group(group):
            self._ack(request.ack_id, "BadRequest", group_error(group))
        elif not allowed(self, Permission.JOIN_LEAVE_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to {verb} group '{group}'.")
        else:
            if verb == "join":
                self._hub.tables.join(self, group)
            else:
                self._hub.tables.leave(self, group)
            self._ack(request.ack_id)

    def _ack(self, ack_id: int | None, error_name: str | None = None, message: str = "") -> None:
        if ack_id is not None:
            self.transport.send(WSMsgType.TEXT, encode_ack(ack_id, error_name, message))
