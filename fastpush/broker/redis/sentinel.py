"""The Redis master as Redis Sentinel names it, and the moment Sentinel moves it.

`redis+sentinel://host[:port][,host[:port]...]/master-name[?option=value&...]`, options
`password`, `username` and `db` (the master's login, as in a redis:// URL) and `sentinel_password`,
`sentinel_username` (the Sentinels' own). Sentinels are asked in turn, the one that answered last
first (Redis' guidelines for Sentinel clients); the link then checks that the server named says
ROLE master, since a Sentinel may still name a master it is about to replace. One Sentinel at a
time is followed on pub/sub: its `+switch-master` ends the reconnect backoff at once, and moves a
node still connected to a master that is no longer one.

Everything a Sentinel sends is bounded (time, bytes) and checked: it names where to connect.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis

from ..resp import Arg, RedisAddress, RedisGone, RespItem

__all__ = ["Sentinels", "SentinelError", "is_sentinel_url", "SCHEME"]

log = logging.getLogger("fastpush.broker")

SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
MAX_SENTINELS = 16
MAX_NAME_CHARS = 256
ASK_TIMEOUT = 2.0  # one Sentinel's answer (connect included), before the next is asked
MAX_ANSWER_BYTES = 65536  # one reply from a Sentinel; a longer one is not an address
FOLLOW_IDLE = 5.0  # a followed Sentinel silent this long is pinged; silent again, left
FOLLOW_RETRY = 1.0  # between followed Sentinels, when one goes away
_OPTIONS = ("password", "username", "db", "sentinel_password", "sentinel_username")


class SentinelError(RedisGone):
    """No Sentinel named a master to use; the message says why, Sentinel by Sentinel."""


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() == SCHEME


def _shown(value: object) -> str:
    """A peer's words in a log line or an error: printable, and short."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class Sentinels:
    def __init__(self, sentinels: list[RedisAddress], master_name: str, login: RedisAddress) -> None:
        self._sentinels = sentinels
        self.master_name = master_name
        self._login = login  # the master's login; host and port come from a Sentinel

    @property
    def db(self) -> int:
        """The master's database number (the URL's `db` option)."""
        return self._login.db

    @classmethod
    def from_url(cls, url: str) -> Sentinels:
        """ValueError, saying what is wrong, for anything but a usable redis+sentinel:// URL."""
        parts = urlsplit(url)
        if parts.scheme.lower() != SCHEME:
            raise ValueError(f"not a {SCHEME}:// URL: {url!r}")
        if "@" in parts.netloc:
            raise ValueError(f"{SCHEME}:// takes its passwords as options (?password=...&sentinel_password=...), "
                             "not before the hosts")
        options = _options(parts.query)
        sentinel_login = RedisAddress("", 0, username=options.get("sentinel_username"),
                                      password=options.get("sentinel_password"))
        hosts = parts.netloc.split(",")
        if not parts.netloc or "" in hosts:
            raise ValueError(f"name the Sentinels: {SCHEME}://host:port,host:port/master-name")
        if len(hosts) > MAX_SENTINELS:
            raise ValueError(f"at most {MAX_SENTINELS} Sentinels, not {len(hosts)}")
        sentinels = [sentinel_login.at(*_host_port(host)) for host in hosts]
        name = unquote(parts.path[1:])
        if not name or len(name) > MAX_NAME_CHARS or not all(c.isprintable() and not c.isspace() for c in name):
            raise ValueError(f"name the master after the hosts ({SCHEME}://host:port/master-name), in at most "
                             f"{MAX_NAME_CHARS} printable characters without spaces")
        db = options.get("db", "0")
        if not db.isdigit() or int(db) > 2**31:
            raise ValueError(f"db is a database number, not {db!r}")
        login = RedisAddress("", 0, username=options.get("username"), password=options.get("password"), db=int(db))
        return cls(sentinels, name, login)

    def describe(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self._sentinels)
        return f"master {self.master_name!r} through Sentinel {hosts}"

    # --- finding the master -----------------------------------------------------------------
    async def master(self) -> RedisAddress:
        """The master's address from the first Sentinel that names one; SentinelError with every
        Sentinel's reason when none does."""
        reasons = []
        for sentinel in list(self._sentinels):
            try:
                async with asyncio.timeout(ASK_TIMEOUT):
                    reply = await _ask(sentinel, ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name))
                address = self._address(reply)
            except TimeoutError:
                reasons.append(f"{sentinel.host}:{sentinel.port}: no answer in {ASK_TIMEOUT:g} s")
                continue
            except OSError as exc:  # SentinelError included
                reasons.append(f"{sentinel.host}:{sentinel.port}: {exc.strerror or exc}")
                continue
            self._sentinels.remove(sentinel)
            self._sentinels.insert(0, sentinel)
            return address
        raise SentinelError(f"no Sentinel named the master: {'; '.join(reasons)}")

    def _address(self, reply: RespItem) -> RedisAddress:
        if isinstance(reply, hiredis.ReplyError):
            raise SentinelError(f"is not a Sentinel, or refused the question: {_shown(str(reply))}")
        if reply is None:
            raise SentinelError(f"knows no master named {self.master_name!r}")
        if isinstance(reply, list) and len(reply) == 2 and all(isinstance(part, bytes) for part in reply):
            host, port = reply
            assert isinstance(host, bytes) and isinstance(port, bytes)
            address = _checked_address(host, port)
            if address is not None:
                return self._login.at(*address)
        raise SentinelError(f"answered something that is not a master's address: {_shown(reply)}")

    # --- following a switch -----------------------------------------------------------------
    async def follow_switches(self, moved: Callable[[RedisAddress], None]) -> None:
        """Forever: follow one Sentinel's `+switch-master` for our master, calling `moved` with
        the new master; when that Sentinel goes away, the next one (a second apart)."""
        while True:
            for sentinel in list(self._sentinels):
                try:
                    await self._follow(sentinel, moved)
                except (OSError, hiredis.HiredisError) as exc:  # TimeoutError and SentinelError included
                    log.info("stopped following Sentinel %s:%d: %s", sentinel.host, sentinel.port,
                             exc or "no answer")
                await asyncio.sleep(FOLLOW_RETRY)

    async def _follow(self, sentinel: RedisAddress, moved: Callable[[RedisAddress], None]) -> None:
        async with asyncio.timeout(ASK_TIMEOUT):
            reader, writer = await asyncio.open_connection(sentinel.host, sentinel.port)
        try:
            answers = _Answers(reader)
            hello = sentinel.hello_commands()
            for command in (*hello, ("SUBSCRIBE", "+switch-master")):
                writer.write(_pack(command))
            async with asyncio.timeout(ASK_TIMEOUT):
                for _ in hello:
                    _check_login(await answers.next())
            while True:
                try:
                    reply = await asyncio.wait_for(answers.next(), FOLLOW_IDLE)
                except TimeoutError:
                    writer.write(_pack(("PING",)))  # in subscribe mode too; a silent peer may be gone
                    reply = await asyncio.wait_for(answers.next(), ASK_TIMEOUT)
                if isinstance(reply, hiredis.ReplyError):
                    raise SentinelError(f"refused to subscribe: {_shown(str(reply))}")
                self._on_event(reply, moved)
        finally:
            writer.close()

    def _on_event(self, reply: RespItem, moved: Callable[[RedisAddress], None]) -> None:
        """`message +switch-master "<name> <old ip> <old port> <new ip> <new port>"`; other replies are
        subscription confirmations and pongs."""
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"
                and isinstance(reply[2], bytes)):
            return
        fields = reply[2].split(b" ")
        if len(fields) != 5 or fields[0] != self.master_name.encode():
            return
        address = _checked_address(fields[3], fields[4])
        if address is None:
            log.warning("a Sentinel announced a switch to something that is not an address: %s", _shown(reply[2]))
            return
        moved(self._login.at(*address))


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        if key in options:
            raise ValueError(f"option {key!r} given twice")
        options[key] = value
    return options


