"""A connection's invocations waiting for their handler, by invocation id.

A client may have at most MAX_INVOCATIONS_IN_FLIGHT of them, each id once at a time; past that a
new one is refused (an error answer), never queued, so a client cannot make the server hold more.
Each can be cancelled: by the client's cancelInvocation, or all at once when its socket goes (the
SDKs reject every pending invocation when their connection drops). Cancelling one cancels its task,
which abandons the handler's HTTP request (its socket is closed) or an async in-process callback.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine

__all__ = ["Invocations", "MAX_INVOCATIONS_IN_FLIGHT"]

MAX_INVOCATIONS_IN_FLIGHT = 16


class Invocations:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def refusal(self, invocation_id: str) -> str | None:
        """Why an invocation with this id cannot start now, or None if it can."""
        if invocation_id in self._tasks:
            return f"An invocation with id '{invocation_id}' is already in flight on this connection."
        if len(self._tasks) >= MAX_INVOCATIONS_IN_FLIGHT:
            return (f"The connection already has {MAX_INVOCATIONS_IN_FLIGHT} invocations in flight, "
                    "the most allowed.")
        return None

    def start(self, invocation_id: str, work: Coroutine[object, None, None]) -> asyncio.Task[None]:
        """Run `work` as the invocation `invocation_id` (refusal() said it may start)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[invocation_id] = task
        task.add_done_callback(lambda done: self._ended(invocation_id, done))
        return task

    def _ended(self, invocation_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(invocation_id) is task:  # not a cancelled one whose id was used again since
            del self._tasks[invocation_id]

    def cancel(self, invocation_id: str) -> bool:
        """Cancel one invocation; False if none with that id is in flight (it ended, or never was)."""
        task = self._tasks.pop(invocation_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def cancel_all(self) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
