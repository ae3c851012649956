"""Shared helpers for the core tests: a Center from a config dict, event filters, error checks.

Everything here is synchronous: the clock is a float passed to every call, so a test can stand
one microsecond before a deadline and then exactly on it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

try:
    import acwd  # noqa: F401
except ImportError:  # running `.venv/bin/pytest` from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from acwd.core.agent import Leg
from acwd.core.center import Center
from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import AcwEnded, AgentStateChanged, Event, Outcome, WorkOffered

E = TypeVar("E", bound=Event)

TICK = 1e-6  # "one tick before a deadline"


def make_center(config: dict[str, Any] | None = None) -> Center:
    """A Center over ``Settings.from_dict(config)``."""
    return Center(Settings.from_dict(config or {}))


def events(out: Outcome, kind: type[E]) -> list[E]:
    """The events of one type in an outcome, in order."""
    return [e for e in out.events if isinstance(e, kind)]


def types(out: Outcome) -> list[str]:
    return [e.type for e in out.events]


def offers(out: Outcome) -> list[tuple[str, str]]:
    """``(work_id, agent_id)`` of every ``work.offered`` in an outcome."""
    return [(e.work_id, e.agent_id) for e in events(out, WorkOffered)]


def acw_ends(out: Outcome) -> list[tuple[str, str, str]]:
    """``(agent_id, work_id, reason)`` of every ``acw.ended`` in an outcome."""
    return [(e.agent_id, e.work_id, e.reason) for e in events(out, AcwEnded)]


def transitions(out: Outcome, agent_id: str) -> list[tuple[str, str]]:
    """``(from, to)`` of the agent's ``agent.state_changed`` events."""
    return [(e.from_, e.to) for e in events(out, AgentStateChanged) if e.agent_id == agent_id]


def leg(center: Center, agent_id: str, work_id: str) -> Leg:
    return center.agents[agent_id].legs[work_id]


@contextmanager
def refused(code: ErrorCode) -> Iterator[pytest.ExceptionInfo[DomainError]]:
    """Expect a DomainError with ``code``."""
    with pytest.raises(DomainError) as info:
        yield info
    assert info.value.code is code, f"expected {code.value}, got {info.value.code.value}"


def serve(
    center: Center, now: float, work_id: str, queue: str = "default", agent_id: str | None = None
) -> str:
    """Submit an item, check it was offered, accept it; returns the agent that got it."""
    out = center.submit(now, work_id, queue)
    got = [a for w, a in offers(out) if w == work_id]
    assert got, f"{work_id} was not offered: {types(out)}"
    if agent_id is not None:
        assert got == [agent_id]
    if center.router.item(work_id).state.value == "offered":
        center.accept(now, work_id)
    return got[0]
