"""After Conversation Work rules: when it starts, its deadline, extensions, dispositions, records.

The table of SEMANTICS.md lives here as data (``_MODES``) so each mode's behaviour is read in one
place. Deadlines are inclusive: at a clock reading ``>= deadline`` the ACW is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from acwd.core.config import AcwMode, WorkSettings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.views import AcwView, Wrapup, WrapupRecord


class ModeRule(NamedTuple):
    starts: str  # "never" | "always" | "on_request"
    timed: bool  # does acw_seconds bound it (manual: only max_acw_seconds, when set)
    early_exit: bool  # does acw.complete end it before the deadline


_MODES: dict[AcwMode, ModeRule] = {
    AcwMode.OFF: ModeRule("never", timed=False, early_exit=False),
    AcwMode.TIMED: ModeRule("always", timed=True, early_exit=True),
    AcwMode.FORCED: ModeRule("always", timed=True, early_exit=False),
    AcwMode.MANUAL: ModeRule("always", timed=False, early_exit=True),
    AcwMode.ON_REQUEST: ModeRule("on_request", timed=True, early_exit=True),
}

_EMPTY: MappingProxyType[str, object] = MappingProxyType({})


def acw_starts(settings: WorkSettings, requested: bool) -> bool:
    """Whether ending a leg handled under ``settings`` starts ACW."""
    starts = _MODES[settings.acw_mode].starts
    return starts == "always" or (starts == "on_request" and requested)


@dataclass(slots=True)
class Acw:
    """One leg's ACW window in progress."""

    mode: AcwMode
    started_at: float
    base_seconds: float | None  # None: no timer (manual mode without a safety cap)
    extension_seconds: float
    max_extensions: int
    requested: bool
    extensions: int = 0
    wrapup: Wrapup | None = None  # forced mode keeps what the agent submitted until the timer ends

    @classmethod
    def start(cls, settings: WorkSettings, now: float, requested: bool) -> Acw:
        rule = _MODES[settings.acw_mode]
        if rule.timed:
            base: float | None = settings.acw_seconds
        else:
            base = settings.max_acw_seconds if settings.max_acw_seconds > 0 else None
        return cls(
            mode=settings.acw_mode,
            started_at=now,
            base_seconds=base,
            extension_seconds=settings.extension_seconds,
            max_extensions=settings.max_extensions,
            requested=requested,
        )

    @property
    def deadline(self) -> float | None:
        if self.base_seconds is None:
            return None
        return self.started_at + self.base_seconds + self.extensions * self.extension_seconds

    def due(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def extend(self) -> None:
        if self.deadline is None:
            raise DomainError(
                ErrorCode.INVALID_STATE,
                "This ACW has no timer to extend; end it with acw.complete.",
                {"mode": self.mode.value},
            )
        if self.extensions >= self.max_extensions:
            raise DomainError(
                ErrorCode.EXTENSION_LIMIT,
                f"ACW was already extended {self.extensions} times, the most allowed.",
                {"extensions": self.extensions, "max_extensions": self.max_extensions},
            )
        self.extensions += 1

    @property
    def ends_on_complete(self) -> bool:
        return _MODES[self.mode].early_exit

    def view(self) -> AcwView:
        return AcwView(
            mode=self.mode.value,
            started_at=self.started_at,
            deadline=self.deadline,
            extensions=self.extensions,
            requested=self.requested,
        )


def check_disposition(settings: WorkSettings, disposition: str | None) -> None:
    """Refuse a wrap-up whose disposition is missing when required, or not in the allowed list."""
    if disposition is None:
        if settings.require_disposition:
            raise DomainError(
                ErrorCode.DISPOSITION_REQUIRED,
                "This queue requires a disposition to complete ACW.",
                {"allowed": list(settings.dispositions)},
            )
        return
    if settings.dispositions and disposition not in settings.dispositions:
        raise DomainError(
            ErrorCode.INVALID_DISPOSITION,
            f"Disposition {disposition!r} is not one of {', '.join(settings.dispositions)}.",
            {"allowed": list(settings.dispositions)},
        )


def make_record(
    *,
    work_id: str,
    agent_id: str,
    queue: str,
    channel: str,
    settings: WorkSettings,
    acw: Acw,
    wrapup: Wrapup | None,
    talk_s: float,
    now: float,
    reason: str,
) -> WrapupRecord:
    """The wrap-up record of an ended ACW; a missing disposition becomes the timeout code."""
    wrapup = wrapup or Wrapup()
    disposition = wrapup.disposition or settings.timeout_disposition
    return WrapupRecord(
        work_id=work_id,
        agent_id=agent_id,
        queue=queue,
        channel=channel,
        disposition=disposition,
        notes=wrapup.notes,
        fields=wrapup.fields if wrapup.fields is not None else _EMPTY,
        follow_ups=wrapup.follow_ups,
        talk_s=talk_s,
        acw_started_at=acw.started_at,
        acw_ended_at=now,
        acw_seconds=now - acw.started_at,
        extensions=acw.extensions,
        reason=reason,
    )
