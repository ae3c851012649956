"""Agent machines and work items as plain data, for the journal, and back again.

Everything that recovery needs is here; settings are not stored with a leg but resolved again
from the running configuration (an ACW in progress keeps its own deadline, which is stored).
"""

from __future__ import annotations

from dataclasses import fields
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


_LEG_NOT_STORED = ("agent_id", "settings", "acw")  # the agent's own, resolved again, below


def _dump_leg(leg: Leg) -> dict[str, Any]:
    out = {f.name: getattr(leg, f.name) for f in fields(leg) if f.name not in _LEG_NOT_STORED}
    out["state"] = leg.state.value
    acw = leg.acw
    out["acw"] = None
    if acw is not None:
        out["acw"] = {f.name: getattr(acw, f.name) for f in fields(acw)}
        out["acw"].update(mode=acw.mode.value, wrapup=to_plain(acw.wrapup) if acw.wrapup else None)
    return out


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
    stored = {k: v for k, v in raw.items() if k != "acw"}
    leg = Leg(**stored | {"state": LegState(raw["state"])}, agent_id=agent_id, settings=resolved)
    acw = raw["acw"]
    if acw is not None:
        wrapup = load_wrapup(acw["wrapup"]) if acw["wrapup"] else None
        leg.acw = Acw(**acw | {"mode": AcwMode(acw["mode"]), "wrapup": wrapup})
    return leg


def load_wrapup(data: dict[str, Any]) -> Wrapup:
    return Wrapup(
        disposition=data["disposition"],
        notes=data["notes"],
        fields=data["fields"],
        follow_ups=tuple(FollowUp(**f) for f in data["follow_ups"]),
    )


def load_record(data: dict[str, Any]) -> WrapupRecord:
    values = dict(data)
    values["follow_ups"] = tuple(FollowUp(**f) for f in data["follow_ups"])
    return WrapupRecord(**values)


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
    values = dict(data)
    if values.get("acw") is not None:
        values["acw"] = AcwView(**values["acw"])
    if values.get("wrapup") is not None:
        values["wrapup"] = load_wrapup(values["wrapup"])
    return LegView(**values)
