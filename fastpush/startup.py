"""What the command line shares with the worker supervisor: the listening port, checked and
held before anything starts, and startup failures told to the operator in one line."""
from __future__ import annotations

import errno
import socket

__all__ = ["STARTUP_SECONDS", "StartupError", "reason", "listen_error", "reserve_port", "close_all"]

STARTUP_SECONDS = 30.0  # longest wait for Redis and the listening socket before giving up


class StartupError(Exception):
    """Why the server cannot start (or another command cannot run), in one line for the operator
    (exit code 2)."""


def reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def listen_error(host: str, port: int, exc: OSError) -> str:
    """What stops the server listening on host:port, and what to do about it."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is already in use (another fastpush or another program); " \
               f"stop it or choose another --port"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: --host {host!r} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {reason(exc)} (check --host and --port)"


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind host:port without SO_REUSEPORT, so this fails (StartupError) if anything listens there,
    then set SO_REUSEPORT so our own workers can join. The sockets never listen and take no clients:
    a workers' parent keeps them while its workers run; a single server just checks and closes them."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(listen_error(host, port, exc)) from None
    holders: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        holder = socket.socket(family, kind, proto)
        holders.append(holder)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            holder.bind((address[0], port, *address[2:]))
        except OSError as exc:
            close_all(holders)
            raise StartupError(listen_error(host, port, exc)) from None
        port = holder.getsockname()[1]  # port 0: every address gets the port the first one got
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return holders


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
