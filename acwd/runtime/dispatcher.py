"""The dispatcher actor: owns the core Router and sends offers without ever waiting on an agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acwd.core.events import Effect, LegChanged, Outcome, ReturnItem
from acwd.core.routing import UNDELIVERED, Router
from acwd.runtime.actor import Actor, Call, Clock
from acwd.runtime.agent_actor import Resync
from acwd.runtime.journal import Commit

if TYPE_CHECKING:
    from acwd.runtime.node import Node

DISPATCHER_MAILBOX = 4096


class Dispatcher(Actor[Router]):
    kind = "dispatcher"

    def __init__(self, router: Router, clock: Clock, node: Node) -> None:
        super().__init__("dispatcher", router, clock, DISPATCHER_MAILBOX)
        self.node = node

    def next_deadline(self) -> float | None:
        return self.state.next_deadline()

    def tick(self, now: float) -> Outcome:
        return self.state.tick(now)

    def handle(self, message: Any, now: float) -> Outcome:
        if isinstance(message, Effect):
            return self.state.apply(now, message)
        raise TypeError(f"dispatcher got {type(message).__name__}")

    async def deliver(self, out: Outcome, called: bool) -> Commit | None:
        router, node = self.state, self.node
        for event in out.events:
            node.publish(event)
        while True:
            now = self.clock.now()
            undelivered = [offer for offer in router.dispatch(now) if not node.offer(offer)]
            if not undelivered:
                return node.journal.items_changed() if router.changed else None
            for offer in undelivered:
                # A full mailbox means a stalled agent: give the item to someone else for a while
                # rather than wait on it.
                node.log.warning("offer not delivered", agent_id=offer.agent_id)
                back = ReturnItem(offer.ticket.work_id, offer.agent_id, UNDELIVERED, now + 1.0)
                for event in router.apply(now, back).events:
                    node.publish(event)

    def snapshot(self, message: Any) -> Any:
        work_id = _work_id_of(message)
        if work_id is None:
            return None
        item = self.state.items.get(work_id)
        return work_id, item.clone() if item is not None else None

    def restore(self, snapshot: Any, message: Any) -> None:
        """Undo what the crashed message did to its item, rebuild the indexes from the items and
        agent views, and ask the agent whose effect was lost to send its state again."""
        router = self.state
        if snapshot is not None:
            work_id, item = snapshot
            if item is None:
                router.items.pop(work_id, None)
            else:
                router.items[work_id] = item
            router.changed.add(work_id)
        router.reconfigure(router.settings)
        agent_id = getattr(message, "agent_id", None) or getattr(
            getattr(message, "view", None) or getattr(message, "leg", None), "agent_id", None
        )
        actor = self.node.actors.get(agent_id) if agent_id else None
        if actor is not None:
            actor.send_nowait(Resync())


def _work_id_of(message: Any) -> str | None:
    if isinstance(message, Call):
        return message.key
    if isinstance(message, LegChanged):
        return message.leg.work_id
    work_id = getattr(message, "work_id", None)
    return work_id if isinstance(work_id, str) else None