def _host_port(text: str) -> tuple[str, int]:
    parts = urlsplit("//" + text)
    if not parts.hostname:
        raise ValueError(f"not a Sentinel's host[:port]: {text!r}")
    try:
        return parts.hostname, parts.port or SENTINEL_PORT
    except ValueError:
        raise ValueError(f"not a Sentinel's host[:port]: {text!r}") from None


def _checked_address(host: bytes, port: bytes) -> tuple[str, int] | None:
    """A host name or address and a port, as a Sentinel sends them; None for anything else."""
    if not (0 < len(host) <= 253 and port.isdigit() and 0 < int(port) < 65536):
        return None
    try:
        name = host.decode("ascii")
    except UnicodeDecodeError:
        return None
    return (name, int(port)) if name.isprintable() and " " not in name else None


def _check_login(reply: RespItem) -> None:
    if isinstance(reply, hiredis.ReplyError):
        raise SentinelError(f"refused the login (sentinel_password, sentinel_username): {_shown(str(reply))}")


def _pack(command: tuple[Arg | None, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(a for a in command if a is not None))  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


async def _ask(sentinel: RedisAddress, command: tuple[Arg, ...]) -> RespItem:
    """One question on a fresh connection (logging in first when the URL says so)."""
    reader, writer = await asyncio.open_connection(sentinel.host, sentinel.port)
    try:
        hello = sentinel.hello_commands()
        for each in (*hello, command):
            writer.write(_pack(each))
        answers = _Answers(reader)
        for _ in hello:
            _check_login(await answers.next())
        return await answers.next()
    finally:
        writer.close()


class _Answers:
    """Replies read from a Sentinel, each at most MAX_ANSWER_BYTES; SentinelError for anything
    that is not the Redis protocol, or an early end."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._parser = hiredis.Reader()
        self._pending = 0  # bytes fed since the last whole reply

    async def next(self) -> RespItem:
        while True:
            try:
                reply = self._parser.gets()
            except hiredis.ProtocolError:
                raise SentinelError("answered something that is not the Redis protocol") from None
            if reply is not False:
                self._pending = 0
                item: RespItem = reply
                return item
            data = await self._reader.read(4096)
            if not data:
                raise SentinelError("closed the connection without answering")
            self._pending += len(data)
            if self._pending > MAX_ANSWER_BYTES:
                raise SentinelError(f"sent a reply longer than {MAX_ANSWER_BYTES} bytes")
            self._parser.feed(data)
