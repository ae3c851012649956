"""The router: waiting items, the dispatcher's view of agents, and who gets what next.

Index structures, and why:
- Waiting items: per queue, one binary heap per item priority level, keyed by
  ``(enqueued_at, seq)``. Within a level the oldest item is also the most aged, so the best item
  of a queue is the best of its level heads: O(levels · log n) per decision. Priority levels are
  few (a handful of integers), and a re-queued item is pushed back with its original enqueue time
  and so lands in its old place.
- Routable agents: per queue, a heap keyed by the queue's policy (``longest_idle``: idle-since;
  ``least_active``: units in use now, then idle-since), O(log n) per decision. ``skills_best``
  ranks by the item's own required skills, which no precomputed key can order, so it scans the
  queue's routable members (documented in docs/semantics.md).
- Heaps use lazy deletion: an entry carries the version (agents) or token (items) it was pushed
  with, and entries that no longer match are dropped when they reach the top, so updates stay
  O(log n) instead of O(n) removals. Heaps are rebuilt when stale entries outnumber live ones.
- Entries that are valid but not eligible for this particular match (skills, size, re-offer
  backoff) are set aside and pushed back after the decision.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from acwd.core.config import Policy, QueueConfig, Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import (
    AgentChanged,
    Effect,
    LegChanged,
    Offer,
    Outcome,
    ReturnItem,
    TransferItem,
    WorkCancelled,
    WorkCompleted,
    WorkOverflowed,
    WorkQueued,
)
from acwd.core.views import ItemState, LegState, RoutingView
from acwd.core.work import WorkItem, required_skills

# Finished items stay in memory for work.get and for refusing a repeated work_id; beyond this
# many the oldest are forgotten (the journal keeps them), so memory does not grow with traffic.
KEEP_FINISHED = 100_000
UNDELIVERED = "undelivered"  # ReturnItem reason: the offer never reached the agent's mailbox
ItemEntry = tuple[float, int, int, str]  # (enqueued_at, seq, token, work_id)
AgentEntry = tuple[tuple[float, ...], int, str, int]  # (policy key, seq, agent_id, version)


@dataclass(slots=True)
class QueueIndex:
    config: QueueConfig
    levels: dict[int, list[ItemEntry]] = field(default_factory=dict)
    waiting: int = 0
    members: set[str] = field(default_factory=set)  # routable agents serving this queue
    agents: list[AgentEntry] = field(default_factory=list)


class Router:
    """Owns work items and decides offers; agents stay the authority on themselves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.items: dict[str, WorkItem] = {}
        self.agents: dict[str, RoutingView] = {}
        self.queues: dict[str, QueueIndex] = {}
        self._versions: dict[str, int] = {}
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, str, str]] = []  # (at, seq, kind, work_id)
        self._dirty_agents: set[str] = set()
        self._dirty_items: set[str] = set()
        self.changed: set[str] = set()  # items changed since the journal last took this set
        self.finished: deque[str] = deque()  # finished items, oldest first, kept for work.get
        self.keep_finished = KEEP_FINISHED
        self.reconfigure(settings)

    # -- configuration -------------------------------------------------------------------------

    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings: queue indexes are rebuilt, waiting items keep their places."""
        missing = {
            item.queue
            for item in self.items.values()
            if not item.finished and item.queue not in settings.queues
        }
        if missing:
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Queue {sorted(missing)[0]!r} still holds work; drain it before removing it.",
                {"queues": sorted(missing)},
            )
        self.settings = settings
        self.queues = {name: QueueIndex(cfg) for name, cfg in settings.queues.items()}
        for item in self.items.values():
            if item.state is ItemState.QUEUED:
                self._index(item, item.queue_since)
        for view in self.agents.values():
            self._index_agent(view)
        self._dirty_agents.update(self.agents)

    def restore(self, items: list[WorkItem]) -> int:
        """Take back items from the journal; offers that were in flight go back to their queues
        keeping their place. Returns how many were offered."""
        returned = 0
        for item in sorted(items, key=lambda it: it.seq):
            self.items[item.work_id] = item
            if item.state is ItemState.OFFERED:
                item.state, item.agent_id, item.offer_expires_at = ItemState.QUEUED, None, None
                returned += 1
                self.changed.add(item.work_id)
            if item.state is ItemState.QUEUED:
                self._index(item, item.queue_since)
        self._seq = itertools.count(max((it.seq for it in items), default=-1) + 1)
        return returned

    # -- requests ------------------------------------------------------------------------------

    def submit(
        self,
        now: float,
        work_id: str,
        queue: str,
        channel: str | None = None,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        size: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Queue a new item; a repeated work_id is a conflict and the first one stays."""
        if work_id in self.items:
            raise DomainError(
                ErrorCode.CONFLICT, f"Work item {work_id} already exists.", {"work_id": work_id}
            )
        if queue not in self.queues:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"There is no queue {queue!r}.", {"queue": queue}
            )
        channel = channel or self.settings.channel_of(queue)
        item = WorkItem(
            work_id=work_id,
            queue=queue,
            channel=channel,
            priority=priority,
            size=size if size is not None else self.settings.size_of(channel),
            skills=required_skills(skills),
            attributes=attributes or {},
            enqueued_at=now,
            seq=next(self._seq),
            queue_since=now,
        )
        self.items[work_id] = item
        self._index(item, now)
        out = Outcome(events=[WorkQueued(now, work_id, queue, priority, now)])
        out.result = item.view()
        return out

    def item(self, work_id: str) -> WorkItem:
        item = self.items.get(work_id)
        if item is None:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"There is no work item {work_id}.", {"work_id": work_id}
            )
        return item

    def holder(self, work_id: str, state: LegState) -> str:
        """The agent holding ``work_id``'s leg in ``state``: the current one, or the newest."""
        item = self.item(work_id)
        current = state in (LegState.OFFERED, LegState.ACTIVE) and item.state.value == state.value
        if current and item.agent_id is not None:
            return item.agent_id
        for leg in reversed(item.legs):
            if leg.state == state.value:
                return leg.agent_id
        raise DomainError(
            ErrorCode.INVALID_STATE,
            f"Work item {work_id} has no {state.value} leg; it is {item.state.value}.",
            {"state": item.state.value},
        )

    def check_cancel(self, work_id: str) -> WorkItem:
        """The item, if it may be cancelled now (queued or offered)."""
        item = self.item(work_id)
        if item.state not in (ItemState.QUEUED, ItemState.OFFERED):
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Work item {work_id} is {item.state.value}; only queued or offered work can be "
                "cancelled.",
                {"state": item.state.value},
            )
        return item

    def cancel(self, now: float, work_id: str, reason: str = "cancelled") -> Outcome:
        """Cancel a queued or offered item; the caller has already withdrawn any offer."""
        item = self.check_cancel(work_id)
        if item.state is ItemState.QUEUED:
            self._unindex(item)
        item.state, item.agent_id, item.offer_expires_at = ItemState.CANCELLED, None, None
        item.cancel_reason = reason
        self.changed.add(work_id)
        self._retire(item)
        out = Outcome(events=[WorkCancelled(now, work_id, item.queue, reason)])
        out.result = item.view()
        return out

    # -- what agents tell us -------------------------------------------------------------------

    def apply(self, now: float, effect: Effect) -> Outcome:
        """Take in an agent's effect (routing view, leg change, returned or transferred item)."""
        out = Outcome()
        if isinstance(effect, AgentChanged):
            self._update_agent(effect.view)
        elif isinstance(effect, LegChanged):
            leg = effect.leg
            item = self.items.get(leg.work_id)
            if item is None:
                return out
            item.record_leg(leg)
            self.changed.add(item.work_id)
            if item.agent_id != leg.agent_id:
                return out  # transferred away: this leg no longer drives the item's state
            # The agent is the authority on its leg: follow its state, even across a lost update.
            if item.finished:
                return out
            if leg.state == "offered":
                item.offer_expires_at = leg.offer_expires_at
            elif leg.state == "active":
                item.state, item.offer_expires_at = ItemState.ACTIVE, None
            elif leg.state == "wrapping":
                item.state, item.offer_expires_at = ItemState.WRAPPING, None
            elif leg.state == "done":
                item.state = ItemState.COMPLETED
                out.events.append(WorkCompleted(now, item.work_id, leg.agent_id, leg.queue))
                self._retire(item)
        elif isinstance(effect, ReturnItem):
            item = self.items.get(effect.work_id)
            if item and item.state is ItemState.OFFERED and item.agent_id == effect.agent_id:
                view = self.agents.get(effect.agent_id)
                if effect.reason == UNDELIVERED and view is not None:
                    # The agent never saw the offer, so it will not correct our count: undo it.
                    free = view.free + item.size
                    self._update_agent(
                        replace(view, free=free, used=view.used - item.size, routable=True)
                    )
                if effect.backoff_until is not None:
                    item.backoff[effect.agent_id] = effect.backoff_until
                    self._timer(effect.backoff_until, "backoff", item.work_id)
                self._requeue(out, now, item)
        elif isinstance(effect, TransferItem):
            item = self.items.get(effect.work_id)
            if item and item.agent_id == effect.agent_id:
                item.queue, item.channel = effect.queue, self.settings.channel_of(effect.queue)
                item.queue_since = now
                # Not straight back to the agent who handed it on, unless nobody else takes it.
                backoff = self.settings.resolve(item.queue, item.channel).reoffer_backoff_s
                item.backoff[effect.agent_id] = now + backoff
                self._timer(now + backoff, "backoff", item.work_id)
                self._requeue(out, now, item)
        return out

    # -- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> Outcome:
        """Fire due overflow, max-wait and re-offer backoff timers."""
        out = Outcome()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, work_id = heapq.heappop(self._timers)
            item = self.items.get(work_id)
            if item is None or item.state is not ItemState.QUEUED:
                continue  # re-armed when it is queued again
            cfg = self.queues[item.queue].config
            if kind == "backoff":
                self._dirty_items.add(work_id)
            # A timer armed in an earlier queue (or twice, on re-queue) is checked against the
            # item's current queue: one without overflow / max_wait must not act on it.
            elif (
                kind == "overflow"
                and cfg.overflow_after_s > 0
                and cfg.overflow_queue
                and self._overflow_at(item, cfg) <= now
            ):
                self._unindex(item)
                out.events.append(WorkOverflowed(now, work_id, item.queue, cfg.overflow_queue))
                item.queue, item.queue_since = cfg.overflow_queue, now
                item.channel = self.settings.channel_of(item.queue)
                self._index(item, now)
            elif kind == "max_wait" and cfg.max_wait_s > 0 and self._max_wait_at(item, cfg) <= now:
                out.extend(self.cancel(now, work_id, "max_wait"))
        return out

    # -- matching ------------------------------------------------------------------------------

    def dispatch(self, now: float) -> list[Offer]:
        """Match waiting items and routable agents that changed since the last call.

        Agents that became routable look for their best item (highest effective priority, then
        longest wait, across all their queues); each such item, and each newly queued one, then
        goes to the best agent by its queue's policy. Ties between agents that became routable at
        the same moment are thus settled by policy, not by message order.
        """
        offers: list[Offer] = []
        while self._dirty_agents or self._dirty_items:
            seekers = []
            for agent_id in sorted(self._dirty_agents, key=self._idle_key):
                view = self.agents.get(agent_id)
                if view is not None and view.routable:
                    item = self._best_item(view, now)
                    if item is not None:
                        self._dirty_items.add(item.work_id)
                        seekers.append(agent_id)
            self._dirty_agents.clear()
            batch = [self.items[w] for w in self._dirty_items]
            self._dirty_items.clear()
            batch.sort(key=lambda it: self._item_key(it, now))
            for item in batch:
                if item.state is ItemState.QUEUED:
                    agent = self._best_agent(item, now)
                    if agent is None:
                        continue
                    better = self._best_item(agent, now)
                    if better is not None and (
                        self._item_key(better, now) < self._item_key(item, now)
                    ):
                        # The agent has a better item waiting (one no seeker picked this round):
                        # it takes that first, next round, and this item tries again then.
                        self._dirty_agents.add(agent.agent_id)
                        self._dirty_items.add(item.work_id)
                        continue
                    offers.append(self._offer(item, agent))
            self._dirty_agents.update(a for a in seekers if self.agents[a].routable)
        return offers

    def effective_priority(self, item: WorkItem, now: float) -> int:
        cfg = self.queues[item.queue].config
        aging = 0
        if cfg.aging_step_s > 0:
            aging = math.floor(max(0.0, now - item.enqueued_at) / cfg.aging_step_s)
        return item.priority + cfg.priority + aging

    def waiting(self, queue: str) -> Iterator[WorkItem]:
        """Items waiting in ``queue``, in no particular order."""
        for entries in self.queues[queue].levels.values():
            for entry in entries:
                item = self.items[entry[3]]
                if item.token == entry[2] and item.state is ItemState.QUEUED:
                    yield item

    # -- internals -----------------------------------------------------------------------------

    def _retire(self, item: WorkItem) -> None:
        """Remember a finished item; forget the oldest beyond ``keep_finished``."""
        self.finished.append(item.work_id)
        while len(self.finished) > self.keep_finished:
            work_id = self.finished.popleft()
            old = self.items.get(work_id)
            # Finished that many finishes ago: long since in the journal.
            if old is not None and old.finished:
                del self.items[work_id]

    def _item_key(self, item: WorkItem, now: float) -> tuple[int, float, int]:
        return (-self.effective_priority(item, now), item.enqueued_at, item.seq)

    def _idle_key(self, agent_id: str) -> float:
        view = self.agents.get(agent_id)
        return view.idle_since if view else math.inf

    def _offer(self, item: WorkItem, agent: RoutingView) -> Offer:
        self._unindex(item)
        item.state, item.agent_id = ItemState.OFFERED, agent.agent_id
        self.changed.add(item.work_id)
        # Count the offer against the agent now; its own view, sent after the offer, replaces this.
        free = agent.free - item.size
        self._update_agent(
            replace(agent, free=free, used=agent.used + item.size, routable=free > 0)
        )
        return Offer(agent.agent_id, item.ticket())

    def _requeue(self, out: Outcome, now: float, item: WorkItem) -> None:
        item.state, item.agent_id, item.offer_expires_at = ItemState.QUEUED, None, None
        self._index(item, now)
        out.events.append(
            WorkQueued(now, item.work_id, item.queue, item.priority, item.enqueued_at)
        )

    def _index(self, item: WorkItem, now: float) -> None:
        q = self.queues[item.queue]
        item.token += 1
        self.changed.add(item.work_id)
        heapq.heappush(
            q.levels.setdefault(item.priority, []),
            (item.enqueued_at, item.seq, item.token, item.work_id),
        )
        q.waiting += 1
        self._dirty_items.add(item.work_id)
        cfg = q.config
        # A re-queued item may be past due already: it is then due now, not late.
        if cfg.overflow_after_s > 0 and cfg.overflow_queue:
            self._timer(max(now, self._overflow_at(item, cfg)), "overflow", item.work_id)
        if cfg.max_wait_s > 0:
            self._timer(max(now, self._max_wait_at(item, cfg)), "max_wait", item.work_id)

    def _unindex(self, item: WorkItem) -> None:
        item.token += 1  # its heap entry is now stale
        self.queues[item.queue].waiting -= 1

    @staticmethod
    def _overflow_at(item: WorkItem, cfg: QueueConfig) -> float:
        return item.queue_since + cfg.overflow_after_s

    @staticmethod
    def _max_wait_at(item: WorkItem, cfg: QueueConfig) -> float:
        return item.enqueued_at + cfg.max_wait_s

    def _timer(self, at: float, kind: str, work_id: str) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), kind, work_id))

    def _serves(self, view: RoutingView) -> list[str]:
        return (
            list(self.queues)
            if view.queues is None
            else [q for q in view.queues if q in self.queues]
        )

    def _update_agent(self, view: RoutingView) -> None:
        old = self.agents.get(view.agent_id)
        self.agents[view.agent_id] = view
        self._versions[view.agent_id] = self._versions.get(view.agent_id, 0) + 1
        if old is not None:
            for name in self._serves(old):
                self.queues[name].members.discard(view.agent_id)
        self._index_agent(view)
        if view.routable:
            self._dirty_agents.add(view.agent_id)

    def _index_agent(self, view: RoutingView) -> None:
        if not view.routable:
            return
        version = self._versions.get(view.agent_id, 0)
        for name in self._serves(view):
            q = self.queues[name]
            q.members.add(view.agent_id)
            if q.config.policy is Policy.SKILLS_BEST:
                continue
            key = (
                (float(view.used), view.idle_since)
                if q.config.policy is Policy.LEAST_ACTIVE
                else (view.idle_since,)
            )
            heapq.heappush(q.agents, (key, next(self._seq), view.agent_id, version))
            if len(q.agents) > 2 * len(q.members) + 64:
                self._compact(q)

    def _compact(self, q: QueueIndex) -> None:
        q.agents = [e for e in q.agents if self._live_agent(q, e)]
        heapq.heapify(q.agents)

    def _live_agent(self, q: QueueIndex, entry: AgentEntry) -> bool:
        return entry[3] == self._versions.get(entry[2]) and entry[2] in q.members

    def _eligible(self, view: RoutingView, item: WorkItem, now: float) -> bool:
        if not view.routable or view.free < item.size:
            return False
        if item.backoff.get(view.agent_id, -math.inf) > now:
            return False
        # An agent still wrapping up its own earlier leg of this item (a transfer back to a queue
        # it serves, under acw_scope = "slot") must not be offered the item again until that ends.
        if any(leg.agent_id == view.agent_id and leg.state == "wrapping" for leg in item.legs):
            return False
        return all(view.skills.get(skill, -1) >= level for skill, level in item.skills)

    def _best_agent(self, item: WorkItem, now: float) -> RoutingView | None:
        q = self.queues[item.queue]
        if q.config.policy is Policy.SKILLS_BEST:
            best: tuple[float, float] | None = None
            chosen = None
            for agent_id in q.members:
                view = self.agents[agent_id]
                if self._eligible(view, item, now):
                    have = view.skills
                    score = (-float(sum(have.get(s, 0) for s, _ in item.skills)), view.idle_since)
                    if best is None or score < best:
                        best, chosen = score, view
            return chosen
        aside: list[AgentEntry] = []
        found = None
        while q.agents:
            entry = q.agents[0]
            if not self._live_agent(q, entry):
                heapq.heappop(q.agents)
                continue
            view = self.agents[entry[2]]
            if self._eligible(view, item, now):
                found = view
                break
            aside.append(heapq.heappop(q.agents))
        for entry in aside:
            heapq.heappush(q.agents, entry)
        return found

    def _best_item(self, view: RoutingView, now: float) -> WorkItem | None:
        best: tuple[int, float, int] | None = None
        chosen = None
        for name in self._serves(view):
            q = self.queues[name]
            for level, entries in list(q.levels.items()):
                item = self._first_eligible(entries, view, now)
                if item is None:
                    if not entries:
                        del q.levels[level]
                    continue
                key = self._item_key(item, now)
                if best is None or key < best:
                    best, chosen = key, item
        return chosen

    def _first_eligible(
        self, entries: list[ItemEntry], view: RoutingView, now: float
    ) -> WorkItem | None:
        aside: list[ItemEntry] = []
        found = None
        while entries:
            entry = entries[0]
            item = self.items[entry[3]]
            if item.token != entry[2] or item.state is not ItemState.QUEUED:
                heapq.heappop(entries)
                continue
            if self._eligible(view, item, now):
                found = item
                break
            aside.append(heapq.heappop(entries))
        for entry in aside:
            heapq.heappush(entries, entry)
        return found
