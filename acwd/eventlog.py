"""Log lines for what operators follow: agent state changes and ACW, at info; the rest at debug.

An observer on ``node.observers`` (registered by ``acwd serve``). Work events and answered
requests are logged only when debug is on; the check is made once, so at info the hot path pays
one dictionary lookup per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import structlog

from acwd.core.events import (
    AcwEnded,
    AcwExtended,
    AcwStarted,
    AgentStateChanged,
    Event,
    WrapupRecorded,
)

__all__ = ["EventLog"]


class EventLog:
    """Turns core events into structured log lines."""

    def __init__(self, logger: Any = None, debug: bool | None = None) -> None:
        self.log = logger if logger is not None else structlog.get_logger("acwd.events")
        if debug is None:
            debug = bool(self.log.is_enabled_for(logging.DEBUG))
        self.debug = debug
        self._info: dict[type[Event], Callable[[Any], None]] = {
            AgentStateChanged: self._state_changed,
            AcwStarted: self._acw_started,
            AcwExtended: self._acw_extended,
            AcwEnded: self._acw_ended,
        }

    def observe(self, event: Event) -> None:
        """Node observer."""
        handle = self._info.get(type(event))
        if handle is not None:
            handle(event)
        elif self.debug and not isinstance(event, WrapupRecorded):
            self.log.debug(event.type, **event.to_wire())

    def request(self, method: str, code: str, seconds: float) -> None:
        """Server request hook (attach only at debug): one line per answered request."""
        self.log.debug("request", method=method, code=code, ms=round(seconds * 1000, 3))

    def _state_changed(self, e: AgentStateChanged) -> None:
        self.log.info(
            "agent state changed",
            agent_id=e.agent_id,
            from_state=e.from_,
            to_state=e.to,
            status=e.status,
            reason=e.reason,
            pending_status=e.pending_status,
        )

    def _acw_started(self, e: AcwStarted) -> None:
        self.log.info(
            "acw started",
            agent_id=e.agent_id,
            work_id=e.work_id,
            queue=e.queue,
            mode=e.mode,
            deadline=e.deadline,
        )

    def _acw_extended(self, e: AcwExtended) -> None:
        self.log.info(
            "acw extended",
            agent_id=e.agent_id,
            work_id=e.work_id,
            queue=e.queue,
            deadline=e.deadline,
            extensions=e.extensions,
        )

    def _acw_ended(self, e: AcwEnded) -> None:
        self.log.info(
            "acw ended",
            agent_id=e.agent_id,
            work_id=e.work_id,
            queue=e.queue,
            reason=e.reason,
            acw_seconds=round(e.acw_seconds, 3),
        )
