"""fastpush: a self-hosted, drop-in replacement for the Azure Web PubSub service.

Embedding: `async with fastpush.Server(port=0) as server: server.hub("h").send_to_all("hi", content_type="text/plain")`.
"""
from .app import Server
from .embedding import HubApi

__all__ = ["Server", "HubApi"]
