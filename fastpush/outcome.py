"""The one rule for results that may arrive later.

An operation on one process completes before the call returns: a broadcast frames and writes
at once, with no task, no future and no turn of the event loop. With a cluster broker the same
call can only complete once Redis has answered. Rather than make every call a coroutine (a task
per client message on the single-process path), the node returns an `Outcome[T]`: the value
itself, or an awaitable of it. Internal callers continue with `then`; the public embedding API
is `async` and awaits `resolve`, so its users always `await`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

__all__ = ["Outcome", "then", "resolve", "finish"]

T = TypeVar("T")
U = TypeVar("U")

Outcome: TypeAlias = T | Awaitable[T]


def then(outcome: Outcome[T], step: Callable[[T], U]) -> Outcome[U]:
    """`step(value)` now if the value is here, else an awaitable of it once the value arrives."""
    if isinstance(outcome, Awaitable):
        pending = outcome

        async def later() -> U:
            return step(await pending)
        return later()
    return step(outcome)


async def resolve(outcome: Outcome[T]) -> T:
    """The value, awaited if it has not arrived yet."""
    if isinstance(outcome, Awaitable):
        return await outcome
    return outcome


def finish(outcome: Outcome[T], done: Callable[[T], None], failed: Callable[[Exception], None]) -> None:
    """For a caller that cannot wait (a client's request): `done(value)` now, or from a task once
    the value arrives, or `failed(error)` if it fails on the way."""
    if not isinstance(outcome, Awaitable):
        done(outcome)
        return
    pending = outcome

    async def later() -> None:
        try:
            value = await pending
        except Exception as exc:
            failed(exc)
        else:
            done(value)
    asyncio.get_running_loop().create_task(later())
