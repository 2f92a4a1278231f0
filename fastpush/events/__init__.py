"""Upstream events: connect, connected, disconnected and user events, to an HTTP application server
(CloudEvents, as Azure Web PubSub sends them) or to in-process Python callbacks."""
