"""The agent actor: owns one AgentMachine; the authority on whether its agent can take work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acwd.core.agent import AgentMachine
from acwd.core.events import Offer, Outcome, StoreWrapup
from acwd.core.records import dump_agent
from acwd.runtime.actor import Actor, Clock
from acwd.runtime.journal import Commit

if TYPE_CHECKING:
    from acwd.runtime.node import Node

AGENT_MAILBOX = 64


class AgentActor(Actor[AgentMachine]):
    kind = "agent"

    def __init__(self, machine: AgentMachine, clock: Clock, node: Node) -> None:
        super().__init__(f"agent:{machine.agent_id}", machine, clock, AGENT_MAILBOX)
        self.node = node
        self.conn_id: int | None = None  # the connection that logged this agent in

    def next_deadline(self) -> float | None:
        return self.state.next_deadline()

    def tick(self, now: float) -> Outcome:
        return self.state.tick(now)

    def handle(self, message: Any, now: float) -> Outcome:
        if isinstance(message, Offer):
            return self.state.offer(now, message.ticket)
        if isinstance(message, Resync):
            return self.state.resync()
        raise TypeError(f"agent actor got {type(message).__name__}")

    async def deliver(self, out: Outcome, called: bool) -> Commit | None:
        node = self.node
        for event in out.events:
            node.publish(event)
        for effect in out.effects:
            if isinstance(effect, StoreWrapup):
                node.journal.wrapup(effect.record)
            else:
                await node.dispatcher.send(effect)
        if not (called or out.events or out.effects):
            return None
        return node.journal.agent_changed(self.state.agent_id, self._dump)

    def _dump(self) -> dict[str, Any]:
        return dump_agent(self.state)

    def snapshot(self, message: Any) -> Any:
        return self.state.clone()

    def restore(self, snapshot: Any, message: Any) -> None:
        if snapshot is not None:
            self.state = snapshot


class Resync:
    """Dispatcher → agent: send your routing view and every leg again (after a lost effect)."""
