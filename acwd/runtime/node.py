"""The running contact centre: agent actors, the dispatcher, the event bus, and the operations
the server calls. Reads (views, lists, stats) look at actor state directly — the event loop runs
one task at a time, so a read without an ``await`` sees a consistent state; every change goes
through the owning actor's mailbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from acwd.core.agent import AgentMachine
from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import AgentChanged, Event, Offer, Outcome
from acwd.core.invariants import check_invariants
from acwd.core.records import dump_agent, dump_item, load_agent, load_item
from acwd.core.routing import Router
from acwd.core.stats import CentreStats
from acwd.core.views import AgentView, ItemState, LegState, Status, WorkView, Wrapup
from acwd.runtime.actor import Actor, Clock
from acwd.runtime.agent_actor import AgentActor
from acwd.runtime.bus import EventBus
from acwd.runtime.dispatcher import Dispatcher
from acwd.runtime.journal import Journal, Recovered


class Node:
    """One acwd daemon's state and actors."""

    def __init__(
        self, settings: Settings, journal: Journal | None = None, wall: float | None = None
    ) -> None:
        self.settings = settings
        self._wall = wall  # the Unix time to start the clock at (tests); None: now
        self.journal = journal or Journal(settings.journal)
        self.log = structlog.get_logger("acwd")
        self.actors: dict[str, AgentActor] = {}
        self.bus = EventBus()
        self.stats = CentreStats()
        self.observers: list[Callable[[Event], None]] = []  # metrics, tests
        self.lateness_observers: list[Callable[[str, float], None]] = []
        self._configure_stats()
        self._tg: TaskGroup | None = None
        self.clock: Clock
        self.dispatcher: Dispatcher

    # -- life ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover from the journal, then run the actors until cancelled."""
        self.clock = Clock(self._wall)
        router = Router(self.settings)
        self.dispatcher = Dispatcher(router, self.clock, self)
        self.dispatcher.on_lateness = self._lateness
        journal = self.journal
        recovered = journal.open()
        journal.track_items(self._changed_items)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(journal.run)
                self._recover(recovered, router)
                await tg.start(self._supervise, self.dispatcher)
                for actor in self.actors.values():
                    await tg.start(self._supervise, actor)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await journal.flush()
            journal.close()

    def _changed_items(self) -> list[dict[str, Any]]:
        router = self.router
        changed, router.changed = router.changed, set()
        return [dump_item(router.items[w]) for w in changed if w in router.items]

    def _recover(self, recovered: Recovered, router: Router) -> None:
        """Rebuild agents and items as they were; timers resume on the wall clock."""
        now = self.clock.now()
        returned = router.restore([load_item(d) for d in recovered.items])
        resumed = 0
        for data in recovered.agents:
            machine = load_agent(data, self.settings)
            for leg in list(machine.legs.values()):
                if leg.state is LegState.OFFERED:  # its item went back to its queue above
                    del machine.legs[leg.work_id]
                elif leg.state is LegState.WRAPPING:
                    resumed += 1
            if machine.status is not Status.OFFLINE:
                # Every connection is gone: the grace period counts from the restart.
                machine.connected = False
                machine.grace_deadline = now + machine.disconnect_grace()
            view = machine.routing_view()
            machine.sent(view)
            router.apply(now, AgentChanged(view))
            self.actors[machine.agent_id] = self._new_actor(machine)
            self.journal.agent_changed(machine.agent_id, partial(dump_agent, machine))
        problems = check_invariants(router, [a.state for a in self.actors.values()])
        for problem in problems:
            self.log.error("journal state breaks an invariant", problem=problem)
        if recovered.agents or recovered.items:
            self.journal.items_changed()
            self.log.info(
                "recovered from journal",
                agents=len(recovered.agents),
                items=len(recovered.items),
                offers_returned=returned,
                acw_resumed=resumed,
                invariant_problems=len(problems),
                seconds=round(recovered.seconds, 3),
            )

    def _new_actor(self, machine: AgentMachine) -> AgentActor:
        actor = AgentActor(machine, self.clock, self)
        actor.on_lateness = self._lateness
        return actor

    async def _supervise(
        self, actor: Actor[Any], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run an actor, restarting it if its loop itself fails (message errors never get here)."""
        task_status.started()
        while True:
            try:
                await actor.run()
            except Exception as exc:
                actor.crashes += 1
                self.log.error("actor loop failed; restarting", actor=actor.name, exc_info=exc)
                await anyio.sleep(0)

    def publish(self, event: Event) -> None:
        self.journal.event(event)
        self.stats.observe(event)
        for observe in self.observers:
            observe(event)
        self.bus.publish(event)

    def offer(self, offer: Offer) -> bool:
        """Put an offer in its agent's mailbox without waiting; False if it cannot take it now."""
        actor = self.actors.get(offer.agent_id)
        return actor is not None and actor.send_nowait(offer)

    def _lateness(self, kind: str, seconds: float) -> None:
        for observe in self.lateness_observers:
            observe(kind, seconds)

    def _configure_stats(self) -> None:
        for name in self.settings.queues:
            ws = self.settings.resolve(name)
            self.stats.configure(name, ws.sla_target_s, ws.sla_window_s)

    # -- lookups -------------------------------------------------------------------------------

    def actor(self, agent_id: str) -> AgentActor:
        actor = self.actors.get(agent_id)
        if actor is None:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"There is no agent {agent_id}.", {"agent_id": agent_id}
            )
        return actor

    @property
    def router(self) -> Router:
        return self.dispatcher.state

    def agent_view(self, agent_id: str) -> AgentView:
        return self.actor(agent_id).state.view()

    def agent_views(self, state: str | None = None, queue: str | None = None) -> list[AgentView]:
        out = []
        for actor in self.actors.values():
            machine = actor.state
            if state is not None and machine.state.value != state:
                continue
            if queue is not None and machine.queues is not None and queue not in machine.queues:
                continue
            out.append(machine.view())
        return out

    def work_view(self, work_id: str) -> WorkView:
        return self.router.item(work_id).view()

    # -- agents --------------------------------------------------------------------------------

    async def login(self, agent_id: str, conn_id: int | None, **profile: Any) -> AgentView:
        actor = self.actors.get(agent_id)
        if actor is None:
            actor = self._new_actor(AgentMachine(agent_id, self.settings))
            self.actors[agent_id] = actor
            assert self._tg is not None, "the node is not running"
            await self._tg.start(self._supervise, actor)
        # Bind first: the login itself may make the agent routable, and the offer that follows
        # must reach this connection.
        previous = actor.conn_id, self.bus.bound_conn(agent_id)
        if conn_id is not None:
            actor.conn_id = conn_id
            self.bus.bind_agent(agent_id, conn_id)
        try:
            view: AgentView = await actor.call(lambda m, now: m.login(now, **profile))
        except DomainError:
            if conn_id is not None:
                actor.conn_id = previous[0]
                self.bus.bind_agent(agent_id, previous[1])
            raise
        return view

    async def logout(self, agent_id: str, force: bool = False) -> AgentView:
        result: AgentView = await self.actor(agent_id).call(lambda m, now: m.logout(now, force))
        return result

    async def set_status(self, agent_id: str, status: str, reason: str | None) -> AgentView:
        actor = self.actor(agent_id)
        result: AgentView = await actor.call(lambda m, now: m.set_status(now, status, reason))
        return result

    async def connection_closed(self, conn_id: int) -> None:
        """Offers to the connection's agents go back now; their grace period starts."""
        for agent_id in self.bus.detach(conn_id):
            actor = self.actors.get(agent_id)
            if actor is not None and actor.conn_id == conn_id:
                actor.conn_id = None
                await actor.call(lambda m, now: m.connection_lost(now))

    # -- work ----------------------------------------------------------------------------------

    async def submit(
        self,
        work_id: str,
        queue: str,
        channel: str | None = None,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        size: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> WorkView:
        await self.dispatcher.call(
            lambda r, now: r.submit(
                now, work_id, queue, channel, priority, skills, size, attributes
            ),
            key=work_id,
        )
        return self.work_view(work_id)  # after routing: it may already be offered

    async def on_leg(
        self,
        work_id: str,
        state: LegState,
        agent_id: str | None,
        fn: Callable[[AgentMachine, float], Outcome],
    ) -> Any:
        """Run ``fn`` in the actor of the agent holding the item's leg in ``state``."""
        if agent_id is not None and work_id not in self.actor(agent_id).state.legs:
            self.router.holder(work_id, state)  # an item in another state: invalid_state
        holder = agent_id or self.router.holder(work_id, state)
        return await self.actor(holder).call(fn)

    async def accept(self, work_id: str, agent_id: str | None = None) -> Any:
        await self.on_leg(work_id, LegState.OFFERED, agent_id, lambda m, n: m.accept(n, work_id))
        return self.work_view(work_id)

    async def decline(self, work_id: str, reason: str | None, agent_id: str | None = None) -> Any:
        await self.on_leg(
            work_id, LegState.OFFERED, agent_id, lambda m, now: m.decline(now, work_id, reason)
        )
        return self.work_view(work_id)

    async def end(self, work_id: str, agent_id: str | None = None) -> Any:
        return await self.on_leg(work_id, LegState.ACTIVE, agent_id, lambda m, n: m.end(n, work_id))

    async def transfer(self, work_id: str, queue: str, agent_id: str | None = None) -> Any:
        await self.on_leg(
            work_id, LegState.ACTIVE, agent_id, lambda m, now: m.transfer(now, work_id, queue)
        )
        return self.work_view(work_id)

    async def cancel(self, work_id: str, reason: str | None = None) -> WorkView:
        """Cancel a queued or offered item. An offer is withdrawn from its agent first; if the
        agent gave it back meanwhile (timeout, decline), look again."""
        why = reason or "cancelled"
        for _ in range(8):
            item = self.router.check_cancel(work_id)
            if item.state is ItemState.OFFERED and item.agent_id is not None:
                holder = item.agent_id
                try:
                    await self.actor(holder).call(lambda m, now: m.withdraw(now, work_id))
                except DomainError as exc:
                    if exc.code is ErrorCode.NOT_FOUND:
                        await anyio.sleep(0)  # its ReturnItem is on the way to the dispatcher
                        continue
                    raise
                expected: str | None = holder
            else:
                expected = None

            def cancel(router: Router, now: float, expected: str | None = expected) -> Outcome:
                current = router.check_cancel(work_id)
                if current.agent_id != expected:
                    return Outcome(result=None)
                return router.cancel(now, work_id, why)

            result: WorkView | None = await self.dispatcher.call(cancel, key=work_id)
            if result is not None:
                return result
        raise DomainError(ErrorCode.CONFLICT, f"Work item {work_id} kept moving; try again.")

    # -- ACW -----------------------------------------------------------------------------------

    async def acw_request(self, work_id: str, agent_id: str | None = None) -> Any:
        return await self.on_leg(
            work_id, LegState.ACTIVE, agent_id, lambda m, now: m.acw_request(now, work_id)
        )

    async def acw_extend(self, work_id: str, agent_id: str | None = None) -> Any:
        return await self.on_leg(
            work_id, LegState.WRAPPING, agent_id, lambda m, now: m.acw_extend(now, work_id)
        )

    async def acw_complete(self, work_id: str, wrapup: Wrapup, agent_id: str | None = None) -> Any:
        return await self.on_leg(
            work_id,
            LegState.WRAPPING,
            agent_id,
            lambda m, now: m.acw_complete(now, work_id, wrapup),
        )

    async def acw_force_end(self, work_id: str) -> Any:
        return await self.on_leg(
            work_id, LegState.WRAPPING, None, lambda m, now: m.acw_force_end(now, work_id)
        )

    # -- queues and configuration --------------------------------------------------------------

    def queue_stats(self, queue: str) -> dict[str, Any]:
        if queue not in self.settings.queues:
            raise DomainError(ErrorCode.NOT_FOUND, f"No queue {queue!r}.", {"queue": queue})
        now = self.clock.now()
        waiting = list(self.router.waiting(queue))
        states: Counter[str] = Counter()
        for actor in self.actors.values():
            machine = actor.state
            if machine.queues is None or queue in machine.queues:
                states[machine.state.value] += 1
        out: dict[str, Any] = {
            "queue": queue,
            "waiting": len(waiting),
            "oldest_wait_s": max((now - i.enqueued_at for i in waiting), default=0.0),
            "agents": {s: states[s] for s in ("available", "busy", "acw", "away")},
        }
        out.update(self.stats.queues[queue].view(now))
        return out

    async def reload(self, settings: Settings) -> list[str]:
        """Apply new settings atomically: the router first (it may refuse), then every agent."""
        changes = self.settings.diff(settings)

        def reconfigure(router: Router, now: float) -> Outcome:
            router.reconfigure(settings)
            return Outcome()

        await self.dispatcher.call(reconfigure)
        self.settings = settings
        for actor in self.actors.values():
            actor.state.settings = settings
        self._configure_stats()
        return changes
