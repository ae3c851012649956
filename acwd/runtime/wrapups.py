"""Wrap-up records kept for ``wrapup.get`` and ``wrapup.list`` (in memory until the journal)."""

from __future__ import annotations

from collections import defaultdict

from acwd.core.views import WrapupRecord


class WrapupStore:
    def __init__(self) -> None:
        self.records: list[WrapupRecord] = []
        self._by_work: defaultdict[str, list[WrapupRecord]] = defaultdict(list)

    def add(self, record: WrapupRecord) -> None:
        self.records.append(record)
        self._by_work[record.work_id].append(record)

    def get(self, work_id: str) -> list[WrapupRecord]:
        return list(self._by_work.get(work_id, ()))

    def list(
        self,
        since: float | None = None,
        until: float | None = None,
        agent_id: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
    ) -> list[WrapupRecord]:
        """Records ended in [since, until), oldest first, at most ``limit``."""
        out = []
        for record in self.records:
            if since is not None and record.acw_ended_at < since:
                continue
            if until is not None and record.acw_ended_at >= until:
                continue
            if agent_id is not None and record.agent_id != agent_id:
                continue
            if queue is not None and record.queue != queue:
                continue
            out.append(record)
            if limit is not None and len(out) >= limit:
                break
        return out
