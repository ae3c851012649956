"""Agent machines and work items as plain data, for the journal, and back again.

Everything that recovery needs is here; settings are not stored with a leg but resolved again
from the running configuration (an ACW in progress keeps its own deadline, which is stored).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from acwd.core.acw import Acw
from acwd.core.agent import AgentMachine, Leg
from acwd.core.config import AcwMode, Settings
from acwd.core.views import (
    AcwView,
    FollowUp,
    ItemState,
    LegState,
    LegView,
    Status,
    Wrapup,
    WrapupRecord,
    to_plain,
)
from acwd.core.work import WorkItem

FORMAT = 1  # bump when the shape below changes, and teach the loaders the old one


def dump_agent(machine: AgentMachine) -> dict[str, Any]:
    return {
        "agent_id": machine.agent_id,
        "status": machine.status.value,
        "reason": machine.reason,
        "pending": [machine.pending[0].value, machine.pending[1]] if machine.pending else None,
        "capacity": machine.capacity,
        "skills": dict(machine.skills),
        "queues": list(machine.queues) if machine.queues is not None else None,
        "idle_since": machine.idle_since,
        "connected": machine.connected,
        "grace_deadline": machine.grace_deadline,
        "no_answer_count": machine.no_answer_count,
        "legs": [_dump_leg(leg) for leg in machine.legs.values()],
    }


def _dump_leg(leg: Leg) -> dict[str, Any]:
    acw = leg.acw
    return {
        "work_id": leg.work_id,
        "queue": leg.queue,
        "channel": leg.channel,
        "size": leg.size,
        "state": leg.state.value,
        "offered_at": leg.offered_at,
        "offer_expires_at": leg.offer_expires_at,
        "enqueued_at": leg.enqueued_at,
        "accepted_at": leg.accepted_at,
        "ended_at": leg.ended_at,
        "acw_requested": leg.acw_requested,
        "acw": None
        if acw is None
        else {
            "mode": acw.mode.value,
            "started_at": acw.started_at,
            "base_seconds": acw.base_seconds,
            "extension_seconds": acw.extension_seconds,
            "max_extensions": acw.max_extensions,
            "requested": acw.requested,
            "extensions": acw.extensions,
            "wrapup": to_plain(acw.wrapup) if acw.wrapup else None,
        },
    }


def load_agent(data: dict[str, Any], settings: Settings) -> AgentMachine:
    machine = AgentMachine(data["agent_id"], settings)
    machine.status = Status(data["status"])
    machine.reason = data["reason"]
    pending = data["pending"]
    machine.pending = (Status(pending[0]), pending[1]) if pending else None
    machine.capacity = data["capacity"]
    machine.skills = MappingProxyType(dict(data["skills"]))
    machine.queues = tuple(data["queues"]) if data["queues"] is not None else None
    machine.idle_since = data["idle_since"]
    machine.connected = data["connected"]
    machine.grace_deadline = data["grace_deadline"]
    machine.no_answer_count = data["no_answer_count"]
    for raw in data["legs"]:
        leg = _load_leg(raw, machine.agent_id, settings)
        machine.legs[leg.work_id] = leg
    return machine


def _load_leg(raw: dict[str, Any], agent_id: str, settings: Settings) -> Leg:
    queue = raw["queue"]
    # A queue removed from the configuration since: its leg finishes under the defaults.
    known = queue if queue in settings.queues else next(iter(settings.queues))
    resolved = settings.resolve(known, raw["channel"], agent_id)
    leg = Leg(
        work_id=raw["work_id"],
        agent_id=agent_id,
        queue=queue,
        channel=raw["channel"],
        size=raw["size"],
        settings=resolved,
        state=LegState(raw["state"]),
        offered_at=raw["offered_at"],
        offer_expires_at=raw["offer_expires_at"],
        enqueued_at=raw["enqueued_at"],
        accepted_at=raw["accepted_at"],
        ended_at=raw["ended_at"],
        acw_requested=raw["acw_requested"],
    )
    acw = raw["acw"]
    if acw is not None:
        leg.acw = Acw(
            mode=AcwMode(acw["mode"]),
            started_at=acw["started_at"],
            base_seconds=acw["base_seconds"],
            extension_seconds=acw["extension_seconds"],
            max_extensions=acw["max_extensions"],
            requested=acw["requested"],
            extensions=acw["extensions"],
            wrapup=load_wrapup(acw["wrapup"]) if acw["wrapup"] else None,
        )
    return leg


def load_wrapup(data: dict[str, Any]) -> Wrapup:
    return Wrapup(
        disposition=data["disposition"],
        notes=data["notes"],
        fields=data["fields"],
        follow_ups=tuple(FollowUp(**f) for f in data["follow_ups"]),
    )


def load_record(data: dict[str, Any]) -> WrapupRecord:
    fields = dict(data)
    fields["follow_ups"] = tuple(FollowUp(**f) for f in data["follow_ups"])
    return WrapupRecord(**fields)


def dump_item(item: WorkItem) -> dict[str, Any]:
    return {
        "work_id": item.work_id,
        "queue": item.queue,
        "channel": item.channel,
        "priority": item.priority,
        "size": item.size,
        "skills": [list(pair) for pair in item.skills],
        "attributes": to_plain(item.attributes),
        "enqueued_at": item.enqueued_at,
        "seq": item.seq,
        "queue_since": item.queue_since,
        "state": item.state.value,
        "agent_id": item.agent_id,
        "offer_expires_at": item.offer_expires_at,
        "legs": [to_plain(leg) for leg in item.legs],
        "backoff": item.backoff,
        "cancel_reason": item.cancel_reason,
    }


def load_item(data: dict[str, Any]) -> WorkItem:
    item = WorkItem(
        work_id=data["work_id"],
        queue=data["queue"],
        channel=data["channel"],
        priority=data["priority"],
        size=data["size"],
        skills=tuple((str(k), int(v)) for k, v in data["skills"]),
        attributes=data["attributes"],
        enqueued_at=data["enqueued_at"],
        seq=data["seq"],
        queue_since=data["queue_since"],
        state=ItemState(data["state"]),
        agent_id=data["agent_id"],
        offer_expires_at=data["offer_expires_at"],
        backoff=dict(data["backoff"]),
        cancel_reason=data["cancel_reason"],
    )
    item.legs = [_load_leg_view(leg) for leg in data["legs"]]
    return item


def _load_leg_view(data: dict[str, Any]) -> LegView:
    fields = dict(data)
    if fields.get("acw") is not None:
        fields["acw"] = AcwView(**fields["acw"])
    if fields.get("wrapup") is not None:
        fields["wrapup"] = load_wrapup(fields["wrapup"])
    return LegView(**fields)
