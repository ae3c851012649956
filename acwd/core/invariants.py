"""SEMANTICS.md's structural invariants, checked over a whole centre (recovery, tests, sims)."""

from __future__ import annotations

from collections.abc import Iterable

from acwd.core.agent import AgentMachine
from acwd.core.routing import Router
from acwd.core.views import ItemState, LegState

_HELD = (LegState.OFFERED, LegState.ACTIVE)


def check_invariants(router: Router, machines: Iterable[AgentMachine]) -> list[str]:
    """Every broken invariant, as a sentence; an empty list when all hold."""
    problems: list[str] = []
    holders: dict[str, str] = {}
    for machine in machines:
        if machine.used > machine.capacity:
            problems.append(
                f"agent {machine.agent_id} uses {machine.used} of capacity {machine.capacity}"
            )
        for leg in machine.legs.values():
            if leg.state not in _HELD:
                continue
            other = holders.setdefault(leg.work_id, machine.agent_id)
            if other != machine.agent_id:
                problems.append(f"item {leg.work_id} is held by {other} and {machine.agent_id}")
            item = router.items.get(leg.work_id)
            if item is None:
                problems.append(f"agent {machine.agent_id} holds unknown item {leg.work_id}")
            elif item.agent_id != machine.agent_id:
                problems.append(
                    f"item {leg.work_id} is {item.state.value} for {item.agent_id}, "
                    f"but agent {machine.agent_id} holds it {leg.state.value}"
                )
    for item in router.items.values():
        if item.state in (ItemState.OFFERED, ItemState.ACTIVE) and item.work_id not in holders:
            problems.append(f"item {item.work_id} is {item.state.value} but no agent holds it")
        if item.state is ItemState.QUEUED and item.work_id in holders:
            problems.append(f"item {item.work_id} is queued and held by {holders[item.work_id]}")
    return problems
