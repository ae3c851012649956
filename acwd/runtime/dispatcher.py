"""The dispatcher actor: owns the core Router and sends offers without ever waiting on an agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acwd.core.events import Effect, Outcome, ReturnItem
from acwd.core.routing import UNDELIVERED, Router
from acwd.runtime.actor import Actor, Clock
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

    def restore(self, snapshot: Any) -> None:
        # Router operations validate before they change anything; after an unexpected error the
        # indexes are rebuilt from the items and agent views, which are the router's records.
        self.state.reconfigure(self.state.settings)
