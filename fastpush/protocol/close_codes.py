"""WebSocket close codes fastpush uses, named by the situation that causes them."""
from enum import IntEnum

__all__ = ["CloseCode"]


class CloseCode(IntEnum):
    NORMAL = 1000  # REST close, client stop
    GOING_AWAY = 1001  # server shutdown
    ABNORMAL_CLOSURE = 1006  # never sent (RFC 6455 §7.1.5): the connection was lost without a close frame
    PROTOCOL_ERROR = 1002  # a frame breaking RFC 6455 (reserved bits, fragments out of order)
    UNSUPPORTED_DATA = 1003  # binary frame on a JSON subprotocol
    INVALID_PAYLOAD = 1007  # malformed or invalid protocol message
    POLICY_VIOLATION = 1008  # recovery refused, slow client, buffer full
    MESSAGE_TOO_BIG = 1009  # client message over the size limit (all its fragments together)
    INTERNAL_ERROR = 1011  # no event handler for a raw client's message
    SERVICE_RESTART = 1012  # the server is draining (SIGTERM): reconnect at once, to another process or node
    SLOW_CLIENT = 1013  # "try again later": too much queued; reliable clients recover (1008 would stop them)
