"""Actors: one task, one bounded mailbox, one message at a time, timers, and supervision.

An actor owns one piece of core state. Its loop waits for a message or for the state's next
deadline (``anyio.current_time()``, so trio's MockClock drives it in tests), handles it, and
delivers what the core returned. Supervision: an exception while handling one message is logged
with its traceback, the state is put back as it was before that message (``snapshot``/``restore``),
the caller gets ``internal``, and the loop goes on; nothing else is affected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import Outcome
from acwd.runtime.journal import Commit

S = TypeVar("S")
log = structlog.get_logger("acwd.actor")


class Clock:
    """The core's clock: Unix seconds, advancing with ``anyio.current_time()``.

    Reading the event loop's clock (not ``time.time()``) keeps timers exact and lets a mock clock
    run a day of traffic in seconds; the offset makes the readings wall-clock times on the wire.
    """

    def __init__(self, wall: float | None = None) -> None:
        start = time.time() if wall is None else wall
        self.offset = start - anyio.current_time()

    def now(self) -> float:
        return self.offset + anyio.current_time()

    def delay_until(self, at: float) -> float:
        return at - self.now()


class Reply:
    """A one-shot answer to a call, awaited by the caller, after its change is committed."""

    __slots__ = ("_done", "commit", "error", "value")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.commit: Commit | None = None

    def set(
        self, value: Any = None, error: BaseException | None = None, commit: Commit | None = None
    ) -> None:
        self.value, self.error, self.commit = value, error, commit
        self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self.error is not None:
            raise self.error
        if self.commit is not None:
            await self.commit.wait()  # acknowledge only what is on disk
        return self.value


@dataclass(slots=True)
class Call(Generic[S]):
    """Run ``fn(state, now)`` inside the actor; its Outcome is delivered, its result replied."""

    fn: Callable[[S, float], Outcome]
    reply: Reply | None = None
    key: str | None = None  # what the call may change (a work_id), for rolling back a crash


class Actor(Generic[S]):
    """Base of the agent actors and the dispatcher."""

    kind = "actor"

    def __init__(self, name: str, state: S, clock: Clock, mailbox_size: int | float) -> None:
        self.name = name
        self.state = state
        self.clock = clock
        self._send, self._recv = anyio.create_memory_object_stream[Any](mailbox_size)
        self.crashes = 0
        self._retry_at = 0.0  # after a crashed timer, wait before firing it again
        self.on_lateness: Callable[[str, float], None] | None = None

    # -- sending -------------------------------------------------------------------------------

    def send_nowait(self, message: Any) -> bool:
        """Deliver without waiting; False when the mailbox is full."""
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            return False
        return True

    async def send(self, message: Any) -> None:
        await self._send.send(message)

    async def call(self, fn: Callable[[S, float], Outcome], key: str | None = None) -> Any:
        """Run ``fn`` in the actor and return its Outcome's result (or raise its DomainError)."""
        reply = Reply()
        await self._send.send(Call(fn, reply, key))
        return await reply.wait()

    # -- hooks for subclasses ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        raise NotImplementedError

    def tick(self, now: float) -> Outcome:
        raise NotImplementedError

    def handle(self, message: Any, now: float) -> Outcome:
        """Messages other than Call."""
        raise NotImplementedError

    async def deliver(self, out: Outcome, called: bool) -> Commit | None:
        """Pass on what a step produced; returns the commit that will hold its changes."""
        raise NotImplementedError

    def snapshot(self, message: Any) -> Any:
        """What ``restore`` needs to undo ``message`` should handling it fail."""
        return None

    def restore(self, snapshot: Any, message: Any) -> None:
        """Put the state back as it was before a message that crashed."""

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        recv = self._recv
        while True:
            message: Any = None
            deadline = self._deadline()
            if deadline is None:
                message = await recv.receive()
            else:
                delay = self.clock.delay_until(deadline)
                if delay > 0:
                    with anyio.move_on_after(delay):
                        message = await recv.receive()
            now = self.clock.now()
            if message is not None:
                await self._step(message, now)
                # Drain what is already waiting before timers: one wake-up, many messages.
                while True:
                    try:
                        message = recv.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    await self._step(message, self.clock.now())
                now = self.clock.now()
            deadline = self._deadline()
            if deadline is not None and now >= deadline:
                due = self.next_deadline()
                if self.on_lateness is not None and due is not None:
                    self.on_lateness(self.kind, now - due)  # from when it was due, retries too
                await self._step(None, now)

    def _deadline(self) -> float | None:
        deadline = self.next_deadline()
        return None if deadline is None else max(deadline, self._retry_at)

    async def _step(self, message: Any, now: float) -> None:
        reply = message.reply if isinstance(message, Call) else None
        saved = None
        try:
            saved = self.snapshot(message)
            if message is None:
                out = self.tick(now)
            elif isinstance(message, Call):
                out = message.fn(self.state, now)
            else:
                out = self.handle(message, now)
        except DomainError as exc:
            if reply is not None:
                reply.set(error=exc)
            return
        except Exception as exc:
            self.crashes += 1
            log.error(
                "actor crashed; state restored from before the message",
                actor=self.name,
                kind=self.kind,
                message=type(message).__name__,
                exc_info=exc,
            )
            self.restore(saved, message)
            if message is None:
                self._retry_at = now + 1.0
            if reply is not None:
                reply.set(error=DomainError(ErrorCode.INTERNAL, f"Internal error in {self.name}."))
            return
        commit = None
        try:
            commit = await self.deliver(out, reply is not None)
        except Exception as exc:
            log.error("delivering an outcome failed", actor=self.name, exc_info=exc)
        if reply is not None:
            reply.set(out.result, commit=commit)
