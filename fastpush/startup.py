"""What the command line shares with the worker supervisor: the listening port, checked and
held before anything starts, the metrics listener's address, and startup failures told to the
operator in one line."""
from __future__ import annotations

import errno
import socket

__all__ = ["STARTUP_SECONDS", "StartupError", "reason", "listen_error", "reserve_port", "close_all", "parse_address",
           "format_address"]

STARTUP_SECONDS = 30.0  # longest wait for Redis and the listening socket before giving up


class StartupError(Exception):
    """Why the server cannot start (or another command cannot run), in one line for the operator
    (exit code 2)."""


def reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def listen_error(host: str, port: int, exc: OSError, option: str = "--port") -> str:
    """What stops the server listening on host:port, and what to do about it (`option` sets the port)."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is already in use (another fastpush or another program); " \
               f"stop it or choose another {option}"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        named = f"--host {host!r}" if option == "--port" else repr(host)
        return f"cannot listen on {where}: {named} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {reason(exc)} (check {'--host and --port' if option == '--port' else option})"


def reserve_port(host: str, port: int, option: str = "--port") -> list[socket.socket]:
    """Bind host:port without SO_REUSEPORT, so this fails (StartupError) if anything listens there,
    then set SO_REUSEPORT so our own workers can join. The sockets never listen and take no clients:
    a workers' parent keeps them while its workers run; a single server just checks and closes them."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(listen_error(host, port, exc, option)) from None
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
            raise StartupError(listen_error(host, port, exc, option)) from None
        port = holder.getsockname()[1]  # port 0: every address gets the port the first one got
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return holders


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def parse_address(text: str) -> tuple[str, int]:
    """`PORT`, `:PORT`, `HOST:PORT` or `[IPv6]:PORT` -> (host, port); a port alone means loopback
    (127.0.0.1), never every interface. ValueError says what is wrong."""
    host, colon, port_text = text.strip().rpartition(":")
    if not colon:
        host, port_text = "", text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r} is not PORT or HOST:PORT (a port from 0 to 65535; 0 = any free port)")
    return host or "127.0.0.1", int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

