"""fastpush: a self-hosted, drop-in replacement for the Azure Web PubSub service.

Embedding: `async with fastpush.Server(port=0) as server: server.hub("h").send_to_all("hi", content_type="text/plain")`.
"""
from .app import Server
from .config import Config, load_config
from .embedding import HubApi
from .events.model import ConnectRequest, ConnectResult, EventContext, EventRejected, EventReply
from .protocol.payload import DataType, Payload

__all__ = ["Server", "HubApi", "Config", "load_config", "ConnectRequest", "ConnectResult", "EventContext",
           "EventRejected", "EventReply", "DataType", "Payload"]
